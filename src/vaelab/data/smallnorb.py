"""SmallNORB (NYU small NORB v1.0) as disentanglement_lib uses it: both splits merged, instance hidden.

Six files (docs/datasets.md#smallnorb), plain or gzipped as distributed, in ``<data>/smallnorb/``::

    smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat,info}.mat   (instances 4, 6, 7, 8, 9)
    smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,cat,info}.mat    (instances 0, 1, 2, 3, 5)

Each is a little-endian binary matrix: int32 magic (0x1E3D4C55 uint8, 0x1E3D4C54 int32), int32 ndim,
max(3, ndim) int32 dims, then the data. ``dat`` N x 2 x 96 x 96 uint8 (two cameras; camera 0 is used,
as dlib does), ``cat`` N int32 (category), ``info`` N x 4 int32 (instance, elevation 0-8, azimuth
0, 2, ..., 34, lighting 0-5).

As dlib ``data/ground_truth/norb.py``: the 2 x 24,300 images form one grid over category 5,
elevation 9, azimuth 18 (the raw value halved) and lighting 6, with ``instance`` (10) a hidden factor:
every visible combination has one image per instance, stored consecutively (``hidden_size`` 10), and
metrics draw the instance at random. Sizes are taken from the values the files hold (so small
synthetic files work); the merged set must cover the grid exactly, else one clear error.

Images are resized 96 -> 64 with Pillow's Lanczos filter on the 8-bit grey image -- what dlib's
``_resize_images`` does (``PIL.Image.ANTIALIAS``, an alias of ``LANCZOS``), so the cached uint8 pixels
are dlib's values times 255. They are cached once as ``N x 1 x S x S`` uint8 (prepare.py cache entry).
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError
from .base import FactorDataset
from .prepare import build_entry, cache_entry, check_size, file_stat, open_entry, progress, read_manifest
from .registry import DatasetSpec, missing_data, register, require_grid_split

FOLDER = "smallnorb"
URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"  # + file name + ".gz"
# dlib SMALLNORB_CHUNKS order: training first, then testing
CHUNKS = (("train", "smallnorb-5x46789x9x18x6x2x96x96-training"),
          ("test", "smallnorb-5x01235x9x18x6x2x96x96-testing"))
PARTS = ("dat", "cat", "info")
FILES = tuple(f"{stem}-{part}.mat" for _, stem in CHUNKS for part in PARTS)

MAGIC_UINT8, MAGIC_INT32 = 0x1E3D4C55, 0x1E3D4C54
_DTYPES = {MAGIC_UINT8: np.dtype("<u1"), MAGIC_INT32: np.dtype("<i4")}

FACTOR_NAMES = ("category", "elevation", "azimuth", "lighting")  # visible, in grid order
HIDDEN = "instance"
# NORB README: category 0-4 = animal, human, airplane, truck, car; elevation e is 30 + 5 e degrees;
# azimuth a (0, 2, ..., 34) is 10 a degrees; lighting 0-5 is a condition number
CATEGORY_NAMES = ("animal", "human", "airplane", "truck", "car")
DEFAULT_SIZE = 64  # dlib resizes to 64 x 64
_CHUNK = 512  # image pairs read per step


def _file(folder: Path, name: str) -> Path | None:
    for cand in (folder / name, folder / (name + ".gz")):
        if cand.is_file():
            return cand
    return None


def locate(data_dir: Path) -> Path | None:
    folder = Path(data_dir) / FOLDER
    return folder if all(_file(folder, f) is not None for f in FILES) else None


def resolve(root: Path | None) -> dict[str, Path]:
    """The six files (name -> path, plain or .gz): in ``root`` (a folder, its ``smallnorb/``, or the
    folder of a file given), default ``<data>/smallnorb``. Any missing -> one clear error."""
    from .. import paths

    if root is None:
        folder = paths.data_dir() / FOLDER
    else:
        root = Path(root)
        folder = root.parent if root.is_file() else root
        if folder.is_dir() and _file(folder, FILES[0]) is None and (folder / FOLDER).is_dir():
            folder = folder / FOLDER
    found = {}
    for name in FILES:
        p = _file(folder, name)
        if p is None:
            raise missing_data("smallnorb", folder / name, "vaelab data fetch smallnorb")
        found[name] = p
    return found


# ----------------------------------------------------------------------------- binary matrices
def _open(path: Path):
    """The file (gunzipped on the fly for .gz); one VaelabError line when it cannot be opened."""
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise VaelabError(f"{path}: cannot open ({e})") from None


_READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


def _read_exact(f, n: int, path: Path, what: str) -> bytes:
    try:
        b = f.read(n)
    except _READ_ERRORS as e:
        raise VaelabError(f"{path}: cannot read {what} ({e}); the file may be truncated or corrupt — "
                          f"fetch it again (`vaelab data fetch smallnorb --force`)") from None
    if len(b) != n:
        raise VaelabError(f"{path}: truncated ({what} ends early); fetch it again "
                          f"(`vaelab data fetch smallnorb --force`)")
    return b


def read_header(f, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, dims) of a NORB binary matrix; ``f`` is left at the start of the data."""
    magic, ndim = (int(v) for v in np.frombuffer(_read_exact(f, 8, path, "the header"), "<i4"))
    if magic not in _DTYPES:
        raise VaelabError(f"{path}: not a SmallNORB matrix of bytes or ints (magic {magic & 0xFFFFFFFF:#010x}, "
                          f"expected {MAGIC_UINT8:#010x} uint8 or {MAGIC_INT32:#010x} int32)")
    if not 1 <= ndim <= 8:
        raise VaelabError(f"{path}: bad SmallNORB header (ndim {ndim})")
    dims = np.frombuffer(_read_exact(f, 4 * max(3, ndim), path, "the header"), "<i4")[:ndim]
    if (dims < 0).any():
        raise VaelabError(f"{path}: bad SmallNORB header (dims {dims.tolist()})")
    return _DTYPES[magic], tuple(int(d) for d in dims)


def read_matrix(path: Path) -> np.ndarray:
    """A whole NORB binary matrix (used for the small ``cat`` and ``info`` files)."""
    with _open(path) as f:
        dtype, dims = read_header(f, path)
        n = int(np.prod(dims)) * dtype.itemsize
        data = _read_exact(f, n, path, f"the {'x'.join(map(str, dims))} {dtype.name} data")
    return np.frombuffer(data, dtype).reshape(dims)


def _labels(folder_files: dict[str, Path], stem: str) -> tuple[np.ndarray, int]:
    """``n x 5`` int64 (category, instance, elevation, raw azimuth, lighting) of one split."""
    cat_p, info_p = folder_files[f"{stem}-cat.mat"], folder_files[f"{stem}-info.mat"]
    cat, info = read_matrix(cat_p), read_matrix(info_p)
    if cat.dtype != np.int32 or info.dtype != np.int32:
        bad = cat_p if cat.dtype != np.int32 else info_p
        raise VaelabError(f"{bad}: expected an int32 matrix (magic {MAGIC_INT32:#010x})")
    if cat.ndim == 2 and cat.shape[1] == 1:
        cat = cat[:, 0]
    if cat.ndim != 1:
        raise VaelabError(f"{cat_p}: expected N category labels, got shape {cat.shape}")
    if info.ndim != 2 or info.shape[1] != 4:
        raise VaelabError(f"{info_p}: expected N x 4 (instance, elevation, azimuth, lighting), got shape {info.shape}")
    if len(cat) != len(info):
        raise VaelabError(f"{info_p}: {len(info)} rows but {cat_p.name} has {len(cat)} labels")
    return np.column_stack([cat, info]).astype(np.int64), len(cat)


def grid_positions(labels: np.ndarray, where: str = "smallnorb") -> tuple[np.ndarray, dict]:
    """Each image's row in the hidden-factor grid, and the grid's description.

    ``labels``: ``N x 5`` (category, instance, elevation, raw azimuth, lighting) of the merged splits.
    Classes are the sorted values present; the visible grid is category x elevation x azimuth x
    lighting (last fastest) with the instance hidden (fastest of all)."""
    if (labels < 0).any():
        raise VaelabError(f"{where}: negative category/instance/elevation/azimuth/lighting values")
    if (labels[:, 3] % 2).any():
        odd = int(labels[np.flatnonzero(labels[:, 3] % 2)[0], 3])
        raise VaelabError(f"{where}: azimuth values must be even (0, 2, ..., 34), got {odd}")
    cols = {"category": 0, "instance": 1, "elevation": 2, "azimuth": 3, "lighting": 4}
    uniq = {k: np.unique(labels[:, j]) for k, j in cols.items()}
    cls = {k: np.searchsorted(uniq[k], labels[:, j]) for k, j in cols.items()}
    sizes = [len(uniq[k]) for k in FACTOR_NAMES]
    n_inst = len(uniq["instance"])
    visible = np.zeros(len(labels), dtype=np.int64)
    for k, s in zip(FACTOR_NAMES, sizes):
        visible = visible * s + cls[k]
    pos = visible * n_inst + cls["instance"]
    total = int(np.prod(sizes)) * n_inst
    distinct = len(np.unique(pos))
    if len(labels) != total or distinct != total:
        shape = " x ".join(f"{k} {s}" for k, s in zip(FACTOR_NAMES + (HIDDEN,), sizes + [n_inst]))
        raise VaelabError(f"{where}: the training and testing files do not cover the grid {shape} exactly once "
                          f"({len(labels):,} images, {total - distinct:,} combinations missing, "
                          f"{len(labels) - distinct:,} repeated); are the six files from the same release?")
    values = [uniq["category"].astype(np.float64),
              30.0 + 5.0 * uniq["elevation"],     # degrees
              10.0 * uniq["azimuth"],             # degrees (raw 0, 2, ..., 34)
              uniq["lighting"].astype(np.float64)]
    return pos, {"factor_sizes": sizes, "factor_values": [v.tolist() for v in values],
                 "instances": uniq["instance"].tolist(), "hidden_size": n_inst}


def _fill_images(out: np.ndarray, files: dict[str, Path], stems, positions, size: int) -> None:
    from PIL import Image

    from .prepare import transform_image

    start = 0
    with progress(total=len(out), desc="resizing SmallNORB") as bar:
        for stem, n in stems:
            path = files[f"{stem}-dat.mat"]
            with _open(path) as f:
                dtype, dims = read_header(f, path)
                if dtype != np.uint8 or len(dims) != 4 or dims[0] != n or dims[1] < 1:
                    raise VaelabError(f"{path}: expected {n} x cameras x H x W uint8 images "
                                      f"(magic {MAGIC_UINT8:#010x}), got {'x'.join(map(str, dims))} {dtype.name}")
                _, cams, h, w = dims
                per = cams * h * w
                for i0 in range(0, n, _CHUNK):
                    r = min(_CHUNK, n - i0)
                    block = np.frombuffer(_read_exact(f, r * per, path, f"image {i0 + r:,} of {n:,}"), np.uint8)
                    block = block.reshape(r, cams, h, w)
                    for j in range(r):  # camera 0, as dlib
                        out[positions[start + i0 + j]] = transform_image(
                            Image.fromarray(block[j, 0], "L"), size=size, resample="lanczos")
                    bar.update(r)
            start += n


def load_smallnorb(root: Path | None = None, split: str = "train", size: int | None = None, *,
                   force: bool = False) -> FactorDataset:
    """SmallNORB as dlib builds it (see the module docstring). ``size``: image side (default 64)."""
    require_grid_split("smallnorb", split)
    size = check_size(size, default=DEFAULT_SIZE, what="smallnorb")
    files = resolve(root)
    key = {"kind": "smallnorb", "v": 1, "size": size, "resample": "lanczos", "camera": 0,
           "files": {n: {"path": str(p.resolve()), **file_stat(p)} for n, p in files.items()}}
    entry = cache_entry(f"smallnorb-{size}", key)
    manifest = None if force else read_manifest(entry)
    images = open_entry(entry, manifest) if manifest is not None and manifest.get("key") == key else None
    if images is None:
        parts, stems, split_instances = [], [], {}
        for split_name, stem in CHUNKS:
            lab, n = _labels(files, stem)
            parts.append(lab)
            stems.append((stem, n))
            split_instances[split_name] = np.unique(lab[:, 1]).tolist()
        labels = np.concatenate(parts)
        positions, grid = grid_positions(labels, str(files[FILES[0]].parent))

        def fill(out):
            _fill_images(out, files, stems, positions, size)

        images, manifest = build_entry(entry, (len(labels), 1, size, size), fill,
                                       {"key": key, "source": str(files[FILES[0]].parent.resolve()),
                                        "count": len(labels), "instances_by_split": split_instances, **grid})
    sizes = [int(s) for s in manifest["factor_sizes"]]
    hidden = int(manifest["hidden_size"])
    factors = np.repeat(np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1), hidden, axis=0)
    cats = [int(c) for c in manifest["factor_values"][0]]
    meta = {"cache": str(entry), "hidden_factors": [HIDDEN], "hidden_sizes": [hidden],
            "instances": manifest["instances"], "instances_by_split": manifest["instances_by_split"],
            "category_names": [CATEGORY_NAMES[c] if c < len(CATEGORY_NAMES) else str(c) for c in cats],
            "camera": 0, "resample": "lanczos (as dlib: PIL ANTIALIAS)"}
    return FactorDataset(images=torch.from_numpy(images), factors=torch.from_numpy(factors.astype(np.int64)),
                         factor_names=list(FACTOR_NAMES), factor_sizes=sizes,
                         factor_values=[np.asarray(v, dtype=np.float64) for v in manifest["factor_values"]],
                         is_grid=True, hidden_size=hidden, name="smallnorb", source=manifest["source"], meta=meta)


register(DatasetSpec(
    name="smallnorb",
    loader=load_smallnorb,
    description="SmallNORB (dlib): toys under 9 elevations, 18 azimuths, 6 lightings; both splits merged "
                "into one grid, instance hidden (10 per category)",
    factors=[("category", 5), ("elevation", 9), ("azimuth", 18), ("lighting", 6)],
    count=48_600,
    image_shape=(1, DEFAULT_SIZE, DEFAULT_SIZE),
    fetch_command="vaelab data fetch smallnorb",
    source="NYU small NORB v1.0 (LeCun, Huang & Bottou 2004), as disentanglement_lib merges it",
    locate=locate,
))
