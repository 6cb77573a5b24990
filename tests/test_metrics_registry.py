"""The metric registry (metrics/registry.py): every built-in metric declares itself beside its code, with the
module's own defaults, and evaluate schedules registered metrics by what they declare."""
import importlib

import numpy as np
import pytest

from test_metrics_evaluate import encoder, grid
from vaelab.metrics import BUILTIN
from vaelab.metrics.evaluate import METRICS, evaluate
from vaelab.metrics.registry import Pending, planned_draws, register_metric


def test_builtins_register_themselves_in_order_with_their_module_defaults():
    assert list(METRICS)[:len(BUILTIN)] == list(BUILTIN)
    for name in BUILTIN:
        module = importlib.import_module(f"vaelab.metrics.{name}")
        m = METRICS[name]
        assert m.fn.__module__ == module.__name__  # declared beside its code
        assert m.defaults == module.DEFAULTS  # once: the module's defaults, all of them
        assert m.defaults is not module.DEFAULTS  # (a copy: a caller's change to one never moves the other)
    assert METRICS["factor_vae"].defaults["nan_policy"] == "reference"
    assert METRICS["dci"].inputs == ("n_jobs",) and METRICS["latent"].inputs == ("encode_params",)
    assert METRICS["elbo"].inputs == ("run",) and METRICS["elbo"].needs == "model"


def test_planned_draws_per_metric():
    kw = {"batch_size": 64, "num_train": 10, "num_eval": 5, "num_test": 7, "num_variance_estimate": 100}
    assert planned_draws("beta_vae", kw) == 2 * 64 * 15
    assert planned_draws("factor_vae", kw) == 100 + 64 * 15
    assert planned_draws("mig", kw) == 17 and planned_draws("elbo", kw) == 0
    assert planned_draws("mig", {"num_train": True, "num_test": "x"}) == 0  # not counts: nothing planned


@pytest.fixture
def registered():
    """Register metrics for one test, removing them afterwards."""
    names = []

    def reg(name, fn, **kw):
        register_metric(name, fn, **kw)
        names.append(name)

    yield reg
    for n in names:
        METRICS.pop(n, None)


def test_a_metric_with_workers_starts_first_and_is_collected_last(registered):
    order = []

    def spread(sampler, seed, n_jobs, num_train):
        codes = sampler.sample_unlabelled(num_train, np.random.default_rng(seed))
        order.append("started")
        return Pending(3, lambda: (order.append("collected"), {"score": float(codes.std())})[1], lambda: None)

    def plain(sampler, seed, num_train):
        order.append("plain")
        return {"score": 1.0}

    registered("t_spread", spread, needs="images", defaults={"num_train": 50}, min_factors=0,
               workers=lambda settings, dataset, n_jobs: 3)
    registered("t_plain", plain, needs="images", defaults={"num_train": 50}, min_factors=0)
    r = evaluate(encoder(), grid(), metrics="t_plain,t_spread", save=False)
    assert order == ["started", "plain", "collected"]
    assert r["metrics"] == ["t_spread", "t_plain"]  # registration order, whatever the schedule
    assert r["background"] == {"t_spread": 3} and r["t_spread.score"] > 0 and r["t_plain.score"] == 1.0
    assert r["settings"] == {"t_plain": {"num_train": 50}, "t_spread": {"num_train": 50}}


def test_a_skip_check_is_the_metric_own(registered):
    registered("t_never", lambda sampler, seed: {"score": 0.0}, needs="images", min_factors=0,
               skip=lambda dataset, run: f"not for {dataset.name}")
    r = evaluate(encoder(), grid(), metrics="all", save=False, profile="fast", options={"dci": {"num_train": 150}})
    assert r["skipped"]["t_never"].startswith("not for ")
