"""Grids with a hidden factor (SmallNORB's instance): ``hidden_size`` images per visible combination.

The tiny images spell their own row (3 bytes), so the hidden value each draw picked is readable from
the pixels: row = visible_index * H + hidden.
"""
import numpy as np
import pytest
import torch

from vaelab.data import FactorDataset
from vaelab.errors import VaelabError
from vaelab.metrics import CodeSampler, beta_vae_score, factor_vae_score, mig_score

SIZES = (3, 4, 2)  # visible grid: 24 combinations
H = 5  # hidden values per combination: 120 images


def hidden_grid(sizes=SIZES, hidden=H):
    n = int(np.prod(sizes)) * hidden
    idx = np.arange(n)
    images = np.stack([idx % 256, (idx // 256) % 256, idx // 65536], axis=1).astype(np.uint8)
    f = np.repeat(np.stack(np.unravel_index(np.arange(n // hidden), sizes), axis=1), hidden, axis=0)
    return FactorDataset(images=torch.from_numpy(images.reshape(n, 1, 1, 3)), factors=torch.from_numpy(f),
                         factor_sizes=list(sizes), is_grid=True, hidden_size=hidden, name="hidden-grid",
                         meta={"hidden_factors": ["instance"]})


def rows_of(images):
    x = images.reshape(len(images), 3).long()
    return (x[:, 0] + 256 * x[:, 1] + 65536 * x[:, 2]).numpy()


def test_layout_len_and_describe():
    ds = hidden_grid()
    assert len(ds) == int(np.prod(SIZES)) * H and ds.is_grid and ds.hidden_size == H
    assert "hidden: instance (5 images per combination" in ds.describe()
    np.testing.assert_array_equal(ds.factors.numpy()[7 * H:8 * H], np.tile(np.unravel_index(7, SIZES), (H, 1)))


def test_index_of_draws_hidden_uniformly_and_deterministically():
    ds = hidden_grid()
    f = np.tile([[2, 1, 1]], (5000, 1))
    visible = int(np.ravel_multi_index((2, 1, 1), SIZES))
    a = ds.index_of(f, np.random.default_rng(3))
    assert ((a // H) == visible).all()
    counts = np.bincount(a % H, minlength=H)
    assert counts.min() > 1000 - 150 and counts.max() < 1000 + 150  # uniform: 1000 each, sd ~28
    np.testing.assert_array_equal(a, ds.index_of(f, np.random.default_rng(3)))
    assert not np.array_equal(a, ds.index_of(f, np.random.default_rng(4)))
    # the draw is rng.integers(H, size=rows), nothing else
    np.testing.assert_array_equal(a % H, np.random.default_rng(3).integers(0, H, size=5000))


def test_index_of_without_rng_is_an_error_and_hidden_chooses():
    ds = hidden_grid()
    with pytest.raises(VaelabError, match="instance.*pass rng="):
        ds.index_of([[0, 0, 0]])
    with pytest.raises(VaelabError, match="pass rng="):
        ds.images_for([[0, 0, 0]])
    np.testing.assert_array_equal(ds.index_of([[0, 0, 1], [1, 0, 0]], hidden=[4, 2]), [1 * H + 4, 8 * H + 2])
    np.testing.assert_array_equal(ds.index_of([[0, 0, 1], [1, 0, 0]], hidden=0), [1 * H, 8 * H])
    with pytest.raises(VaelabError, match="hidden values"):
        ds.index_of([[0, 0, 0]], hidden=H)


def test_images_for_and_sample_use_the_rng():
    ds = hidden_grid()
    f = ds.sample_factors(3000, np.random.default_rng(0))
    rows = rows_of(ds.images_for(f, np.random.default_rng(1)))
    np.testing.assert_array_equal(ds.factors.numpy()[rows], f)  # the right visible combination
    counts = np.bincount(rows % H, minlength=H)
    assert counts.min() > 600 - 120 and counts.max() < 600 + 120
    np.testing.assert_array_equal(rows, rows_of(ds.images_for(f, np.random.default_rng(1))))

    f1, im1 = ds.sample(400, np.random.default_rng(9))
    f2, im2 = ds.sample(400, np.random.default_rng(9))
    np.testing.assert_array_equal(f1, f2)
    assert torch.equal(im1, im2)
    r = rows_of(im1)
    np.testing.assert_array_equal(ds.factors.numpy()[r], f1)
    assert len(np.unique(r % H)) == H
    # visible factors first, then the hidden values, from the same generator
    g = np.random.default_rng(9)
    fv = ds.sample_factors(400, g)
    np.testing.assert_array_equal(r, ds.index_of(fv, g))


def test_grid_without_hidden_factor_does_not_touch_the_rng():
    ds = FactorDataset(images=torch.zeros((24, 1, 1, 1), dtype=torch.uint8),
                       factors=torch.from_numpy(np.stack(np.unravel_index(np.arange(24), SIZES), 1)),
                       factor_sizes=list(SIZES), is_grid=True)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    np.testing.assert_array_equal(ds.index_of([[1, 2, 1]], rng), [13])
    assert rng.bit_generator.state == state


def test_validation_subset_and_from_arrays():
    ds = hidden_grid()
    with pytest.raises(VaelabError, match="holds 120 images, got 119"):
        FactorDataset(images=ds.images[:119], factors=ds.factors[:119], factor_sizes=list(SIZES), is_grid=True,
                      hidden_size=H)
    with pytest.raises(VaelabError, match="needs a factor grid"):
        FactorDataset(images=ds.images, factors=ds.factors, factor_sizes=list(SIZES), hidden_size=H)
    with pytest.raises(VaelabError, match="positive integer"):
        FactorDataset(images=ds.images, hidden_size=0)
    sub = ds.subset(np.arange(0, 120, 7))
    assert not sub.is_grid and sub.hidden_size == 1 and len(sub) == 18
    # the same arrays through from_arrays: repeated combinations make a labelled set, never a wrong grid
    arr = FactorDataset.from_arrays(ds.images.numpy(), ds.factors.numpy(), factor_sizes=SIZES)
    assert not arr.is_grid and arr.hidden_size == 1
    rows = rows_of(arr.images_for(np.array([[2, 3, 1]] * 200), np.random.default_rng(0)))
    assert set((rows // H).tolist()) == {23} and len(set((rows % H).tolist())) == H


# ----------------------------------------------------------------------------- metrics
def encoder(calls=None):
    """Codes = the visible factors plus the hidden value as a last dimension."""
    def encode(images):
        rows = rows_of(images)
        if calls is not None:
            calls.append(rows)
        f = np.stack(np.unravel_index(rows // H, SIZES), axis=1).astype(np.float64)
        return np.concatenate([f, (rows % H)[:, None].astype(np.float64)], axis=1)
    return encode


def test_factor_vae_and_beta_vae_draw_hidden_values():
    ds = hidden_grid()
    calls = []
    s = CodeSampler(encoder(calls), ds)
    assert s.cached
    res = factor_vae_score(None, ds, seed=0, batch_size=8, num_train=300, num_eval=200,
                           num_variance_estimate=500, sampler=s)
    # the hidden dimension varies in every batch (it is never the fixed factor), so it never wins a vote
    assert res["eval_accuracy"] == 1.0 and res["num_active_dims"] == 4
    assert res["votes_train"][:, 3].sum() == 0
    seen = np.concatenate(calls)
    assert s.images_encoded == len(np.unique(seen)) <= len(ds)  # each distinct image once
    assert len(np.unique(seen % H)) == H
    again = factor_vae_score(encoder(), ds, seed=0, batch_size=8, num_train=300, num_eval=200,
                             num_variance_estimate=500)
    np.testing.assert_array_equal(res["votes_train"], again["votes_train"])

    b = beta_vae_score(encoder(), ds, seed=0, batch_size=4, num_train=300, num_eval=200)
    assert b["eval_accuracy"] > 0.9
    assert beta_vae_score(encoder(), ds, seed=0, batch_size=4, num_train=300, num_eval=200) == b
    assert mig_score(encoder(), ds, seed=0, num_train=1000)["score"] > 0.9


def test_per_draw_path_also_draws_hidden_values():
    """A subclass overriding images_for is encoded draw by draw; the hidden value is still random."""
    class PerDraw(FactorDataset):
        def images_for(self, factors, rng=None):
            return super().images_for(factors, rng)

    base = hidden_grid()
    ds = PerDraw(images=base.images, factors=base.factors, factor_sizes=list(SIZES), is_grid=True,
                 hidden_size=H, meta=dict(base.meta))
    calls = []
    s = CodeSampler(encoder(calls), ds)
    assert not s.cached
    res = factor_vae_score(None, ds, seed=0, batch_size=8, num_train=100, num_eval=50,
                           num_variance_estimate=200, sampler=s)
    assert res["eval_accuracy"] == 1.0
    assert len(np.unique(np.concatenate(calls) % H)) == H
