"""BetaVAE score (Higgins et al.), as dlib ``evaluation/metrics/beta_vae.py`` + ``beta_vae_sklearn.gin``
computes it (docs/metrics.md#betavae-score). Grid datasets only.

A point: k ~ U{0..K-1}; two draws F1, F2 of L = 64 factor rows with F2[:, k] = F1[:, k]; encode both;
feature = (1/L) sum_l |z1_l - z2_l|, label k. A ``LogisticRegression`` (C 1, L2, 100 iterations, unscaled
features) is fitted on 10,000 training points; score = accuracy on 5,000 fresh points (``eval_accuracy``).
All points are drawn at once and their codes gathered from the per-row cache (see ``sampling``).
"""
from __future__ import annotations

import numpy as np

from ..errors import VaelabError
from .info import WarningCounter, estimator_seed
from .registry import register_metric, setting_count

# dlib beta_vae_sklearn.gin: batch_size 64, num_train 10000, num_eval 5000
DEFAULTS = dict(batch_size=64, num_train=10_000, num_eval=5_000)
_CHUNK_ROWS = 1 << 17  # codes gathered per step (bounds memory; factor draws do not depend on it, hidden
# values such as SmallNORB instances are drawn chunk by chunk)


def _points(sampler, n: int, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ds = sampler.dataset
    k_count = ds.num_factors
    labels = rng.integers(0, k_count, size=n)
    f1 = ds.sample_factors(n * batch_size, rng).reshape(n, batch_size, k_count)
    f2 = ds.sample_factors(n * batch_size, rng).reshape(n, batch_size, k_count)
    ar = np.arange(n)
    f2[ar, :, labels] = f1[ar, :, labels]
    feats = []
    step = max(1, _CHUNK_ROWS // batch_size)
    for i in range(0, n, step):
        a = f1[i:i + step].reshape(-1, k_count)
        b = f2[i:i + step].reshape(-1, k_count)
        z1 = sampler.codes_for_factors(a, rng)
        z2 = sampler.codes_for_factors(b, rng)
        m = len(a) // batch_size
        feats.append(np.abs(z1 - z2).reshape(m, batch_size, -1).mean(axis=1))
    return np.concatenate(feats), labels


def beta_vae_from_features(train_x, train_y, eval_x, eval_y, seed: int = 0) -> dict:
    """Fit dlib's classifier on BetaVAE features; ``train_accuracy``, ``eval_accuracy``, warnings."""
    from sklearn.linear_model import LogisticRegression

    counter = WarningCounter()
    model = LogisticRegression(random_state=seed)  # dlib: linear_model.LogisticRegression(random_state=...)
    if len(np.unique(train_y)) < 2:
        raise VaelabError("BetaVAE: the training points hold a single factor label; draw more points")
    with counter():
        model.fit(train_x, train_y)
    return {"train_accuracy": float(np.mean(model.predict(train_x) == train_y)),
            "eval_accuracy": float(np.mean(model.predict(eval_x) == eval_y)),
            "convergence_warnings": counter.count}


def beta_vae_score(encode, dataset, seed: int = 0, batch_size: int = DEFAULTS["batch_size"],
                   num_train: int = DEFAULTS["num_train"], num_eval: int = DEFAULTS["num_eval"],
                   *, sampler=None) -> dict:
    """BetaVAE score of ``encode`` on a grid ``dataset``: ``train_accuracy``, ``eval_accuracy`` (the score),
    ``convergence_warnings``. ``batch_size`` is L, the pairs averaged per point."""
    from .sampling import _count, get_sampler

    s = get_sampler(encode, dataset, sampler)
    s.require_grid("the BetaVAE score")
    if s.dataset.num_factors < 2:
        raise VaelabError("the BetaVAE score needs at least 2 factors (it predicts which one is fixed)")
    batch_size = _count(batch_size, "batch_size")
    num_train, num_eval = _count(num_train, "num_train"), _count(num_eval, "num_eval")
    rng = np.random.default_rng(seed)
    train_x, train_y = _points(s, num_train, batch_size, rng)
    eval_x, eval_y = _points(s, num_eval, batch_size, rng)
    return beta_vae_from_features(train_x, train_y, eval_x, eval_y, seed=estimator_seed(rng))


def _draws(settings: dict) -> int:
    """Codes drawn: two batches of L per training and evaluation point."""
    return 2 * setting_count(settings, "batch_size") * (setting_count(settings, "num_train")
                                                          + setting_count(settings, "num_eval"))


@register_metric("beta_vae", title="BetaVAE", needs="grid", defaults=DEFAULTS,
                 headline=["eval_accuracy", "train_accuracy"], min_factors=2, aliases=("betavae", "higgins"),
                 draws=_draws)
def evaluate_beta_vae(sampler, seed, **settings):
    """eval.json's ``beta_vae.*``: the two accuracies, and the classifier's convergence warnings."""
    d = beta_vae_score(None, sampler.dataset, seed, sampler=sampler, **settings)
    return {"train_accuracy": d["train_accuracy"], "eval_accuracy": d["eval_accuracy"]}, d["convergence_warnings"]
