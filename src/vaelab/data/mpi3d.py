"""MPI3D (rr-learning/disentanglement_dataset; Gondal et al. 2019): a robot arm's object under 7 factors.

One npz per variant, key ``images`` (N x 64 x 64 x 3 uint8) in canonical grid order (last factor
fastest); no labels are stored -- the order *is* the labelling (dataset README)::

    variant       file                                    object_color, object_shape, size, camera, bg, h, v
    toy           mpi3d_toy.npz                           6, 6, 2, 3, 3, 40, 40  (1,036,800 images)
    realistic     mpi3d_realistic.npz                     6, 6, 2, 3, 3, 40, 40
    real          mpi3d_real.npz                          6, 6, 2, 3, 3, 40, 40
    real_complex  real3d_complicated_shapes_ordered.npz   4, 4, 2, 3, 3, 40, 40  (460,800)
                  (or mpi3d_real_complex.npz)

dlib hard-codes 4, 4 for toy/realistic (the first release); docs/datasets.md#mpi3d follows the dataset README (6, 6),
and the image count must match. The npz is opened without unpickling. An uncompressed ``images``
member (``np.savez``, as published) is memory-mapped in place (zero copy, ``N x C x H x W`` as a
permuted view); a compressed one is streamed once into a cached ``N x 3 x 64 x 64`` copy.

The download links in old copies of the README are dead (rr-learning/disentanglement_dataset#3, #4):
there is no ``vaelab data fetch mpi3d``; the error for a missing file says where the data is published.
"""
from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError, closest
from .base import FactorDataset
from .prepare import build_entry, cache_entry, file_stat, member_chunks, open_entry, progress, read_manifest
from .registry import DatasetSpec, missing_data, register, require_grid_split

FOLDER = "mpi3d"
PUBLISHED = "https://github.com/rr-learning/disentanglement_dataset"
FETCH_HINT = (f"download the npz named in the README of {PUBLISHED} (mpi3d_toy.npz, mpi3d_realistic.npz, "
              f"mpi3d_real.npz or real3d_complicated_shapes_ordered.npz) into the data directory's {FOLDER}/ folder")

FACTOR_NAMES = ("object_color", "object_shape", "object_size", "camera_height", "background_color",
                "horizontal_axis", "vertical_axis")
VARIANTS = ("toy", "realistic", "real", "real_complex")
DEFAULT_VARIANT = "toy"  # dlib's MPI3D(mode="mpi3d_toy")
# variant -> accepted file names (the first is the canonical one)
FILES = {
    "toy": ("mpi3d_toy.npz",),
    "realistic": ("mpi3d_realistic.npz",),
    "real": ("mpi3d_real.npz",),
    "real_complex": ("real3d_complicated_shapes_ordered.npz", "mpi3d_real_complex.npz"),
}
# variant -> factor sizes (dataset README; docs/datasets.md#mpi3d). A table, so tests can shrink it.
FACTOR_SIZES = {
    "toy": (6, 6, 2, 3, 3, 40, 40),
    "realistic": (6, 6, 2, 3, 3, 40, 40),
    "real": (6, 6, 2, 3, 3, 40, 40),
    "real_complex": (4, 4, 2, 3, 3, 40, 40),
}
_SIMPLE_CLASSES = {  # dataset README
    "object_color": ("white", "green", "red", "blue", "brown", "olive"),
    "object_shape": ("cone", "cube", "cylinder", "hexagonal", "pyramid", "sphere"),
}
CLASS_NAMES = {
    "toy": _SIMPLE_CLASSES, "realistic": _SIMPLE_CLASSES, "real": _SIMPLE_CLASSES,
    "real_complex": {"object_color": ("yellow", "green", "olive", "red"),
                     "object_shape": ("coffee-cup", "tennis-ball", "croissant", "beer-cup")},
}
_COMMON_CLASSES = {"object_size": ("small", "large"), "camera_height": ("top", "center", "bottom"),
                   "background_color": ("purple", "sea green", "salmon")}
_CHUNK = 2048  # images per read while streaming a compressed npz


def _check_variant(variant: str) -> str:
    if variant not in FILES:
        raise VaelabError(f"unknown MPI3D variant {variant!r}{closest(str(variant), FILES)}; "
                          f"choose one of {', '.join(VARIANTS)}")
    return variant


def _variant_of(path: Path) -> str | None:
    for v, names in FILES.items():
        if path.name in names:
            return v
    return None


def locate(data_dir: Path) -> Path | None:
    folder = Path(data_dir) / FOLDER
    for v in VARIANTS:
        for name in FILES[v]:
            if (folder / name).is_file():
                return folder / name
    return None


def resolve(root: Path | None, variant: str | None) -> tuple[Path, str]:
    """(npz to read, variant). ``root``: the npz itself, or a folder holding it (or its ``mpi3d/``, or
    dlib's ``mpi3d_<variant>/``); default ``<data>/mpi3d``. The variant is the one asked for; else, for
    a file, the one its name says (toy when it says none); else the first of toy, realistic, real,
    real_complex whose file is there."""
    from .. import paths

    if variant is not None:
        _check_variant(variant)
    if root is not None and Path(root).is_file():
        root = Path(root)
        return root, variant if variant is not None else (_variant_of(root) or DEFAULT_VARIANT)
    folder = paths.data_dir() / FOLDER if root is None else Path(root)
    for v in ([variant] if variant is not None else VARIANTS):
        where = [folder] if root is None else [folder, folder / FOLDER, folder / f"mpi3d_{v}"]
        for d in where:
            for name in FILES[v]:
                if (d / name).is_file():
                    return d / name, v
    raise missing_data("mpi3d", folder / FILES[variant or DEFAULT_VARIANT][0], FETCH_HINT)


# ----------------------------------------------------------------------------- npz member access
def _read_npy_header(fp, path: Path):
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fp)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(fp)
        return np.lib.format._read_array_header(fp, version)
    except (ValueError, zipfile.BadZipFile, EOFError, OSError, zlib.error, struct.error) as e:
        raise VaelabError(f"{path}: cannot read 'images' ({e}); the file may be truncated or corrupt") from None


def _check_images(shape, fortran, dtype, path: Path, variant: str, sizes) -> tuple[int, int, int, int]:
    if dtype != np.uint8 or fortran:
        raise VaelabError(f"{path}: 'images' must be a C-ordered uint8 array, got {dtype}"
                          f"{' (Fortran order)' if fortran else ''}")
    if len(shape) == 3:
        shape = tuple(shape) + (1,)
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise VaelabError(f"{path}: 'images' must be N x H x W x 3, got shape {tuple(shape)}")
    _check_count(int(shape[0]), path, variant, sizes)
    return tuple(int(s) for s in shape)


def _check_count(n: int, path: Path, variant: str, sizes) -> None:
    want = int(np.prod(sizes))
    if n != want:
        other = [v for v in VARIANTS if int(np.prod(FACTOR_SIZES[v])) == n]
        hint = f"; pass variant={other[0]!r}" if other and variant not in other else ""
        raise VaelabError(f"{path}: {n:,} images, but MPI3D {variant} has {want:,} "
                          f"({' x '.join(map(str, sizes))}){hint}")


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """File offset of a stored (uncompressed) zip member's bytes (after its local header)."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise VaelabError(f"{path}: corrupt zip local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len


def load_mpi3d(root: Path | None = None, split: str = "train", size: int | None = None, *,
               variant: str | None = None, force: bool = False) -> FactorDataset:
    """MPI3D ``variant`` (toy, realistic, real, real_complex; default: see :func:`resolve`)."""
    require_grid_split("mpi3d", split)
    path, variant = resolve(root, variant)
    sizes = tuple(int(s) for s in FACTOR_SIZES[variant])
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise VaelabError(f"{path}: not a readable npz ({e}); it may be truncated — download it again") from None
    with z:
        try:
            info = z.getinfo("images.npy")
        except KeyError:
            raise VaelabError(f"{path}: no 'images' array in the npz (found "
                              f"{', '.join(n[:-4] for n in z.namelist()) or 'nothing'}); not an MPI3D file?") from None
        if info.compress_type == zipfile.ZIP_STORED:
            start = _data_offset(path, info)
            with open(path, "rb") as f:
                f.seek(start)
                shape, fortran, dtype = _read_npy_header(f, path)
                offset = f.tell()
            n, h, w, c = _check_images(shape, fortran, dtype, path, variant, sizes)
            need = offset + n * h * w * c
            if path.stat().st_size < need:
                raise VaelabError(f"{path}: truncated ({path.stat().st_size:,} bytes, the images need {need:,}); "
                                  f"download it again")
            mm = np.memmap(path, dtype=np.uint8, mode="c", offset=offset, shape=(n, h, w, c))
            images = torch.from_numpy(mm).permute(0, 3, 1, 2)  # N x C x H x W view, zero copy
            meta = {"storage": "memory-mapped from the npz (NHWC, permuted view)"}
        else:
            key = {"kind": "mpi3d", "v": 1, "source": str(path.resolve()), **file_stat(path)}
            entry = cache_entry(f"mpi3d-{path.stem}", key)
            manifest = None if force else read_manifest(entry)
            arr = open_entry(entry, manifest) if manifest is not None and manifest.get("key") == key else None
            if arr is not None:
                _check_count(int(arr.shape[0]), path, variant, sizes)
            if arr is None:
                with z.open(info) as fp:
                    shape, fortran, dtype = _read_npy_header(fp, path)
                    n, h, w, c = _check_images(shape, fortran, dtype, path, variant, sizes)

                    def fill(out):
                        per = h * w * c
                        with progress(total=n, desc=f"extracting {path.name}") as bar:
                            for i0, buf in member_chunks(fp, n, per, _CHUNK, path, "images"):
                                r = len(buf) // per
                                out[i0:i0 + r] = np.frombuffer(buf, np.uint8).reshape(r, h, w, c).transpose(0, 3, 1, 2)
                                bar.update(r)

                    arr, manifest = build_entry(entry, (n, c, h, w), fill,
                                                {"key": key, "source": str(path.resolve()), "count": n})
            images = torch.from_numpy(arr)
            meta = {"cache": str(entry), "storage": "cached copy (N x C x H x W)"}
    h = int(images.shape[-1])
    if size is not None and int(size) != h:
        raise VaelabError(f"mpi3d images are {h} x {h}; size {size} is not available (drop --size)")
    visible = [j for j, s in enumerate(sizes) if s > 1]
    vis_sizes = [sizes[j] for j in visible]
    factors = np.stack(np.unravel_index(np.arange(len(images)), vis_sizes), axis=1).astype(np.int64)
    classes = {**_COMMON_CLASSES, **CLASS_NAMES[variant]}
    meta.update(variant=variant, hidden_factors=[FACTOR_NAMES[j] for j in range(len(sizes)) if j not in visible],
                class_names={FACTOR_NAMES[j]: list(classes[FACTOR_NAMES[j]][:sizes[j]])
                             for j in visible if FACTOR_NAMES[j] in classes})
    return FactorDataset(images=images, factors=torch.from_numpy(factors),
                         factor_names=[FACTOR_NAMES[j] for j in visible], factor_sizes=vis_sizes,
                         factor_values=[np.arange(s, dtype=np.float64) for s in vis_sizes], is_grid=True,
                         name="mpi3d", source=str(path), meta=meta)


register(DatasetSpec(
    name="mpi3d",
    loader=load_mpi3d,
    description="MPI3D: a robot-held object, 7 factors, full grid; option variant = toy (default), realistic, "
                "real or real_complex (4 colours x 4 shapes, 460,800 images)",
    factors=list(zip(FACTOR_NAMES, FACTOR_SIZES[DEFAULT_VARIANT])),
    count=int(np.prod(FACTOR_SIZES[DEFAULT_VARIANT])),
    image_shape=(3, 64, 64),
    fetch_command=FETCH_HINT,
    source=f"{PUBLISHED} (Gondal et al. 2019), CC BY 4.0",
    locate=locate,
))
