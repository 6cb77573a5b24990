"""Datasets with ground-truth factors. ``load(name, root=..., split=..., size=...)`` is the way in."""
from __future__ import annotations

import os

from .base import FactorDataset
from .registry import DatasetSpec, get, names, register, register_dataset


def load(name: str, *, root: str | os.PathLike | None = None, split: str = "train",
         size: int | None = None, **options) -> FactorDataset:
    """Load dataset ``name`` (see ``vaelab data list``).

    root: a file or folder holding the data (default: the data directory, see ``vaelab.paths``).
    split: "train", "test", "val" or "all" where the source defines splits.
    size: image side to resize to, where the source allows it (CelebA 32/64/128, folders).
    """
    from pathlib import Path

    spec = get(name)
    valid = loader_options(spec.loader)
    for key in options:
        if valid is not None and key not in valid:
            from ..errors import VaelabError, closest

            raise VaelabError(f"dataset {name!r} does not take option {key!r}{closest(key, valid)}; "
                              f"valid: {', '.join(valid) if valid else '(none)'}")
    return spec.loader(Path(root).expanduser() if root is not None else None, split, size, **options)


def loader_options(loader) -> list[str] | None:
    """The keyword options a dataset loader takes (besides root, split, size); None when the loader
    takes any keyword and checks them itself."""
    import inspect

    params = inspect.signature(loader).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):  # a bound mixture loader: its target's options
        target = (getattr(loader, "__kwdefaults__", None) or {}).get("_loader")
        if target is None:
            return None
        bound = set(params)
        params = {k: p for k, p in inspect.signature(target).parameters.items() if k not in bound}
        params.pop("batch_mode", None)
    return [k for k, p in params.items() if p.kind == p.KEYWORD_ONLY and not k.startswith("_")]


__all__ = ["FactorDataset", "DatasetSpec", "load", "loader_options", "get", "names", "register", "register_dataset"]
