"""One writer per folder, and only folders that are vaelab's.

A folder vaelab writes (a run, a k-fold root, a sweep) holds ``.vaelab-lock``. A writer holds an
exclusive ``flock`` on that file for as long as it writes, and writes who it is into it (pid, host,
start time, command): a second writer is refused with one line naming the first. The kernel drops
the lock when its holder dies, however it dies (SIGKILL included), so a killed run never leaves the
folder stuck. The file is never deleted or replaced (a new file would be a second lock).

The same file marks the folder as vaelab's: vaelab writes only into a folder that is new, empty, or
already its own (it holds ``.vaelab-lock``, or, from versions before the lock, a vaelab
``config.toml`` or checkpoint), never into a folder of the user's.

    with claim_folder(path, "the run", ("run_dir", "--out")):
        ...  # write the folder

Shared file systems: ``flock`` works where the file system supports it (local disks, NFSv4 on
Linux); where it does not, the folder is written without a lock and a warning says so.
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
import sys
import warnings
from pathlib import Path

from ..errors import VaelabError, naming

LOCK_NAME = ".vaelab-lock"


class FolderInUse(VaelabError):
    """Another process holds the folder's lock."""


def _holder_text(info: dict | None) -> str:
    if not info:
        return "another process (it has not said who it is yet)"
    pid, host, since = info.get("pid", "?"), info.get("host", "?"), info.get("started", "?")
    cmd = info.get("command")
    return f"pid {pid} on {host}, started {since}" + (f" ({cmd})" if cmd else "")


class FolderLock:
    """An exclusive lock on ``folder/.vaelab-lock``; ``acquire`` raises :class:`FolderInUse` naming
    the holder. The folder must exist. Released by :meth:`release`, by leaving a ``with`` block, when
    the object is collected, or when the process ends."""

    def __init__(self, folder, what: str = "folder"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._fh = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self) -> "FolderLock":
        if self._fh is not None:
            return self
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock (Windows): unlocked
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fh = os.fdopen(fd, "r+b", buffering=0)  # a file object: closed (and unlocked) when collected
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                fh.close()  # a file system without flock: go on without a lock, and say so
                warnings.warn(f"{self.folder}: the file system does not support locks ({e.strerror}); "
                              f"make sure no other vaelab process writes this folder", LockWarning)
                return self
            info = read_holder(self.folder, fh)
            fh.close()
            raise FolderInUse(f"{self.folder} is in use: {self.what} is being written by {_holder_text(info)}; "
                              f"wait for it to end or stop it, or choose another folder") from None
        self._fh = fh
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        try:  # who holds it, for the refusal of a second writer (best effort: a full disk is no reason to stop)
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(info).encode("utf-8", "backslashreplace") + b"\n")
        except OSError:
            pass
        return self

    def release(self):
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()  # closing the last descriptor releases the flock

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class LockWarning(UserWarning):
    """A folder is written without a lock (vaelab's own warning: one ``vaelab: warning:`` line)."""


def read_holder(folder, fh=None) -> dict | None:
    """What the holder of ``folder``'s lock wrote about itself (None: nothing readable)."""
    try:
        if fh is not None:
            fh.seek(0)
            raw = fh.read(4096)
        else:
            raw = (Path(folder) / LOCK_NAME).read_bytes()[:4096]
        info = json.loads(raw.decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


# ---------------------------------------------------------------------------------------- ownership
def is_vaelab_folder(folder) -> bool:
    """Whether ``folder`` is one vaelab wrote: it holds ``.vaelab-lock``, or (runs from before the
    lock) a ``config.toml`` that is a vaelab config, or a checkpoint ``checkpoints/step-N/state.json``."""
    p = Path(folder)
    if (p / LOCK_NAME).is_file():
        return True
    try:
        from ..config import tomllib

        d = tomllib.loads((p / "config.toml").read_text(encoding="utf-8"))
        if isinstance(d.get("model"), dict) and isinstance(d.get("train"), dict):
            return True
    except (OSError, ValueError):
        pass
    ckdir = p / "checkpoints"
    try:
        entries = list(ckdir.iterdir()) if ckdir.is_dir() else []
    except OSError:
        entries = []
    from .checkpoint import step_of

    return any(step_of(e.name) is not None and (e / "state.json").is_file() for e in entries)


def check_writable(folder, option, holds: str) -> Path:
    """``folder`` as a Path if vaelab may write it: not there yet, empty, or vaelab's own (see
    :func:`is_vaelab_folder`); else one clear error (``option``: how the user named it, a string or
    ``(python argument, --flag)``). Nothing is created."""
    from ..paths import require_folder

    p = require_folder(folder, option, holds)
    if not p.exists():
        return p
    try:
        empty = next(iter(p.iterdir()), None) is None
    except OSError as e:
        raise VaelabError(f"cannot read {p}: {e.strerror}") from None
    if empty or is_vaelab_folder(p):
        return p
    raise naming("{option} {path} is a folder with files in it that vaelab did not write: vaelab writes only "
                 "into a new or empty folder or its own run folder, so nothing of yours is overwritten; "
                 "choose another {option}", option=option, path=str(folder))


def claim_folder(folder, what: str, option, holds: str | None = None) -> FolderLock:
    """Check ``folder`` is vaelab's to write (:func:`check_writable`), create it, and lock it: the
    returned lock is held (release it, or use it as a context manager)."""
    p = check_writable(folder, option, holds or what)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VaelabError(f"cannot create {p}: {e.strerror}") from None
    lock = FolderLock(p, what).acquire()
    if not is_vaelab_folder(p):  # pragma: no cover - only without flock, where nothing marks it
        lock.path.touch()
    return lock
