"""Deterministic train/validation splits and k-fold indices (the trainer uses them).

Both depend only on (n, fraction or k, seed): ``numpy.random.default_rng(seed).permutation(n)``,
so the same seed gives the same split on every machine. Returned index arrays are sorted
(int64), which keeps reads from memory-mapped images sequential.
"""
from __future__ import annotations

import numpy as np

from ..errors import VaelabError


def train_val_split(n: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (train, validation) indices; ``round(n * val_fraction)`` go to validation
    (at least 1 when the fraction is positive and n > 1; 0 when it is 0)."""
    n = int(n)
    if n < 0:
        raise VaelabError(f"cannot split {n} items")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise VaelabError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * float(val_fraction)))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def kfold_indices(n: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, validation) pairs: the validation sets are disjoint, cover ``range(n)`` and differ
    in size by at most one; each train set is the rest."""
    n, k = int(n), int(k)
    if k < 2:
        raise VaelabError(f"k-fold needs k >= 2, got {k}")
    if k > n:
        raise VaelabError(f"cannot make {k} folds of {n} items")
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, k)
    out = []
    for i, val in enumerate(folds):
        train = np.concatenate([f for j, f in enumerate(folds) if j != i])
        out.append((np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)))
    return out
