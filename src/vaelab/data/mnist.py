"""MNIST from the original IDX files (gzipped or raw), train and t10k (test).

IDX (docs/datasets.md#mnist): big-endian int32 header -- images: magic 2051, count, rows, cols, then uint8 pixels;
labels: magic 2049, count, then uint8 labels. The digit is a 10-class factor (not a grid).
The whole set is 55 MB of uint8, so it is read into memory (no cache needed).
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from .. import paths
from ..errors import VaelabError, naming
from .base import FactorDataset
from .registry import DatasetSpec, missing_data, register

BASE_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # mirror used by torchvision
FILES = {  # split -> (images, labels) base names (".gz" optional on disk)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
COUNTS = {"train": 60_000, "test": 10_000}
MD5 = {  # of the .gz files (docs/datasets.md#mnist)
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def _find(folder: Path, base: str) -> Path | None:
    for sub in ("", "mnist", "MNIST/raw", "raw"):
        d = folder / sub if sub else folder
        for name in (base, base + ".gz", base.replace("-idx", ".idx")):  # some mirrors use t10k-images.idx3-ubyte
            p = d / name
            if p.is_file():
                return p
    return None


def _folder(root: Path | None) -> Path:
    if root is None:
        return paths.data_dir() / "mnist"
    root = Path(root)
    return root.parent if root.is_file() else root


def locate(data_dir: Path) -> Path | None:
    d = Path(data_dir) / "mnist"
    return d if all(_find(d, b) for pair in FILES.values() for b in pair) else None


def read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Read one IDX file (raw or .gz) with the given magic; every problem is one clear line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise VaelabError(f"{path}: truncated or corrupt gzip ({e or 'unexpected end of data'}); download it "
                          f"again (`vaelab data fetch mnist`)") from None
    except OSError as e:
        raise VaelabError(f"cannot read {path}: {e}") from None
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise VaelabError(f"{path}: truncated IDX file ({len(raw)} bytes, header alone is {head})")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        kind = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}[magic]
        raise VaelabError(f"{path}: not an IDX {kind} file (magic number {got}, expected {magic})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    need = head + int(np.prod(dims))
    if len(raw) < need:
        raise VaelabError(f"{path}: truncated IDX file ({len(raw):,} bytes, the header announces {need:,})")
    if len(raw) > need:
        raise VaelabError(f"{path}: {len(raw) - need:,} unexpected bytes after the IDX data (corrupt file?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, Path]:
    img_base, lab_base = FILES[split]
    img, lab = _find(folder, img_base), _find(folder, lab_base)
    if img is None or lab is None:
        missing = folder / ((img_base if img is None else lab_base) + ".gz")
        here = [s for s in FILES if s != split and all(_find(folder, b) for b in FILES[s])]
        if here:  # the other split's files are there (the test set alone is a common download)
            other = here[0]
            raise naming("mnist: {folder} holds the {other} split only (no {file}): pass {pass_split}, or get "
                         "the {split} files with `vaelab data fetch mnist`", folder=str(folder), file=missing.name,
                         other=other, split=split, pass_split=(
                             f"split={other!r}",
                             f"--split {other} (--set data.split={other} when training)"))
        raise missing_data("mnist", missing, "vaelab data fetch mnist")
    images = read_idx(img, IMAGES_MAGIC, 3)
    labels = read_idx(lab, LABELS_MAGIC, 1)
    if len(images) != len(labels):
        raise VaelabError(f"{img} holds {len(images):,} images but {lab} holds {len(labels):,} labels")
    if len(labels) and labels.max() > 9:
        raise VaelabError(f"{lab}: labels must be digits 0..9, found {int(labels.max())}")
    return images, labels, img


def load_mnist(root: Path | None = None, split: str = "train", size: int | None = None, *,
               force: bool = False) -> FactorDataset:
    """MNIST ``split`` ("train" 60,000, "test" 10,000, "all" both) as N x 1 x 28 x 28 uint8 (or resized)."""
    folder = _folder(root)
    if root is not None and not Path(root).exists():
        raise missing_data("mnist", root, "vaelab data fetch mnist")
    if split == "all":
        parts = [read_split(folder, s) for s in ("train", "test")]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        where = parts[0][2].parent
    elif split in FILES:
        images, labels, img_path = read_split(folder, split)
        where = img_path.parent
    else:
        raise VaelabError(f"mnist has splits 'train', 'test' and 'all', not {split!r} (for a validation set "
                          f"use vaelab.data.splits.train_val_split)")
    if size is not None and int(size) != images.shape[-1]:
        images = _resize(images, int(size))
    else:
        images = np.array(images)  # own, writable memory
    return FactorDataset(images=torch.from_numpy(images).unsqueeze(1), factors=torch.from_numpy(
        labels.astype(np.int64)[:, None]), factor_names=["digit"], factor_sizes=[10],
        factor_values=[np.arange(10, dtype=np.float64)], is_grid=False, name="mnist", source=str(where),
        meta={"split": split})


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    from .prepare import check_size

    size = check_size(size)
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i, im in enumerate(images):  # antialiased bilinear (Pillow), as torchvision's Resize on PIL images
        out[i] = np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
    return out


register(DatasetSpec(
    name="mnist",
    loader=load_mnist,
    description="MNIST handwritten digits, 28x28 grey; digit as a 10-class factor (splits train/test/all)",
    factors=[("digit", 10)],
    count=70_000,
    image_shape=(1, 28, 28),
    files=[f"mnist/{n}" for n in MD5],
    fetch_command="vaelab data fetch mnist",
    source="LeCun, Cortes & Burges: MNIST (IDX files)",
    locate=locate,
))
