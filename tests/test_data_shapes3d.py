"""3D Shapes importer on small h5 files written in the official layout."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from vaelab.data import load
from vaelab.data.shapes3d import FACTOR_VALUES
from vaelab.errors import VaelabError

h5py = pytest.importorskip("h5py")

SEL = [[0, 3], [1, 9], [2, 5], [0, 7], [0, 3], [0, 7, 14]]  # official class indices kept per factor


def _write(path, *, order=None, compression=None, rows=None):
    grids = np.meshgrid(*[np.arange(len(s)) for s in SEL], indexing="ij")
    sub = np.stack([g.ravel() for g in grids], axis=1)
    labels = np.stack([FACTOR_VALUES[j][np.asarray(SEL[j])[sub[:, j]]] for j in range(6)], axis=1)
    n = len(sub)
    images = np.zeros((n, 64, 64, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256  # image number in a pixel
    images[:, 0, 0, 1] = np.arange(n) // 256
    images[:, 5, :, 2] = 200
    if order is not None:
        images, labels = images[order], labels[order]
    if rows is not None:
        images, labels = images[rows], labels[rows]
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, compression=compression)
        f.create_dataset("labels", data=labels)
    return images, labels, sub


def _number(imgs):
    return imgs[:, 0, 0, 0].astype(int) + 256 * imgs[:, 1, 0, 0].astype(int)


def test_contiguous_subgrid_memory_mapped(tmp_path, data_home):
    p = tmp_path / "3dshapes.h5"
    images, labels, sub = _write(p)
    ds = load("shapes3d", root=tmp_path)
    assert tuple(ds.images.shape) == (len(sub), 3, 64, 64)
    assert ds.factor_names == ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
    assert ds.factor_sizes == [2, 2, 2, 2, 2, 3] and ds.is_grid
    np.testing.assert_allclose(ds.factor_values[3], [0.75, 1.25])
    np.testing.assert_allclose(ds.factor_values[5], [-30, 0, 30])
    assert "memory-mapped" in ds.meta["storage"]
    f = np.array([[1, 0, 1, 1, 0, 2], [0, 1, 0, 0, 1, 1]])
    got = ds.images_for(f).numpy()
    np.testing.assert_array_equal(_number(got), ds.index_of(f))
    np.testing.assert_array_equal(got[0].transpose(1, 2, 0), images[ds.index_of(f)[0]])


def test_compressed_and_shuffled_is_cached_in_canonical_order(tmp_path, data_home):
    p = tmp_path / "s.h5"
    n = int(np.prod([len(s) for s in SEL]))
    perm = np.random.default_rng(0).permutation(n)
    _write(p, order=perm, compression="gzip")
    ds = load("shapes3d", root=p)
    assert ds.is_grid and "cache" in ds.meta
    np.testing.assert_array_equal(_number(ds.images.numpy()), np.arange(n))
    np.testing.assert_array_equal(ds.index_of(ds.factors.numpy()), np.arange(n))
    again = load("shapes3d", root=p)
    assert again.meta["cache"] == ds.meta["cache"]


def test_partial_subset_is_labelled_with_official_sizes(tmp_path, data_home):
    p = tmp_path / "part.h5"
    rows = np.sort(np.random.default_rng(0).choice(96, 40, replace=False))
    _write(p, rows=rows)
    ds = load("shapes3d", root=p)
    assert not ds.is_grid
    assert ds.factor_sizes == [10, 10, 10, 8, 4, 15]
    assert len(ds) == 40
    row = ds.factors.numpy()[5]
    assert _number(ds.images_for(row[None], rng=np.random.default_rng(0)).numpy())[0] == rows[5]


def test_bad_labels_truncated_file_and_missing_h5py(tmp_path, data_home, monkeypatch):
    p = tmp_path / "bad.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 64, 64, 3), np.uint8))
        f.create_dataset("labels", data=np.full((2, 6), 0.55))
    with pytest.raises(VaelabError, match="not one of the 3D Shapes values"):
        load("shapes3d", root=p)

    q = tmp_path / "trunc.h5"
    _write(q)
    data = q.read_bytes()
    q.write_bytes(data[: len(data) // 2])
    with pytest.raises(VaelabError) as e:
        load("shapes3d", root=q)
    assert str(q) in str(e.value) and "\n" not in str(e.value)

    with pytest.raises(VaelabError, match="vaelab data fetch shapes3d"):
        load("shapes3d")

    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(VaelabError, match="pip install h5py"):
        load("shapes3d", root=tmp_path / "bad.h5")
