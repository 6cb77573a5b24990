"""Disentanglement, Completeness, Informativeness (Eastwood & Williams), as dlib
``evaluation/metrics/dci.py`` computes it (docs/metrics.md#dci).

Per factor k a ``GradientBoostingClassifier()`` (100 stages, learning rate 0.1, depth 3) on all D codes;
R[:, k] = |feature_importances_|; informativeness = mean accuracy on train / test (higher is better).
Disentanglement: P_dk = (R_dk + 1e-11) / sum_k'(R_dk' + 1e-11), D_d = 1 - H_K(P_d.), weights
rho_d = sum_k R_dk / sum R (all-zero R -> ones), score sum_d rho_d D_d. Completeness likewise per factor
with log base D. The per-factor fits are independent: ``n_jobs`` runs them in parallel processes with
identical results (each factor's random_state is drawn before any fit).

``trees="vectorised"`` (default) grows the same trees with :class:`vaelab.metrics.gbt.BoostedTrees`,
several times faster; ``trees="sklearn"`` calls scikit-learn itself. The two differ only where two splits
score the same and each breaks the tie its own way (scikit-learn: its feature order and rounding);
on a dSprites model the scores differ by less than the spread of scikit-learn over its random_state.
"""
from __future__ import annotations

import os
import time

import numpy as np

from ..errors import VaelabError
from .info import check_train_test, entropy_normalised, estimator_seed, require_varied_factors
from .registry import Pending, by_factor, register_metric

# dlib dci.gin: num_train 10000, num_test 5000; trees: vaelab's vectorised GBT (module docstring)
DEFAULTS = dict(num_train=10_000, num_test=5_000, trees="vectorised")
_SMOOTH = 1e-11  # dlib adds 1e-11 to the importances before normalising


def _check_importance(importance) -> np.ndarray:
    r = np.asarray(importance, dtype=np.float64)
    if r.ndim != 2:
        raise VaelabError(f"importance matrix must be D x K, got shape {r.shape}")
    if r.shape[0] < 2 or r.shape[1] < 2:
        raise VaelabError(f"DCI needs at least 2 code dimensions and 2 factors, got D = {r.shape[0]}, "
                          f"K = {r.shape[1]} (entropies in base 1 are undefined)")
    if not np.isfinite(r).all() or (r < 0).any():
        raise VaelabError("importance matrix must hold finite non-negative values")
    return r


def disentanglement_per_code(importance) -> np.ndarray:
    r = _check_importance(importance)
    return 1.0 - entropy_normalised(r + _SMOOTH, base=r.shape[1], axis=1)


def completeness_per_factor(importance) -> np.ndarray:
    r = _check_importance(importance)
    return 1.0 - entropy_normalised(r + _SMOOTH, base=r.shape[0], axis=0)


def _importance_weighted(per, r, axis: int) -> float:
    """Mean of per-code (axis 1) or per-factor (axis 0) scores weighted by their share of the total
    importance; an all-zero R weighs them equally (dlib)."""
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return float(np.sum(per * r.sum(axis=axis) / r.sum()))


def disentanglement(importance) -> float:
    """Importance-weighted mean of per-code disentanglement (``importance`` D x K)."""
    r = _check_importance(importance)
    return _importance_weighted(disentanglement_per_code(r), r, axis=1)


def completeness(importance) -> float:
    """Importance-weighted mean of per-factor completeness (``importance`` D x K)."""
    r = _check_importance(importance)
    return _importance_weighted(completeness_per_factor(r), r, axis=0)


TREES = ("vectorised", "sklearn")


def _fit_one(x, y, xt, yt, seed, trees="vectorised"):
    if trees == "sklearn":
        from sklearn.ensemble import GradientBoostingClassifier

        model = GradientBoostingClassifier(random_state=seed)  # dlib: ensemble.GradientBoostingClassifier()
        model.fit(x, y)
        pred_train = model.predict(x)
    else:  # the same model, grown a stage at a time (gbt.py)
        from .gbt import BoostedTrees

        model = BoostedTrees(random_state=seed).fit(x, y)
        pred_train = model.predict_train()
    return (np.abs(model.feature_importances_), float(np.mean(pred_train == y)),
            float(np.mean(model.predict(xt) == yt)))


def _resolve_jobs(n_jobs, tasks: int) -> int:
    if n_jobs is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        n_jobs = cores
    n_jobs = int(n_jobs)
    if n_jobs < 1:
        n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)  # joblib's -1 = all cores
    return max(1, min(n_jobs, tasks))


def _parent_gone(parent_pid: int, direct: bool) -> bool:
    if direct:  # our parent: once it dies we are re-parented (a dead but unreaped parent still has its pid)
        return os.getppid() != parent_pid
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


def _watch_parent(parent_pid: int, direct: bool, poll: float) -> None:
    while not _parent_gone(parent_pid, direct):
        time.sleep(poll)
    os._exit(1)


def die_with_parent(parent_pid: int, poll: float = 0.5) -> None:
    """Worker-process initializer: end this worker when ``parent_pid`` ends, however it ends (SIGKILL
    included), so no worker keeps computing, or holds the caller's stdout open, after `vaelab evaluate`
    is gone. On Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); a
    daemon thread also polls for the parent every ``poll`` seconds (every platform, and the case where the
    parent died before the prctl)."""
    import signal
    import sys
    import threading

    direct = os.getppid() == parent_pid
    if sys.platform.startswith("linux") and direct:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG (linux/prctl.h)
        except (OSError, AttributeError):
            pass
    if _parent_gone(parent_pid, direct):
        os._exit(1)  # gone before the prctl
    threading.Thread(target=_watch_parent, args=(parent_pid, direct, poll), daemon=True,
                     name="vaelab-parent-watch").start()


class GbtFits:
    """The per-factor GBT fits of DCI, started at construction.

    With one job they run in this process when :meth:`result` is called; with more, they are submitted
    at once to a pool of worker processes (joblib's loky executor, largest problems first: a multi-class
    GBT grows one tree per class per stage), so the caller can do other work meanwhile. Each factor's
    random_state is drawn from ``seed`` before any fit: the numbers do not depend on ``n_jobs``."""

    def __init__(self, codes, factors, codes_test, factors_test, seed: int = 0, n_jobs: int | None = 1,
                 trees: str = "vectorised"):
        if trees not in TREES:
            raise VaelabError(f"unknown DCI trees {trees!r}; choose {' or '.join(TREES)}")
        c, f, ct, ft = check_train_test(codes, factors, codes_test, factors_test)
        require_varied_factors(f, "DCI")
        self.trees = trees
        rng = np.random.default_rng(seed)
        self._seeds = [estimator_seed(rng) for _ in range(f.shape[1])]
        self._data = (c, f, ct, ft)
        self.jobs = _resolve_jobs(n_jobs, f.shape[1])
        self._futures = None
        self._pool = None
        if self.jobs > 1:
            from joblib.externals.loky import get_reusable_executor

            # the workers end with this process, however it ends (die_with_parent)
            pool = self._pool = get_reusable_executor(max_workers=self.jobs, initializer=die_with_parent,
                                                      initargs=(os.getpid(),))
            order = sorted(range(f.shape[1]), key=lambda k: -len(np.unique(f[:, k])))
            self._futures = {k: pool.submit(_fit_one, c, f[:, k], ct, ft[:, k], self._seeds[k], trees) for k in order}

    def result(self):
        """``(R D x K, train accuracies K, test accuracies K)`` (waits for the workers)."""
        c, f, ct, ft = self._data
        k_count = f.shape[1]
        if self._futures is None:
            results = [_fit_one(c, f[:, k], ct, ft[:, k], self._seeds[k], self.trees) for k in range(k_count)]
        else:
            try:
                results = [self._futures[k].result() for k in range(k_count)]
            except BaseException:
                self.cancel()
                raise
        r = np.stack([res[0] for res in results], axis=1)
        return r, np.array([res[1] for res in results]), np.array([res[2] for res in results])

    def cancel(self):
        """Drop the fits not started; with fits still running, kill the worker processes (a later
        DCI starts fresh ones)."""
        futures = list((self._futures or {}).values())
        for fut in futures:
            fut.cancel()
        if self._pool is not None and not all(fut.done() for fut in futures):
            self._pool.shutdown(wait=False, kill_workers=True)


def importance_gbt(codes, factors, codes_test, factors_test, seed: int = 0, n_jobs: int | None = 1,
                   trees: str = "vectorised"):
    """``(R D x K, train accuracies K, test accuracies K)`` from one GBT per factor."""
    return GbtFits(codes, factors, codes_test, factors_test, seed, n_jobs, trees).result()


def _details_from(r, acc_train, acc_test) -> dict:
    weights = r.sum(axis=1) / r.sum() if r.sum() > 0 else np.full(r.shape[0], 1.0 / r.shape[0])
    return {
        "disentanglement": disentanglement(r),
        "completeness": completeness(r),
        "informativeness_train": float(np.mean(acc_train)),
        "informativeness_test": float(np.mean(acc_test)),
        "importance": r,
        "disentanglement_per_code": disentanglement_per_code(r),
        "completeness_per_factor": completeness_per_factor(r),
        "code_weights": weights,
        "accuracy_train": acc_train,
        "accuracy_test": acc_test,
    }


def _check_sizes(c, f):
    if c.shape[1] < 2 or f.shape[1] < 2:
        raise VaelabError(f"DCI needs at least 2 code dimensions and 2 factors, got D = {c.shape[1]}, "
                          f"K = {f.shape[1]} (entropies in base 1 are undefined)")


class DciJob:
    """DCI whose GBT fits run in the background (see :class:`GbtFits`); :meth:`result` gives the details."""

    def __init__(self, codes, factors, codes_test, factors_test, seed: int = 0, n_jobs: int | None = 1,
                 trees: str = "vectorised"):
        c, f, ct, ft = check_train_test(codes, factors, codes_test, factors_test)
        _check_sizes(c, f)
        self.fits = GbtFits(c, f, ct, ft, seed, n_jobs, trees)

    def result(self) -> dict:
        return _details_from(*self.fits.result())

    def cancel(self):
        self.fits.cancel()


def dci_from_importance(importance) -> dict:
    """Disentanglement and completeness of an importance matrix ``D x K``."""
    return {"disentanglement": disentanglement(importance), "completeness": completeness(importance)}


def dci_details(codes, factors, codes_test, factors_test, seed: int = 0, n_jobs: int | None = 1,
                trees: str = "vectorised") -> dict:
    """DCI with its parts: the four scores plus ``importance`` (D x K), ``disentanglement_per_code`` (D),
    ``completeness_per_factor`` (K), ``code_weights`` (D), ``accuracy_train`` / ``accuracy_test`` (K)."""
    return DciJob(codes, factors, codes_test, factors_test, seed, n_jobs, trees).result()


def dci(codes, factors, codes_test, factors_test, seed: int = 0, n_jobs: int | None = 1,
        trees: str = "vectorised") -> dict:
    """DCI scores: ``disentanglement``, ``completeness``, ``informativeness_train``, ``informativeness_test``.

    ``seed`` derives each GBT's random_state (dlib leaves them unseeded); ``n_jobs`` > 1 fits the
    factors in parallel processes (same numbers), ``None`` uses every available core; ``trees`` picks
    the GBT implementation (module docstring)."""
    d = dci_details(codes, factors, codes_test, factors_test, seed, n_jobs, trees)
    return {k: d[k] for k in ("disentanglement", "completeness", "informativeness_train", "informativeness_test")}


def start_dci_score(encode, dataset, seed: int = 0, num_train: int = DEFAULTS["num_train"],
                    num_test: int = DEFAULTS["num_test"], n_jobs: int | None = None, *, sampler=None,
                    trees: str = DEFAULTS["trees"]) -> DciJob:
    """Draw and encode DCI's points now, start the GBT fits (in worker processes when ``n_jobs`` > 1)
    and return the job; ``job.result()`` is :func:`dci_score`'s answer."""
    from .sampling import train_test_draws

    f, z, ft, zt, est_seed = train_test_draws(encode, dataset, sampler, seed, num_train, num_test, "DCI")
    return DciJob(z, f, zt, ft, seed=est_seed, n_jobs=n_jobs, trees=trees)


def dci_score(encode, dataset, seed: int = 0, num_train: int = DEFAULTS["num_train"],
              num_test: int = DEFAULTS["num_test"], n_jobs: int | None = None, *, sampler=None,
              trees: str = DEFAULTS["trees"]) -> dict:
    """DCI on i.i.d. train / test draws from ``dataset`` (see :func:`dci_details`); ``n_jobs`` None uses
    every available core for the per-factor fits (same numbers)."""
    return start_dci_score(encode, dataset, seed, num_train, num_test, n_jobs, sampler=sampler,
                           trees=trees).result()


def _eval_values(d: dict, dataset) -> dict:
    """eval.json's ``dci.*`` from :func:`dci_details`' answer."""
    out = {k: d[k] for k in ("disentanglement", "completeness", "informativeness_train", "informativeness_test")}
    out["per_factor"] = {"completeness": by_factor(d["completeness_per_factor"], dataset),
                         "accuracy_train": by_factor(d["accuracy_train"], dataset),
                         "accuracy_test": by_factor(d["accuracy_test"], dataset)}
    out["per_code"] = {"disentanglement": d["disentanglement_per_code"].tolist(),
                       "weight": d["code_weights"].tolist()}
    out["importance"] = d["importance"].tolist()
    return out


def _workers(settings: dict, dataset, n_jobs) -> int:
    """Worker processes of the per-factor GBT fits (one per factor at most)."""
    return _resolve_jobs(settings.get("n_jobs", n_jobs), max(dataset.num_factors, 1))


@register_metric("dci", title="DCI", needs="factors", defaults=DEFAULTS,
                 headline=["disentanglement", "completeness", "informativeness_train", "informativeness_test"],
                 min_factors=2, workers=_workers)
def evaluate_dci(sampler, seed, n_jobs=None, **settings) -> Pending:
    """eval.json's ``dci.*``: draws and encodes DCI's points now and starts the GBT fits (in worker
    processes when more than one job), so that they run while the other metrics are computed; the
    returned :class:`Pending` gives the values (the same numbers with any number of jobs)."""
    ds = sampler.dataset
    job = start_dci_score(None, ds, seed, n_jobs=n_jobs, sampler=sampler, **settings)
    return Pending(job.fits.jobs, lambda: _eval_values(job.result(), ds), job.cancel)
