"""Dataset registry: a name -> how to load it, what it holds, which files it needs.

Each source module registers its datasets with :func:`register`; :func:`vaelab.data.load`
looks them up. ``vaelab data list`` / ``info`` read the static fields without loading pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import VaelabError, closest


@dataclass
class DatasetSpec:
    name: str
    loader: Callable  # loader(root: Path | None, split: str, size: int | None, **options) -> FactorDataset
    description: str
    factors: list[tuple[str, int]] = field(default_factory=list)  # (name, size) of visible factors
    count: int | None = None  # images in the full dataset (all splits), when fixed
    image_shape: tuple[int, int, int] | None = None  # at the default size
    files: list[str] = field(default_factory=list)  # what must be under the data dir, relative
    fetch_command: str | None = None  # how a user gets the files, for error messages
    source: str = ""  # where the data comes from (paper / repository)

    def present(self, data_dir: Path) -> bool:
        return not self.files or all((data_dir / f).exists() for f in self.files)


REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> DatasetSpec:
    _import_sources()
    try:
        return REGISTRY[name]
    except KeyError:
        raise VaelabError(f"unknown dataset {name!r}{closest(name, REGISTRY)}; "
                          f"`vaelab data list` shows them all") from None


def names() -> list[str]:
    _import_sources()
    return sorted(REGISTRY)


_SOURCES = ("dsprites", "procedural", "shapes3d", "mnist", "images", "mixtures")


def _import_sources():
    import importlib

    for mod in _SOURCES:
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as e:  # a source module not written yet must not break the others
            if e.name != f"{__package__}.{mod}":
                raise
