"""Where a run's numbers go: runs/NAME/metrics.jsonl (one JSON object per log step) and TensorBoard."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN / Inf
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


class RunLogger:
    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self._fh = open(self.path, "a", buffering=1)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def log(self, step: int, record: dict):
        """record: flat dict of floats or lists of floats (per-latent KL)."""
        out = {"step": step, **{k: _jsonable(v) for k, v in record.items()}}
        self._fh.write(json.dumps(out) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k.replace(".", "/", 1), v, step)
                elif isinstance(v, list) and v and isinstance(v[0], (int, float)):
                    for i, x in enumerate(v):
                        self._tb.add_scalar(f"{k}/{i}", x, step)

    def image(self, tag: str, step: int, array_hwc: np.ndarray):
        if self._tb is not None:
            self._tb.add_image(tag, array_hwc, step, dataformats="HWC")

    def close(self):
        self._fh.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def read_metrics(run_dir: Path) -> list[dict]:
    """All records of metrics.jsonl (a torn last line from a crash is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
