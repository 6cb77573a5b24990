"""3D Shapes (deepmind/3d-shapes, ``3dshapes.h5``).

Layout: ``images`` 480,000 x 64 x 64 x 3 uint8 and ``labels`` 480,000 x 6 float64 (floor_hue,
wall_hue, object_hue, scale, shape, orientation; sizes 10, 10, 10, 8, 4, 15; orientation fastest).
Factor values are hard-coded (docs/datasets.md#3d-shapes) and the labels are matched against them.

h5py is optional and imported only here. An uncompressed, contiguous ``images`` dataset is
memory-mapped straight out of the h5 file (zero copy, ``N x C x H x W`` as a permuted view);
a chunked/compressed one, or one whose rows are not in canonical grid order, is copied once into
the cache as a contiguous ``N x 3 x 64 x 64`` .npy.

Files holding only some of the values (a subset) are accepted: if the values present form a full
smaller grid, the classes are re-indexed onto the values present (a grid with smaller sizes, as
the shared dSprites subset is); otherwise the set is a labelled set with the official sizes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError
from .base import FactorDataset
from .prepare import build_entry, cache_entry, file_stat, load_array, open_entry, progress, read_manifest
from .registry import DatasetSpec, find_data_file, register, require_grid_split

OFFICIAL_FILE = "3dshapes.h5"
DEFAULT_PATH = f"shapes3d/{OFFICIAL_FILE}"
URL = "https://storage.googleapis.com/3d-shapes/3dshapes.h5"

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
FACTOR_VALUES = (  # docs/datasets.md#3d-shapes (scale is linspace(0.75, 1.25, 8), not the README's [0, 1])
    np.linspace(0.0, 0.9, 10),
    np.linspace(0.0, 0.9, 10),
    np.linspace(0.0, 0.9, 10),
    np.linspace(0.75, 1.25, 8),
    np.arange(4, dtype=np.float64),
    np.linspace(-30.0, 30.0, 15),
)
_CHUNK = 2048


def _h5py():
    try:
        import h5py
    except ImportError:
        raise VaelabError("3D Shapes is stored as HDF5 and needs h5py: pip install h5py "
                          "(or pip install 'vaelab[h5]')") from None
    return h5py


def locate(data_dir: Path) -> Path | None:
    p = Path(data_dir) / DEFAULT_PATH
    return p if p.is_file() else None


def resolve(root: Path | None) -> Path:
    """The h5 to read: ``root`` itself, the official name inside it, or its only .h5 / .hdf5."""
    return find_data_file("shapes3d", root, DEFAULT_PATH, (OFFICIAL_FILE, DEFAULT_PATH), ("*.h5", "*.hdf5"))


def labels_to_classes(labels: np.ndarray, path: Path | str = "labels"):
    """float labels N x 6 -> (class indices N x 6 against the official values, names, sizes, values).

    Sub-grids (fewer values per factor, every combination once) are re-indexed onto the values present."""
    if labels.ndim != 2 or labels.shape[1] != 6:
        raise VaelabError(f"{path}: 'labels' must be N x 6 ({', '.join(FACTOR_NAMES)}), got {labels.shape}")
    n = labels.shape[0]
    classes = np.empty((n, 6), dtype=np.int64)
    for j, vals in enumerate(FACTOR_VALUES):
        d = np.abs(labels[:, j:j + 1] - vals[None, :])
        c = d.argmin(axis=1)
        bad = d[np.arange(n), c] > 1e-3 * max(1.0, float(np.abs(vals).max()) / 10)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise VaelabError(f"{path}: label {FACTOR_NAMES[j]}={labels[i, j]!r} (row {i}) is not one of the "
                              f"3D Shapes values {np.round(vals, 4).tolist()}")
        classes[:, j] = c
    sizes = list(FACTOR_SIZES)
    values = [v.copy() for v in FACTOR_VALUES]
    present = [np.unique(classes[:, j]) for j in range(6)]
    sub_sizes = [len(p) for p in present]
    if n != int(np.prod(FACTOR_SIZES)) and n == int(np.prod(sub_sizes)):
        re = np.stack([np.searchsorted(present[j], classes[:, j]) for j in range(6)], axis=1)
        flat = re @ _bases(sub_sizes)
        if np.array_equal(np.sort(flat), np.arange(n)):  # a full smaller grid
            return re, list(FACTOR_NAMES), sub_sizes, [FACTOR_VALUES[j][present[j]] for j in range(6)]
    return classes, list(FACTOR_NAMES), sizes, values


def _bases(sizes) -> np.ndarray:
    sizes = np.asarray(sizes, dtype=np.int64)
    return np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)


def load_shapes3d(root: Path | None = None, split: str = "train", size: int | None = None, *,
                  force: bool = False) -> FactorDataset:
    """3D Shapes from ``3dshapes.h5`` (see the module docstring)."""
    require_grid_split("shapes3d", split)
    path = resolve(root)
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise VaelabError(f"{path}: not a readable HDF5 file ({e}); it may be truncated — download it again "
                          f"(`vaelab data fetch shapes3d`)") from None
    with f:
        if "images" not in f or "labels" not in f:
            raise VaelabError(f"{path}: expected datasets 'images' and 'labels' (3dshapes.h5 layout), "
                              f"found {sorted(f.keys())}")
        ds, lab = f["images"], f["labels"]
        if ds.ndim != 4 or ds.shape[3] != 3 or ds.dtype != np.uint8:
            raise VaelabError(f"{path}: 'images' must be N x H x W x 3 uint8, got {ds.shape} {ds.dtype}")
        n, h, w, _ = (int(s) for s in ds.shape)
        if lab.shape[0] != n:
            raise VaelabError(f"{path}: {n} images but {lab.shape[0]} label rows")
        try:
            labels = np.asarray(lab[...], dtype=np.float64)
        except OSError as e:
            raise VaelabError(f"{path}: cannot read 'labels' ({e}); the file may be truncated") from None
        classes, names, sizes, values = labels_to_classes(labels, path)
        flat = classes @ _bases(sizes)
        is_grid = n == int(np.prod(sizes)) and np.array_equal(np.sort(flat), np.arange(n))
        in_order = (not is_grid) or np.array_equal(flat, np.arange(n))
        if size is not None and int(size) != h:
            raise VaelabError(f"shapes3d images are {h} x {w}; size {size} is not available (drop --size)")
        offset = ds.id.get_offset() if ds.chunks is None and ds.compression is None else None
        meta = {}
        if offset is not None and in_order:
            need = int(offset) + n * h * w * 3
            if path.stat().st_size < need:
                raise VaelabError(f"{path}: truncated ({path.stat().st_size:,} bytes, the images need {need:,}); "
                                  f"download it again")
            mm = np.memmap(path, dtype=np.uint8, mode="c", offset=int(offset), shape=(n, h, w, 3))
            images = torch.from_numpy(mm).permute(0, 3, 1, 2)  # N x C x H x W view, zero copy
            factors = classes
            meta["storage"] = "memory-mapped from the h5 file (NHWC, permuted view)"
        else:
            key = {"kind": "shapes3d", "v": 1, "source": str(path.resolve()), **file_stat(path)}
            entry = cache_entry(f"shapes3d-{path.stem}", key)
            manifest = None if force else read_manifest(entry)
            arr = open_entry(entry, manifest) if manifest is not None and manifest.get("key") == key else None
            if arr is None:
                order = np.argsort(flat, kind="stable") if is_grid else np.arange(n)

                def fill(out):
                    with progress(total=n, desc=f"copying {path.name}") as bar:
                        for i0 in range(0, n, _CHUNK):
                            i1 = min(n, i0 + _CHUNK)
                            try:
                                if in_order:
                                    block = ds[i0:i1]
                                else:
                                    idx = order[i0:i1]
                                    srt = np.argsort(idx)
                                    block = np.empty((i1 - i0, h, w, 3), np.uint8)
                                    block[srt] = ds[idx[srt]]
                            except (OSError, ValueError) as e:
                                raise VaelabError(f"{path}: cannot read 'images' ({e}); the file may be "
                                                  f"truncated or corrupt") from None
                            out[i0:i1] = block.transpose(0, 3, 1, 2)
                            bar.update(i1 - i0)

                arr, manifest = build_entry(entry, (n, 3, h, w), fill,
                                            {"key": key, "source": str(path.resolve()), "count": n},
                                            {"factors": classes[order]})
            images = torch.from_numpy(arr)
            factors = load_array(entry, "factors")
            meta.update(cache=str(entry), storage="cached copy (N x C x H x W)")
    return FactorDataset(images=images, factors=torch.from_numpy(np.ascontiguousarray(factors)),
                         factor_names=names, factor_sizes=sizes, factor_values=values, is_grid=bool(is_grid),
                         name="shapes3d", source=str(path), meta=meta)


register(DatasetSpec(
    name="shapes3d",
    loader=load_shapes3d,
    description="3D Shapes: floor/wall/object hue, scale, shape, orientation; full grid (needs h5py)",
    factors=list(zip(FACTOR_NAMES, FACTOR_SIZES)),
    count=480_000,
    image_shape=(3, 64, 64),
    files=[DEFAULT_PATH],
    fetch_command="vaelab data fetch shapes3d",
    source="deepmind/3d-shapes (Burgess & Kim 2018), Apache 2.0",
    locate=locate,
))
