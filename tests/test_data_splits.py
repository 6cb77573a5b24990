"""Deterministic train/validation splits and k-fold indices."""
from __future__ import annotations

import numpy as np
import pytest

from vaelab.data.splits import kfold_indices, train_val_split
from vaelab.errors import VaelabError


def test_train_val_split_deterministic_disjoint_covering():
    tr, va = train_val_split(1000, 0.1, seed=3)
    assert len(va) == 100 and len(tr) == 900
    assert np.intersect1d(tr, va).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(1000))
    tr2, va2 = train_val_split(1000, 0.1, seed=3)
    np.testing.assert_array_equal(va, va2)
    _, va3 = train_val_split(1000, 0.1, seed=4)
    assert not np.array_equal(va, va3)
    assert tr.dtype == np.int64 and np.all(np.diff(tr) > 0)
    assert len(train_val_split(10, 0.0, 0)[1]) == 0
    assert len(train_val_split(10, 0.01, 0)[1]) == 1  # a positive fraction keeps one
    with pytest.raises(VaelabError):
        train_val_split(10, 1.0, 0)


@pytest.mark.parametrize("n, k", [(10, 3), (100, 5), (7, 7)])
def test_kfold(n, k):
    folds = kfold_indices(n, k, seed=0)
    assert len(folds) == k
    vals = np.concatenate([v for _, v in folds])
    np.testing.assert_array_equal(np.sort(vals), np.arange(n))  # disjoint, covering: each index once
    sizes = [len(v) for _, v in folds]
    assert max(sizes) - min(sizes) <= 1
    for tr, va in folds:
        np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(n))
    again = kfold_indices(n, k, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    with pytest.raises(VaelabError):
        kfold_indices(3, 4, 0)
    with pytest.raises(VaelabError):
        kfold_indices(3, 1, 0)
