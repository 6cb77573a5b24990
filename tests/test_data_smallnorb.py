"""SmallNORB importer on tiny files written in the NORB binary format (official names, small dims).

Synthetic release: categories {0, 1}, training instances {4, 6}, testing instances {0, 1}, elevations
{0, 3}, azimuths {0, 2, 34}, lightings {0, 5}: 2 x 2 x 3 x 2 = 24 visible combinations x 4 instances
= 96 images, 48 per split, rows shuffled. Camera 0 spells each image's labels in its first pixels;
camera 1 is all 255 (never used).
"""
from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
from PIL import Image

from vaelab.data import load
from vaelab.data.registry import get
from vaelab.data.smallnorb import CHUNKS, FILES, MAGIC_INT32, MAGIC_UINT8
from vaelab.errors import VaelabError

TRAIN_INST, TEST_INST = (4, 6), (0, 1)
CATS, ELEVS, AZIMS, LIGHTS = (0, 1), (0, 3), (0, 2, 34), (0, 5)


def write_matrix(path, arr, *, magic=None, gz=False, cut=None):
    arr = np.ascontiguousarray(arr)
    if magic is None:
        magic = MAGIC_UINT8 if arr.dtype == np.uint8 else MAGIC_INT32
    dims = list(arr.shape)
    header = np.array([magic, len(dims)] + dims + [1] * (3 - len(dims)), "<i4").tobytes()
    data = header + (arr if arr.dtype == np.uint8 else arr.astype("<i4")).tobytes()
    if cut is not None:
        data = data[:cut]
    path.write_bytes(gzip.compress(data) if gz else data)


def labels_of(instances):
    rows = [(c, i, e, a, lt) for c, i, e, a, lt in itertools.product(CATS, instances, ELEVS, AZIMS, LIGHTS)]
    return np.array(rows, dtype=np.int32)


def make_split(lab, side, seed):
    lab = lab[np.random.default_rng(seed).permutation(len(lab))]
    dat = np.full((len(lab), 2, side, side), 255, np.uint8)
    dat[:, 0] = 0
    dat[:, 0, 0, :5] = lab  # category, instance, elevation, raw azimuth, lighting
    dat[:, 0, 1:, :] = np.random.default_rng(seed + 10).integers(0, 200, size=(len(lab), side - 1, side))
    return lab, dat


def write_release(folder, *, side=12, gz=False, test_instances=TEST_INST, overrides=None):
    """Write the six files; returns {split: (labels, dat)}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for (split, stem), inst, seed in zip(CHUNKS, (TRAIN_INST, test_instances), (0, 1)):
        lab, dat = make_split(labels_of(inst), side, seed)
        out[split] = (lab, dat)
        suffix = ".gz" if gz else ""
        arrays = {"dat": dat, "cat": lab[:, 0], "info": lab[:, 1:]}
        for part, arr in arrays.items():
            name = f"{stem}-{part}.mat"
            kw = (overrides or {}).get(name, {})
            write_matrix(folder / (name + suffix), kw.pop("array", arr), gz=gz, **kw)
    return out


def test_merged_grid_hidden_instance_and_pixels(tmp_path, data_home, monkeypatch):
    folder = data_home / "smallnorb"
    assert not get("smallnorb").present(data_home)
    write_release(folder)
    assert get("smallnorb").present(data_home)
    ds = load("smallnorb", size=12)
    assert len(ds) == 96 and tuple(ds.images.shape) == (96, 1, 12, 12)
    assert ds.factor_names == ["category", "elevation", "azimuth", "lighting"]
    assert ds.factor_sizes == [2, 2, 3, 2] and ds.is_grid and ds.hidden_size == 4
    assert ds.meta["hidden_factors"] == ["instance"] and ds.meta["instances"] == [0, 1, 4, 6]
    assert ds.meta["instances_by_split"] == {"train": [4, 6], "test": [0, 1]}
    np.testing.assert_allclose(ds.factor_values[1], [30, 45])     # elevation degrees
    np.testing.assert_allclose(ds.factor_values[2], [0, 20, 340])  # azimuth degrees (raw 0, 2, 34)
    np.testing.assert_allclose(ds.factor_values[3], [0, 5])
    assert ds.meta["category_names"] == ["animal", "human"]
    # every image sits at visible_index * 4 + instance class, and shows camera 0
    px = ds.images.numpy()[:, 0, 0, :5].astype(int)
    f = ds.factors.numpy()
    np.testing.assert_array_equal(px[:, 0], np.asarray(CATS)[f[:, 0]])
    np.testing.assert_array_equal(px[:, 2], np.asarray(ELEVS)[f[:, 1]])
    np.testing.assert_array_equal(px[:, 3], np.asarray(AZIMS)[f[:, 2]])
    np.testing.assert_array_equal(px[:, 4], np.asarray(LIGHTS)[f[:, 3]])
    np.testing.assert_array_equal(px[:, 1], np.tile([0, 1, 4, 6], 24))
    assert ds.images.numpy()[:, :, 1:].max() < 255  # camera 1 (all 255) is never used
    # index_of with an explicit instance, and random instances through the rng
    row = ds.index_of([[1, 0, 2, 1]], hidden=3)[0]
    assert tuple(px[row]) == (1, 6, 0, 34, 5)
    got = ds.images_for(np.tile([[1, 1, 0, 0]], (400, 1)), np.random.default_rng(0)).numpy()[:, 0, 0, :5]
    assert set(got[:, 1].tolist()) == {0, 1, 4, 6} and set(map(tuple, got[:, [0, 2, 3, 4]])) == {(1, 3, 0, 0)}
    import vaelab.data.smallnorb as norb

    monkeypatch.setattr(norb, "_fill_images", None)  # a second load must not decode again
    again = load("smallnorb", size=12)
    assert again.meta["cache"] == ds.meta["cache"] and again.hidden_size == 4
    assert "hidden: instance" in ds.describe()


def test_gzipped_files_resized_like_dlib(tmp_path, data_home):
    """Default size 64 from 96 x 96: Pillow Lanczos on the uint8 image (dlib's PIL ANTIALIAS)."""
    root = tmp_path / "norb"
    raw = write_release(root, side=96, gz=True)
    ds = load("smallnorb", root=root)
    assert tuple(ds.images.shape) == (96, 1, 64, 64)
    lab, dat = raw["test"]
    k = 5  # one testing image: find it in the grid through its labels
    c, inst, e, a, lt = lab[k]
    visible = [CATS.index(c), ELEVS.index(e), AZIMS.index(a), LIGHTS.index(lt)]
    row = ds.index_of([visible], hidden=ds.meta["instances"].index(inst))[0]
    want = np.asarray(Image.fromarray(dat[k, 0], "L").resize((64, 64), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(ds.images[row, 0].numpy(), want)


def test_errors_missing_magic_truncated_coverage(tmp_path, data_home):
    with pytest.raises(VaelabError, match="vaelab data fetch smallnorb") as e:
        load("smallnorb")
    assert "\n" not in str(e.value) and FILES[0] in str(e.value)

    bad = tmp_path / "magic"
    write_release(bad, overrides={FILES[1]: {"magic": 0x1E3D4C51}})
    with pytest.raises(VaelabError, match="not a SmallNORB matrix.*0x1e3d4c51"):
        load("smallnorb", root=bad)

    short = tmp_path / "short"
    write_release(short, overrides={FILES[0]: {"cut": 5000}})
    with pytest.raises(VaelabError, match="truncated") as e:
        load("smallnorb", root=short, size=12)
    assert FILES[0] in str(e.value) and "\n" not in str(e.value)

    gz = tmp_path / "gz"
    write_release(gz, gz=True)
    p = gz / (FILES[2] + ".gz")
    p.write_bytes(p.read_bytes()[:-9])  # cut-short gzip stream
    with pytest.raises(VaelabError, match="truncated|corrupt"):
        load("smallnorb", root=gz, size=12)

    overlap = tmp_path / "overlap"  # testing reuses a training instance: one image per slot is lost
    write_release(overlap, test_instances=(0, 4))
    with pytest.raises(VaelabError, match=r"do not cover the grid .*instance 3 exactly once .*24 repeated"):
        load("smallnorb", root=overlap, size=12)

    odd = tmp_path / "odd"
    lab = labels_of(TRAIN_INST)
    lab[3, 3] = 3
    write_release(odd, overrides={FILES[2]: {"array": lab[:, 1:]}})
    with pytest.raises(VaelabError, match="azimuth values must be even"):
        load("smallnorb", root=odd, size=12)

    with pytest.raises(VaelabError, match="no 'test' split"):
        load("smallnorb", root=bad, split="test")
