"""The metric registry: every metric ``vaelab evaluate`` runs, each declared once, beside its code.

A metric module registers its evaluation function with :func:`register_metric` when it is imported (a
plugin does the same through :func:`vaelab.plugins.register_metric`): its name, what it needs, its
defaults, its headline keys, how many codes it draws and whether it runs in worker processes.
:func:`vaelab.metrics.evaluate.evaluate` reads only this registry: it resolves the inputs, schedules
the registered metrics and assembles eval.json (docs/architecture.md#evaluation). The built-in metrics
are registered in the order ``vaelab.metrics`` imports their modules, which is the order eval.json and
the table list them in.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import VaelabError, closest

__all__ = ["METRICS", "NEEDS", "INPUTS", "PROFILES", "Metric", "Pending", "register_metric", "metric_names",
           "resolve_metrics", "profile_settings", "planned_draws", "skip_reason", "setting_count", "iid_draws",
           "no_draws", "by_factor"]

#: what a metric needs of the data: any images, ground-truth factors, a full factor grid, or a run's
#: model (its decoder: only runs are scored, not a bare encode function)
NEEDS = ("images", "factors", "grid", "model")
#: what evaluate hands a metric function that names it as a parameter: the loaded run (None for a bare
#: encoder), the run's posterior parameters ``encode_params(uint8 images) -> (mu, logvar)`` (None without
#: a run), and evaluate's ``n_jobs`` (worker processes; None: every core)
INPUTS = ("run", "encode_params", "n_jobs")
PROFILES = ("default", "fast")
#: the settings the ``fast`` profile divides by 10 (at least 100 points)
COUNT_KEYS = ("num_train", "num_test", "num_eval", "num_variance_estimate")


# ----------------------------------------------------------------------------- counting draws
def setting_count(settings: dict, key: str) -> int:
    """``settings[key]`` as a count of points: a positive number, else 0 (absent, not a number, a bool)."""
    v = settings.get(key, 0)
    return int(v) if isinstance(v, (int, float, np.integer)) and not isinstance(v, bool) and v > 0 else 0


def iid_draws(settings: dict) -> int:
    """Codes an i.i.d. metric draws: its train and test points (the default of :func:`register_metric`)."""
    return setting_count(settings, "num_train") + setting_count(settings, "num_test")


def no_draws(settings: dict) -> int:
    """For a metric that reads the model directly and draws nothing through the shared sampler."""
    return 0


def by_factor(values, dataset) -> dict:
    """``{factor name: value}``: a per-factor array as eval.json holds it."""
    return {n: float(v) for n, v in zip(dataset.factor_names, values)}


# ----------------------------------------------------------------------------- a metric
class Pending:
    """A metric whose work runs on in worker processes: what its function returns when it declares
    ``workers`` (see :func:`register_metric`). ``result()`` waits for the work and gives the metric's
    values (as its function would have returned them); ``cancel()`` stops it; ``workers`` is how many
    processes it uses."""

    def __init__(self, workers: int, result: Callable[[], object], cancel: Callable[[], None]):
        self.workers = int(workers)
        self._result = result
        self._cancel = cancel

    def result(self):
        return self._result()

    def cancel(self) -> None:
        self._cancel()


@dataclass(frozen=True)
class Metric:
    """One registered metric (see :func:`register_metric` for the fields)."""

    name: str
    title: str
    needs: str
    defaults: dict
    headline: tuple
    fn: Callable = field(repr=False)
    min_factors: int = 1
    aliases: tuple = ()
    draws: Callable[[dict], int] = field(default=iid_draws, repr=False)
    workers: Callable | None = field(default=None, repr=False)
    skip: Callable | None = field(default=None, repr=False)
    inputs: tuple = ()  # the names of INPUTS that ``fn`` takes

    def call(self, sampler, seed: int, settings: dict, inputs: dict):
        """``fn`` on the shared sampler with ``settings`` and the inputs it names: ``(values, number of
        convergence warnings)``, or a :class:`Pending` (work started in worker processes)."""
        given = {k: inputs.get(k) for k in self.inputs if k not in settings}
        out = self.fn(sampler, seed, **settings, **given)
        return out if isinstance(out, Pending) else self.values_of(out)

    def run(self, sampler, seed: int, settings: dict, inputs: dict) -> tuple[dict, int]:
        """:meth:`call`, waiting for work in worker processes: ``(values, convergence warnings)``."""
        out = self.call(sampler, seed, settings, inputs)
        return self.collect(out) if isinstance(out, Pending) else out

    def collect(self, pending: Pending) -> tuple[dict, int]:
        """The values of work started by :meth:`call`, once it is done."""
        return self.values_of(pending.result())

    def values_of(self, out) -> tuple[dict, int]:
        values, n_conv = out if isinstance(out, tuple) else (out, 0)
        if not isinstance(values, dict):
            raise VaelabError(f"metric {self.name!r} returned {type(values).__name__}, not a dict of values")
        return values, n_conv


#: name -> :class:`Metric`, in registration order
METRICS: dict[str, Metric] = {}


def register_metric(name: str, fn: Callable | None = None, *, title: str | None = None, needs: str = "factors",
                    defaults: dict | None = None, headline=("score",), min_factors: int = 1, aliases=(),
                    draws: Callable[[dict], int] | None = None, workers: Callable | None = None,
                    skip: Callable | None = None):
    """Add metric ``name`` to :data:`METRICS` (also as a decorator: ``@register_metric("name", ...)``).

    ``vaelab evaluate`` then runs it with the others (``all``) or by name, eval.json holds its values as
    ``name.key``, and the table, the study and the report show its ``headline`` keys (the first one is
    its score).

    Parameters
    ----------
    name : str
        Letters, digits and underscores; the key prefix in eval.json.
    fn : callable
        ``fn(sampler, seed, **settings)`` returns a dict of values (numbers, lists, dicts of numbers) or
        ``(values, number of convergence warnings)``. ``sampler``
        (:class:`~vaelab.metrics.sampling.CodeSampler`) gives ``sampler.dataset`` and codes of the model
        under evaluation: ``sampler.sample(n, rng)`` -> (factors N×K, codes N×D),
        ``sampler.sample_unlabelled(n, rng)``; draw from ``numpy.random.default_rng(seed)``. Parameters
        named in :data:`INPUTS` get those: ``run`` (the loaded run; with ``needs="model"`` never None),
        ``encode_params`` (posterior parameters of a run's images, or None), ``n_jobs``.
    title : str, optional
        The name people read (default ``name``).
    needs : {"images", "factors", "grid", "model"}
        What it needs (:data:`NEEDS`); a dataset or encoder without it skips the metric, saying why.
    defaults : dict, optional
        Its settings; the user's ``options`` override them, and the ``fast`` profile divides the counts
        num_train, num_test, num_eval, num_variance_estimate by 10.
    headline : str or sequence of str
        The scalar keys shown in the table, the study and the report; the first is the score.
    min_factors : int
        Datasets with fewer factors skip it.
    aliases : sequence of str
        Other names ``--metrics`` accepts.
    draws : callable, optional
        ``draws(settings) -> int``: how many codes it draws through the shared sampler (the encoding's
        progress bar is planned with the sum over the metrics). Default :func:`iid_draws`.
    workers : callable, optional
        ``workers(settings, dataset, n_jobs) -> int``: how many worker processes it would use. A metric
        using more than one is started before the others and collected after them (its time overlaps
        theirs): its ``fn`` then returns a :class:`Pending`.
    skip : callable, optional
        ``skip(dataset, run) -> str | None``: a reason to skip it beyond ``needs`` (None: it applies).
    """
    if fn is None:
        return lambda f: register_metric(name, f, title=title, needs=needs, defaults=defaults, headline=headline,
                                         min_factors=min_factors, aliases=aliases, draws=draws, workers=workers,
                                         skip=skip)
    from ..plugins import _origin, claim

    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise VaelabError(f"a metric name is letters, digits and underscores, got {name!r}")
    if needs not in NEEDS:
        raise VaelabError(f"metric {name!r}: needs must be {', '.join(NEEDS[:-1])} or {NEEDS[-1]}, got {needs!r}")
    heads = (headline,) if isinstance(headline, str) else tuple(headline)
    if not heads:
        raise VaelabError(f"metric {name!r} needs at least one headline key (its score first)")
    inputs = tuple(k for k in INPUTS if k in inspect.signature(fn).parameters)
    metric = Metric(name, title or name, needs, dict(defaults or {}), heads, fn, min_factors, tuple(aliases),
                    draws or iid_draws, workers, skip, inputs)
    claim(METRICS, "metric", name, metric, origin=lambda m: _origin(m.fn))
    return fn


# ----------------------------------------------------------------------------- lookups
def metric_names() -> list[str]:
    return list(METRICS)


def resolve_metrics(metrics) -> tuple[list[str], bool]:
    """(metric names in canonical order, whether the user named them explicitly)."""
    from ..plugins import load_entry_points

    load_entry_points()  # metrics of installed plugins
    if metrics is None or metrics == "all" or metrics == ["all"]:
        return list(METRICS), False
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",")]
    lookup = {}
    for m in METRICS.values():
        lookup[m.name] = m.name
        for a in m.aliases:
            lookup[a] = m.name
    chosen = set()
    for raw in metrics:
        key = str(raw).strip().lower().replace("-", "_")
        if not key:
            continue
        if key == "all":
            chosen.update(METRICS)
            continue
        if key not in lookup:
            raise VaelabError(f"unknown metric {raw!r}{closest(key, lookup)}; choose from "
                              f"{', '.join(METRICS)} or all")
        chosen.add(lookup[key])
    if not chosen:
        raise VaelabError("no metric named; choose from " + ", ".join(METRICS) + " or all")
    return [n for n in METRICS if n in chosen], True


def profile_settings(name: str, profile: str = "default") -> dict:
    """The keyword arguments metric ``name`` gets under ``profile`` (``fast`` = 10x fewer points)."""
    if profile not in PROFILES:
        raise VaelabError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    kw = dict(METRICS[name].defaults)
    if profile == "fast":
        for k in COUNT_KEYS:
            if k in kw:
                kw[k] = max(100, kw[k] // 10)
    return kw


def planned_draws(name: str, settings: dict) -> int:
    """How many codes metric ``name`` draws through the shared sampler with ``settings`` (its ``draws``)."""
    return int(METRICS[name].draws(settings))


def skip_reason(metric: Metric, dataset, run=None) -> str | None:
    """Why ``metric`` cannot score ``dataset`` (with ``run``, or a bare encoder when None); None if it can."""
    if metric.needs == "model":
        if run is None:
            return "needs a run's decoder (scored here through an encode function only)"
    else:
        if metric.needs in ("factors", "grid") and not dataset.has_factors:
            return f"dataset {dataset.name!r} has no ground-truth factors"
        if metric.needs == "grid" and not dataset.is_grid:
            return (f"dataset {dataset.name!r} is not a full factor grid (needed to fix one factor and vary "
                    f"the others)")
        if dataset.has_factors and dataset.num_factors < metric.min_factors:
            return f"needs at least {metric.min_factors} factors, dataset {dataset.name!r} has {dataset.num_factors}"
    return metric.skip(dataset, run) if metric.skip is not None else None
