"""Interventional Robustness Score (Suter et al.), as dlib ``evaluation/metrics/irs.py`` computes it
(docs/metrics.md#irs; outside the main study).

The 20-bin histogram discretiser is applied to the *factors*; zero-variance code dimensions are dropped
(none left -> 0). MaxDev_l = max_n |z_nl - mean z_l|. For factor i and each binned value u: the subset
S_u, its mean e_u, and the per-dimension ``diff_quantile`` percentile (linear interpolation) of
|z_l - e_ul|; EMPIDA_li = mean over u. IRS_li = 1 - EMPIDA_li / MaxDev_l; s_l = max_i IRS_li;
score = sum_l MaxDev_l s_l / sum_l MaxDev_l. May be slightly negative.
"""
from __future__ import annotations

import numpy as np

from ..errors import VaelabError
from .info import check_pair, discretize
from .registry import register_metric

DEFAULTS = dict(num_train=10_000, diff_quantile=0.99, num_bins=20)  # dlib irs.gin


def irs_details(codes, factors, diff_quantile: float = 0.99, num_bins: int | None = 20) -> dict:
    """IRS with its parts: ``score``, ``num_active_dims`` (a count), ``per_latent`` (scores of the active
    dims), ``active`` (D bool), ``irs_matrix`` (active D x K), ``max_deviations``, ``parents``.

    ``num_bins=None`` keeps the factors as they are (dlib's identity discretiser)."""
    c, f = check_pair(codes, factors)
    if not 0.0 <= diff_quantile <= 1.0:
        raise VaelabError(f"diff_quantile must be in [0, 1], got {diff_quantile}")
    g = f if num_bins is None else discretize(f.astype(np.float64), num_bins)
    active = c.std(axis=0) > 0.0
    z = c[:, active]
    if not active.any():
        return {"score": 0.0, "num_active_dims": 0, "per_latent": np.zeros(0), "active": active,
                "irs_matrix": np.zeros((0, f.shape[1])), "max_deviations": np.zeros(0),
                "parents": np.zeros(0, dtype=np.int64)}
    max_dev = np.max(np.abs(z - z.mean(axis=0)), axis=0)
    cum = np.zeros((z.shape[1], g.shape[1]))
    for i in range(g.shape[1]):
        values = np.unique(g[:, i])
        for u in values:
            sub = z[g[:, i] == u]
            diffs = np.abs(sub - sub.mean(axis=0))
            cum[:, i] += np.percentile(diffs, q=diff_quantile * 100, axis=0)
        cum[:, i] /= len(values)
    irs_matrix = 1.0 - cum / max_dev[:, None]
    per_latent = irs_matrix.max(axis=1)
    if np.sum(max_dev) > 0.0:
        score = float(np.average(per_latent, weights=max_dev))
    else:
        score = float(np.mean(per_latent))
    return {"score": score, "num_active_dims": int(active.sum()), "per_latent": per_latent, "active": active,
            "irs_matrix": irs_matrix, "max_deviations": max_dev, "parents": irs_matrix.argmax(axis=1)}


def irs(codes, factors, diff_quantile: float = 0.99, num_bins: int | None = 20) -> float:
    """IRS of codes ``N x D`` against factors ``N x K``."""
    return irs_details(codes, factors, diff_quantile, num_bins)["score"]


def irs_score(encode, dataset, seed: int = 0, num_train: int = DEFAULTS["num_train"],
              diff_quantile: float = DEFAULTS["diff_quantile"], num_bins: int = DEFAULTS["num_bins"],
              *, sampler=None) -> dict:
    """IRS on ``num_train`` i.i.d. draws from ``dataset``."""
    from .sampling import get_sampler

    s = get_sampler(encode, dataset, sampler)
    rng = np.random.default_rng(seed)
    f, z = s.sample(num_train, rng, "IRS")
    return irs_details(z, f, diff_quantile, num_bins)


@register_metric("irs", title="IRS", needs="factors", defaults=DEFAULTS, headline=["score", "num_active_dims"])
def evaluate_irs(sampler, seed, **settings) -> dict:
    """eval.json's ``irs.*``: the score, the active dimensions and the score per code (None where the
    code is constant)."""
    d = irs_score(None, sampler.dataset, seed, sampler=sampler, **settings)
    per_code = [None] * len(d["active"])
    for j, v in zip(np.flatnonzero(d["active"]), d["per_latent"]):
        per_code[int(j)] = float(v)
    return {"score": d["score"], "num_active_dims": d["num_active_dims"], "per_code": per_code}
