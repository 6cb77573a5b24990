"""Mutual Information Gap (Chen et al.), as dlib ``evaluation/metrics/mig.py`` computes it (docs/metrics.md#mig).

Codes are discretised with the 20-bin histogram discretiser; M[d, k] = I(z_d; v_k) (plug-in, nats);
MIG = mean over factors of (largest - second largest of column k) / H(v_k).
Note the reference's ceiling below 1: a 20-bin code holds at most ln 20 nats, so a perfect code scores
at most ln 20 / ln n_k on a uniform factor with n_k > 20 values.
"""
from __future__ import annotations

import numpy as np

from ..errors import VaelabError
from .info import check_pair, discrete_entropy, discrete_mutual_info, discretize, require_varied_factors
from .registry import by_factor, register_metric

DEFAULTS = dict(num_train=10_000, num_bins=20)  # dlib mig.gin: mig.num_train = 10000, 20-bin discretizer


def mig_details(codes, factors, num_bins: int | None = 20) -> dict:
    """MIG with its parts: ``score``, ``per_factor`` (K), ``mutual_info`` (D x K), ``entropy`` (K).

    ``num_bins=None`` uses the codes as they are (already discrete labels; dlib's identity discretiser)."""
    c, f = check_pair(codes, factors)
    if c.shape[1] < 2:
        raise VaelabError(f"MIG needs at least 2 code dimensions (the gap between the two best), got {c.shape[1]}")
    require_varied_factors(f, "MIG")
    zd = c if num_bins is None else discretize(c, num_bins)
    m = discrete_mutual_info(zd, f)
    h = discrete_entropy(f)
    top = np.sort(m, axis=0)[::-1]
    per_factor = (top[0] - top[1]) / h
    return {"score": float(np.mean(per_factor)), "per_factor": per_factor, "mutual_info": m, "entropy": h}


def mig(codes, factors, num_bins: int | None = 20) -> float:
    """Mutual Information Gap of codes ``N x D`` against factors ``N x K`` (dlib ``discrete_mig``)."""
    return mig_details(codes, factors, num_bins)["score"]


def mig_score(encode, dataset, seed: int = 0, num_train: int = DEFAULTS["num_train"],
              num_bins: int = DEFAULTS["num_bins"], *, sampler=None) -> dict:
    """MIG on ``num_train`` i.i.d. points drawn from ``dataset`` (see :func:`mig_details`)."""
    from .sampling import get_sampler

    s = get_sampler(encode, dataset, sampler)
    rng = np.random.default_rng(seed)
    f, z = s.sample(num_train, rng, "MIG")
    return mig_details(z, f, num_bins)


@register_metric("mig", title="MIG", needs="factors", defaults=DEFAULTS, headline=["score"])
def evaluate_mig(sampler, seed, **settings) -> dict:
    """eval.json's ``mig.*``: the score, per factor its gap and entropy, and the mutual information D x K."""
    d = mig_score(None, sampler.dataset, seed, sampler=sampler, **settings)
    ds = sampler.dataset
    return {"score": d["score"], "per_factor": by_factor(d["per_factor"], ds),
            "entropy": by_factor(d["entropy"], ds), "mutual_info": d["mutual_info"].tolist()}
