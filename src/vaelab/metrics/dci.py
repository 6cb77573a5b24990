"""Disentanglement, Completeness, Informativeness (Eastwood & Williams), as dlib
``evaluation/metrics/dci.py`` computes it (SPEC.md 5.5).

Per factor k a ``GradientBoostingClassifier()`` (100 stages, learning rate 0.1, depth 3) on all D codes;
R[:, k] = |feature_importances_|; informativeness = mean accuracy on train / test (higher is better).
Disentanglement: P_dk = (R_dk + 1e-11) / sum_k'(R_dk' + 1e-11), D_d = 1 - H_K(P_d.), weights
rho_d = sum_k R_dk / sum R (all-zero R -> ones), score sum_d rho_d D_d. Completeness likewise per factor
with log base D. The per-factor fits are independent: ``n_jobs`` runs them in parallel processes with
identical results (each factor's random_state is drawn before any fit).
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import VaelabError
from .info import check_train_test, entropy_normalised, estimator_seed, require_varied_factors

DEFAULTS = dict(num_train=10_000, num_test=5_000)  # dlib dci.gin
_SMOOTH = 1e-11  # dlib adds 1e-11 to the importances before normalising


def _check_importance(importance) -> np.ndarray:
    r = np.asarray(importance, dtype=np.float64)
    if r.ndim != 2:
        raise VaelabError(f"importance matrix must be D x K, got shape {r.shape}")
    if r.shape[0] < 2 or r.shape[1] < 2:
        raise VaelabError(f"DCI needs at least 2 code dimensions and 2 factors, got D = {r.shape[0]}, "
                          f"K = {r.shape[1]} (entropies in base 1 are undefined)")
    if not np.isfinite(r).all() or (r < 0).any():
        raise VaelabError("importance matrix must hold finite non-negative values")
    return r


def disentanglement_per_code(importance) -> np.ndarray:
    r = _check_importance(importance)
    return 1.0 - entropy_normalised(r + _SMOOTH, base=r.shape[1], axis=1)


def completeness_per_factor(importance) -> np.ndarray:
    r = _check_importance(importance)
    return 1.0 - entropy_normalised(r + _SMOOTH, base=r.shape[0], axis=0)


def disentanglement(importance) -> float:
    """Importance-weighted mean of per-code disentanglement (``importance`` D x K)."""
    r = _check_importance(importance)
    per_code = disentanglement_per_code(r)
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return float(np.sum(per_code * r.sum(axis=1) / r.sum()))


def completeness(importance) -> float:
    """Importance-weighted mean of per-factor completeness (``importance`` D x K)."""
    r = _check_importance(importance)
    per_factor = completeness_per_factor(r)
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return float(np.sum(per_factor * r.sum(axis=0) / r.sum()))


def _fit_one(x, y, xt, yt, seed):
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(random_state=seed)  # dlib: ensemble.GradientBoostingClassifier()
    model.fit(x, y)
    return (np.abs(model.feature_importances_), float(np.mean(model.predict(x) == y)),
            float(np.mean(model.predict(xt) == yt)))


def _resolve_jobs(n_jobs, tasks: int) -> int:
    if n_jobs is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        n_jobs = cores
    n_jobs = int(n_jobs)
    if n_jobs < 1:
        n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)  # joblib's -1 = all cores
    return max(1, min(n_jobs, tasks))


def importance_gbt(codes, factors, codes_test, factors_test, seed: int = 0, n_jobs: int | None = 1):
    """``(R D x K, train accuracies K, test accuracies K)`` from one GBT per factor."""
    c, f, ct, ft = check_train_test(codes, factors, codes_test, factors_test)
    require_varied_factors(f, "DCI")
    rng = np.random.default_rng(seed)
    seeds = [estimator_seed(rng) for _ in range(f.shape[1])]
    k_count = f.shape[1]
    jobs = _resolve_jobs(n_jobs, k_count)
    if jobs == 1:
        results = [_fit_one(c, f[:, k], ct, ft[:, k], seeds[k]) for k in range(k_count)]
    else:
        from joblib import Parallel, delayed

        # largest problems first (a multi-class GBT grows one tree per class per stage)
        order = sorted(range(k_count), key=lambda k: -len(np.unique(f[:, k])))
        out = Parallel(n_jobs=jobs)(delayed(_fit_one)(c, f[:, k], ct, ft[:, k], seeds[k]) for k in order)
        results = [None] * k_count
        for k, res in zip(order, out):
            results[k] = res
    r = np.stack([res[0] for res in results], axis=1)
    acc_train = np.array([res[1] for res in results])
    acc_test = np.array([res[2] for res in results])
    return r, acc_train, acc_test


def dci_from_importance(importance) -> dict:
    """Disentanglement and completeness of an importance matrix ``D x K``."""
    return {"disentanglement": disentanglement(importance), "completeness": completeness(importance)}


def dci_details(codes, factors, codes_test, factors_test, seed: int = 0, n_jobs: int | None = 1) -> dict:
    """DCI with its parts: the four scores plus ``importance`` (D x K), ``disentanglement_per_code`` (D),
    ``completeness_per_factor`` (K), ``code_weights`` (D), ``accuracy_train`` / ``accuracy_test`` (K)."""
    c, f, ct, ft = check_train_test(codes, factors, codes_test, factors_test)
    if c.shape[1] < 2 or f.shape[1] < 2:
        raise VaelabError(f"DCI needs at least 2 code dimensions and 2 factors, got D = {c.shape[1]}, "
                          f"K = {f.shape[1]} (entropies in base 1 are undefined)")
    r, acc_train, acc_test = importance_gbt(c, f, ct, ft, seed, n_jobs)
    weights = r.sum(axis=1) / r.sum() if r.sum() > 0 else np.full(r.shape[0], 1.0 / r.shape[0])
    return {
        "disentanglement": disentanglement(r),
        "completeness": completeness(r),
        "informativeness_train": float(np.mean(acc_train)),
        "informativeness_test": float(np.mean(acc_test)),
        "importance": r,
        "disentanglement_per_code": disentanglement_per_code(r),
        "completeness_per_factor": completeness_per_factor(r),
        "code_weights": weights,
        "accuracy_train": acc_train,
        "accuracy_test": acc_test,
    }


def dci(codes, factors, codes_test, factors_test, seed: int = 0, n_jobs: int | None = 1) -> dict:
    """DCI scores: ``disentanglement``, ``completeness``, ``informativeness_train``, ``informativeness_test``.

    ``seed`` derives each GBT's random_state (dlib leaves them unseeded); ``n_jobs`` > 1 fits the
    factors in parallel processes (same numbers), ``None`` uses every available core."""
    d = dci_details(codes, factors, codes_test, factors_test, seed, n_jobs)
    return {k: d[k] for k in ("disentanglement", "completeness", "informativeness_train", "informativeness_test")}


def dci_score(encode, dataset, seed: int = 0, num_train: int = DEFAULTS["num_train"],
              num_test: int = DEFAULTS["num_test"], n_jobs: int | None = None, *, sampler=None) -> dict:
    """DCI on i.i.d. train / test draws from ``dataset`` (see :func:`dci_details`)."""
    from .sampling import get_sampler

    s = get_sampler(encode, dataset, sampler)
    rng = np.random.default_rng(seed)
    f, z = s.sample(num_train, rng, "DCI")
    ft, zt = s.sample(num_test, rng, "DCI")
    return dci_details(z, f, zt, ft, seed=estimator_seed(rng), n_jobs=n_jobs)
