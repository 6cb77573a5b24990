"""Datasets with ground-truth factors. ``load(name, root=..., split=..., size=...)`` is the way in."""
from __future__ import annotations

import os

from .base import FactorDataset
from .registry import DatasetSpec, get, names, register


def load(name: str, *, root: str | os.PathLike | None = None, split: str = "train",
         size: int | None = None, **options) -> FactorDataset:
    """Load dataset ``name`` (see ``vaelab data list``).

    root: a file or folder holding the data (default: the data directory, see ``vaelab.paths``).
    split: "train", "test", "val" or "all" where the source defines splits.
    size: image side to resize to, where the source allows it (CelebA 32/64/128, folders).
    """
    from pathlib import Path

    spec = get(name)
    return spec.loader(Path(root).expanduser() if root is not None else None, split, size, **options)


__all__ = ["FactorDataset", "DatasetSpec", "load", "get", "names", "register"]
