"""Scores that sample a FactorDataset through an encoder: BetaVAE, FactorVAE and the i.i.d. wrappers.

The datasets hold tiny images that spell their own row index (3 bytes), so an "encoder" can compute any
code as a function of the factors; reduced counts keep the tests fast (the defaults stay dlib's, docs/metrics.md#defaults).
"""
import warnings

import numpy as np
import pytest
import torch

from vaelab.data import FactorDataset
from vaelab.errors import VaelabError
from vaelab.metrics import (CodeSampler, beta_vae_score, dci_score, factor_vae_accuracy, factor_vae_score,
                            irs_score, mig_score, modularity_score, sap_score, unsupervised_score)
from vaelab.metrics.sampling import get_sampler


def index_grid(sizes, is_grid=True):
    n = int(np.prod(sizes))
    idx = np.arange(n)
    images = np.stack([idx % 256, (idx // 256) % 256, idx // 65536], axis=1).astype(np.uint8)
    f = np.stack(np.unravel_index(idx, sizes), axis=1)
    return FactorDataset(images=torch.from_numpy(images.reshape(n, 1, 1, 3)), factors=torch.from_numpy(f),
                         factor_sizes=list(sizes), is_grid=is_grid, name="index-grid")


def rows_of(images):
    x = images.reshape(len(images), 3).long()
    return (x[:, 0] + 256 * x[:, 1] + 65536 * x[:, 2]).numpy()


def code_encoder(sizes, code_of_factors):
    """encode(images) = code_of_factors(factor rows of the images) (deterministic per image)."""
    def encode(images):
        f = np.stack(np.unravel_index(rows_of(images), sizes), axis=1)
        return code_of_factors(f, rows_of(images))
    return encode


SIZES = (4, 5, 3, 4)  # 240 images


def identity_encoder(sizes=SIZES):
    return code_encoder(sizes, lambda f, rows: f.astype(np.float64))


def noise_table(n, d, scale, seed=0):
    return np.random.default_rng(seed).normal(0, scale, size=(n, d))


# ----------------------------------------------------------------------------- BetaVAE
def test_beta_vae_identity_and_random():
    ds = index_grid(SIZES)
    res = beta_vae_score(identity_encoder(), ds, seed=0, batch_size=5, num_train=2000, num_eval=2000)
    assert 0.9 <= res["eval_accuracy"] <= 1.0 and 0.9 <= res["train_accuracy"] <= 1.0
    table = noise_table(len(ds), 4, 1.0)
    rnd = beta_vae_score(code_encoder(SIZES, lambda f, rows: table[rows]), ds, seed=0, batch_size=5,
                         num_train=1000, num_eval=1000)
    assert rnd["eval_accuracy"] < 0.25 + 0.1  # chance = 1/K = 0.25


def test_beta_vae_seeded_and_global_rng_untouched():
    ds = index_grid(SIZES)
    np.random.seed(123)
    torch.manual_seed(123)
    state, tstate = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    table = noise_table(len(ds), 4, 1.0)
    enc = code_encoder(SIZES, lambda f, rows: f + table[rows])
    a = beta_vae_score(enc, ds, seed=7, batch_size=4, num_train=300, num_eval=200)
    b = beta_vae_score(enc, ds, seed=7, batch_size=4, num_train=300, num_eval=200)
    c = beta_vae_score(enc, ds, seed=8, batch_size=4, num_train=300, num_eval=200)
    assert a == b
    assert a != c
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    assert torch.equal(torch.get_rng_state(), tstate)


def test_grid_metrics_refuse_labelled_sets():
    ds = index_grid(SIZES, is_grid=False)
    with pytest.raises(VaelabError, match="full factor grid"):
        beta_vae_score(identity_encoder(), ds, num_train=10, num_eval=10)
    with pytest.raises(VaelabError, match="full factor grid"):
        factor_vae_score(identity_encoder(), ds, num_train=10, num_eval=10)
    # the i.i.d. metrics accept any labelled sample
    assert mig_score(identity_encoder(), ds, num_train=500)["score"] > 0.9


def test_supervised_metrics_refuse_dataset_without_factors():
    ds = FactorDataset(images=torch.zeros((20, 1, 1, 3), dtype=torch.uint8), name="nofactors")
    enc = lambda x: np.random.default_rng(0).normal(size=(len(x), 3))  # noqa: E731
    with pytest.raises(VaelabError, match="no ground-truth factors|has none"):
        mig_score(enc, ds, num_train=10)
    with pytest.raises(VaelabError, match="has none|no ground-truth"):
        beta_vae_score(enc, ds, num_train=10, num_eval=10)
    assert set(unsupervised_score(enc, ds, num_train=50)) >= {"gaussian_total_correlation", "mutual_info_score"}


# ----------------------------------------------------------------------------- FactorVAE
def test_factor_vae_identity_zero_random():
    ds = index_grid(SIZES)
    res = factor_vae_score(identity_encoder(), ds, seed=0, batch_size=5, num_train=3000, num_eval=2000,
                           num_variance_estimate=2500)
    assert 0.9 <= res["eval_accuracy"] <= 1.0 and res["num_active_dims"] == 4
    zero = factor_vae_score(code_encoder(SIZES, lambda f, rows: np.zeros((len(f), 4))), ds, batch_size=5,
                            num_train=100, num_eval=100, num_variance_estimate=100)
    assert zero["eval_accuracy"] <= 0.2 and zero["num_active_dims"] == 0
    table = noise_table(len(ds), 6, 1.0)
    rnd = factor_vae_score(code_encoder(SIZES, lambda f, rows: table[rows]), ds, batch_size=5, num_train=1000,
                           num_eval=1000, num_variance_estimate=1000)
    assert rnd["eval_accuracy"] < 0.45  # chance 1/K = 0.25 plus majority-vote optimism


def test_factor_vae_invariant_to_permuting_and_rescaling_codes():
    ds = index_grid(SIZES)
    table = noise_table(len(ds), 4, 0.7)
    perm = np.array([2, 0, 3, 1])
    scale = np.array([0.5, 3.0, 10.0, 0.01])
    base = code_encoder(SIZES, lambda f, rows: f + table[rows])
    other = code_encoder(SIZES, lambda f, rows: ((f + table[rows]) * scale)[:, perm])
    kw = dict(seed=1, batch_size=8, num_train=500, num_eval=300, num_variance_estimate=500, threshold=0.0)
    a, b = factor_vae_score(base, ds, **kw), factor_vae_score(other, ds, **kw)
    assert a["eval_accuracy"] == b["eval_accuracy"] and a["train_accuracy"] == b["train_accuracy"]
    np.testing.assert_array_equal(a["votes_train"][:, perm], b["votes_train"])


def test_factor_vae_accuracy_majority_vote():
    votes = np.array([[5, 0, 1], [1, 4, 1]])  # column 2 tied -> factor 0
    out = factor_vae_accuracy(votes, np.array([[1, 1, 0], [0, 1, 2]]))
    assert out["train_accuracy"] == pytest.approx((5 + 4 + 1) / 12)
    assert out["eval_accuracy"] == pytest.approx((1 + 1 + 0) / 5)


@pytest.fixture(scope="module")
def dsprites_grid():
    return index_grid((3, 6, 40, 32, 32))


def test_factor_vae_dsprites_nan_behaviour(dsprites_grid):
    """docs/metrics.md#known-answers: perfect code + 4 dims N(0, 0.01^2) + one exactly constant dim."""
    sizes = np.array([3, 6, 40, 32, 32])
    n = len(dsprites_grid)
    noise = noise_table(n, 5, 0.001, seed=1)
    extra = noise_table(n, 4, 0.01, seed=2)

    def code(f, rows):
        return np.concatenate([f / (sizes - 1) + noise[rows], extra[rows], np.zeros((len(f), 1))], 1)

    enc = code_encoder(tuple(sizes), code)
    kw = dict(seed=0, batch_size=64, num_train=1000, num_eval=500, num_variance_estimate=2500)
    with pytest.warns(RuntimeWarning, match="zero variance"):
        ref = factor_vae_score(enc, dsprites_grid, threshold=0.0, **kw)
    assert ref["eval_accuracy"] == pytest.approx(0.2, abs=0.05)
    assert ref["votes_eval"][:, 9].sum() == 500  # the NaN dimension wins every vote
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        exc = factor_vae_score(enc, dsprites_grid, threshold=0.0, nan_policy="exclude", **kw)
        good = factor_vae_score(enc, dsprites_grid, threshold=0.05, **kw)
    assert exc["eval_accuracy"] >= 0.99
    assert good["eval_accuracy"] == 1.0 and good["num_active_dims"] == 5
    with pytest.raises(VaelabError, match="nan_policy"):
        factor_vae_score(enc, dsprites_grid, nan_policy="ignore", **kw)


# ----------------------------------------------------------------------------- i.i.d. wrappers
def test_iid_wrappers_identity():
    ds = index_grid(SIZES)
    enc = identity_encoder()
    assert mig_score(enc, ds, num_train=1000)["score"] > 0.9
    assert sap_score(enc, ds, num_train=1000, num_test=500, continuous=True)["score"] > 0.9
    assert irs_score(enc, ds, num_train=1000)["score"] > 0.9
    assert modularity_score(enc, ds, num_train=1000, num_test=500)["modularity"] > 0.9
    d = dci_score(enc, ds, num_train=300, num_test=200, n_jobs=1)
    assert d["disentanglement"] > 0.9 and d["completeness"] > 0.9


def test_iid_wrappers_share_draws_through_the_cache():
    ds = index_grid(SIZES)
    calls = []

    def enc(images):
        calls.append(len(images))
        return identity_encoder()(images)

    s = CodeSampler(enc, ds)
    mig_score(None, ds, seed=3, num_train=2000, sampler=s)
    first = s.images_encoded
    assert first <= len(ds)  # each distinct image once
    sap_score(None, ds, seed=3, num_train=2000, num_test=100, continuous=True, sampler=s)
    assert s.images_encoded == first  # same seed, same training draw: nothing new to encode
    assert get_sampler(None, ds, s) is s


def test_overridden_images_for_is_encoded_per_draw():
    """A dataset whose images_for randomises something per draw is not cached by row."""
    class Noisy(FactorDataset):
        def images_for(self, factors, rng=None):
            out = super().images_for(factors, rng)
            return out

    base = index_grid(SIZES)
    ds = Noisy(images=base.images, factors=base.factors, factor_sizes=list(SIZES), is_grid=True)
    s = CodeSampler(identity_encoder(), ds)
    assert not s.cached
    res = beta_vae_score(None, ds, seed=0, batch_size=4, num_train=200, num_eval=100, sampler=s)
    assert s.images_encoded == 2 * 4 * 300
    cached = beta_vae_score(identity_encoder(), base, seed=0, batch_size=4, num_train=200, num_eval=100)
    assert res == cached  # same draws either way


def test_encoder_output_checked():
    ds = index_grid(SIZES)
    with pytest.raises(VaelabError, match="NaN"):
        mig_score(lambda x: np.full((len(x), 3), np.nan), ds, num_train=50)
    with pytest.raises(VaelabError, match="returned shape"):
        mig_score(lambda x: np.zeros((len(x) + 1, 3)), ds, num_train=50)
    with pytest.raises(VaelabError, match="positive integer"):
        mig_score(identity_encoder(), ds, num_train=0)
