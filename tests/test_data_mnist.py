"""MNIST IDX reader: the real test split, raw files, and broken files."""
from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from vaelab.data import load
from vaelab.errors import VaelabError


@pytest.fixture(scope="module")
def mnist_dir(shared_data):
    d = shared_data / "mnist"
    if not (d / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST test files missing in {d}")
    return d


def test_real_test_split(mnist_dir):
    ds = load("mnist", root=mnist_dir, split="test")
    assert tuple(ds.images.shape) == (10_000, 1, 28, 28)
    assert str(ds.images.dtype) == "torch.uint8"
    assert ds.factor_names == ["digit"] and ds.factor_sizes == [10] and not ds.is_grid
    assert ds.factors[:5, 0].tolist() == [7, 2, 1, 0, 4]  # the first t10k labels
    counts = np.bincount(ds.factors[:, 0].numpy(), minlength=10)
    assert counts.sum() == 10_000 and (counts > 800).all()
    assert int(ds.images.max()) == 255
    # images_for draws an image with the asked digit
    imgs = ds.images_for(np.array([[3], [3]]), rng=np.random.default_rng(0))
    assert imgs.shape == (2, 1, 28, 28)


def _copy_raw(mnist_dir, dest):
    dest.mkdir()
    for n in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(mnist_dir / f"{n}.gz") as f:
            (dest / n).write_bytes(f.read())
    return dest


def test_raw_files_resize_and_missing_train(mnist_dir, tmp_path):
    raw = _copy_raw(mnist_dir, tmp_path / "raw")
    ds = load("mnist", root=raw / "t10k-images-idx3-ubyte", split="test", size=32)
    assert tuple(ds.images.shape) == (10_000, 1, 32, 32)
    with pytest.raises(VaelabError) as e:
        load("mnist", root=raw, split="train")
    assert "train-images-idx3-ubyte" in str(e.value) and "vaelab data fetch mnist" in str(e.value)
    with pytest.raises(VaelabError, match="'val'"):
        load("mnist", root=raw, split="val")


@pytest.mark.parametrize("problem, message", [
    ("truncated_gz", "truncated or corrupt gzip"),
    ("truncated_idx", "truncated IDX"),
    ("bad_magic", "magic number"),
    ("count_mismatch", "labels"),
])
def test_broken_files(mnist_dir, tmp_path, problem, message):
    d = tmp_path / "m"
    d.mkdir()
    img, lab = d / "t10k-images-idx3-ubyte.gz", d / "t10k-labels-idx1-ubyte.gz"
    shutil.copy(mnist_dir / img.name, img)
    shutil.copy(mnist_dir / lab.name, lab)
    broken = img
    if problem == "truncated_gz":
        data = img.read_bytes()
        img.write_bytes(data[: len(data) // 3])
    elif problem == "truncated_idx":
        raw = gzip.decompress(img.read_bytes())
        img.unlink()
        broken = d / "t10k-images-idx3-ubyte"
        broken.write_bytes(raw[:-1000])
    elif problem == "bad_magic":
        raw = bytearray(gzip.decompress(lab.read_bytes()))
        raw[3] = 3
        lab.write_bytes(gzip.compress(bytes(raw)))
        broken = lab
    elif problem == "count_mismatch":
        raw = gzip.decompress(lab.read_bytes())
        n = 9_999
        lab.write_bytes(gzip.compress(raw[:4] + n.to_bytes(4, "big") + raw[8:8 + n]))
    with pytest.raises(VaelabError) as e:
        load("mnist", root=d, split="test")
    msg = str(e.value)
    assert message in msg and str(broken) in msg and "\n" not in msg
