"""BoostedTrees (DCI's gradient-boosted trees, vectorised) against scikit-learn's GradientBoostingClassifier."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from vaelab.metrics import dci
from vaelab.metrics.gbt import BoostedTrees


def _problem(seed, n=1000, d=4, k=3, n_test=300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = (y[:, None] * rng.normal(size=(1, d)) / k + rng.normal(size=(n, d))).astype(np.float32)
    x[: n // 10, 0] = np.round(x[: n // 10, 0], 1)  # repeated values: splits only between distinct ones
    yt = rng.integers(0, k, n_test)
    xt = (yt[:, None] * rng.normal(size=(1, d)) / k + rng.normal(size=(n_test, d))).astype(np.float32)
    return x, y, xt, yt


@pytest.mark.parametrize("seed,k", [(0, 2), (1, 3), (2, 5), (3, 2), (4, 7)])
def test_stumps_equal_sklearn_exactly(seed, k):
    """Depth-1 trees never tie: prior init, softmax / logistic residuals, exact best splits on float32
    features with midpoint thresholds, Newton leaf values (with (K-1)/K for several classes), importances
    and predictions all equal scikit-learn's to rounding."""
    x, y, xt, _ = _problem(seed, k=k)
    sk = GradientBoostingClassifier(n_estimators=20, max_depth=1, random_state=0).fit(x, y)
    me = BoostedTrees(n_estimators=20, max_depth=1, random_state=0).fit(x, y)
    np.testing.assert_allclose(me.feature_importances_, sk.feature_importances_, atol=1e-10)
    np.testing.assert_allclose(me.decision_function(xt), sk.decision_function(xt), atol=1e-9)
    assert (me.predict(xt) == sk.predict(xt)).all()
    assert (me.predict_train() == sk.predict(x)).all()


def test_labels_are_kept():
    x, y, xt, _ = _problem(0, k=3)
    labels = np.array([10, 20, 35])[y]
    me = BoostedTrees(n_estimators=5, random_state=0).fit(x, labels)
    assert set(me.predict(xt)) <= {10, 20, 35}
    assert list(me.classes_) == [10, 20, 35]
    with pytest.raises(ValueError):
        BoostedTrees().fit(x, np.zeros(len(x)))


def test_default_trees_agree_with_sklearn_statistically():
    """Depth 3, 100 stages: splits that score exactly the same (small nodes, few residual values) are
    broken differently, nothing else; importances and accuracies stay close."""
    x, y, xt, yt = _problem(5, n=1500, d=5, k=6)
    sk = GradientBoostingClassifier(random_state=0).fit(x, y)
    me = BoostedTrees(random_state=0).fit(x, y)
    assert np.abs(me.feature_importances_ - sk.feature_importances_).max() < 0.02
    assert abs(np.mean(me.predict_train() == y) - np.mean(sk.predict(x) == y)) < 0.01
    assert abs(np.mean(me.predict(xt) == yt) - np.mean(sk.predict(xt) == yt)) < 0.03


def test_dci_vectorised_matches_sklearn_trees():
    rng = np.random.default_rng(0)
    n = 1200
    f = np.stack([rng.integers(0, 4, n), rng.integers(0, 5, n), rng.integers(0, 3, n)], 1)
    z = np.concatenate([f + 0.4 * rng.normal(size=f.shape), rng.normal(size=(n, 2))], 1)
    args = (z[:800], f[:800], z[800:], f[800:])
    fast = dci(*args, seed=0)
    ref = dci(*args, seed=0, trees="sklearn")
    for key in ("disentanglement", "completeness", "informativeness_train", "informativeness_test"):
        assert fast[key] == pytest.approx(ref[key], abs=0.01), key
