"""Where a run's numbers go: runs/NAME/metrics.jsonl (one JSON object per log step) and TensorBoard."""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np

from ..errors import VaelabError


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN / Inf
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


class RunLogger:
    """Appends to metrics.jsonl (and TensorBoard). ``upto``: the step training continues from; records
    of later steps (logged before a crash, after the checkpoint it resumes from) and a torn last line
    are dropped first, so the history has each step once and every line is whole."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, upto: int | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        if upto is not None and self.path.is_file():
            _keep_upto(self.path, upto)
        self._fh = open(self.path, "a", buffering=1)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                SummaryWriter = None
            if SummaryWriter is not None:
                _quiet_tensorboard_writer_thread()
                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def log(self, step: int, record: dict):
        """record: flat dict of floats or lists of floats (per-latent KL)."""
        out = {"step": step, **{k: _jsonable(v) for k, v in record.items()}}
        with _naming_the_file(self.path):  # a full disk: the error names the file that could not grow
            self._fh.write(json.dumps(out) + "\n")
        if self._tb is not None:
            with _naming_the_file(self.run_dir / "tensorboard"):
                for k, v in record.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        self._tb.add_scalar(k.replace(".", "/", 1), v, step)
                    elif isinstance(v, list) and v and isinstance(v[0], (int, float)):
                        for i, x in enumerate(v):
                            self._tb.add_scalar(f"{k}/{i}", x, step)

    def image(self, tag: str, step: int, array_hwc: np.ndarray):
        if self._tb is not None:
            self._tb.add_image(tag, array_hwc, step, dataformats="HWC")

    def picture(self, name: str, step: int, array_hwc: np.ndarray) -> Path:
        """A training picture (``H x W x 3`` uint8) to ``images/<name>_step<8 digits>.png`` (atomically)
        and TensorBoard."""
        from ..data.prepare import atomic_write_bytes

        path = self.run_dir / "images" / f"{name}_step{step:08d}.png"
        data = _png_bytes(array_hwc)
        try:
            path.parent.mkdir(exist_ok=True)
            atomic_write_bytes(path, data)
        except OSError as e:
            raise VaelabError(f"cannot write {path}: {e}") from None
        self.image(name, step, array_hwc)
        return path

    def close(self):
        self._fh.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def _png_bytes(array) -> bytes:
    """An ``H x W`` / ``H x W x 1`` / ``H x W x 3`` (or 4) uint8 array as PNG bytes."""
    import io

    from PIL import Image

    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise VaelabError(f"a training picture needs uint8 pixels, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise VaelabError(f"a training picture is H x W (x 1, 3 or 4) pixels, got shape {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return buf.getvalue()


def _quiet_tensorboard_writer_thread():
    """TensorBoard writes from a thread of its own; when a write fails (a full disk) that thread prints a
    traceback, and the next ``add_scalar`` raises the same error here, where it becomes one line. This
    hook silences that thread's traceback for OS errors only; every other thread error is shown as before."""
    import threading

    previous = threading.excepthook
    if getattr(previous, "_vaelab", False):
        return

    def hook(args):
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
            return
        previous(args)

    hook._vaelab = True
    threading.excepthook = hook


@contextlib.contextmanager
def _naming_the_file(path: Path):
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None


def _keep_upto(path: Path, step: int):
    """Rewrite ``path`` (atomically) without a torn last line and without records past ``step``."""
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    keep = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not text.endswith("\n"):
                break  # torn by a crash mid-write
            keep.append(line)  # damaged elsewhere: leave it for read_metrics to report
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] > step:
            continue
        keep.append(line)
    if keep == lines and (not text or text.endswith("\n")):
        return
    from ..data.prepare import atomic_write_bytes

    atomic_write_bytes(path, "".join(ln + "\n" for ln in keep).encode())


def read_metrics(run_dir: Path) -> list[dict]:
    """All records of metrics.jsonl. A torn last line (a crash mid-write) is skipped; any other line
    that is not a JSON object is one clear error, not a silently shorter history."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            rec = None
        if not isinstance(rec, dict):
            raise VaelabError(f"{path} line {i + 1} is not a JSON record ({line[:60]!r}); the file is damaged")
        out.append(rec)
    return out
