"""Modularity and Explicitness (Ridgeway & Mozer), as dlib
``evaluation/metrics/modularity_explicitness.py`` computes them (docs/metrics.md#modularity-and-explicitness).

Modularity (train sample): M = discrete MI (D x K) of the 20-bin discretised codes; t_d = max_k M_dk^2;
delta_d = (sum_k M_dk^2 - t_d) / (t_d (K - 1)); modularity_d = 1 - delta_d, or 0 if t_d = 0;
score = unweighted mean over all D codes (dead codes count 0).
Explicitness: codes standardised with the train mean / std (the test sample reuses them); per factor a
``LogisticRegression()`` on all codes; one-vs-rest ROC-AUC per class, macro mean, on train and test;
mean over factors. dlib one-hot encodes train and test labels separately, so a class missing from the
test sample crashes it; here the classifier's classes present in the evaluated labels are scored
(identical otherwise). Zero-std codes are dropped from explicitness with a warning.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import VaelabError
from .info import (WarningCounter, check_train_test, discrete_mutual_info, discretize,
                   estimator_seed, require_varied_factors)
from .registry import by_factor, register_metric

DEFAULTS = dict(num_train=10_000, num_test=5_000, num_bins=20)  # dlib modularity_explicitness.gin


def modularity_per_code(mutual_information) -> np.ndarray:
    m = np.asarray(mutual_information, dtype=np.float64)
    if m.ndim != 2:
        raise VaelabError(f"mutual information matrix must be D x K, got shape {m.shape}")
    if m.shape[1] < 2:
        raise VaelabError(f"modularity needs at least 2 factors, got K = {m.shape[1]}")
    sq = m ** 2
    t = sq.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (sq.sum(axis=1) - t) / (t * (m.shape[1] - 1.0))
    out = 1.0 - delta
    out[t == 0.0] = 0.0
    return out


def modularity(mutual_information) -> float:
    """Modularity of a mutual-information matrix ``D x K`` (unweighted mean over codes)."""
    return float(np.mean(modularity_per_code(mutual_information)))


def _macro_auc(clf, x, y) -> float:
    from sklearn.metrics import roc_auc_score

    proba = clf.predict_proba(x)
    aucs = []
    for j, cls in enumerate(clf.classes_):
        pos = y == cls
        if pos.any() and not pos.all():
            aucs.append(roc_auc_score(pos, proba[:, j]))
    return float(np.mean(aucs)) if aucs else float("nan")


def explicitness(codes, factors, codes_test, factors_test, seed: int = 0) -> dict:
    """``explicitness_train``, ``explicitness_test`` and per-factor values (macro one-vs-rest ROC-AUC)."""
    from sklearn.linear_model import LogisticRegression

    c, f, ct, ft = check_train_test(codes, factors, codes_test, factors_test)
    require_varied_factors(f, "explicitness")
    mean = c.mean(axis=0)
    std = c.std(axis=0)  # ddof 0, as dlib utils.normalize_data
    keep = std > 0
    dropped = int((~keep).sum())
    if dropped:
        warnings.warn(f"explicitness: {dropped} constant code dimension(s) dropped (zero standard deviation)",
                      RuntimeWarning, stacklevel=2)
    rng = np.random.default_rng(seed)
    counter = WarningCounter()
    train, test = np.zeros(f.shape[1]), np.zeros(f.shape[1])
    if not keep.any():
        train[:] = 0.5  # no information: chance-level AUC
        test[:] = 0.5
    else:
        x = (c[:, keep] - mean[keep]) / std[keep]
        xt = (ct[:, keep] - mean[keep]) / std[keep]
        for k in range(f.shape[1]):
            clf = LogisticRegression(random_state=estimator_seed(rng))  # dlib: linear_model.LogisticRegression()
            with counter():
                clf.fit(x, f[:, k])
            train[k] = _macro_auc(clf, x, f[:, k])
            test[k] = _macro_auc(clf, xt, ft[:, k])
    return {"explicitness_train": float(np.mean(train)), "explicitness_test": float(np.mean(test)),
            "explicitness_train_per_factor": train, "explicitness_test_per_factor": test,
            "dropped_codes": dropped, "convergence_warnings": counter.count}


def modularity_explicitness_details(codes, factors, codes_test, factors_test, seed: int = 0,
                                    num_bins: int | None = 20) -> dict:
    """All parts: ``modularity``, ``explicitness_train``, ``explicitness_test``, ``modularity_per_code`` (D),
    ``mutual_info`` (D x K), per-factor explicitness, ``dropped_codes``, ``convergence_warnings``."""
    c, f, ct, ft = check_train_test(codes, factors, codes_test, factors_test)
    if f.shape[1] < 2:
        raise VaelabError(f"modularity needs at least 2 factors, got K = {f.shape[1]}")
    require_varied_factors(f, "modularity")
    zd = c if num_bins is None else discretize(c, num_bins)
    mi = discrete_mutual_info(zd, f)
    out = {"modularity": modularity(mi), "modularity_per_code": modularity_per_code(mi), "mutual_info": mi}
    out.update(explicitness(c, f, ct, ft, seed))
    return out


def modularity_explicitness(codes, factors, codes_test, factors_test, seed: int = 0,
                            num_bins: int | None = 20) -> dict:
    """``modularity``, ``explicitness_train``, ``explicitness_test``."""
    d = modularity_explicitness_details(codes, factors, codes_test, factors_test, seed, num_bins)
    return {k: d[k] for k in ("modularity", "explicitness_train", "explicitness_test")}


def modularity_score(encode, dataset, seed: int = 0, num_train: int = DEFAULTS["num_train"],
                     num_test: int = DEFAULTS["num_test"], num_bins: int = DEFAULTS["num_bins"],
                     *, sampler=None) -> dict:
    """Modularity and explicitness on i.i.d. draws from ``dataset``."""
    from .sampling import train_test_draws

    f, z, ft, zt, est_seed = train_test_draws(encode, dataset, sampler, seed, num_train, num_test, "modularity")
    return modularity_explicitness_details(z, f, zt, ft, seed=est_seed, num_bins=num_bins)


@register_metric("modularity", title="Modularity / explicitness", needs="factors", defaults=DEFAULTS,
                 headline=["modularity", "explicitness_train", "explicitness_test"], min_factors=2,
                 aliases=("explicitness", "modularity_explicitness"))
def evaluate_modularity(sampler, seed, **settings):
    """eval.json's ``modularity.*``: the three scores, per code and per factor, the mutual information and
    the codes dropped from explicitness; the classifiers' convergence warnings."""
    d = modularity_score(None, sampler.dataset, seed, sampler=sampler, **settings)
    ds = sampler.dataset
    out = {k: d[k] for k in ("modularity", "explicitness_train", "explicitness_test")}
    out["per_code"] = {"modularity": d["modularity_per_code"].tolist()}
    out["per_factor"] = {"explicitness_train": by_factor(d["explicitness_train_per_factor"], ds),
                         "explicitness_test": by_factor(d["explicitness_test_per_factor"], ds)}
    out["mutual_info"] = d["mutual_info"].tolist()
    out["dropped_codes"] = d["dropped_codes"]
    return out, d["convergence_warnings"]
