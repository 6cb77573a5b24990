"""Array cores of vaelab.metrics: known answers (docs/metrics.md#known-answers), hand-computed cases, invariances, bad input."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.errors import VaelabError
from vaelab.metrics import (active_units, completeness, dci, dci_details, dci_from_importance, discrete_entropy,
                            discrete_mutual_info, discretize, disentanglement, gaussian_total_correlation,
                            gaussian_wasserstein_correlation, gaussian_wasserstein_correlation_norm, irs,
                            irs_details, kl_per_latent, mig, mig_details, modularity, modularity_explicitness,
                            mutual_info, mutual_info_score, sap, sap_details, total_correlation_from_cov,
                            unsupervised, wasserstein_correlation_from_cov)

LN2_LN10 = math.log(2) / math.log(10)
DSPRITES = np.array([3, 6, 40, 32, 32])


def factors_10x10(n, seed=0):
    """dlib's test ground truth: 10 factors x 10 values, drawn i.i.d."""
    return np.random.default_rng(seed).integers(0, 10, size=(n, 10))


def dsprites_perfect(n, rng, extra):
    """Perfect code on a dSprites-shaped grid: index / (n_k - 1) + N(0, 0.001^2), plus 5 extra dims."""
    f = np.stack([rng.integers(0, s, n) for s in DSPRITES], axis=1)
    z = f / (DSPRITES - 1) + rng.normal(0, 0.001, (n, 5))
    return f, np.concatenate([z, extra(n)], axis=1)


# ----------------------------------------------------------------------------- discretiser and information
def test_discretize_spec_example():
    assert discretize(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), 3).tolist() == [1, 1, 2, 2, 3, 3]


def test_discretize_constant_column_single_label_and_max_in_last_bin():
    x = np.stack([np.full(7, 2.5), np.linspace(-1, 1, 7)], axis=1)
    d = discretize(x, 20)
    assert len(np.unique(d[:, 0])) == 1
    assert d[0, 1] == 1 and d[-1, 1] == 20


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=60), st.integers(1, 25))
def test_discretize_properties(values, bins):
    x = np.array(values)
    d = discretize(x, bins)
    assert d.min() >= 1 and d.max() <= bins
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(d[order]) >= 0)  # monotone in the value
    if x.max() > x.min():
        assert d[np.argmin(x)] == 1 and d[np.argmax(x)] == bins
    else:
        assert len(np.unique(d)) == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 6), st.integers(2, 200))
def test_mutual_info_matches_sklearn(seed, na, nb, n):
    from sklearn.metrics import mutual_info_score as sk_mi

    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, na, n), rng.integers(0, nb, n)
    assert mutual_info(a, b) == pytest.approx(sk_mi(a, b), abs=1e-12)
    assert discrete_entropy(a)[0] == pytest.approx(sk_mi(a, a), abs=1e-12)


def test_mutual_info_many_labels_sparse_like_sklearn():
    """Undiscretised codes (N distinct labels each): same value as scikit-learn, without an N x N table."""
    import tracemalloc

    from sklearn.metrics import mutual_info_score as sk_labels

    def sk_mi(x, y):  # scikit-learn on the same partition, as integer labels (it warns on floats)
        return sk_labels(np.unique(x, return_inverse=True)[1], np.unique(y, return_inverse=True)[1])

    rng = np.random.default_rng(0)
    a = rng.normal(size=5000)
    b = np.round(a + rng.normal(size=5000), 2)
    tracemalloc.start()
    try:
        value = mutual_info(a, b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert value == pytest.approx(sk_mi(a, b), abs=1e-12)
    assert peak < 20e6  # a dense 5000 x ~1000 int64 contingency table alone would take 40 MB
    z = np.stack([a, b, rng.normal(size=5000)], 1)
    expected = (2 * sk_mi(a, b) + 2 * sk_mi(a, z[:, 2]) + 2 * sk_mi(b, z[:, 2])) / 6
    assert mutual_info_score(z, num_bins=None) == pytest.approx(expected, abs=1e-12)


def test_entropy_and_mi_known_values():
    v = np.array([0, 0, 1, 1])
    assert discrete_entropy(v)[0] == pytest.approx(math.log(2))
    assert mutual_info(v, v) == pytest.approx(math.log(2))
    assert mutual_info(v, [0, 1, 0, 1]) == pytest.approx(0.0)
    m = discrete_mutual_info(np.stack([v, [0, 1, 0, 1]], 1), v)
    assert m.shape == (2, 1) and m[0, 0] == pytest.approx(math.log(2)) and m[1, 0] == 0


# ----------------------------------------------------------------------------- MIG
def test_mig_hand_computed():
    v = np.array([0, 0, 1, 1])
    assert mig(np.stack([v, [0, 1, 0, 1]], 1), v, num_bins=None) == pytest.approx(1.0)
    # z1 = [0, 0, 0, 1]: I = ln 2 - 3/4 H(2/3, 1/3); z2 independent
    h = -(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)
    expected = (math.log(2) - 0.75 * h) / math.log(2)
    assert mig(np.stack([[0, 0, 0, 1], [0, 1, 0, 1]], 1), v, num_bins=None) == pytest.approx(expected)


def test_mig_identity_zero_duplicated():
    f = factors_10x10(3000)
    assert 0.9 <= mig(f, f, num_bins=None) <= 1.0
    assert mig(np.zeros((3000, 10)), f) <= 0.2
    assert mig(np.concatenate([f, f], 1), f, num_bins=None) <= 0.1


def test_mig_dsprites_shaped_oracle():
    rng = np.random.default_rng(0)
    f, z = dsprites_perfect(10_000, rng, lambda n: rng.normal(size=(n, 5)))
    d = mig_details(z, f)
    assert d["score"] == pytest.approx(0.89, abs=0.01)
    np.testing.assert_allclose(d["per_factor"], [0.998, 0.997, 0.802, 0.832, 0.834], atol=0.01)
    # the ceiling below 1: ln 20 / ln 40 for orientation
    assert d["per_factor"][2] <= math.log(20) / math.log(40) + 1e-9
    assert mig(rng.normal(size=(10_000, 10)), f) == pytest.approx(0.0, abs=0.01)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.permutations(list(range(5))), st.lists(st.integers(-6, 6), min_size=5, max_size=5))
def test_mig_invariant_to_permutation_and_rescaling(seed, perm, exponents):
    rng = np.random.default_rng(seed)
    f = rng.integers(0, 4, size=(300, 3))
    z = np.concatenate([f + rng.normal(0, 0.3, f.shape), rng.normal(size=(300, 2))], axis=1)
    base = mig(z, f)
    scaled = z * np.exp2(np.array(exponents, dtype=float))  # exact in floating point
    assert mig(scaled[:, perm], f) == pytest.approx(base, abs=1e-12)
    shift = rng.normal(size=5)
    affine = z * rng.uniform(0.5, 3, size=5) + shift  # positive affine: same bins up to rounding at edges
    assert mig(affine, f) == pytest.approx(base, abs=1e-6)


def test_mig_bad_input():
    f = factors_10x10(100)
    with pytest.raises(VaelabError, match="at least 2 code dimensions"):
        mig(np.zeros((100, 1)), f)
    with pytest.raises(VaelabError, match="single value"):
        mig(np.random.default_rng(0).normal(size=(100, 3)), np.zeros((100, 2), int))
    bad = np.random.default_rng(0).normal(size=(100, 3))
    bad[5, 1] = np.nan
    with pytest.raises(VaelabError, match="NaN"):
        mig(bad, f)
    with pytest.raises(VaelabError, match="points"):
        mig(np.zeros((99, 3)), f)
    with pytest.raises(VaelabError, match="integer"):
        mig(np.zeros((100, 3)), f + 0.5)


# ----------------------------------------------------------------------------- SAP
def test_sap_continuous_identity_zero_duplicated():
    f, ft = factors_10x10(3000, 0), factors_10x10(3000, 1)
    assert 0.9 <= sap(f, f, f, ft, continuous=True) <= 1.0
    assert sap(np.zeros((3000, 10)), f, np.zeros((3000, 10)), ft, continuous=True) <= 0.2
    dup = np.concatenate([f, f], 1)
    assert sap(dup, f, np.concatenate([ft, ft], 1), ft, continuous=True) <= 0.2


def test_sap_continuous_hand_computed():
    v = np.array([[0, 0], [1, 0], [2, 1], [3, 1]])
    z = np.stack([[0.0, 1, 2, 3], [1.0, 0, 0, 1]], 1)  # z1 = v1 exactly, z2 uncorrelated with v1
    d = sap_details(z, v, continuous=True)
    r = np.corrcoef(z[:, 0], v[:, 1])[0, 1] ** 2
    assert d["matrix"][0, 0] == pytest.approx(1.0) and d["matrix"][1, 0] == pytest.approx(0.0)
    assert d["matrix"][0, 1] == pytest.approx(r)
    assert d["matrix"][1, 1] == pytest.approx(np.corrcoef(z[:, 1], v[:, 1])[0, 1] ** 2)
    expected = (1.0 + abs(d["matrix"][0, 1] - d["matrix"][1, 1])) / 2
    assert d["score"] == pytest.approx(expected)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31), st.lists(st.floats(-5, 5).filter(lambda a: abs(a) > 0.1), min_size=4, max_size=4))
def test_sap_continuous_invariant_to_affine_maps(seed, scales):
    rng = np.random.default_rng(seed)
    f = rng.integers(0, 5, size=(200, 2))
    z = np.concatenate([f + rng.normal(0, 1, f.shape), rng.normal(size=(200, 2))], 1)
    perm = rng.permutation(4)
    z2 = (z * np.array(scales) + rng.normal(size=4))[:, perm]
    assert sap(z2, f, continuous=True) == pytest.approx(sap(z, f, continuous=True), abs=1e-9)


def test_sap_discrete_binary_hand_case():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 2, size=(400, 1))
    vt = rng.integers(0, 2, size=(200, 1))
    z = np.concatenate([v * 4.0 - 2, rng.normal(size=(400, 1))], 1)
    zt = np.concatenate([vt * 4.0 - 2, rng.normal(size=(200, 1))], 1)
    d = sap_details(z, v, zt, vt)
    assert d["matrix"][0, 0] == 1.0
    assert d["score"] == pytest.approx(1.0 - d["matrix"][1, 0])
    assert d["score"] > 0.3


def test_sap_dsprites_shaped_oracle():
    rng = np.random.default_rng(0)
    f, z = dsprites_perfect(10_000, rng, lambda n: rng.normal(size=(n, 5)))
    ft, zt = dsprites_perfect(5_000, rng, lambda n: rng.normal(size=(n, 5)))
    d = sap_details(z, f, zt, ft)
    assert d["score"] == pytest.approx(0.18, abs=0.01)
    np.testing.assert_allclose(d["per_factor"], [0.66, 0.16, 0.02, 0.03, 0.03], atol=0.015)
    np.testing.assert_allclose(d["matrix"].max(axis=0)[:2], [1.0, 0.34], atol=0.015)


def test_sap_bad_input():
    f = factors_10x10(100)
    with pytest.raises(VaelabError, match="at least 2"):
        sap(np.zeros((100, 1)), f, continuous=True)
    with pytest.raises(VaelabError, match="test sample"):
        sap(np.zeros((100, 3)), f)
    with pytest.raises(VaelabError, match="single value"):
        sap(np.ones((100, 3)), np.zeros((100, 2), int), continuous=True)


# ----------------------------------------------------------------------------- DCI
def test_dci_importance_matrices():
    diag = np.diag(5.0 * np.ones(5))
    assert dci_from_importance(diag) == pytest.approx({"disentanglement": 1.0, "completeness": 1.0})
    assert dci_from_importance(np.zeros((5, 5))) == pytest.approx({"disentanglement": 0.0, "completeness": 0.0}, abs=1e-9)
    h = np.hstack([diag, diag])  # one code, two factors (5 codes x 10 factors)
    assert disentanglement(h) == pytest.approx(1 - LN2_LN10, abs=1e-6)
    assert completeness(h) == pytest.approx(1.0, abs=1e-6)
    v = np.vstack([diag, diag])  # duplicated codes (10 codes x 5 factors)
    assert disentanglement(v) == pytest.approx(1.0, abs=1e-6)
    assert completeness(v) == pytest.approx(1 - LN2_LN10, abs=1e-6)
    with pytest.raises(VaelabError):
        disentanglement(np.ones((1, 3)))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(2, 8), st.integers(2, 6))
def test_dci_scores_match_scipy_entropy_formulation(seed, d, k):
    import scipy.stats

    rng = np.random.default_rng(seed)
    r = rng.random((d, k)) * (rng.random((d, k)) > 0.3)
    per_code = 1 - scipy.stats.entropy(r.T + 1e-11, base=k)
    per_factor = 1 - scipy.stats.entropy(r + 1e-11, base=d)
    w = np.ones_like(r) if r.sum() == 0 else r
    assert disentanglement(r) == pytest.approx(np.sum(per_code * w.sum(1) / w.sum()), abs=1e-12)
    assert completeness(r) == pytest.approx(np.sum(per_factor * w.sum(0) / w.sum()), abs=1e-12)


def _small_factors(n, seed, k=3, values=4):
    return np.random.default_rng(seed).integers(0, values, size=(n, k))


def test_dci_identity_duplicated_permuted():
    f, ft = _small_factors(600, 0), _small_factors(400, 1)
    d = dci(f, f, ft, ft, seed=0)
    assert 0.9 <= d["disentanglement"] <= 1.0 and 0.9 <= d["completeness"] <= 1.0
    assert d["informativeness_train"] == 1.0 and d["informativeness_test"] == 1.0
    dup = dci_details(np.concatenate([f, f], 1), f, np.concatenate([ft, ft], 1), ft, seed=0)
    assert dup["disentanglement"] >= 0.9
    assert dup["completeness"] == pytest.approx(1 - math.log(2) / math.log(6), abs=0.08)
    rng = np.random.default_rng(2)
    perm = lambda a: np.take_along_axis(a, rng.permuted(np.tile(np.arange(3), (len(a), 1)), axis=1), axis=1)  # noqa: E731
    p = dci(perm(f), f, perm(ft), ft, seed=0)
    assert p["disentanglement"] <= 0.2 and p["completeness"] <= 0.2


def test_dci_seeded_and_parallel_identical():
    rng = np.random.default_rng(0)
    f, ft = _small_factors(150, 0, k=2, values=2), _small_factors(100, 1, k=2, values=2)
    z = np.concatenate([f + rng.normal(0, 0.5, f.shape), rng.normal(size=(150, 1))], 1)
    zt = np.concatenate([ft + rng.normal(0, 0.5, ft.shape), rng.normal(size=(100, 1))], 1)
    a = dci_details(z, f, zt, ft, seed=3, n_jobs=1)
    b = dci_details(z, f, zt, ft, seed=3, n_jobs=2)
    np.testing.assert_array_equal(a["importance"], b["importance"])
    assert a["informativeness_test"] == b["informativeness_test"]
    assert a["importance"].shape == (3, 2)
    assert dci_details(z, f, zt, ft, seed=3)["disentanglement"] == a["disentanglement"]


def test_dci_bad_input():
    f = _small_factors(50, 0)
    with pytest.raises(VaelabError, match="at least 2"):
        dci(f[:, :1], f[:, :1], f[:, :1], f[:, :1])
    with pytest.raises(VaelabError, match="dimensions but codes_test"):
        dci(f, f, f[:, :2], f)


# ----------------------------------------------------------------------------- modularity / explicitness
def test_modularity_mi_matrices():
    assert modularity(np.eye(5)) == pytest.approx(1.0)
    assert modularity(np.array([[1.0, 0], [0, 1], [0, 0]])) == pytest.approx(2 / 3)
    two = np.hstack([np.eye(5), np.eye(5)])  # each code carries two of 10 factors equally
    assert modularity(two) == pytest.approx(1 - 1 / 9)
    # hand case: row [1, 2]: t = 4, delta = 1/4 -> 0.75
    assert modularity(np.array([[1.0, 2.0], [0.0, 3.0]])) == pytest.approx((0.75 + 1.0) / 2)


def test_modularity_identity_and_permutation():
    f, ft = _small_factors(1000, 0, k=4, values=5), _small_factors(500, 1, k=4, values=5)
    d = modularity_explicitness(f, f, ft, ft)
    assert 0.9 <= d["modularity"] <= 1.0
    assert d["explicitness_train"] > 0.9 and d["explicitness_test"] > 0.9
    # random per-sample permutation (dlib's 10 x 10 factors): near-equal MI everywhere -> low modularity;
    # the plug-in MI's noise keeps it above 0.2 below ~15,000 points
    f = factors_10x10(20_000)
    rng = np.random.default_rng(0)
    p = np.take_along_axis(f, rng.permuted(np.tile(np.arange(10), (len(f), 1)), axis=1), axis=1)
    assert modularity(discrete_mutual_info(discretize(p), f)) <= 0.2


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**31))
def test_modularity_explicitness_invariances(seed):
    rng = np.random.default_rng(seed)
    f, ft = rng.integers(0, 3, size=(300, 2)), rng.integers(0, 3, size=(150, 2))
    z = np.concatenate([f + rng.normal(0, 0.5, f.shape), rng.normal(size=(300, 1))], 1)
    zt = np.concatenate([ft + rng.normal(0, 0.5, ft.shape), rng.normal(size=(150, 1))], 1)
    base = modularity_explicitness(z, f, zt, ft)
    perm = rng.permutation(3)
    scale = np.exp2(rng.integers(-4, 5, size=3).astype(float))
    other = modularity_explicitness((z * scale)[:, perm], f, (zt * scale)[:, perm], ft)
    assert other["modularity"] == pytest.approx(base["modularity"], abs=1e-12)
    # standardisation: explicitness does not see the per-code scale (up to solver tolerance)
    assert other["explicitness_test"] == pytest.approx(base["explicitness_test"], abs=2e-3)


def test_modularity_dead_codes_count_zero_and_constant_code_dropped():
    f, ft = _small_factors(400, 0), _small_factors(200, 1)
    z = np.concatenate([f, np.zeros((400, 1))], 1).astype(float)
    zt = np.concatenate([ft, np.zeros((200, 1))], 1).astype(float)
    with pytest.warns(RuntimeWarning, match="constant code"):
        d = modularity_explicitness(z, f, zt, ft)
    assert d["modularity"] == pytest.approx(3 / 4 * 1.0, abs=0.03)  # the dead code scores 0 in the mean


def test_modularity_needs_two_factors():
    f = _small_factors(100, 0)
    with pytest.raises(VaelabError, match="2 factors"):
        modularity_explicitness(f, f[:, :1], f, f[:, :1])


# ----------------------------------------------------------------------------- IRS
def test_irs_identity_and_zero():
    f = factors_10x10(3000)
    assert 0.9 <= irs(f.astype(float), f, num_bins=None) <= 1.0
    d = irs_details(np.zeros((3000, 10)), f)
    assert d["score"] <= 0.1 and d["num_active_dims"] == 0


def test_irs_hand_computed():
    # one code equal to the single factor: within each group the code is constant -> EMPIDA 0 -> IRS 1
    v = np.repeat([0, 1, 2], 10)[:, None]
    z = np.concatenate([v.astype(float), np.tile(np.arange(10.0), 3)[:, None]], 1)
    d = irs_details(z, v, num_bins=None)
    assert d["per_latent"][0] == pytest.approx(1.0)
    # second code independent of v: per group |z - mean| 99th pct = 4.5 - 0.045*... compute directly
    dev = np.percentile(np.abs(np.arange(10.0) - 4.5), 99)
    assert d["per_latent"][1] == pytest.approx(1 - dev / 4.5)
    assert d["score"] == pytest.approx((1.0 * 1.0 + 4.5 * (1 - dev / 4.5)) / 5.5)
    assert d["num_active_dims"] == 2


# ----------------------------------------------------------------------------- unsupervised
def test_gaussian_scores_identity_covariance():
    assert total_correlation_from_cov(np.eye(4)) == pytest.approx(0.0, abs=1e-12)
    assert wasserstein_correlation_from_cov(np.eye(4)) == pytest.approx(0.0, abs=1e-12)


def test_wasserstein_matches_scipy_sqrtm():
    import scipy.linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + 0.1 * np.eye(5)
    ref = 2 * np.trace(cov) - 2 * np.trace(scipy.linalg.sqrtm(cov * np.diag(cov)[:, None])).real
    assert wasserstein_correlation_from_cov(cov) == pytest.approx(ref, rel=1e-8)
    tc = 0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1])
    assert total_correlation_from_cov(cov) == pytest.approx(tc)


def test_unsupervised_from_codes():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(10_000, 4))
    assert gaussian_total_correlation(z) == pytest.approx(0.0, abs=0.01)
    assert gaussian_wasserstein_correlation(z) == pytest.approx(0.0, abs=0.05)
    corr = np.concatenate([z, z[:, :1] + 0.1 * rng.normal(size=(10_000, 1))], 1)
    assert gaussian_total_correlation(corr) > 1.0
    assert gaussian_wasserstein_correlation_norm(corr * 3) == pytest.approx(
        gaussian_wasserstein_correlation_norm(corr), rel=1e-9)
    assert mutual_info_score(corr) > mutual_info_score(z)
    collapsed = np.concatenate([z, np.zeros((10_000, 1))], 1)
    assert gaussian_total_correlation(collapsed) == math.inf  # inf, not NaN
    d = unsupervised(collapsed)
    assert set(d) == {"gaussian_total_correlation", "gaussian_wasserstein_correlation",
                      "gaussian_wasserstein_correlation_norm", "mutual_info_score"}
    with pytest.raises(VaelabError, match="at least 2 code"):
        gaussian_total_correlation(z[:, :1])
    with pytest.raises(VaelabError, match="constant"):
        gaussian_wasserstein_correlation_norm(np.zeros((10, 3)))


def test_mutual_info_score_permutation_invariant():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2000, 3))
    z[:, 2] += z[:, 0]
    assert mutual_info_score(z[:, [2, 0, 1]]) == pytest.approx(mutual_info_score(z))


# ----------------------------------------------------------------------------- per-latent KL, active units
def test_kl_per_latent_and_active_units():
    mu = np.zeros((4, 3))
    assert kl_per_latent(mu, np.zeros((4, 3))) == pytest.approx([0, 0, 0])
    mu = np.array([[1.0, 0.0], [1.0, 0.0]])
    lv = np.array([[0.0, math.log(2)], [0.0, math.log(2)]])
    assert kl_per_latent(mu, lv) == pytest.approx([0.5, 0.5 * (2 - math.log(2) - 1)])
    rng = np.random.default_rng(0)
    m = np.stack([rng.normal(size=1000), 0.05 * rng.normal(size=1000), np.zeros(1000)], 1)
    assert active_units(m) == 1  # variance 1 > 0.01; 0.0025 and 0 are not
    assert active_units(m, threshold=0.001) == 2
    with pytest.raises(VaelabError, match="same shape"):
        kl_per_latent(np.zeros((2, 3)), np.zeros((2, 2)))
