"""Shared machinery of the metric cores (docs/metrics.md#shared-machinery).

* input checks: codes ``N x D`` float, factors ``N x K`` int (one clear :class:`VaelabError` otherwise);
* the histogram discretiser (dlib ``utils._histogram_discretize``): per code dimension, ``num_bins``
  equal-width bins over the sample's [min, max], labels 1..num_bins as ``np.digitize`` against
  ``np.histogram`` bin edges[:-1] (so the maximum lands in the last bin and a constant row gets one label);
* plug-in discrete mutual information and entropy in nats (equal to scikit-learn ``mutual_info_score``;
  the contingency table is dense when small, only its occupied cells when the labels are many, e.g. codes
  left undiscretised, so memory stays O(N) like scikit-learn's sparse table);
* seeds for estimators and a counter for scikit-learn ConvergenceWarnings.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np

from ..errors import VaelabError


# ----------------------------------------------------------------------------- input checks
def as_codes(codes, what: str = "codes") -> np.ndarray:
    """``N x D`` float64 array of finite values (a 1-D array is one code dimension)."""
    try:
        a = np.asarray(codes, dtype=np.float64)
    except (TypeError, ValueError):
        raise VaelabError(f"{what} must be a numeric N x D array") from None
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise VaelabError(f"{what} must be an N x D array, got shape {a.shape}")
    if a.shape[0] == 0:
        raise VaelabError(f"{what} is empty (0 points)")
    if a.shape[1] == 0:
        raise VaelabError(f"{what} has no dimensions (N x 0)")
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).any(axis=0).sum())
        raise VaelabError(f"{what} contain NaN or infinite values (in {bad} of {a.shape[1]} dimensions); "
                          f"the encoder diverged or the inputs are corrupt")
    return a


def as_factors(factors, what: str = "factors") -> np.ndarray:
    """``N x K`` int64 class indices (a 1-D array is one factor)."""
    a = np.asarray(factors)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise VaelabError(f"{what} must be an N x K array of class indices, got shape {a.shape}")
    if a.shape[0] == 0:
        raise VaelabError(f"{what} is empty (0 points)")
    if a.shape[1] == 0:
        raise VaelabError(f"{what} has no columns (N x 0): the dataset has no ground-truth factors")
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or not np.array_equal(a, np.round(a)):
            raise VaelabError(f"{what} must be integer class indices (got non-integral values); "
                              f"bin continuous factors first (e.g. vaelab.metrics.discretize)")
        return a.astype(np.int64)
    raise VaelabError(f"{what} must be integer class indices, got dtype {a.dtype}")


def check_pair(codes, factors, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    suffix = f"_{what}" if what else ""
    c = as_codes(codes, f"codes{suffix}")
    f = as_factors(factors, f"factors{suffix}")
    if c.shape[0] != f.shape[0]:
        raise VaelabError(f"codes{suffix} has {c.shape[0]} points but factors{suffix} has {f.shape[0]}")
    return c, f


def check_train_test(codes, factors, codes_test, factors_test):
    c, f = check_pair(codes, factors)
    ct, ft = check_pair(codes_test, factors_test, "test")
    if ct.shape[1] != c.shape[1]:
        raise VaelabError(f"codes has {c.shape[1]} dimensions but codes_test has {ct.shape[1]}")
    if ft.shape[1] != f.shape[1]:
        raise VaelabError(f"factors has {f.shape[1]} columns but factors_test has {ft.shape[1]}")
    return c, f, ct, ft


def require_varied_factors(factors: np.ndarray, metric: str, names=None):
    """Error if a factor takes one value only in the sample (its entropy is 0)."""
    for k in range(factors.shape[1]):
        if np.all(factors[:, k] == factors[0, k]):
            name = names[k] if names is not None else f"factor {k}"
            raise VaelabError(f"{metric}: {name} takes a single value in the sample; it carries no information "
                              f"(drop it or sample more points)")


# ----------------------------------------------------------------------------- discretiser
def discretize(codes, num_bins: int = 20) -> np.ndarray:
    """Histogram discretiser: ``N x D`` int64 labels in 1..num_bins, per column.

    Equal-width bins over each column's [min, max] (``np.histogram`` edges), labels by
    ``np.digitize`` against edges[:-1]: the maximum is in bin ``num_bins``; a constant column
    gets a single label. [0.1, 0.2, ..., 0.6] with 3 bins -> 1, 1, 2, 2, 3, 3."""
    a = np.asarray(codes, dtype=np.float64)
    one_d = a.ndim == 1
    if one_d:
        a = a[:, None]
    if int(num_bins) < 1:
        raise VaelabError(f"num_bins must be a positive integer, got {num_bins}")
    if not np.isfinite(a).all():
        raise VaelabError("cannot discretise NaN or infinite values")
    out = np.empty(a.shape, dtype=np.int64)
    for d in range(a.shape[1]):
        edges = np.histogram_bin_edges(a[:, d], bins=int(num_bins))
        out[:, d] = np.digitize(a[:, d], edges[:-1])
    return out[:, 0] if one_d else out


# ----------------------------------------------------------------------------- information
_DENSE_CELLS = 1 << 20  # contingency tables up to this many cells (or 8 N) are built dense


def _dense_labels(x: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, inv = np.unique(x, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), len(uniq)


def _mi_dense(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> float:
    if na <= 1 or nb <= 1:  # a single label has zero entropy: MI exactly 0 (as scikit-learn)
        return 0.0
    n = a.shape[0]
    cells = a * nb + b
    if na * nb <= max(_DENSE_CELLS, 8 * n):
        joint = np.bincount(cells, minlength=na * nb).reshape(na, nb)
        nx = joint.sum(axis=1)
        ny = joint.sum(axis=0)
        ix, iy = np.nonzero(joint)
        nxy = joint[ix, iy].astype(np.float64)
    else:  # many labels (e.g. undiscretised codes): only the occupied cells, as scikit-learn's sparse table
        keys, counts = np.unique(cells, return_counts=True)  # sorted = the dense path's row-major order
        ix, iy = keys // nb, keys % nb
        nx = np.bincount(a, minlength=na)
        ny = np.bincount(b, minlength=nb)
        nxy = counts.astype(np.float64)
    # sum_xy p(x,y) ln[ p(x,y) / (p(x) p(y)) ] = sum n_xy/n * (ln n_xy - ln n + ln n + ln n - ln n_x n_y)
    outer = nx[ix].astype(np.float64) * ny[iy].astype(np.float64)
    terms = nxy / n * (np.log(nxy) - np.log(n)) + nxy / n * (2 * np.log(n) - np.log(outer))
    terms = np.where(np.abs(terms) < np.finfo(np.float64).eps, 0.0, terms)
    return float(max(terms.sum(), 0.0))


def mutual_info(a, b) -> float:
    """Plug-in mutual information (nats) of two label vectors (any hashable numeric labels)."""
    a = np.asarray(a).reshape(-1)
    b = np.asarray(b).reshape(-1)
    if a.shape != b.shape:
        raise VaelabError(f"label vectors differ in length: {a.shape[0]} vs {b.shape[0]}")
    da, na = _dense_labels(a)
    db, nb = _dense_labels(b)
    return _mi_dense(da, na, db, nb)


def discrete_mutual_info(codes_discrete, factors) -> np.ndarray:
    """``D x K`` matrix of I(code_d; factor_k) for discretised codes ``N x D`` and labels ``N x K``."""
    c = np.asarray(codes_discrete)
    f = np.asarray(factors)
    if c.ndim == 1:
        c = c[:, None]
    if f.ndim == 1:
        f = f[:, None]
    cd = [_dense_labels(c[:, d]) for d in range(c.shape[1])]
    fd = [_dense_labels(f[:, k]) for k in range(f.shape[1])]
    m = np.zeros((c.shape[1], f.shape[1]))
    for d, (a, na) in enumerate(cd):
        for k, (b, nb) in enumerate(fd):
            m[d, k] = _mi_dense(a, na, b, nb)
    return m


def discrete_entropy(factors) -> np.ndarray:
    """Per column plug-in entropy H(v) = I(v; v) in nats, ``K``."""
    f = np.asarray(factors)
    if f.ndim == 1:
        f = f[:, None]
    out = np.zeros(f.shape[1])
    for k in range(f.shape[1]):
        _, counts = np.unique(f[:, k], return_counts=True)
        p = counts / counts.sum()
        out[k] = max(float(-np.sum(p * np.log(p))), 0.0)
    return out


def entropy_normalised(p: np.ndarray, base: float, axis: int = 0) -> np.ndarray:
    """Shannon entropy of ``p`` normalised along ``axis`` (as scipy.stats.entropy), in log base ``base``."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=axis) / np.log(base)


# ----------------------------------------------------------------------------- seeds and warnings
def estimator_seed(rng: np.random.Generator) -> int:
    """A random_state for a scikit-learn estimator, derived from the metric's generator."""
    return int(rng.integers(0, 2**31 - 1))


class WarningCounter:
    """Counts scikit-learn ConvergenceWarnings raised inside ``with counter:`` blocks."""

    def __init__(self):
        self.count = 0

    @contextmanager
    def __call__(self):
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            yield
        for w in caught:
            if issubclass(w.category, ConvergenceWarning):
                self.count += 1
            else:  # re-emit anything else
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
