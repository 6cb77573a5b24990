"""FactorVAE score (Kim & Mnih), as dlib ``evaluation/metrics/factor_vae.py`` + ``factor_vae_metric.gin``
computes it (docs/metrics.md#factorvae-score). Grid datasets only.

1. s2_d = unbiased variance of each code over 10,000 images. 2. Active: sqrt(s2_d) >= threshold (an
absolute std, 0.05 in the study; dlib's function default is 0); none active -> 0. 3. Vote: k ~ U{0..K-1};
L = 64 rows with column k set to the first row's value; v2_d = unbiased variance of the L codes;
j* = argmin over active d of v2_d / s2_d; votes[k, j*] += 1. 4. c(j) = argmax_k V_train[k, j] (ties ->
smallest k, empty -> 0); accuracy = sum_j V[c(j), j] / sum V on the training votes and on fresh votes
(score = ``eval_accuracy``).

With threshold 0 a dimension of exactly zero variance makes 0/0 = NaN; ``np.argmin`` returns the first
NaN, so that dimension wins every vote and the score collapses to about 1/K. ``nan_policy="reference"``
(default) reproduces this, with a warning; ``"exclude"`` never lets a zero-variance dimension win.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import VaelabError
from .registry import register_metric, setting_count

# dlib factor_vae_metric.gin: batch_size 64, num_train 10000, num_eval 5000, num_variance_estimate 10000,
# prune_dims.threshold 0.05
DEFAULTS = dict(batch_size=64, num_train=10_000, num_eval=5_000, num_variance_estimate=10_000, threshold=0.05,
                nan_policy="reference")
_CHUNK_ROWS = 1 << 17
NAN_POLICIES = ("reference", "exclude")


def _votes(sampler, n, batch_size, rng, global_var, active, nan_policy) -> np.ndarray:
    ds = sampler.dataset
    k_count = ds.num_factors
    labels = rng.integers(0, k_count, size=n)
    f = ds.sample_factors(n * batch_size, rng).reshape(n, batch_size, k_count)
    ar = np.arange(n)
    f[ar, :, labels] = f[ar, 0, labels][:, None]
    active_idx = np.flatnonzero(active)
    g = global_var[active_idx]
    winners = []
    step = max(1, _CHUNK_ROWS // batch_size)
    for i in range(0, n, step):
        rows = f[i:i + step].reshape(-1, k_count)
        z = sampler.codes_for_factors(rows, rng).reshape(-1, batch_size, global_var.shape[0])
        local = np.var(z[:, :, active_idx], axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = local / g
        if nan_policy == "exclude":
            ratio[:, g == 0] = np.inf
        winners.append(active_idx[np.argmin(ratio, axis=1)])  # argmin returns the first NaN, as dlib
    votes = np.zeros((k_count, global_var.shape[0]), dtype=np.int64)
    np.add.at(votes, (labels, np.concatenate(winners)), 1)
    return votes


def factor_vae_accuracy(train_votes, eval_votes=None) -> dict:
    """Majority-vote accuracies from vote matrices ``K x D`` (rows factors, columns code dims)."""
    v = np.asarray(train_votes, dtype=np.int64)
    classifier = np.argmax(v, axis=0)
    cols = np.arange(v.shape[1])
    out = {"train_accuracy": float(v[classifier, cols].sum() / v.sum()) if v.sum() else 0.0}
    if eval_votes is not None:
        e = np.asarray(eval_votes, dtype=np.int64)
        out["eval_accuracy"] = float(e[classifier, cols].sum() / e.sum()) if e.sum() else 0.0
    return out


def factor_vae_score(encode, dataset, seed: int = 0, batch_size: int = DEFAULTS["batch_size"],
                     num_train: int = DEFAULTS["num_train"], num_eval: int = DEFAULTS["num_eval"],
                     num_variance_estimate: int = DEFAULTS["num_variance_estimate"],
                     threshold: float = DEFAULTS["threshold"], nan_policy: str = DEFAULTS["nan_policy"],
                     *, sampler=None) -> dict:
    """FactorVAE score of ``encode`` on a grid ``dataset``: ``train_accuracy``, ``eval_accuracy`` (the
    score), ``num_active_dims`` (a count), ``global_variance`` (D), ``votes_train`` / ``votes_eval`` (K x D)."""
    from .sampling import _count, get_sampler

    if nan_policy not in NAN_POLICIES:
        raise VaelabError(f"nan_policy must be one of {', '.join(NAN_POLICIES)}, got {nan_policy!r}")
    if not threshold >= 0:
        raise VaelabError(f"threshold must be a non-negative standard deviation, got {threshold}")
    s = get_sampler(encode, dataset, sampler)
    s.require_grid("the FactorVAE score")
    batch_size = _count(batch_size, "batch_size")
    if batch_size < 2:
        raise VaelabError("the FactorVAE score needs batch_size >= 2 (a variance over the batch)")
    num_train, num_eval = _count(num_train, "num_train"), _count(num_eval, "num_eval")
    num_var = _count(num_variance_estimate, "num_variance_estimate")
    if num_var < 2:
        raise VaelabError("num_variance_estimate must be at least 2")
    rng = np.random.default_rng(seed)
    z = s.sample(num_var, rng, "the FactorVAE score")[1]
    global_var = np.var(z, axis=0, ddof=1)
    active = np.sqrt(global_var) >= threshold
    if nan_policy == "reference" and (active & (global_var == 0)).any():
        warnings.warn("FactorVAE score: a code dimension with zero variance is active (threshold 0); as in "
                      "the reference its 0/0 ratio wins every vote and the score collapses to about 1/K "
                      "(use nan_policy='exclude' or a threshold > 0)", RuntimeWarning, stacklevel=2)
    if nan_policy == "exclude":
        active &= global_var > 0  # a zero-variance dimension never wins a vote
    base = {"global_variance": global_var, "num_active_dims": int(active.sum())}
    if not active.any():
        k, d = s.dataset.num_factors, global_var.shape[0]
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, **base,
                "votes_train": np.zeros((k, d), dtype=np.int64), "votes_eval": np.zeros((k, d), dtype=np.int64)}
    votes_train = _votes(s, num_train, batch_size, rng, global_var, active, nan_policy)
    votes_eval = _votes(s, num_eval, batch_size, rng, global_var, active, nan_policy)
    return {**factor_vae_accuracy(votes_train, votes_eval), **base,
            "votes_train": votes_train, "votes_eval": votes_eval}


def _draws(settings: dict) -> int:
    """Codes drawn: the variance estimate plus L per vote (the votes only when a dimension is active,
    else the score is 0: this is the most it draws)."""
    return setting_count(settings, "num_variance_estimate") + setting_count(settings, "batch_size") * (
        setting_count(settings, "num_train") + setting_count(settings, "num_eval"))


@register_metric("factor_vae", title="FactorVAE", needs="grid", defaults=DEFAULTS,
                 headline=["eval_accuracy", "train_accuracy", "num_active_dims"], min_factors=2,
                 aliases=("factorvae", "kim"), draws=_draws)
def evaluate_factor_vae(sampler, seed, **settings) -> dict:
    """eval.json's ``factor_vae.*``: the accuracies, the active dimensions, the variances and the votes."""
    d = factor_vae_score(None, sampler.dataset, seed, sampler=sampler, **settings)
    out = {k: d[k] for k in ("train_accuracy", "eval_accuracy", "num_active_dims")}
    out["global_variance"] = d["global_variance"].tolist()
    out["votes_train"] = d["votes_train"].tolist()
    out["votes_eval"] = d["votes_eval"].tolist()
    return out
