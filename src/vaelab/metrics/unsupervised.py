"""Unsupervised scores, as dlib ``evaluation/metrics/unsupervised_metrics.py`` computes them (docs/metrics.md#unsupervised-scores).

Sigma = unbiased covariance of the codes; lower = more factorised.
* ``gaussian_total_correlation`` = 1/2 (sum_d ln Sigma_dd - ln det Sigma); a collapsed (constant) dimension
  or a singular Sigma gives +inf (reported as inf, never NaN);
* ``gaussian_wasserstein_correlation`` = 2 tr Sigma - 2 tr sqrt(diag(Sigma) Sigma) (real part), ``_norm`` =
  that / tr Sigma; tr sqrt(diag(Sigma) Sigma) is the sum of the square roots of the eigenvalues of the
  symmetric diag(Sigma)^1/2 Sigma diag(Sigma)^1/2 (same spectrum), negative round-off clipped to 0
  (the real part of the principal square root);
* ``mutual_info_score`` = sum over d != d' of I(z_d; z_d') / (D^2 - D) with the 20-bin discretiser.
"""
from __future__ import annotations

import numpy as np

from ..errors import VaelabError
from .info import as_codes, discrete_mutual_info, discretize
from .registry import register_metric

DEFAULTS = dict(num_train=10_000, num_bins=20)  # dlib unsupervised.gin


def _cov(codes) -> np.ndarray:
    c = as_codes(codes)
    if c.shape[1] < 2:
        raise VaelabError(f"the unsupervised scores need at least 2 code dimensions, got {c.shape[1]}")
    if c.shape[0] < 2:
        raise VaelabError("the unsupervised scores need at least 2 points")
    return np.atleast_2d(np.cov(c, rowvar=False))


def _check_cov(cov) -> np.ndarray:
    s = np.asarray(cov, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise VaelabError(f"a covariance matrix must be square, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise VaelabError("covariance matrix holds NaN or infinite values")
    return s


def total_correlation_from_cov(cov) -> float:
    s = _check_cov(cov)
    diag = np.diag(s)
    if (diag <= 0).any():
        return float("inf")
    sign, logdet = np.linalg.slogdet(s)
    if sign <= 0 or not np.isfinite(logdet):
        return float("inf")
    return float(0.5 * (np.sum(np.log(diag)) - logdet))


def wasserstein_correlation_from_cov(cov) -> float:
    s = _check_cov(cov)
    root = np.sqrt(np.clip(np.diag(s), 0.0, None))
    sym = root[:, None] * s * root[None, :]
    eig = np.linalg.eigvalsh((sym + sym.T) / 2)
    return float(2 * np.trace(s) - 2 * np.sum(np.sqrt(np.clip(eig, 0.0, None))))


def gaussian_total_correlation(codes) -> float:
    """Total correlation of a Gaussian with the codes' covariance (nats); inf for a collapsed dimension."""
    return total_correlation_from_cov(_cov(codes))


def gaussian_wasserstein_correlation(codes) -> float:
    """Wasserstein distance between N(0, Sigma) and N(0, diag Sigma) (dlib's closed form)."""
    return wasserstein_correlation_from_cov(_cov(codes))


def gaussian_wasserstein_correlation_norm(codes) -> float:
    """:func:`gaussian_wasserstein_correlation` / tr Sigma (an error when every code is constant)."""
    s = _cov(codes)
    tr = np.trace(s)
    if tr <= 0:
        raise VaelabError("every code dimension is constant: the normalised Wasserstein correlation is undefined")
    return wasserstein_correlation_from_cov(s) / float(tr)


def mutual_info_score(codes, num_bins: int | None = 20) -> float:
    """Mean pairwise discrete MI between distinct code dimensions (nats)."""
    c = as_codes(codes)
    d = c.shape[1]
    if d < 2:
        raise VaelabError(f"mutual_info_score needs at least 2 code dimensions, got {d}")
    zd = c if num_bins is None else discretize(c, num_bins)
    m = discrete_mutual_info(zd, zd)
    np.fill_diagonal(m, 0.0)
    return float(np.sum(m) / (d * d - d))


def unsupervised(codes, num_bins: int | None = 20) -> dict:
    """All four unsupervised scores (dlib names). ``gaussian_wasserstein_correlation_norm`` is NaN when
    every dimension is constant (0 / 0)."""
    s = _cov(codes)
    tr = float(np.trace(s))
    wc = wasserstein_correlation_from_cov(s)
    return {
        "gaussian_total_correlation": total_correlation_from_cov(s),
        "gaussian_wasserstein_correlation": wc,
        "gaussian_wasserstein_correlation_norm": wc / tr if tr > 0 else float("nan"),
        "mutual_info_score": mutual_info_score(codes, num_bins),
    }


def unsupervised_score(encode, dataset, seed: int = 0, num_train: int = DEFAULTS["num_train"],
                       num_bins: int = DEFAULTS["num_bins"], *, sampler=None) -> dict:
    """The unsupervised scores on ``num_train`` images drawn from ``dataset`` (factors not needed)."""
    from .sampling import get_sampler

    s = get_sampler(encode, dataset, sampler)
    rng = np.random.default_rng(seed)
    return unsupervised(s.sample_unlabelled(num_train, rng), num_bins)


@register_metric("unsupervised", title="Unsupervised", needs="images", defaults=DEFAULTS,
                 headline=["gaussian_total_correlation", "gaussian_wasserstein_correlation",
                           "gaussian_wasserstein_correlation_norm", "mutual_info_score"], min_factors=0,
                 aliases=("tc", "gaussian_total_correlation"))
def evaluate_unsupervised(sampler, seed, **settings) -> dict:
    """eval.json's ``unsupervised.*``: the four scores."""
    return unsupervised_score(None, sampler.dataset, seed, sampler=sampler, **settings)
