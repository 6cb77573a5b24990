"""dsprites-procedural: index order, agreement with real dSprites, geometry, cache, errors.

Never renders the whole grid (the cache test shrinks it). Real images come from the dSprites subset
that conftest's ``subset_npz`` finds ($VAELAB_TEST_DATA, ../shared/data, else the copy in tests/data).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import vaelab.data
from vaelab.data import procedural as P
from vaelab.errors import VaelabError


@pytest.fixture(scope="module")
def real(subset_npz):
    """(imgs, official indices, latents_values) of the real dSprites subset (never `metadata`)."""
    with np.load(subset_npz, allow_pickle=False) as z:
        return z["imgs"], z["original_dataset_indices"].astype(np.int64), z["latents_values"]


def _iou(a, b):
    a, b = a > 0, b > 0
    return (a & b).sum((1, 2)) / np.maximum((a | b).sum((1, 2)), 1)


def _centroid(img):
    ys, xs = np.nonzero(img)
    return xs.mean() + 0.5, ys.mean() + 0.5


# ------------------------------------------------------------------ registry and API
def test_registry_lookup():
    spec = vaelab.data.get("dsprites-procedural")
    assert spec.count == 737_280 and spec.image_shape == (1, 64, 64) and spec.files == []
    assert spec.factors == [("shape", 3), ("scale", 6), ("orientation", 40), ("posX", 32), ("posY", 32)]
    assert spec.loader is P.load
    assert "dsprites-procedural" in vaelab.data.names()


def test_pixels_are_0_or_255_and_shapes():
    idx = np.random.default_rng(0).integers(0, P.COUNT, 300)
    img = P.render(idx)
    assert img.dtype == np.uint8 and img.shape == (300, 64, 64)
    assert set(np.unique(img).tolist()) == {0, 255}
    assert (img.reshape(300, -1).max(1) == 255).all()  # every image shows a sprite
    assert P.render(np.array([], dtype=np.int64)).shape == (0, 64, 64)


def test_index_order_is_official():
    # posY fastest, then posX, orientation, scale, shape (docs/datasets.md#dsprites bases without the colour factor)
    f = P.factors_of([0, 1, 32, 1024, 40960, 245760, P.COUNT - 1])
    assert f.tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0],
                          [0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [2, 5, 39, 31, 31]]
    idx = np.random.default_rng(1).integers(0, P.COUNT, 200)
    assert np.array_equal(P.index_of(P.factors_of(idx)), idx)
    f = P.factors_of(idx)
    assert np.array_equal(P.render(idx), P.render_factors(*f.T))
    assert np.array_equal(P.grid_factors()[idx], f)


def test_render_factors_broadcasts():
    one = P.render_factors(2, 5, np.arange(4), 10, 20)
    assert one.shape == (4, 64, 64)
    assert np.array_equal(one, P.render(P.index_of([[2, 5, o, 10, 20] for o in range(4)])))


# ------------------------------------------------------------------ agreement with the real images
def test_iou_per_shape_against_real(real):
    imgs, index, _ = real
    rng = np.random.default_rng(0)
    for shape, name in enumerate(P.SHAPE_NAMES):
        rows = rng.choice(np.flatnonzero(index // 245_760 == shape), 300, replace=False)
        iou = _iou(P.render(index[rows]), imgs[rows])
        # The issue asks for >= 0.95; the fitted renderer reaches ~0.9995, so guard more tightly.
        assert iou.mean() >= 0.99, (name, iou.mean())
        assert iou.min() >= 0.85, (name, iou.min())


def test_real_index_order_and_values(real):
    imgs, index, values = real
    rows = np.random.default_rng(2).choice(len(index), 400, replace=False)
    f = P.factors_of(index[rows])
    mine = np.stack([v[f[:, k]] for k, v in enumerate(P.factor_values())], axis=1)
    np.testing.assert_allclose(mine, values[rows], atol=1e-9)
    good = _iou(P.render(index[rows]), imgs[rows]).mean()
    # the same images in a wrong order (posX and posY swapped) must score clearly worse
    swapped = P.index_of(f[:, [0, 1, 2, 4, 3]])
    assert good >= 0.99 and _iou(P.render(swapped), imgs[rows]).mean() < 0.5


def test_rotation_direction_matches_real(real):
    imgs, index, _ = real
    # ellipse, scale 1, orientation 8 (1.29 rad), posX = posY = 16: long axis turned counter-clockwise
    i = P.index_of([[1, 5, 8, 16, 16]])
    row = np.flatnonzero(index == i[0])
    assert len(row) == 1
    real_img, mine = imgs[row[0]] > 0, P.render(i)[0] > 0
    assert _iou(mine[None], real_img[None])[0] > 0.97
    for img in (real_img, mine):
        ys, xs = np.nonzero(img)
        assert np.cov(xs, ys)[0, 1] < 0  # y points down: CCW on screen = up-right long axis


def test_square_area_at_scale_one():
    f = np.random.default_rng(3).integers(0, [1, 1, 40, 32, 32], size=(400, 5))
    f[:, 1] = 5
    area = (P.render_factors(*f.T) > 0).sum((1, 2))
    assert abs(area.mean() - 368.64) < 4  # side 19.2 px (docs/datasets.md#procedural-dsprites: "about 368 pixels")
    assert 350 <= area.min() and area.max() <= 400


def test_rotation_direction_and_positions():
    # ellipse turned by 40/39 * pi/4 (index 5, ~46 deg) counter-clockwise on screen: long axis up-right
    img = P.render_factors(1, 5, 5, 16, 16)[0]
    ys, xs = np.nonzero(img)
    assert np.cov(xs, ys)[0, 1] < 0
    # posX moves along columns, posY along rows, 32 px from 0 to 1
    a, b, c = P.render_factors(0, 2, 0, [0, 31, 0], [0, 0, 31])
    (ax, ay), (bx, by), (cx, cy) = _centroid(a), _centroid(b), _centroid(c)
    assert abs(bx - ax - 32) < 1 and abs(by - ay) < 0.5
    assert abs(cy - ay - 32) < 1 and abs(cx - ax) < 0.5
    # the heart's tip points down at orientation 0
    heart = P.render_factors(2, 5, 0, 16, 16)[0] > 0
    rows = np.flatnonzero(heart.any(1))
    assert heart[rows[-1]].sum() <= 2 and heart[rows[0]].sum() > 2


def test_full_turn_renders_alike_and_border_free():
    f = np.random.default_rng(4).integers(0, [3, 6, 1, 32, 32], size=(300, 5))
    f39 = f.copy()
    f39[:, 2] = 39
    assert np.array_equal(P.render_factors(*f.T), P.render_factors(*f39.T))
    # largest sprites at the extreme positions, every orientation: never cut by the border
    o = np.arange(40)
    for shape in range(3):
        for x, y in [(0, 0), (31, 31), (0, 31), (31, 0)]:
            img = P.render_factors(shape, 5, o, x, y)
            assert not (img[:, 0].any() or img[:, -1].any() or img[:, :, 0].any() or img[:, :, -1].any())


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("bad", [[-1], [P.COUNT], [0.5]])
def test_bad_indices(bad):
    with pytest.raises(VaelabError):
        P.render(np.array(bad))


def test_bad_factors():
    with pytest.raises(VaelabError, match="orientation"):
        P.render_factors(0, 0, 40, 0, 0)


@pytest.mark.parametrize("kw, msg", [(dict(split="test"), "split"), (dict(size=32), "64"),
                                     (dict(colour=True), "does not take")])
def test_loader_rejects(tmp_path, kw, msg):
    with pytest.raises(VaelabError, match=msg):
        vaelab.data.load("dsprites-procedural", root=tmp_path, **kw)


# ------------------------------------------------------------------ cache (a shrunken grid)
@pytest.fixture
def small_grid(monkeypatch, tmp_path):
    """The first two (shape, scale, orientation) blocks stand in for the grid; VAELAB_DATA = tmp_path."""
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    monkeypatch.setattr(P, "COUNT", 2048)
    monkeypatch.setattr(P, "_CHECK", np.array([0, 1500, 2047]))
    return tmp_path / "cache" / "dsprites-procedural-v1.npy"


def test_cache_written_once_and_memory_mapped(small_grid, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy on the copy-on-write map must not warn
        ds = vaelab.data.load("dsprites-procedural", split="all", quiet=True)
    assert small_grid.is_file()
    # no temp file left: the cache, its record (size, digest) and the builders' lock file
    assert sorted(p.name for p in small_grid.parent.iterdir()) == [
        "dsprites-procedural-v1.json", "dsprites-procedural-v1.lock", small_grid.name]
    assert ds.images.shape == (2048, 1, 64, 64) and ds.images.dtype == torch.uint8
    assert ds.is_grid and ds.factor_sizes == [3, 6, 40, 32, 32] and ds.name == "dsprites-procedural"
    assert ds.factors.dtype == torch.int64 and ds.factors[1500].tolist() == P.factors_of([1500])[0].tolist()
    assert np.array_equal(ds.images[:, 0].numpy(), P.render(np.arange(2048)))
    np.testing.assert_allclose(ds.factor_values[2], np.linspace(0, 2 * np.pi, 40))
    on_disk = np.load(small_grid, mmap_mode="r")
    assert on_disk.shape == (2048, 64, 64)

    def fail(*a, **k):
        raise AssertionError("re-rendered although the cache is valid")

    monkeypatch.setattr(P, "_write_cache", fail)
    again = vaelab.data.load("dsprites-procedural", quiet=True)
    assert torch.equal(again.images[:64], ds.images[:64])


def test_corrupt_cache_is_rendered_again(small_grid):
    small_grid.parent.mkdir(parents=True)
    small_grid.write_bytes(b"\x93NUMPY garbage")
    from vaelab.data.prepare import DataWarning

    with pytest.warns(DataWarning, match="damaged"):
        ds = vaelab.data.load("dsprites-procedural", quiet=True)
    assert np.array_equal(ds.images[:, 0].numpy(), P.render(np.arange(2048)))
    # a cache whose pixels differ from what this renderer draws is replaced too
    arr = np.load(small_grid, mmap_mode="r+")
    arr[1500] = 0
    arr.flush()
    del arr
    with pytest.warns(DataWarning, match="damaged"):
        ds = vaelab.data.load("dsprites-procedural", quiet=True)
    assert np.array_equal(ds.images[1500, 0].numpy(), P.render([1500])[0])


def test_force_renders_again(small_grid, monkeypatch):
    vaelab.data.load("dsprites-procedural", quiet=True)
    calls = []
    write = P._write_cache
    monkeypatch.setattr(P, "_write_cache", lambda *a, **k: (calls.append(1), write(*a, **k)))
    vaelab.data.load("dsprites-procedural", quiet=True)
    assert calls == []
    ds = vaelab.data.load("dsprites-procedural", quiet=True, force=True)
    assert calls == [1] and len(ds) == 2048


# ------------------------------------------------------------------ damage and what dead renders leave
def _zero(path, first, count):
    arr = np.load(path, mmap_mode="r+")
    arr[first:first + count] = 0
    arr.flush()
    del arr


def test_zeroed_stretch_is_detected_and_rendered_again(small_grid):
    """A blank stretch that the 3 spot-checked images miss (the 25,600 blank images of a zeroed 100 MB,
    scaled down) fails the digest in the sidecar: warned about, rendered again."""
    from vaelab.data.prepare import DataWarning

    vaelab.data.load("dsprites-procedural", quiet=True)
    _zero(small_grid, 100, 1000)
    assert not np.isin(P._CHECK, np.arange(100, 1100)).any()
    with pytest.warns(DataWarning, match="damaged .*checksum of sampled blocks.*rendering it again"):
        ds = vaelab.data.load("dsprites-procedural", quiet=True)
    assert np.array_equal(ds.images[100:1100, 0].numpy(), P.render(np.arange(100, 1100)))
    assert P._open_cache(small_grid) is not None


def test_sampled_blocks_catch_a_stretch_in_a_large_file(small_grid, monkeypatch):
    """Above 512 blocks' worth, only evenly spread blocks are hashed; a stretch longer than their
    spacing is always caught, and a cut-short file fails on its size."""
    monkeypatch.setattr(P, "_SAMPLE_BLOCKS", 64)
    monkeypatch.setattr(P, "_SAMPLE_BYTES", 4096)
    P.grid_images(quiet=True)
    meta = __import__("json").loads(P.sidecar_path(small_grid).read_text())
    assert meta["blocks"] == 64 and meta["block_bytes"] == 4096 and meta["bytes"] == small_grid.stat().st_size
    spacing = meta["bytes"] / 64 / (64 * 64)  # in images
    _zero(small_grid, 700, int(spacing) + 2)
    assert P._check_cache(small_grid)[0] is None
    P._write_cache(small_grid)
    assert P._check_cache(small_grid)[1] is None
    with open(small_grid, "r+b") as f:
        f.truncate(meta["bytes"] - 4096)
    assert "bytes, not" in P._check_cache(small_grid)[1]
    P._write_cache(small_grid)
    P.sidecar_path(small_grid).unlink()  # no record: cannot be trusted
    assert "missing" in P._check_cache(small_grid)[1]


def test_stale_temporaries_of_dead_renders_are_removed(small_grid, tmp_path):
    """A render killed half-way leaves <cache>.<pid>.<token>.tmp: the next open removes it when its writer
    is gone and no builder holds the lock; a live builder's file is kept."""
    import os
    import subprocess
    import sys

    small_grid.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = small_grid.with_name(f"{small_grid.name}.{dead}.0badc0de.tmp")
    old_version = small_grid.with_name(f"dsprites-procedural-v0.npy.{dead}.0badc0de.tmp")
    for f in (stale, old_version):
        f.write_bytes(b"\0" * 4096)
    ds = vaelab.data.load("dsprites-procedural", quiet=True)
    assert len(ds) == 2048 and not stale.exists() and not old_version.exists()

    # a builder that is still running (holds the lock) keeps its temporary
    live = small_grid.with_name(f"{small_grid.name}.{dead}.1234abcd.tmp")
    live.write_bytes(b"\0" * 4096)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+b'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"), str(P._lock_path(small_grid))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert P.remove_stale_temporaries(small_grid) == [] and live.exists()
        assert vaelab.data.load("dsprites-procedural", quiet=True) is not None and live.exists()
    finally:
        holder.kill()
        holder.wait()
    assert P.remove_stale_temporaries(small_grid) == [live] and not live.exists()
    # a temporary whose writer is alive (an older vaelab without the lock) is kept too
    mine = small_grid.with_name(f"{small_grid.name}.{os.getppid()}.5678abcd.tmp")
    mine.write_bytes(b"")
    assert P.remove_stale_temporaries(small_grid) == [] and mine.exists()
