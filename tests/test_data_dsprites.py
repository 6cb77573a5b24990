"""dSprites importer: the shared real subset, synthetic 6-latent npz files, bad files."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

from vaelab.data import load
from vaelab.data.dsprites import FACTOR_VALUES
from vaelab.errors import VaelabError


@pytest.fixture(scope="module")
def subset(subset_npz, tmp_path_factory):
    """The shared subset, imported once for the module into its own cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAELAB_DATA", str(tmp_path_factory.mktemp("dsprites-data")))
        mp.setenv("VAELAB_QUIET", "1")
        yield load("dsprites", root=subset_npz), subset_npz


def test_real_subset_shapes_values_grid(subset):
    ds, _ = subset
    assert tuple(ds.images.shape) == (46_080, 1, 64, 64)
    assert ds.images.dtype.is_floating_point is False and str(ds.images.dtype) == "torch.uint8"
    sample = ds.images[::97].numpy()
    assert set(np.unique(sample).tolist()) == {0, 255}  # docs/conventions.md#tensors: 0/1 -> 0/255
    assert ds.factor_names == ["shape", "scale", "orientation", "posX", "posY"]
    assert ds.factor_sizes == [3, 6, 10, 16, 16]
    assert ds.is_grid
    np.testing.assert_allclose(ds.factor_values[0], [1, 2, 3])
    np.testing.assert_allclose(ds.factor_values[2], FACTOR_VALUES[3][::4])  # every 4th orientation
    np.testing.assert_allclose(ds.factor_values[3], FACTOR_VALUES[4][::2])
    assert ds.meta["hidden_factors"] == []


def test_real_subset_images_for_and_index_of(subset):
    ds, path = subset
    with np.load(path, allow_pickle=False) as z:
        imgs, classes = z["imgs"], z["latents_classes"]
        orig = z["original_dataset_indices"]
    rng = np.random.default_rng(0)
    f = ds.sample_factors(32, rng)
    idx = ds.index_of(f)
    np.testing.assert_array_equal(classes[idx], f)
    got = ds.images_for(f).numpy()[:, 0]
    np.testing.assert_array_equal(got, imgs[idx].astype(np.uint8) * 255)
    np.testing.assert_array_equal(ds.factors.numpy()[idx], f)
    np.testing.assert_array_equal(ds.meta["original_indices"][idx], orig[idx])


def test_real_subset_cache_reused(subset, monkeypatch):
    ds, path = subset
    cache = ds.meta["cache"]
    mtime = os.stat(os.path.join(cache, "images.npy")).st_mtime_ns
    again = load("dsprites", root=path.parent)  # the folder: its only .npz
    assert again.meta["cache"] == cache
    assert os.stat(os.path.join(cache, "images.npy")).st_mtime_ns == mtime
    assert again.images.shape == ds.images.shape


def _grid_npz(path, *, shuffle=False, colour=True, pixels=None, mutate=None):
    """A small 6-latent dSprites-like npz: shape 3 x scale 2 x orientation 2 x posX 2 x posY 2 = 48 images."""
    sel = [[0], [0, 1, 2], [0, 5], [0, 20], [3, 31], [0, 1]]
    grids = np.meshgrid(*[np.arange(len(s)) for s in sel], indexing="ij")
    classes = np.stack([g.ravel() for g in grids], axis=1).astype(np.int64)
    values = np.stack([FACTOR_VALUES[j][np.asarray(sel[j])[classes[:, j]]] for j in range(6)], axis=1)
    n = len(classes)
    imgs = np.zeros((n, 64, 64), np.uint8)
    for i in range(n):  # the image index written in binary into the first row
        imgs[i, 0, :8] = [(i >> b) & 1 for b in range(8)]
    if pixels is not None:
        imgs = pixels(imgs)
    order = np.random.default_rng(1).permutation(n) if shuffle else np.arange(n)
    if not colour:
        classes, values = classes[:, 1:], values[:, 1:]
    if mutate:
        classes, values = mutate(classes, values)
    metadata = np.array({"latents_names": ("color",)}, dtype=object)  # pickled, like the real file
    np.savez_compressed(path, imgs=imgs[order], latents_classes=classes[order], latents_values=values[order],
                        metadata=metadata)
    return imgs


def test_six_latents_colour_hidden_and_shuffled_rows_sorted(tmp_path, data_home):
    p = tmp_path / "toy.npz"
    imgs = _grid_npz(p, shuffle=True)
    ds = load("dsprites", root=p)
    assert ds.factor_names == ["shape", "scale", "orientation", "posX", "posY"]
    assert ds.factor_sizes == [3, 2, 2, 2, 2] and ds.is_grid
    assert ds.meta["hidden_factors"] == ["color"]
    np.testing.assert_allclose(ds.factor_values[1], [0.5, 1.0])
    np.testing.assert_allclose(ds.factor_values[3], FACTOR_VALUES[4][[3, 31]])
    # canonical order restored: row i is the image that was made as number i
    np.testing.assert_array_equal(ds.images.numpy()[:, 0], imgs * 255)
    np.testing.assert_array_equal(ds.index_of(ds.factors.numpy()), np.arange(len(ds)))


def test_uncompressed_npz_and_five_latents(tmp_path, data_home):
    p = tmp_path / "toy5.npz"
    _grid_npz(p, colour=False)
    # re-save uncompressed
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("imgs", "latents_classes", "latents_values")}
    q = tmp_path / "plain.npz"
    np.savez(q, **arrays)
    ds = load("dsprites", root=q)
    assert len(ds) == 48 and ds.factor_sizes == [3, 2, 2, 2, 2]


@pytest.mark.parametrize("problem, message", [
    ("truncated", "truncated"),
    ("not_zip", "not a readable npz"),
    ("bad_values", "not dSprites values"),
    ("no_imgs", "no 'imgs'"),
])
def test_bad_files_give_one_clear_error(tmp_path, data_home, problem, message):
    p = tmp_path / "bad.npz"
    if problem == "bad_values":
        def mutate(c, v):
            v = v.copy()
            v[:, 2] *= 3.0  # scales 1.5 .. 3.0
            return c, v
        _grid_npz(p, mutate=mutate)
    else:
        _grid_npz(p)
    if problem == "truncated":
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif problem == "not_zip":
        p.write_bytes(b"hello, not a zip" * 10)
    elif problem == "no_imgs":
        with zipfile.ZipFile(p) as z:
            keep = {n: z.read(n) for n in z.namelist() if n != "imgs.npy"}
        with zipfile.ZipFile(p, "w") as z:
            for n, b in keep.items():
                z.writestr(n, b)
    with pytest.raises(VaelabError) as e:
        load("dsprites", root=p)
    assert message in str(e.value)
    assert str(p) in str(e.value) or problem == "bad_values"
    assert "\n" not in str(e.value)


def test_missing_file_names_path_and_fetch_command(data_home):
    with pytest.raises(VaelabError) as e:
        load("dsprites")
    msg = str(e.value)
    assert str(data_home / "dsprites") in msg and "vaelab data fetch dsprites" in msg


def test_no_splits_or_sizes(tmp_path, data_home):
    p = tmp_path / "toy.npz"
    _grid_npz(p)
    with pytest.raises(VaelabError, match="no 'test' split"):
        load("dsprites", root=p, split="test")
    with pytest.raises(VaelabError, match="size 32"):
        load("dsprites", root=p, size=32)
