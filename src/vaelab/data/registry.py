"""Dataset registry: a name -> how to load it, what it holds, which files it needs.

A dataset is declared in one place: a :class:`DatasetSpec` passed to :func:`register_dataset`, by a
source module here or by a plugin (:mod:`vaelab.plugins`). :func:`vaelab.data.load` looks them up;
``vaelab data list`` / ``info`` read the static fields without loading pixels.
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
    # optional: data_dir -> the file/folder the loader would use there, or None (for datasets whose
    # files come in several layouts, e.g. a folder or a zip); overrides the `files` check
    locate: Callable[[Path], Path | None] | None = None
    needs_root: bool = False  # no default location: the user points at the data (image-folder)
    # the data option that makes the files unnecessary, e.g. 'base = "procedural"' for dSprites' colour
    # and noisy variants (shown by `vaelab data list` when the files are absent)
    without_files: str | None = None
    # what `vaelab data fetch NAME` downloads (vaelab.data.fetch.RemoteFile: URL, destination under the
    # data directory, size and checksums), for a dataset that declares its own sources (the built-in
    # datasets' sources are listed in fetch.py)
    remote: list = field(default_factory=list)

    @property
    def needs_files(self) -> bool:
        """False for generated datasets (procedural dSprites): nothing to download."""
        return bool(self.files) or self.locate is not None

    def where(self, data_dir: Path) -> Path | None:
        """Where the data is under ``data_dir`` (None when absent or when nothing is needed)."""
        data_dir = Path(data_dir)
        if self.locate is not None:
            return self.locate(data_dir)
        if self.files and all((data_dir / f).exists() for f in self.files):
            return data_dir / self.files[0]
        return None

    def present(self, data_dir: Path) -> bool:
        if self.needs_root:
            return False
        if not self.needs_files:
            return True
        return self.where(data_dir) is not None


REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add dataset ``spec.name``: ``spec.loader(root, split, size, **options) -> FactorDataset`` (its
    keyword-only parameters are the dataset's options: ``data.options`` in a config, ``--option KEY=VALUE``
    in `vaelab data`). A name taken by another loader is an error."""
    from ..plugins import _origin, claim

    if not isinstance(spec, DatasetSpec):
        raise VaelabError(f"register_dataset takes a vaelab.data.DatasetSpec, got {type(spec).__name__}")
    if not isinstance(spec.name, str) or not spec.name or not callable(spec.loader):
        raise VaelabError(f"a DatasetSpec needs a name and a loader function, got {spec.name!r}, {spec.loader!r}")
    claim(REGISTRY, "dataset", spec.name, spec, origin=lambda s: _origin(s.loader))
    return spec


register = register_dataset  # the name the source modules here use


def get(name: str) -> DatasetSpec:
    _import_sources()
    if name not in REGISTRY:
        from ..plugins import load_entry_points

        load_entry_points()  # a dataset of an installed plugin
    try:
        return REGISTRY[name]
    except KeyError:
        raise VaelabError(f"unknown dataset {name!r}{closest(name, REGISTRY)}; "
                          f"`vaelab data list` shows them all") from None


def names() -> list[str]:
    from ..plugins import load_entry_points

    _import_sources()
    load_entry_points()
    return sorted(REGISTRY)


_SOURCES = ("dsprites", "procedural", "dsprites_variants", "shapes3d", "smallnorb", "mpi3d", "mnist", "images", "mixtures")


def _import_sources():
    import importlib

    for mod in _SOURCES:
        importlib.import_module(f"{__package__}.{mod}")


def find_data_file(name: str, root: Path | None, default: Path, candidates=(), patterns=()) -> Path:
    """The one file a single-file dataset reads: ``root`` itself, a known name inside the folder
    ``root`` (``candidates``, relative), else the folder's only file matching ``patterns``;
    ``root=None`` means ``default`` in the data directory. Absent -> :func:`missing_data`."""
    from .. import paths

    if root is None:
        p = paths.data_dir() / default
        if not p.is_file():
            raise missing_data(name, p)
        return p
    root = Path(root)
    if root.is_file():
        return root
    if root.is_dir():
        for cand in candidates:
            if (root / cand).is_file():
                return root / cand
        found = [f for pat in patterns for f in sorted(root.glob(pat))]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise VaelabError(f"{name}: {root} holds several candidate files "
                              f"({', '.join(f.name for f in found)}); pass the one to use as --root")
        raise missing_data(name, root / candidates[0] if candidates else root)
    raise missing_data(name, root)


def missing_data(name: str, looked: Path | str, how: str | None = None) -> VaelabError:
    """The one-line error for absent data: what was looked for, where, and how to get it."""
    if how is None:
        spec = REGISTRY.get(name)
        how = spec.fetch_command if spec is not None else None
    hint = f"; get it with `{how}`" if how and how.startswith("vaelab ") else (f"; {how}" if how else "")
    return VaelabError(f"{name}: no data at {looked}{hint} (or point at it: --set data.root=PATH when "
                       f"training, --root PATH in `vaelab data` and `vaelab evaluate --dataset`)")


def require_grid_split(name: str, split: str) -> None:
    """Full factor grids (dSprites, 3D Shapes, SmallNORB, MPI3D) have one split; held-out images come
    from splits.py."""
    if split not in ("train", "all"):
        raise VaelabError(f"{name} has no {split!r} split (it is one factor grid); use split='train' and "
                          f"vaelab.data.splits.train_val_split for held-out images")
