"""MPI3D importer on tiny npz files: the factor-size table is shrunk (the real files hold 1,036,800 images).

Each synthetic image spells its own row in its first pixels, so the grid order can be checked.
"""
from __future__ import annotations

import numpy as np
import pytest

import vaelab.data.mpi3d as mpi3d
from vaelab.data import load
from vaelab.data.registry import get
from vaelab.errors import VaelabError

TOY = (2, 3, 1, 2, 1, 3, 2)  # 72 images; object_size and background_color have one value (hidden)
COMPLEX = (2, 2, 1, 1, 1, 2, 3)  # 24 images


@pytest.fixture
def small(monkeypatch):
    for v in ("toy", "realistic", "real"):
        monkeypatch.setitem(mpi3d.FACTOR_SIZES, v, TOY)
    monkeypatch.setitem(mpi3d.FACTOR_SIZES, "real_complex", COMPLEX)


def images(n, side=8):
    x = np.zeros((n, side, side, 3), np.uint8)
    x[:, 0, 0, 0] = np.arange(n) % 256
    x[:, 0, 0, 1] = np.arange(n) // 256
    x[:, 1:, :, 2] = 77
    return x


def row_of(imgs):  # N x C x H x W
    return imgs[:, 0, 0, 0].astype(int) + 256 * imgs[:, 1, 0, 0].astype(int)


def test_stored_npz_memory_mapped_grid(small, tmp_path, data_home):
    folder = data_home / "mpi3d"
    folder.mkdir()
    assert not get("mpi3d").present(data_home)
    np.savez(folder / "mpi3d_toy.npz", images=images(72))
    assert get("mpi3d").present(data_home)
    ds = load("mpi3d")
    assert tuple(ds.images.shape) == (72, 3, 8, 8) and ds.is_grid and ds.hidden_size == 1
    assert ds.factor_names == ["object_color", "object_shape", "camera_height", "horizontal_axis", "vertical_axis"]
    assert ds.factor_sizes == [2, 3, 2, 3, 2]
    assert ds.meta["hidden_factors"] == ["object_size", "background_color"] and ds.meta["variant"] == "toy"
    assert ds.meta["class_names"]["object_shape"] == ["cone", "cube", "cylinder"]
    assert "memory-mapped" in ds.meta["storage"]
    np.testing.assert_array_equal(row_of(ds.images.numpy()), np.arange(72))  # last factor fastest
    f = np.array([[1, 2, 0, 1, 1], [0, 0, 1, 2, 0]])
    np.testing.assert_array_equal(row_of(ds.images_for(f).numpy()), ds.index_of(f))
    np.testing.assert_array_equal(ds.index_of(f), [((((1 * 3 + 2) * 2 + 0) * 3 + 1) * 2 + 1),
                                                   (((0 * 3 + 0) * 2 + 1) * 3 + 2) * 2 + 0])
    np.testing.assert_array_equal(ds.factors.numpy()[ds.index_of(f)], f)
    assert int(ds.images[5, 2, 3, 3]) == 77


def test_compressed_npz_cached_and_variants(small, tmp_path, data_home):
    p = tmp_path / "mpi3d_real.npz"
    np.savez_compressed(p, images=images(72))
    ds = load("mpi3d", root=p)
    assert ds.meta["variant"] == "real" and "cache" in ds.meta
    np.testing.assert_array_equal(row_of(ds.images.numpy()), np.arange(72))
    assert load("mpi3d", root=p).meta["cache"] == ds.meta["cache"]
    # real_complex: its published file name, or the variant option over a folder
    c = tmp_path / "complex"
    c.mkdir()
    np.savez(c / "real3d_complicated_shapes_ordered.npz", images=images(24))
    cx = load("mpi3d", root=c / "real3d_complicated_shapes_ordered.npz")
    assert cx.meta["variant"] == "real_complex" and cx.factor_sizes == [2, 2, 2, 3]
    assert cx.meta["class_names"]["object_color"] == ["yellow", "green"]
    assert load("mpi3d", root=c, variant="real_complex").meta["variant"] == "real_complex"
    # dlib's layout: DATA/mpi3d_toy/mpi3d_toy.npz
    (tmp_path / "dlib" / "mpi3d_realistic").mkdir(parents=True)
    np.savez(tmp_path / "dlib" / "mpi3d_realistic" / "mpi3d_realistic.npz", images=images(72))
    assert load("mpi3d", root=tmp_path / "dlib", variant="realistic").meta["variant"] == "realistic"
    assert load("mpi3d", root=tmp_path / "dlib").meta["variant"] == "realistic"  # the only one there


def test_errors(small, tmp_path, data_home):
    with pytest.raises(VaelabError, match="rr-learning/disentanglement_dataset") as e:
        load("mpi3d")
    assert "mpi3d_toy.npz" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(VaelabError, match="unknown MPI3D variant 'rael'.*did you mean"):
        load("mpi3d", variant="rael")

    p = tmp_path / "mpi3d_toy.npz"
    np.savez(p, images=images(24))  # the real_complex count under the toy name
    with pytest.raises(VaelabError, match="24 images, but MPI3D toy has 72 .*variant='real_complex'"):
        load("mpi3d", root=p)
    assert load("mpi3d", root=p, variant="real_complex").factor_sizes == [2, 2, 2, 3]

    q = tmp_path / "other.npz"
    np.savez(q, imgs=images(72))
    with pytest.raises(VaelabError, match="no 'images' array"):
        load("mpi3d", root=q)
    np.savez(q, images=images(72).astype(np.float32))
    with pytest.raises(VaelabError, match="uint8"):
        load("mpi3d", root=q)
    np.savez(q, images=np.array([None] * 72, dtype=object))  # pickled: never unpickled
    with pytest.raises(VaelabError, match="uint8"):
        load("mpi3d", root=q)

    t = tmp_path / "mpi3d_real.npz"
    np.savez(t, images=images(72))
    data = t.read_bytes()
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(VaelabError, match="truncated|not a readable npz") as e:
        load("mpi3d", root=t)
    assert str(t) in str(e.value)

    with pytest.raises(VaelabError, match="size 32 is not available"):
        load("mpi3d", root=p, variant="real_complex", size=32)


def test_fetch_says_where_mpi3d_is_published(data_home):
    from vaelab.data.fetch import fetch

    with pytest.raises(VaelabError, match="rr-learning/disentanglement_dataset"):
        fetch("mpi3d")


def test_list_shows_both(capsys, data_home):
    from vaelab.cli import main

    assert main(["data", "list"]) == 0
    table = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:] if ln.strip()}
    assert "48,600" in table["smallnorb"] and "category 5, elevation 9, azimuth 18, lighting 6" in table["smallnorb"]
    assert "1,036,800" in table["mpi3d"] and "object_color 6" in table["mpi3d"]
