"""The numbers behind a study's report (pure functions of study.json's ``runs``; plotting is in
:mod:`vaelab.viz.study_report`).

Following Locatello et al. 2019 ("Challenging Common Assumptions in the Unsupervised Learning of
Disentangled Representations", ICML): each metric's scores per objective over all settings and seeds
(their Fig. 1), the Spearman rank correlation between the metrics over all runs (their Fig. 2), and
for each objective the scores against its regularisation strength with the spread over seeds. Added
here: each metric against the reconstruction the run gave up (``elbo.reconstruction``, nats per
image) and the best setting of each objective per metric.

A run here is a dict with ``model``, ``value`` (the regularisation strength), ``seed`` and ``scores``
(``{"mig.score": 0.12, ...}``), as study.json lists them.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

__all__ = ["rankdata", "spearman", "spearman_matrix", "score_keys", "distributions", "strength_curve",
           "tradeoff", "best_settings", "spans_decades", "mean_std", "RECONSTRUCTION", "LOWER_IS_BETTER",
           "UNITS"]

RECONSTRUCTION = "elbo.reconstruction"
# scores where a smaller number is the better one (the best-setting table picks the smallest mean)
LOWER_IS_BETTER = {"unsupervised.gaussian_total_correlation", "unsupervised.gaussian_wasserstein_correlation",
                   "unsupervised.gaussian_wasserstein_correlation_norm", "unsupervised.mutual_info_score",
                   "elbo.reconstruction", "elbo.kl", "elbo.reconstruction_at_mean"}
# what each score is measured in (axis labels)
UNITS = {
    "beta_vae.eval_accuracy": "held-out accuracy, fraction", "beta_vae.train_accuracy": "accuracy, fraction",
    "factor_vae.eval_accuracy": "held-out accuracy, fraction", "factor_vae.train_accuracy": "accuracy, fraction",
    "factor_vae.num_active_dims": "latents", "mig.score": "normalised MI gap, 0 to 1",
    "sap.score": "score gap, 0 to 1", "dci.disentanglement": "0 to 1", "dci.completeness": "0 to 1",
    "dci.informativeness_train": "accuracy, fraction", "dci.informativeness_test": "accuracy, fraction",
    "modularity.modularity": "0 to 1", "modularity.explicitness_train": "ROC AUC",
    "modularity.explicitness_test": "ROC AUC", "irs.score": "0 to 1", "irs.num_active_dims": "latents",
    "unsupervised.gaussian_total_correlation": "nats", "unsupervised.gaussian_wasserstein_correlation": "",
    "unsupervised.gaussian_wasserstein_correlation_norm": "", "unsupervised.mutual_info_score": "",
    "latent.active_units": "latents", "latent.kl_total": "nats / image",
    "elbo.elbo": "nats / image", "elbo.reconstruction": "nats / image", "elbo.kl": "nats / image",
    "elbo.reconstruction_at_mean": "nats / image",
}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------------------------------- Spearman
def rankdata(x) -> np.ndarray:
    """Ranks 1..n of ``x``, ties sharing their average rank (as ``scipy.stats.rankdata``'s default)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation: the Pearson correlation of the ranks (ties averaged). NaN with
    fewer than 2 pairs or when either side is constant."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError("x and y need the same length")
    if len(x) < 2:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / den) if den > 0 else float("nan")


def spearman_matrix(runs: list[dict], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(K x K Spearman correlations between the scores ``keys`` over the runs that have both, K x K
    counts of those runs)."""
    k = len(keys)
    rho = np.full((k, k), np.nan)
    n = np.zeros((k, k), dtype=np.int64)
    for a in range(k):
        for b in range(k):
            pairs = [(r["scores"][keys[a]], r["scores"][keys[b]]) for r in runs
                     if _finite((r.get("scores") or {}).get(keys[a])) and _finite((r.get("scores") or {}).get(keys[b]))]
            n[a, b] = len(pairs)
            if pairs:
                xs, ys = zip(*pairs)
                rho[a, b] = spearman(xs, ys)
    return rho, n


# ---------------------------------------------------------------------------------------- groupings
def score_keys(runs: list[dict], order=None) -> list[str]:
    """The score keys some run has, in ``order`` (e.g. the metric registry's headline order) first."""
    have = []
    for r in runs:
        for key, v in (r.get("scores") or {}).items():
            if _finite(v) and key not in have:
                have.append(key)
    if order:
        first = [k for k in order if k in have]
        return first + [k for k in have if k not in first]
    return have


def _models(runs) -> list[str]:
    return list(OrderedDict.fromkeys(r["model"] for r in runs))


def distributions(runs: list[dict], key: str) -> "OrderedDict[str, list[float]]":
    """Per objective, every run's ``key`` score (all settings and seeds), objectives in first-seen order."""
    out: OrderedDict[str, list[float]] = OrderedDict()
    for m in _models(runs):
        out[m] = [float(r["scores"][key]) for r in runs if r["model"] == m and _finite((r.get("scores") or {}).get(key))]
    return out


def mean_std(values) -> tuple[float | None, float | None, int]:
    """(mean, sample std, n); std None for one value, both None for none."""
    vals = [float(v) for v in values if _finite(v)]
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None, 1
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)), len(vals)


def strength_curve(runs: list[dict], model: str, key: str) -> list[dict]:
    """One objective's ``key`` against its regularisation strength: per value (ascending) the mean, sample
    std, n and each seed's ``(seed, score)``."""
    values = sorted({float(r["value"]) for r in runs if r["model"] == model})
    out = []
    for v in values:
        pts = [(r["seed"], float(r["scores"][key])) for r in runs if r["model"] == model and float(r["value"]) == v
               and _finite((r.get("scores") or {}).get(key))]
        mean, std, n = mean_std([p[1] for p in pts])
        if n:
            out.append({"value": v, "mean": mean, "std": std, "n": n, "points": sorted(pts)})
    return out


def tradeoff(runs: list[dict], key: str, against: str = RECONSTRUCTION) -> "OrderedDict[str, list[tuple]]":
    """Per objective, the runs' ``(reconstruction, score, value)`` points (runs that have both)."""
    out: OrderedDict[str, list[tuple]] = OrderedDict()
    for m in _models(runs):
        pts = [(float(r["scores"][against]), float(r["scores"][key]), r["value"]) for r in runs
               if r["model"] == m and _finite((r.get("scores") or {}).get(against))
               and _finite((r.get("scores") or {}).get(key))]
        if pts:
            out[m] = pts
    return out


def best_settings(runs: list[dict], key: str, lower_is_better: bool | None = None) -> list[dict]:
    """Per objective, the setting (regularisation strength) with the best mean ``key`` over its seeds:
    ``{"model", "value", "mean", "std" (None for n = 1), "n", "settings"}`` (``settings``: how many
    values had the score). Ties go to the smaller value."""
    lower = key in LOWER_IS_BETTER if lower_is_better is None else lower_is_better
    out = []
    for m in _models(runs):
        curve = strength_curve(runs, m, key)
        if not curve:
            continue
        best = None
        for c in curve:  # ascending values: a later value wins only when strictly better
            if best is None or (c["mean"] < best["mean"] if lower else c["mean"] > best["mean"]):
                best = c
        out.append({"model": m, "value": best["value"], "mean": best["mean"], "std": best["std"], "n": best["n"],
                    "settings": len(curve)})
    return out


def spans_decades(values) -> bool:
    """Whether a log axis suits ``values``: all positive and the largest at least 10 x the smallest."""
    vals = [float(v) for v in values if _finite(v)]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) >= 10
