"""Checkpoints: safetensors for tensors, JSON for the rest, written atomically.

A checkpoint is a folder ``checkpoints/step-00001234/`` holding ``tensors.safetensors``
(model weights, optimiser moments, RNG and sampler states) and ``state.json`` (step, config,
optimiser hyperparameters, sampler position, RNG states that are not tensors).
It is written into a hidden temporary folder, every file fsynced, then renamed into place and
the parent fsynced: a folder named ``step-*`` is always complete, whatever moment the process
dies (SIGKILL included). Leftover temporary folders are ignored and cleaned up.
Every floating-point tensor is checked finite before a checkpoint is written and when one is read,
so a checkpoint on disk is always one training can continue from. vaelab deletes only what it
wrote: old checkpoints whose folder holds its two files and nothing else, and its own temporary
names (``.tmp-step-N-PID``, ``.tmp-old-step-N-PID``); other names under ``checkpoints/`` are left
alone. A failed write (a full disk, a file-size limit) removes its temporary folder and leaves the
older checkpoints as they were.
Nothing is ever unpickled.
"""
from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from ..errors import VaelabError

PREFIX = "step-"
TMP_PREFIX = ".tmp-"
FILES = ("tensors.safetensors", "state.json")  # what a checkpoint folder holds (all vaelab writes there)
_STEP_NAME = re.compile(r"^step-(\d+)$")
_TMP_NAME = re.compile(r"^\.tmp-(?:old-)?step-\d+-(\d+)$")


class NonFinite(VaelabError):
    """A checkpoint would hold (or holds) a NaN or an infinity; ``name`` is the first such tensor."""

    def __init__(self, message: str, name: str, cli: str | None = None):
        super().__init__(message, cli=cli)
        self.name = name


def step_of(name: str) -> int | None:
    """The step of a checkpoint folder name ``step-N`` (None for any other name)."""
    m = _STEP_NAME.match(name)
    return int(m.group(1)) if m else None


def first_nonfinite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None."""
    for k, v in tensors.items():
        if (v.is_floating_point() or v.is_complex()) and v.numel() and not bool(torch.isfinite(v).all()):
            return k
    return None


def disk_error_text(e: OSError) -> str:
    """``strerror`` of a failed write, with its errno name (ENOSPC, EFBIG, ...)."""
    name = errno.errorcode.get(e.errno or 0)
    return f"{e.strerror or type(e).__name__}" + (f" [{name}]" if name else "")


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes):
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def optimizer_to_flat(name: str, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimiser state dict into tensors (flat names) and JSON."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{name}.{pid}.{key}"] = val.detach().cpu().clone()
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(name: str, opt: torch.optim.Optimizer, tensors: dict, info: dict):
    state: dict = {}
    prefix = f"optim.{name}."
    for key, val in tensors.items():
        if key.startswith(prefix):
            pid, field = key[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[field] = val
    for key, val in info.get("scalars", {}).items():
        pid, field = key.split(".", 1)
        state.setdefault(int(pid), {})[field] = val
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def save(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], state: dict, keep: int = 3) -> Path:
    """Write checkpoint ``step`` atomically; keep the newest ``keep``. Returns its folder.

    Raises :class:`NonFinite` (nothing written) when a floating-point tensor is not finite, and a
    one-line :class:`VaelabError` when the write fails (the older checkpoints stay as they were)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    bad = first_nonfinite(tensors)
    if bad is not None:
        raise NonFinite(f"not saving the checkpoint of step {step}: tensor {bad!r} holds a non-finite value", bad)
    ckdir = Path(run_dir) / "checkpoints"
    final = ckdir / f"{PREFIX}{step:08d}"
    tmp = ckdir / f"{TMP_PREFIX}{PREFIX}{step:08d}-{os.getpid()}"
    try:
        blob = safetensors_bytes(tensors)
        meta = json.dumps(state, indent=1).encode()
        ckdir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            _remove_own(tmp)
        tmp.mkdir()
        _write_synced(tmp / "tensors.safetensors", blob)
        del blob
        _write_synced(tmp / "state.json", meta)
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. Ctrl-C right after a periodic save)
            if not _only_own_files(final):
                _remove_own(tmp)  # the folder holds files of the user's: left as it is
                return final
            old = _retire(final)
            os.replace(tmp, final)
            _remove_own(old)
        else:
            os.replace(tmp, final)
        _fsync_dir(ckdir)
    except OSError as e:
        _remove_own(tmp)
        raise VaelabError(f"cannot write checkpoint {final}: {disk_error_text(e)}; the checkpoints written "
                          f"before it are intact") from None
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        if _only_own_files(old):  # a folder holding anything else is not vaelab's to delete
            try:
                old = _retire(old)
            except OSError:
                continue  # left in place: still a complete checkpoint
            _remove_own(old)
    return final


def _only_own_files(folder: Path) -> bool:
    try:
        return all(p.name in FILES and p.is_file() for p in folder.iterdir())
    except OSError:
        return False


def _remove_own(folder: Path):
    """Delete a checkpoint folder vaelab wrote: its own files, then the folder if that empties it."""
    for name in FILES:
        try:
            (folder / name).unlink()
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass


def _retire(path: Path) -> Path:
    """Rename a checkpoint folder to a temporary name before deleting it.

    Deleting removes the files one by one; a process killed half-way through would leave a
    ``step-*`` folder without its tensors. Renamed first (one atomic step), a half-deleted folder
    is a temporary one, which ``list_checkpoints`` ignores and cleans up.
    """
    gone = path.parent / f"{TMP_PREFIX}old-{path.name}-{os.getpid()}"
    os.replace(path, gone)
    return gone


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first; stale temporary folders are removed."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    out = []
    for p in ckdir.iterdir():
        tmp = _TMP_NAME.match(p.name)
        if tmp:
            if not _owned_by_live_process(int(tmp.group(1))):
                _remove_own(p)
        elif step_of(p.name) is not None and p.is_dir():
            out.append(p)
    return sorted(out, key=lambda p: step_of(p.name))


def _owned_by_live_process(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def find(run_dir: Path, step: int | None = None) -> Path:
    """The checkpoint at ``step`` (default: the newest)."""
    cks = list_checkpoints(run_dir)
    if not cks:
        raise VaelabError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}: the run has not saved one yet")
    if step is None:
        return cks[-1]
    for p in cks:
        if step_of(p.name) == step:
            return p
    have = ", ".join(str(step_of(p.name)) for p in cks)
    raise VaelabError(f"no checkpoint at step {step} in {run_dir}; available steps: {have}")


def state_dict_mismatch(error: RuntimeError) -> str:
    """The informative line of ``load_state_dict``'s error (its first line only names the class)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(error).__name__)
    more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
    return (detail[:240] + ("..." if len(detail) > 240 else "")) + more


def load(path: Path, device="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, state) of a checkpoint folder; a damaged one is one clear error."""
    path = Path(path)
    try:
        tensors = load_file(str(path / "tensors.safetensors"), device=str(device))
        state = json.loads((path / "state.json").read_text())
    except FileNotFoundError as e:  # safetensors' own error carries no filename
        missing = [n for n in ("tensors.safetensors", "state.json") if not (path / n).exists()]
        what = ", ".join(missing) or Path(e.filename or "a file").name
        raise VaelabError(f"checkpoint {path} is incomplete: {what} missing") from None
    except (SafetensorError, json.JSONDecodeError, OSError, ValueError) as e:
        raise VaelabError(f"checkpoint {path} is corrupt ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or isinstance(state["step"], bool):
        what = "not a JSON object" if not isinstance(state, dict) else "no integer 'step'"
        raise VaelabError(f"checkpoint {path} is corrupt (state.json: {what})")
    bad = first_nonfinite(tensors)
    if bad is not None:
        text = f"checkpoint {path} holds a non-finite value in tensor {bad!r}: it cannot be used; take an older one"
        raise NonFinite(f"{text} (step=S)", bad, cli=f"{text} (--step S)")
    return tensors, state
