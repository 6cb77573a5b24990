"""Gradient-boosted trees as DCI's reference uses them, vectorised over the trees of a stage.

dlib's DCI fits ``sklearn.ensemble.GradientBoostingClassifier()`` with its defaults per factor: log loss,
100 stages, learning rate 0.1, regression trees of depth 3 with exact best splits (squared error, at least
one sample a leaf, thresholds halfway between consecutive distinct float32 values), a Newton step per
leaf, and the prior as the initial prediction. A multi-class factor grows one tree per class per stage:
dSprites' orientation alone is 4,000 trees, and scikit-learn grows them one at a time, which made DCI
three quarters of the metric suite's time.

:class:`BoostedTrees` computes the same model (same splits, leaf values, feature importances and
predictions) but grows the K trees of a stage together, level by level, with array operations: per
level and feature one stable sort of the samples by node, a cumulative sum of the residuals, and the
best split of every (tree, node) read off at once. Where scikit-learn's feature order would break an
exact tie between two splits at random, the first feature wins; otherwise the result agrees with
scikit-learn to floating-point rounding (tests compare importances and predictions directly).
"""
from __future__ import annotations

import numpy as np

FEATURE_THRESHOLD = 1e-7  # scikit-learn tree/_splitter.pyx: values closer than this are not split
EPSILON = np.finfo(np.float64).eps  # tree/_tree.pyx: a node this pure is a leaf
# Boosting residuals take few distinct values, so two splits often score exactly the same; the sums here
# are formed in another order than scikit-learn's, so "the same" means within this relative tolerance.
TIE = 1e-9


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, 0 where ``|den| < 1e-150`` (scikit-learn ensemble/_gb.py ``_safe_divide``)."""
    small = np.abs(den) < 1e-150
    return np.where(small, 0.0, num / np.where(small, 1.0, den))


class BoostedTrees:
    """``GradientBoostingClassifier()`` with scikit-learn's defaults, fitted on ``x`` (N x D) and ``y`` (N).

    Attributes after :meth:`fit`: ``classes_``, ``feature_importances_`` (D, sums to 1; zeros when no
    tree split). :meth:`predict` gives class labels.
    """

    def __init__(self, n_estimators: int = 100, learning_rate: float = 0.1, max_depth: int = 3,
                 random_state=None):
        self.random_state = random_state
        self.n_estimators = int(n_estimators)
        self.learning_rate = float(learning_rate)
        self.max_depth = int(max_depth)

    # ------------------------------------------------------------------ fitting
    def fit(self, x, y):
        x32 = np.ascontiguousarray(x, dtype=np.float32)  # scikit-learn's trees split float32 features
        if x32.ndim != 2 or len(x32) != len(y):
            raise ValueError("BoostedTrees.fit needs x of shape N x D and y of length N")
        self.classes_, yi = np.unique(np.asarray(y), return_inverse=True)
        n_cls = len(self.classes_)
        if n_cls < 2:
            raise ValueError("BoostedTrees.fit needs at least two classes")
        n, d = x32.shape
        self._binary = n_cls == 2
        t = 1 if self._binary else n_cls  # trees per stage
        prior = np.clip(np.bincount(yi, minlength=n_cls) / n, EPSILON, 1 - EPSILON)
        if self._binary:  # LogitLink
            self._init = np.array([np.log(prior[1] / (1 - prior[1]))])
            onehot = (yi == 1).astype(np.float64)[None, :]
        else:  # MultinomialLogit: log(p / geometric mean of p)
            self._init = np.log(prior / np.exp(np.mean(np.log(prior))))
            onehot = (yi[None, :] == np.arange(n_cls)[:, None]).astype(np.float64)
        raw = np.repeat(self._init[:, None], n, axis=1)  # t x N

        x64 = x32.astype(np.float64).T.copy()  # D x N, the values comparisons use
        order = np.argsort(x32, axis=0, kind="stable").T.copy()  # D x N: each feature's sorted samples
        sorted_vals = np.take_along_axis(x64, order, axis=1)
        levels = self.max_depth
        self._feature = np.zeros((self.n_estimators, t, 2 ** levels - 1), dtype=np.int64)
        self._threshold = np.full((self.n_estimators, t, 2 ** levels - 1), np.inf)
        self._value = np.zeros((self.n_estimators, t, 2 ** levels))
        importance_sum = np.zeros(d)
        relevant = 0
        rows = np.arange(t)[:, None]
        rng = np.random.default_rng(self.random_state)
        for stage in range(self.n_estimators):
            if self._binary:
                prob = 1.0 / (1.0 + np.exp(-raw))
            else:
                e = np.exp(raw - raw.max(axis=0, keepdims=True))
                prob = e / e.sum(axis=0, keepdims=True)
            resid = onehot - prob  # negative gradient, t x N
            node, imp, split_root = self._grow(resid, x64, order, sorted_vals, stage, rng)
            leaf_sum = self._node_sums(node, resid, 2 ** levels)
            count = self._node_sums(node, np.ones_like(resid), 2 ** levels)
            p_back = onehot - resid  # ensemble/_gb.py: prob = y - neg_gradient; hessian prob (1 - prob)
            hess = self._node_sums(node, p_back * (1 - p_back), 2 ** levels)
            with np.errstate(invalid="ignore", divide="ignore"):
                num = leaf_sum / np.maximum(count, 1)
                if not self._binary:
                    num = num * ((n_cls - 1) / n_cls)
                value = _safe_divide(num, hess / np.maximum(count, 1))
            self._value[stage] = value
            raw += self.learning_rate * value[rows, node]
            importance_sum += imp[split_root].sum(axis=0)
            relevant += int(split_root.sum())
        self._raw_train = raw
        if relevant == 0:
            self.feature_importances_ = np.zeros(d)
        else:
            avg = importance_sum / relevant
            self.feature_importances_ = avg / avg.sum()
        return self

    @staticmethod
    def _node_sums(node, values, m):
        t = node.shape[0]
        flat = (node + m * np.arange(t)[:, None]).ravel()
        return np.bincount(flat, weights=values.ravel(), minlength=t * m).reshape(t, m)

    def _grow(self, resid, x64, order, sorted_vals, stage, rng):
        """Grow the t trees of one stage on ``resid`` (t x N); returns each sample's leaf (t x N), the
        trees' unnormalised feature importances (t x D) and which trees split their root (t)."""
        t, n = resid.shape
        d = x64.shape[0]
        node = np.zeros((t, n), dtype=np.int8)  # heap index within the level
        frozen = np.zeros((t, 1), dtype=bool)  # per (tree, node): a leaf that only passes samples down
        imp = np.zeros((t, d))
        split_root = np.zeros(t, dtype=bool)
        rows = np.arange(t)[:, None]
        col = np.broadcast_to(np.arange(n), (t, n))
        # work buffers, reused for every level and feature (temporaries this size would be mapped anew)
        vals, r, sl, sr, proxy, tmp, gap = (np.empty((t, n)) for _ in range(7))
        idx, cand = np.empty((t, n), dtype=np.int64), np.empty((t, n), dtype=np.int64)
        valid, invalid = np.zeros((t, n), dtype=bool), np.empty((t, n), dtype=bool)
        for level in range(self.max_depth):
            m = 2 ** level
            s = self._node_sums(node, resid, m)
            cnt = self._node_sums(node, np.ones_like(resid), m)
            sq = self._node_sums(node, resid * resid, m)
            with np.errstate(invalid="ignore", divide="ignore"):
                impurity = sq / cnt - (s / cnt) ** 2  # tree/_criterion.pyx MSE node_impurity
            can_split = (~frozen) & (cnt >= 2) & (impurity > EPSILON)
            start = np.concatenate([np.zeros((t, 1), dtype=np.int64), np.cumsum(cnt, axis=1)[:, :-1].astype(np.int64)],
                                   axis=1)
            best = np.full((t, m), -np.inf)
            best_feat = np.zeros((t, m), dtype=np.int64)
            best_thr = np.full((t, m), np.inf)
            best_left = np.zeros((t, m))  # sum of residuals left, for the importance
            best_nl = np.ones((t, m))
            # scikit-learn visits the features of each node in a random order and keeps the first best
            # split: exact ties (small nodes, one sample cut off by several features) go to a random one
            rank = rng.random((d, t, m))
            best_rank = np.full((t, m), np.inf)
            # Rows sorted by node make every (tree, node) a contiguous segment, row after row; seg_id maps
            # each position to its segment, so per-segment values expand with one np.take.
            cnt_i = cnt.astype(np.int64).ravel()
            nonempty = cnt_i > 0
            seg_start = (start + n * rows).ravel()
            starts = seg_start[nonempty]
            seg_id = np.repeat(np.arange(t * m), cnt_i)  # flat, t * n
            nl = np.arange(1, n + 1, dtype=np.float64)[None, :] - np.take(start.ravel(), seg_id).reshape(t, n)
            nr = np.take(cnt.ravel(), seg_id).reshape(t, n) - nl
            tot = np.take(s.ravel(), seg_id).reshape(t, n)
            open_ = (nr > 0) & np.take(can_split.ravel(), seg_id).reshape(t, n)  # a next sample, same node
            # the previous (non-empty) segment's sum in the same row: subtracted from a segment's first
            # residual, it makes one cumsum over the row give every segment its own running sum
            seg_sum = s.ravel()[nonempty]
            seg_row = np.nonzero(nonempty)[0] // m
            prior = np.zeros_like(seg_sum)
            prior[1:] = np.where(seg_row[1:] == seg_row[:-1], seg_sum[:-1], 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                for f in range(d):
                    if level == 0:
                        vals[:] = sorted_vals[f]
                        np.take(resid, order[f] + n * rows, out=r, mode="clip")
                    else:  # mode="clip": np.take buffers its output in the default mode
                        perm = np.argsort(node[:, order[f]], axis=1, kind="stable")
                        np.take(sorted_vals[f], perm, out=vals, mode="clip")
                        np.take(order[f], perm, out=idx, mode="clip")
                        idx += n * rows
                        np.take(resid, idx, out=r, mode="clip")
                    r_flat = r.reshape(-1)
                    r_flat[starts] -= prior
                    np.cumsum(r, axis=1, out=sl)
                    np.subtract(tot, sl, out=sr)
                    np.add(vals[:, :-1], FEATURE_THRESHOLD, out=gap[:, :-1])
                    np.greater(vals[:, 1:], gap[:, :-1], out=valid[:, :-1])
                    valid &= open_
                    np.multiply(sl, sl, out=proxy)
                    proxy /= nl
                    np.multiply(sr, sr, out=tmp)
                    tmp /= nr
                    proxy += tmp
                    np.invert(valid, out=invalid)
                    np.copyto(proxy, -np.inf, where=invalid)
                    # the best split of every (tree, node), the first of tied positions (see TIE)
                    seg_max = np.full(t * m, -np.inf)
                    seg_max[nonempty] = np.maximum.reduceat(proxy.reshape(-1), starts)
                    floor = seg_max - TIE * np.abs(seg_max)
                    np.take(floor, seg_id, out=tmp.reshape(-1), mode="clip")
                    np.greater_equal(proxy, tmp, out=invalid)  # reused: hit
                    cand.fill(n)
                    np.copyto(cand, col, where=invalid)
                    first = np.full(t * m, n, dtype=np.int64)
                    first[nonempty] = np.minimum.reduceat(cand.reshape(-1), starts)
                    seg_max = seg_max.reshape(t, m)
                    pos = np.clip(first.reshape(t, m), 0, max(n - 2, 0))
                    margin = TIE * np.abs(best)
                    tied = np.isfinite(best) & (np.abs(seg_max - best) <= margin)
                    better = np.where(tied, rank[f] < best_rank,
                                      seg_max > best + np.where(np.isfinite(best), margin, 0))
                    if not better.any():
                        continue
                    lo = np.take_along_axis(vals, pos, axis=1)
                    hi = np.take_along_axis(vals, pos + 1, axis=1)
                    thr = lo / 2.0 + hi / 2.0  # tree/_splitter.pyx: midpoint, or the lower value if it rounds up
                    thr = np.where((thr == hi) | np.isinf(thr), lo, thr)
                    best = np.where(better, seg_max, best)
                    best_rank = np.where(better, rank[f], best_rank)
                    best_feat = np.where(better, f, best_feat)
                    best_thr = np.where(better, thr, best_thr)
                    best_left = np.where(better, np.take_along_axis(sl, pos, axis=1), best_left)
                    best_nl = np.where(better, np.take_along_axis(nl, pos, axis=1), best_nl)
            split = np.isfinite(best)
            heap = m - 1 + np.arange(m)  # heap index of this level's nodes
            self._feature[stage][:, heap] = np.where(split, best_feat, 0)
            self._threshold[stage][:, heap] = np.where(split, best_thr, np.inf)  # unsplit: all go left
            # importance: n imp - nl imp_l - nr imp_r = sl^2/nl + sr^2/nr - s^2/n (tree/_tree.pyx), / N
            with np.errstate(invalid="ignore", divide="ignore"):
                nr = cnt - best_nl
                gain = best_left ** 2 / best_nl + (s - best_left) ** 2 / np.where(split, nr, 1.0) - s ** 2 / cnt
            gain = np.where(split, gain, 0.0) / n
            np.add.at(imp, (np.broadcast_to(rows, (t, m)), best_feat), gain)
            if level == 0:
                split_root = split[:, 0]
            # route the samples: left child 2j, right 2j + 1 (an unsplit node sends all left, frozen)
            f_s = np.take_along_axis(best_feat, node.astype(np.int64), axis=1)
            thr_s = np.take_along_axis(best_thr, node.astype(np.int64), axis=1)
            xv = x64[f_s, np.arange(n)[None, :]]
            right = ~(xv <= thr_s)
            node = (2 * node + right).astype(np.int8)
            frozen = np.repeat(~split, 2, axis=1)  # an unsplit node's left child holds all its samples
        return node.astype(np.int64), imp, split_root

    # ------------------------------------------------------------------ prediction
    def decision_function(self, x) -> np.ndarray:
        """Raw scores (N x classes, or N for two classes), as scikit-learn's ``decision_function``."""
        x64 = np.ascontiguousarray(x, dtype=np.float32).astype(np.float64)
        n = len(x64)
        t = self._feature.shape[1]
        raw = np.repeat(self._init[:, None], n, axis=1)
        cols = np.arange(n)[None, :]
        rows = np.arange(t)[:, None]
        for stage in range(self.n_estimators):
            pos = np.zeros((t, n), dtype=np.int64)
            for _ in range(self.max_depth):
                f = np.take_along_axis(self._feature[stage], pos, axis=1)
                thr = np.take_along_axis(self._threshold[stage], pos, axis=1)
                pos = 2 * pos + 1 + ~(x64[cols, f] <= thr)
            raw += self.learning_rate * self._value[stage][rows, pos - (2 ** self.max_depth - 1)]
        return raw[0] if self._binary else raw.T

    def _labels(self, raw) -> np.ndarray:
        if self._binary:
            return self.classes_[(raw > 0).astype(np.int64)]
        return self.classes_[np.argmax(raw, axis=1)]

    def predict(self, x) -> np.ndarray:
        return self._labels(self.decision_function(x))

    def predict_train(self) -> np.ndarray:
        """Predictions on the training samples (the scores accumulated while fitting, no second pass)."""
        raw = self._raw_train
        return self._labels(raw[0] if self._binary else raw.T)
