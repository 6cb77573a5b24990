"""dSprites from deepmind's npz (deepmind/dsprites-dataset) and subsets of it with the same keys.

The npz holds ``imgs`` (uint8 N x 64 x 64, pixels 0/1), ``latents_classes`` (N x 6 int64),
``latents_values`` (N x 6 float64) and ``metadata`` -- a pickled Python-2 dict, which is never
unpickled here (``allow_pickle=False``): factor names, sizes and values are hard-coded (as dlib
does) and checked against ``latents_values``. Subsets with 5 latents (no colour column) such as
the shared ``dsprites_downsampled.npz`` are accepted; their classes are already re-indexed.

The 3 GB of pixels are streamed once out of the (compressed) zip member into a cached
``images.npy`` (``N x 1 x 64 x 64``, pixels mapped to 0/255 per docs/conventions.md#tensors, canonical grid order)
that later loads are a copy-on-write memory map of.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError
from .base import FactorDataset
from .prepare import (build_entry, cache_entry, file_stat, load_array, member_chunks, open_entry, progress, read_manifest)
from .registry import DatasetSpec, find_data_file, register, require_grid_split

OFFICIAL_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DEFAULT_PATH = f"dsprites/{OFFICIAL_FILE}"
URL = f"https://github.com/deepmind/dsprites-dataset/raw/master/{OFFICIAL_FILE}"

# deepmind's metadata["latents_names"] / ["latents_sizes"] / ["latents_possible_values"] (docs/datasets.md#dsprites)
FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
FACTOR_VALUES = (
    np.array([1.0]),                         # colour: white only (hidden, size 1)
    np.array([1.0, 2.0, 3.0]),               # square, ellipse, heart
    np.linspace(0.5, 1.0, 6),                # scale
    np.linspace(0.0, 2 * np.pi, 40),         # orientation (0 and 2*pi both present)
    np.linspace(0.0, 1.0, 32),               # posX
    np.linspace(0.0, 1.0, 32),               # posY (fastest)
)
SHAPE_NAMES = ("square", "ellipse", "heart")
_CHUNK = 4096  # images per read while streaming the pixels (16 MB)


def locate(data_dir: Path) -> Path | None:
    p = Path(data_dir) / DEFAULT_PATH
    return p if p.is_file() else None


def resolve(root: Path | None) -> Path:
    """The npz to read: ``root`` itself, the official name inside it, or its only .npz."""
    return find_data_file("dsprites", root, DEFAULT_PATH,
                          (OFFICIAL_FILE, DEFAULT_PATH, Path("dsprites-dataset") / OFFICIAL_FILE), ("*.npz",))


def _read_member(z: zipfile.ZipFile, name: str, path: Path) -> np.ndarray:
    try:
        with z.open(name) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except KeyError:
        raise VaelabError(f"{path}: no {name[:-4]!r} array in the npz (not a dSprites file?)") from None
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise VaelabError(f"{path}: {name[:-4]!r} is a pickled object array; refusing to unpickle it") from None
        raise VaelabError(f"{path}: cannot read {name[:-4]!r} ({e}); the file may be truncated") from None
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise VaelabError(f"{path}: cannot read {name[:-4]!r} ({e}); the file may be truncated or corrupt") from None


def factor_table(classes: np.ndarray, values: np.ndarray, path: Path | str = "npz"):
    """Validate ``latents_classes`` / ``latents_values`` against the official grid.

    Returns (names, sizes, values) of all columns (hidden ones included)."""
    if classes.ndim != 2 or values.shape != classes.shape:
        raise VaelabError(f"{path}: latents_classes {classes.shape} and latents_values {values.shape} "
                          f"must both be N x 6 (or N x 5 without colour)")
    k = classes.shape[1]
    if k not in (5, 6):
        raise VaelabError(f"{path}: expected 6 latents (colour, shape, scale, orientation, posX, posY) or 5 "
                          f"(without colour), got {k}")
    off = 6 - k
    names, sizes, vals = list(FACTOR_NAMES[off:]), [], []
    for j in range(k):
        name, official = FACTOR_NAMES[off + j], FACTOR_VALUES[off + j]
        c = classes[:, j].astype(np.int64)
        n = int(c.max()) + 1 if len(c) else 0
        if len(c) and int(c.min()) < 0 or n > FACTOR_SIZES[off + j]:
            raise VaelabError(f"{path}: {name} classes must lie in [0, {FACTOR_SIZES[off + j]}), "
                              f"got [{int(c.min())}, {n - 1}]")
        if len(c) and (np.bincount(c, minlength=n) == 0).any():
            raise VaelabError(f"{path}: {name} classes skip some values in 0..{n - 1}")
        v = np.zeros(n, dtype=np.float64)
        v[c] = values[:, j]
        if not np.allclose(v[c], values[:, j], rtol=0, atol=1e-6):
            raise VaelabError(f"{path}: latents_values of {name} are not constant per class")
        dist = np.abs(v[:, None] - official[None, :]).min(axis=1)
        if n and dist.max() > 1e-4:
            raise VaelabError(f"{path}: {name} values {np.round(v, 4).tolist()} are not dSprites values "
                              f"{np.round(official, 4).tolist()}")
        if np.any(np.diff(v) <= 0):
            raise VaelabError(f"{path}: {name} classes are not in increasing value order")
        sizes.append(n)
        vals.append(v)
    return names, sizes, vals


def _bases(sizes) -> np.ndarray:
    sizes = np.asarray(sizes, dtype=np.int64)
    return np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)


def _extract(path: Path, entry: Path, key: dict):
    """Stream ``imgs`` out of the npz into the cache entry (canonical order, 0/255)."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise VaelabError(f"{path}: not a readable npz ({e}); it may be truncated — download it again "
                          f"(`vaelab data fetch dsprites`)") from None
    with z:
        classes = _read_member(z, "latents_classes.npy", path)
        values = _read_member(z, "latents_values.npy", path)
        orig = None
        if "original_dataset_indices.npy" in z.namelist():
            orig = _read_member(z, "original_dataset_indices.npy", path)
        names, sizes, vals = factor_table(classes, values, path)
        visible = [j for j, s in enumerate(sizes) if s > 1]
        vis_sizes = [sizes[j] for j in visible]
        n = classes.shape[0]
        f = classes[:, visible].astype(np.int64)
        flat = f @ _bases(vis_sizes)
        is_grid = n == int(np.prod(vis_sizes)) and np.array_equal(np.sort(flat), np.arange(n))
        in_order = is_grid and np.array_equal(flat, np.arange(n))
        if is_grid and not in_order:
            factors = np.empty_like(f)
            factors[flat] = f
        else:
            factors = f
        try:
            fp = z.open("imgs.npy")
        except KeyError:
            raise VaelabError(f"{path}: no 'imgs' array in the npz (not a dSprites file?)") from None
        with fp:
            try:
                version = np.lib.format.read_magic(fp)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
                else:
                    shape, fortran, dtype = np.lib.format._read_array_header(fp, version)
            except (ValueError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
                raise VaelabError(f"{path}: cannot read 'imgs' ({e})") from None
            if dtype.itemsize != 1 or dtype.kind not in "ub" or fortran:
                raise VaelabError(f"{path}: 'imgs' must be a C-ordered uint8 array, got {dtype} "
                                  f"{'Fortran' if fortran else 'C'}-ordered")
            if len(shape) == 4 and shape[1] == 1:
                shape = (shape[0], shape[2], shape[3])
            if len(shape) != 3 or shape[0] != n:
                raise VaelabError(f"{path}: 'imgs' has shape {shape}, expected {n} x 64 x 64 "
                                  f"(one image per latents row)")
            h, w = int(shape[1]), int(shape[2])

            def fill(out):
                scale = None
                per = h * w
                with progress(total=n, desc=f"extracting {path.name}") as bar:
                    for i0, buf in member_chunks(fp, n, per, _CHUNK, path, "imgs"):
                        r = len(buf) // per
                        chunk = np.frombuffer(buf, dtype=np.uint8).reshape(r, 1, h, w)
                        top = int(chunk.max()) if r else 0
                        if scale is None and top > 0:
                            scale = 255 if top == 1 else 1  # docs/conventions.md#tensors: 0/1 pixels -> 0/255
                        if scale == 255 and top > 1:
                            raise VaelabError(f"{path}: 'imgs' mixes 0/1 and 0..255 pixels")
                        chunk = chunk * np.uint8(scale or 1)
                        if in_order or not is_grid:
                            out[i0:i0 + r] = chunk
                        else:
                            out[flat[i0:i0 + r]] = chunk
                        bar.update(r)
                return {"pixel_scale": scale or 1}

            arrays = {"factors": factors}
            if orig is not None:
                o = np.asarray(orig, dtype=np.int64)
                if is_grid and not in_order:
                    oo = np.empty_like(o)
                    oo[flat] = o
                    o = oo
                arrays["original_indices"] = o
            manifest = {"key": key, "source": str(path.resolve()), "source_kind": "npz", "count": n,
                        "factor_names": names, "factor_sizes": sizes, "factor_values": [v.tolist() for v in vals],
                        "visible": visible, "is_grid": bool(is_grid), "reordered": bool(is_grid and not in_order)}
            return build_entry(entry, (n, 1, h, w), fill, manifest, arrays)


def load_dsprites(root: Path | None = None, split: str = "train", size: int | None = None, *,
                  force: bool = False) -> FactorDataset:
    """dSprites from the official npz (or a subset with the same keys); see the module docstring."""
    require_grid_split("dsprites", split)
    path = resolve(root)
    key = {"kind": "dsprites", "v": 1, "source": str(path.resolve()), **file_stat(path)}
    entry = cache_entry(f"dsprites-{path.stem}", key)
    manifest = None if force else read_manifest(entry)
    images = None
    if manifest is not None and manifest.get("key") == key:
        images = open_entry(entry, manifest)
    if images is None:
        images, manifest = _extract(path, entry, key)
    h = images.shape[-1]
    if size is not None and int(size) != h:
        raise VaelabError(f"dsprites images are {h} x {h}; size {size} is not available (drop --size)")
    factors = load_array(entry, "factors")
    visible = manifest["visible"]
    names = [manifest["factor_names"][j] for j in visible]
    sizes = [int(manifest["factor_sizes"][j]) for j in visible]
    values = [np.asarray(manifest["factor_values"][j], dtype=np.float64) for j in visible]
    meta = {"cache": str(entry), "pixel_scale": manifest.get("pixel_scale", 255),
            "hidden_factors": [manifest["factor_names"][j] for j in range(len(manifest["factor_names"]))
                               if j not in visible],
            "shape_names": list(SHAPE_NAMES)}
    if "original_indices" in manifest.get("arrays", []):
        meta["original_indices"] = load_array(entry, "original_indices")
    return FactorDataset(images=torch.from_numpy(images), factors=torch.from_numpy(factors),
                         factor_names=names, factor_sizes=sizes, factor_values=values,
                         is_grid=bool(manifest["is_grid"]), name="dsprites", source=str(path), meta=meta)


register(DatasetSpec(
    name="dsprites",
    loader=load_dsprites,
    description="dSprites: 2-D shapes, 5 factors, full grid (official npz or a subset with its keys)",
    factors=[(n, s) for n, s in zip(FACTOR_NAMES[1:], FACTOR_SIZES[1:])],
    count=737_280,
    image_shape=(1, 64, 64),
    files=[DEFAULT_PATH],
    fetch_command="vaelab data fetch dsprites",
    source="deepmind/dsprites-dataset (Matthey et al. 2017), Apache 2.0",
    locate=locate,
))
