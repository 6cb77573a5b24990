"""Separated Attribute Predictability (Kumar et al.), as dlib ``evaluation/metrics/sap_score.py`` (docs/metrics.md#sap).

S[d, k]: discrete mode = test accuracy of ``LinearSVC(C=0.01, class_weight="balanced")`` fitted on the
single, unscaled feature z_d to predict v_k; continuous mode = cov(z_d, v_k)^2 / (var z_d var v_k) on the
training sample (0 where var z_d <= 1e-12). SAP = mean over factors of (largest - second largest in
column k). Discrete SAP is low by design for many-valued factors (a perfect dSprites code gets ~0.18).
"""
from __future__ import annotations

import numpy as np

from ..errors import VaelabError
from .info import WarningCounter, check_pair, check_train_test, estimator_seed, require_varied_factors
from .registry import by_factor, register_metric

# dlib sap_score.gin: num_train 10000, num_test 5000, continuous_factors False
DEFAULTS = dict(num_train=10_000, num_test=5_000, continuous=False)


def _svc(seed: int):
    from sklearn.svm import LinearSVC

    # dlib: svm.LinearSVC(C=0.01, class_weight="balanced"); squared hinge, one-vs-rest, tol 1e-4,
    # 1000 iterations; dual=True pinned (the default in dlib's scikit-learn era, "auto" since 1.3).
    return LinearSVC(C=0.01, class_weight="balanced", dual=True, random_state=seed)


def sap_matrix(codes, factors, codes_test=None, factors_test=None, continuous: bool = False,
               seed: int = 0) -> tuple[np.ndarray, int]:
    """The ``D x K`` score matrix S and the number of ConvergenceWarnings (discrete mode)."""
    if continuous:
        c, f = check_pair(codes, factors)
        ff = f.astype(np.float64)
        zc = c - c.mean(axis=0)
        fc = ff - ff.mean(axis=0)
        n = c.shape[0]
        if n < 2:
            raise VaelabError("continuous SAP needs at least 2 points")
        cov = zc.T @ fc / (n - 1)                      # D x K, ddof 1 as np.cov
        var_z = (zc ** 2).sum(axis=0) / (n - 1)
        var_f = (fc ** 2).sum(axis=0) / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = cov ** 2 / (var_z[:, None] * var_f[None, :])
        s[var_z <= 1e-12, :] = 0.0
        return s, 0
    if codes_test is None or factors_test is None:
        raise VaelabError("discrete SAP needs a test sample (codes_test, factors_test)")
    c, f, ct, ft = check_train_test(codes, factors, codes_test, factors_test)
    rng = np.random.default_rng(seed)
    counter = WarningCounter()
    s = np.zeros((c.shape[1], f.shape[1]))
    for d in range(c.shape[1]):
        x, xt = c[:, d:d + 1], ct[:, d:d + 1]
        for k in range(f.shape[1]):
            clf = _svc(estimator_seed(rng))
            with counter():
                clf.fit(x, f[:, k])
            s[d, k] = np.mean(clf.predict(xt) == ft[:, k])
    return s, counter.count


def sap_details(codes, factors, codes_test=None, factors_test=None, continuous: bool = False,
                seed: int = 0) -> dict:
    """SAP with its parts: ``score``, ``per_factor`` (K), ``matrix`` (D x K), ``convergence_warnings``."""
    c, f = check_pair(codes, factors)
    if c.shape[1] < 2:
        raise VaelabError(f"SAP needs at least 2 code dimensions (the gap between the two best), got {c.shape[1]}")
    require_varied_factors(f, "SAP")
    s, warns = sap_matrix(c, f, codes_test, factors_test, continuous, seed)
    top = np.sort(s, axis=0)
    per_factor = top[-1] - top[-2]
    return {"score": float(np.mean(per_factor)), "per_factor": per_factor, "matrix": s,
            "convergence_warnings": warns}


def sap(codes, factors, codes_test=None, factors_test=None, continuous: bool = False, seed: int = 0) -> float:
    """SAP score (dlib ``SAP_score``). Discrete mode (default) needs the test sample; continuous mode
    uses the training sample only. ``seed`` derives LinearSVC's random_state."""
    return sap_details(codes, factors, codes_test, factors_test, continuous, seed)["score"]


def sap_score(encode, dataset, seed: int = 0, num_train: int = DEFAULTS["num_train"],
              num_test: int = DEFAULTS["num_test"], continuous: bool = DEFAULTS["continuous"],
              *, sampler=None) -> dict:
    """SAP on i.i.d. train / test draws from ``dataset`` (see :func:`sap_details`)."""
    from .sampling import train_test_draws

    f, z, ft, zt, est_seed = train_test_draws(encode, dataset, sampler, seed, num_train, num_test, "SAP")
    return sap_details(z, f, zt, ft, continuous, seed=est_seed)


@register_metric("sap", title="SAP", needs="factors", defaults=DEFAULTS, headline=["score"], aliases=("sap_score",))
def evaluate_sap(sampler, seed, **settings):
    """eval.json's ``sap.*``: the score, the gap per factor and the matrix S (D x K); LinearSVC's
    convergence warnings."""
    d = sap_score(None, sampler.dataset, seed, sampler=sampler, **settings)
    return ({"score": d["score"], "per_factor": by_factor(d["per_factor"], sampler.dataset),
             "matrix": d["matrix"].tolist()}, d["convergence_warnings"])
