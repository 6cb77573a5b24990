"""``evaluate``: every metric on one model, the numbers in one namespaced dict, saved as ``eval.json``.

The default profile uses dlib's study counts (docs/metrics.md#defaults); ``fast`` draws 10x fewer points (for use during
training). Each metric gets its own ``numpy.random.Generator`` from ``seed``; codes are cached per dataset
row and shared by all metrics (the encoder is deterministic), so the dominant cost is encoding the
distinct images BetaVAE and FactorVAE touch plus DCI's gradient-boosted trees.

Result (and ``eval.json``): namespaced scalars such as ``"mig.score"``, ``"dci.disentanglement"``,
``"beta_vae.eval_accuracy"``; breakdowns such as ``"mig.per_factor"`` (factor name -> value),
``"dci.importance"`` (D x K); and plain keys ``seconds`` (per metric, ``encode`` and ``total``),
``convergence_warnings`` (per metric and ``total``), ``skipped`` (metric -> why), ``warnings``,
``settings`` (the counts each metric used), ``versions`` (numpy, scikit-learn, torch, python, vaelab),
``dataset``, ``num_latents``, ``seed``, ``profile``, ``cpu_seconds`` (this process's CPU time per metric).
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import VaelabError, closest


# ----------------------------------------------------------------------------- registry
@dataclass
class _Metric:
    name: str
    title: str
    needs: str  # "images" | "factors" | "grid" | "model" (a run's decoder too)
    defaults: dict
    headline: list[str]  # scalar keys shown in the table, first = the score
    min_factors: int = 1
    aliases: tuple = ()
    run: Callable = field(default=None, repr=False)
    per_image_elbo: bool = False  # scores the model's per-image ELBO: skipped where the objective has none


def _names(ds):
    return list(ds.factor_names)


def _by_factor(values, names):
    return {n: float(v) for n, v in zip(names, values)}


def _run_beta_vae(sampler, seed, kw, ctx):
    from .beta_vae import beta_vae_score

    d = beta_vae_score(None, sampler.dataset, seed, sampler=sampler, **kw)
    return {"train_accuracy": d["train_accuracy"], "eval_accuracy": d["eval_accuracy"]}, d["convergence_warnings"]


def _run_factor_vae(sampler, seed, kw, ctx):
    from .factor_vae import factor_vae_score

    d = factor_vae_score(None, sampler.dataset, seed, sampler=sampler, **kw)
    out = {k: d[k] for k in ("train_accuracy", "eval_accuracy", "num_active_dims")}
    out["global_variance"] = d["global_variance"].tolist()
    out["votes_train"] = d["votes_train"].tolist()
    out["votes_eval"] = d["votes_eval"].tolist()
    return out, 0


def _run_mig(sampler, seed, kw, ctx):
    from .mig import mig_score

    d = mig_score(None, sampler.dataset, seed, sampler=sampler, **kw)
    names = _names(sampler.dataset)
    return {"score": d["score"], "per_factor": _by_factor(d["per_factor"], names),
            "entropy": _by_factor(d["entropy"], names), "mutual_info": d["mutual_info"].tolist()}, 0


def _run_sap(sampler, seed, kw, ctx):
    from .sap import sap_score

    d = sap_score(None, sampler.dataset, seed, sampler=sampler, **kw)
    return {"score": d["score"], "per_factor": _by_factor(d["per_factor"], _names(sampler.dataset)),
            "matrix": d["matrix"].tolist()}, d["convergence_warnings"]


def _start_dci(sampler, seed, kw, ctx):
    """Draw DCI's points and start its GBT fits (in worker processes when more than one job)."""
    from .dci import start_dci_score

    kw = dict(kw)
    kw.setdefault("n_jobs", ctx.get("n_jobs"))
    return start_dci_score(None, sampler.dataset, seed, sampler=sampler, **kw)


def _dci_values(d, sampler):
    names = _names(sampler.dataset)
    out = {k: d[k] for k in ("disentanglement", "completeness", "informativeness_train", "informativeness_test")}
    out["per_factor"] = {"completeness": _by_factor(d["completeness_per_factor"], names),
                         "accuracy_train": _by_factor(d["accuracy_train"], names),
                         "accuracy_test": _by_factor(d["accuracy_test"], names)}
    out["per_code"] = {"disentanglement": d["disentanglement_per_code"].tolist(),
                       "weight": d["code_weights"].tolist()}
    out["importance"] = d["importance"].tolist()
    return out, 0


def _run_dci(sampler, seed, kw, ctx):
    return _dci_values(_start_dci(sampler, seed, kw, ctx).result(), sampler)


def _run_modularity(sampler, seed, kw, ctx):
    from .modularity import modularity_score

    d = modularity_score(None, sampler.dataset, seed, sampler=sampler, **kw)
    names = _names(sampler.dataset)
    out = {k: d[k] for k in ("modularity", "explicitness_train", "explicitness_test")}
    out["per_code"] = {"modularity": d["modularity_per_code"].tolist()}
    out["per_factor"] = {"explicitness_train": _by_factor(d["explicitness_train_per_factor"], names),
                         "explicitness_test": _by_factor(d["explicitness_test_per_factor"], names)}
    out["mutual_info"] = d["mutual_info"].tolist()
    out["dropped_codes"] = d["dropped_codes"]
    return out, d["convergence_warnings"]


def _run_irs(sampler, seed, kw, ctx):
    from .irs import irs_score

    d = irs_score(None, sampler.dataset, seed, sampler=sampler, **kw)
    per_code = [None] * len(d["active"])
    for j, v in zip(np.flatnonzero(d["active"]), d["per_latent"]):
        per_code[int(j)] = float(v)
    return {"score": d["score"], "num_active_dims": d["num_active_dims"], "per_code": per_code}, 0


def _run_unsupervised(sampler, seed, kw, ctx):
    from .unsupervised import unsupervised_score

    return unsupervised_score(None, sampler.dataset, seed, sampler=sampler, **kw), 0


def _run_latent(sampler, seed, kw, ctx):
    from .latent import active_units_score, kl_per_latent

    kw = dict(kw)
    d = active_units_score(None, sampler.dataset, seed, sampler=sampler, **kw)
    out = {"active_units": d["count"], "variance": d["variance"].tolist()}
    params = ctx.get("encode_params")
    if params is not None:  # posterior parameters available (a run): KL per dimension on the same images
        import torch

        from ..data.views import torch_generator

        ds = sampler.dataset
        rows = _iid_rows(ds, seed, kw.get("num_train", 10_000))
        mu, logvar = params(ds.gather(torch.from_numpy(rows), torch_generator(seed)))
        kl = kl_per_latent(mu, logvar)
        out["kl_per_latent"] = kl.tolist()
        out["kl_total"] = float(kl.sum())
    return out, 0


def _iid_rows(ds, seed: int, n: int) -> np.ndarray:
    """``n`` dataset rows drawn i.i.d. with ``seed``, ascending: the images ``latent`` and ``elbo`` use."""
    return np.sort(np.random.default_rng(seed).integers(0, len(ds), size=n))


def _run_elbo(sampler, seed, kw, ctx):
    """The model's fit on ``num_train`` images drawn i.i.d. with ``seed`` (the rows ``latent`` uses), in
    nats per image (the reductions of docs/conventions.md#reduction): ``reconstruction`` -log p(x|z) with one posterior draw z
    (seeded), ``kl`` KL(q(z|x) || N(0, I)), ``elbo`` = -(reconstruction + kl), and
    ``reconstruction_at_mean`` -log p(x|mu) (no noise). The β-VAE trade-off: how much fit each setting
    of a sweep gave up for its scores."""
    import torch

    from ..data.views import torch_generator
    from ..models.likelihood import kl_normal

    run = ctx["run"]
    model, dev = run.model, run.device
    ds = sampler.dataset
    rows = _iid_rows(ds, seed, kw.get("num_train", 10_000))
    noise = torch.Generator(device=dev).manual_seed(seed)
    view_noise = torch_generator(seed)
    sums = {"reconstruction": 0.0, "reconstruction_at_mean": 0.0, "kl": 0.0}
    with torch.no_grad():
        for i in range(0, len(rows), 512):
            x = ds.gather(torch.from_numpy(rows[i:i + 512]), view_noise).to(dev).float().div_(255.0)
            mu, logvar = model.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=noise, device=dev, dtype=mu.dtype)
            sums["reconstruction"] += float(model.recon(model.decode(z), x).double().sum())
            sums["reconstruction_at_mean"] += float(model.recon(model.decode(mu), x).double().sum())
            sums["kl"] += float(kl_normal(mu, logvar).double().sum())
    out = {k: v / len(rows) for k, v in sums.items()}
    out["elbo"] = -(out["reconstruction"] + out["kl"])
    return out, 0


# fmt: off
METRICS: dict[str, _Metric] = {m.name: m for m in [
    # dlib beta_vae_sklearn.gin
    _Metric("beta_vae", "BetaVAE", "grid", dict(batch_size=64, num_train=10_000, num_eval=5_000),
            ["eval_accuracy", "train_accuracy"], 2, ("betavae", "higgins"), _run_beta_vae),
    # dlib factor_vae_metric.gin (prune threshold 0.05)
    _Metric("factor_vae", "FactorVAE", "grid",
            dict(batch_size=64, num_train=10_000, num_eval=5_000, num_variance_estimate=10_000, threshold=0.05),
            ["eval_accuracy", "train_accuracy", "num_active_dims"], 2, ("factorvae", "kim"),
            _run_factor_vae),
    _Metric("mig", "MIG", "factors", dict(num_train=10_000, num_bins=20), ["score"], 1, (), _run_mig),  # mig.gin
    _Metric("sap", "SAP", "factors", dict(num_train=10_000, num_test=5_000, continuous=False), ["score"], 1,
            ("sap_score",), _run_sap),  # sap_score.gin
    _Metric("dci", "DCI", "factors", dict(num_train=10_000, num_test=5_000, trees="vectorised"),
            ["disentanglement", "completeness", "informativeness_train", "informativeness_test"], 2, (),
            _run_dci),  # dci.gin
    _Metric("modularity", "Modularity / explicitness", "factors", dict(num_train=10_000, num_test=5_000, num_bins=20),
            ["modularity", "explicitness_train", "explicitness_test"], 2,
            ("explicitness", "modularity_explicitness"), _run_modularity),  # modularity_explicitness.gin
    _Metric("irs", "IRS", "factors", dict(num_train=10_000, diff_quantile=0.99, num_bins=20),
            ["score", "num_active_dims"], 1, (), _run_irs),  # irs.gin
    _Metric("unsupervised", "Unsupervised", "images", dict(num_train=10_000, num_bins=20),
            ["gaussian_total_correlation", "gaussian_wasserstein_correlation",
             "gaussian_wasserstein_correlation_norm", "mutual_info_score"], 0,
            ("tc", "gaussian_total_correlation"), _run_unsupervised),  # unsupervised.gin
    _Metric("latent", "Latents", "images", dict(num_train=10_000, threshold=0.01),
            ["active_units", "kl_total"], 0, ("active_units", "kl"), _run_latent),  # Burda et al. threshold 0.01
    # not a dlib metric: the fit the scores were bought with (reconstruction and KL, nats per image)
    _Metric("elbo", "Reconstruction / ELBO", "model", dict(num_train=10_000),
            ["elbo", "reconstruction", "kl", "reconstruction_at_mean"], 0, ("reconstruction", "fit"), _run_elbo,
            per_image_elbo=True),
]}
# fmt: on

def planned_draws(name: str, kw: dict) -> int:
    """How many codes metric ``name`` draws through the shared sampler with settings ``kw`` (what its
    module draws: BetaVAE two batches of L per point, FactorVAE the variance estimate plus L per vote,
    the i.i.d. metrics their train and test points). The sum over the metrics of one evaluation is the
    total its encoding progress is planned with; ``elbo`` and the KL half of ``latent`` read the model
    directly and draw nothing here."""
    def n(key):
        v = kw.get(key, 0)
        return int(v) if isinstance(v, (int, float, np.integer)) and not isinstance(v, bool) and v > 0 else 0

    if name == "beta_vae":
        return 2 * n("batch_size") * (n("num_train") + n("num_eval"))
    if name == "factor_vae":  # the votes are drawn only when a dimension is active (else the score is 0)
        return n("num_variance_estimate") + n("batch_size") * (n("num_train") + n("num_eval"))
    if name == "elbo":
        return 0
    return n("num_train") + n("num_test")  # mig, sap, dci, modularity, irs, unsupervised, latent


_COUNT_KEYS = ("num_train", "num_test", "num_eval", "num_variance_estimate")
PROFILES = ("default", "fast")


def profile_settings(name: str, profile: str = "default") -> dict:
    """The keyword arguments metric ``name`` gets under ``profile`` (``fast`` = 10x fewer points)."""
    if profile not in PROFILES:
        raise VaelabError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    kw = dict(METRICS[name].defaults)
    if profile == "fast":
        for k in _COUNT_KEYS:
            if k in kw:
                kw[k] = max(100, kw[k] // 10)
    return kw


def register_metric(name: str, fn: Callable | None = None, *, title: str | None = None, needs: str = "factors",
                    defaults: dict | None = None, headline=("score",), min_factors: int = 1, aliases=()):
    """Add metric ``name`` to :data:`METRICS` (also as a decorator: ``@register_metric("name", ...)``).
    ``vaelab evaluate`` then runs it with the others (``all``) or by name, eval.json holds its values as
    ``name.key``, and the table, the study and the report show its ``headline`` keys (the first one is
    its score).

    ``fn(sampler, seed, **settings)`` returns a dict of values (numbers, lists, dicts of numbers) or
    ``(values, number of convergence warnings)``. ``sampler`` (:class:`~vaelab.metrics.sampling.CodeSampler`)
    gives ``sampler.dataset`` and codes of the model under evaluation: ``sampler.sample(n, rng)`` ->
    (factors N×K, codes N×D), ``sampler.sample_unlabelled(n, rng)``; draw from
    ``numpy.random.default_rng(seed)``. ``settings``: ``defaults`` with the user's options (the ``fast``
    profile divides the counts num_train, num_test, num_eval, num_variance_estimate by 10); a ``run``
    parameter, if ``fn`` has one, gets the loaded run (``needs="model"``: only runs are scored).
    ``needs``: ``"images"``, ``"factors"``, ``"grid"`` (a full factor grid) or ``"model"``; datasets
    without them skip the metric, saying why."""
    import functools
    import inspect

    from ..plugins import _origin, claim

    if fn is None:
        return lambda f: register_metric(name, f, title=title, needs=needs, defaults=defaults, headline=headline,
                                         min_factors=min_factors, aliases=aliases)
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise VaelabError(f"a metric name is letters, digits and underscores, got {name!r}")
    if needs not in ("images", "factors", "grid", "model"):
        raise VaelabError(f"metric {name!r}: needs must be images, factors, grid or model, got {needs!r}")
    heads = [headline] if isinstance(headline, str) else list(headline)
    if not heads:
        raise VaelabError(f"metric {name!r} needs at least one headline key (its score first)")
    wants_run = "run" in inspect.signature(fn).parameters

    @functools.wraps(fn)
    def run(sampler, seed, kw, ctx):
        out = fn(sampler, seed, **kw, **({"run": ctx.get("run")} if wants_run else {}))
        values, n_conv = out if isinstance(out, tuple) else (out, 0)
        if not isinstance(values, dict):
            raise VaelabError(f"metric {name!r} returned {type(values).__name__}, not a dict of values")
        return values, n_conv

    metric = _Metric(name, title or name, needs, dict(defaults or {}), heads, min_factors, tuple(aliases), run)
    claim(METRICS, "metric", name, metric, origin=lambda m: _origin(m.run))
    return fn


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


def _skip_reason(m: _Metric, ds, run=None) -> str | None:
    if m.needs == "model":
        if run is None:
            return "needs a run's decoder (scored here through an encode function only)"
        if m.per_image_elbo:
            from ..models import objective_class

            cls = objective_class(run.config["model"]["objective"])
            if not cls.per_image_elbo:
                return cls.elbo_note or f"{cls.objective} has no per-image ELBO"
        return None
    if m.needs in ("factors", "grid") and not ds.has_factors:
        return f"dataset {ds.name!r} has no ground-truth factors"
    if m.needs == "grid" and not ds.is_grid:
        return f"dataset {ds.name!r} is not a full factor grid (needed to fix one factor and vary the others)"
    if ds.has_factors and ds.num_factors < m.min_factors:
        return f"needs at least {m.min_factors} factors, dataset {ds.name!r} has {ds.num_factors}"
    return None


# ----------------------------------------------------------------------------- helpers
def versions() -> dict:
    import sklearn
    import torch

    from .. import __version__

    return {"numpy": np.__version__, "scikit-learn": sklearn.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "vaelab": __version__}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x)
    if isinstance(x, Path):
        return str(x)
    return x


def _write_json(path: Path, data: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)  # inf stays Infinity (Python's JSON), docs/metrics.md#unsupervised-scores
        fh.write("\n")
    os.replace(tmp, path)


def _resolve_out(out) -> Path:
    p = Path(out).expanduser()
    if p.suffix.lower() == ".json":
        return p
    return p / "eval.json"


def _open_run(path):
    try:
        from ..training import load_run
    except ImportError as e:  # the trainer is not part of this build yet
        raise VaelabError(f"cannot open run folders: the trainer is not available ({e}); "
                          f"pass an encode callable and a dataset instead") from None
    return load_run(path)


# ----------------------------------------------------------------------------- any encoder
def _codes_of(out):
    """The codes in what an encoder returned: a tensor or array ``B x D`` (``B x D x 1 x 1`` flattened to
    ``B x D``), or the first item of a tuple / list of such (``(mu, logvar)`` -> ``mu``)."""
    import torch

    if isinstance(out, (tuple, list)) and out and isinstance(out[0], (torch.Tensor, np.ndarray)) and out[0].ndim >= 2:
        out = out[0]  # (mu, logvar, ...): the means
    if isinstance(out, torch.Tensor):
        out = out.detach()
        return out.reshape(out.shape[0], -1) if out.ndim > 2 else out
    arr = np.asarray(out)
    return arr.reshape(arr.shape[0], -1) if arr.ndim > 2 else arr


def as_encode(encoder, device=None) -> Callable:
    """An ``encode`` function (uint8 images ``B x C x H x W`` -> codes ``B x D``) from what a user brings:

    * a torch ``nn.Module``: put in eval mode (on ``device`` if given) and called without gradients on
      float images in [0, 1] (``uint8 / 255``, as vaelab's models see them) on its own device; a vaelab
      model gives its posterior means (``representation``). It may return the codes, or a tuple whose
      first item they are (``(mu, logvar)``);
    * any other callable: called with the uint8 images (a torch tensor on the CPU) and returning an
      ``np.ndarray`` or tensor ``B x D`` (or a tuple, as above).

    Anything the encoder raises becomes one :class:`VaelabError` naming the batch's shape."""
    import torch

    if isinstance(encoder, torch.nn.Module):
        module = encoder if device is None else encoder.to(device)
        module.eval()
        dev = next((t.device for t in list(module.parameters()) + list(module.buffers())), torch.device("cpu"))
        rep = getattr(module, "representation", None)
        forward = rep if callable(rep) else module

        def call(images):
            x = torch.as_tensor(images).to(dev).float().div_(255.0)
            return forward(x)
        what = f"the encoder module {type(encoder).__name__}"
    elif isinstance(encoder, type):
        raise VaelabError(f"{encoder.__name__} is a class: give an instance of it (an nn.Module) or an encode function")
    elif callable(encoder):
        call = encoder
        what = f"the encode function {getattr(encoder, '__name__', type(encoder).__name__)}"
    else:
        raise VaelabError(f"an encoder must be an nn.Module or a function of uint8 images, "
                          f"got {type(encoder).__name__}")

    def encode(images):
        try:
            with torch.no_grad():
                return _codes_of(call(images))
        except VaelabError:
            raise
        except Exception as e:
            shape = "x".join(str(s) for s in getattr(images, "shape", ()))
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise VaelabError(f"{what} failed on a batch of uint8 images {shape}: {type(e).__name__}: {first}") from e

    return encode


def load_encoder(spec: str):
    """The object ``spec`` names: ``MODULE:NAME`` (an importable module; the current folder is searched
    first, as ``python -m`` does) or ``FILE.py:NAME``; ``NAME`` may be dotted (``model:net.encoder``).
    Importing runs that module's code: it is the user's own."""
    import importlib
    import importlib.util

    spec = str(spec)
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise VaelabError(f"--encoder {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION (e.g. mymodel:encode)")
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            path = Path(where).expanduser()
            if not path.is_file():
                raise VaelabError(f"--encoder: no file {path}")
            name = f"vaelab_encoder_{path.stem}"
            mspec = importlib.util.spec_from_file_location(name, path)
            if mspec is None or mspec.loader is None:
                raise VaelabError(f"--encoder: cannot import {path} (not a Python file?)")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[name] = module  # dataclasses and pickling look modules up by name
            mspec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(where)
    except VaelabError:
        raise
    except ModuleNotFoundError as e:
        if e.name and (where == e.name or where.startswith(e.name + ".")):
            raise VaelabError(f"--encoder: no module named {where!r} here (run from its folder, add it to "
                              f"PYTHONPATH, or give FILE.py:{attr})") from None
        raise VaelabError(f"--encoder: importing {where} failed: {type(e).__name__}: {e}") from e
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise VaelabError(f"--encoder: importing {where} failed: {type(e).__name__}: {first}") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise VaelabError(f"--encoder: {where} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def _probe(encode, dataset) -> None:
    """Encode the first images once before any metric runs: a broken encoder is one clear error, not a
    metric skipped for a reason that holds for all of them."""
    import torch

    k = min(2, len(dataset))
    if k == 0:
        return
    z = encode(dataset.gather(torch.arange(k)))
    shape = tuple(getattr(z, "shape", np.shape(z)))
    if len(shape) not in (1, 2) or shape[0] != k:
        raise VaelabError(f"the encoder returned shape {shape} for {k} images of {dataset.name!r}; expected "
                          f"{k} x D codes")


# ----------------------------------------------------------------------------- evaluate
def evaluate(run_or_encode, dataset=None, metrics="all", seed: int = 0, profile: str = "default", out=None,
             *, options: dict | None = None, n_jobs: int | None = None, batch_size: int = 2048,
             progress: bool = False, save: bool = True) -> dict:
    """Score a model with every metric (or those named in ``metrics``) and save ``eval.json``.

    run_or_encode: a run folder (path), a Run (``vaelab.training.load_run``), an ``encode`` callable
        (uint8 images B x C x H x W -> B x D codes, np.ndarray or tensor) or a torch ``nn.Module`` (called on
        the images / 255; see :func:`as_encode`); with a callable or module ``dataset`` is required and
        eval.json is written only where ``out`` says.
    dataset: a FactorDataset, a dataset name for ``vaelab.data.load``, or None (the run's own dataset).
    metrics: "all", a comma-separated string or a list of names (``metric_names()``). With "all",
        metrics that cannot apply (no factors, not a grid) are skipped with the reason recorded;
        naming one that cannot apply is an error.
    seed: every metric draws from ``numpy.random.default_rng(seed)``; no global RNG is touched.
    profile: "default" (dlib's study counts, docs/metrics.md#defaults) or "fast" (10x fewer points, for use during training).
    out: a folder (eval.json inside) or a .json file; default RUN/eval.json for runs.
    options: per-metric keyword overrides, e.g. ``{"dci": {"num_train": 1000}}``.
    n_jobs: processes for DCI's per-factor fits (None = all available cores; same numbers either way).
    batch_size: images per encode call.
    """
    t_start = time.perf_counter()
    from ..data.base import FactorDataset
    from .sampling import CodeSampler

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VaelabError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if profile not in PROFILES:
        raise VaelabError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    names, explicit = resolve_metrics(metrics)
    options = dict(options or {})
    for key in options:
        if key not in METRICS:
            raise VaelabError(f"options for unknown metric {key!r}{closest(key, METRICS)}")

    run = None
    if isinstance(run_or_encode, (str, os.PathLike)):
        run = _open_run(run_or_encode)
    elif hasattr(run_or_encode, "encode") and hasattr(run_or_encode, "path"):
        run = run_or_encode
    elif not callable(run_or_encode):
        raise VaelabError("evaluate needs a run folder, a Run, an encode callable or an nn.Module")
    if run is not None:
        encode = run.encode
        encode_params = getattr(run, "encode_params", None)
        if dataset is None:
            dataset = run.dataset()
        out_path = _resolve_out(out) if out is not None else Path(run.path) / "eval.json"
    else:
        encode = as_encode(run_or_encode)  # a function of uint8 images, or an nn.Module
        encode_params = None
        if dataset is None:
            raise VaelabError("evaluate with an encode callable needs a dataset (a FactorDataset or a name)")
        out_path = _resolve_out(out) if out is not None else None
    if isinstance(dataset, str):
        from ..data import load

        dataset = load(dataset)
    if not isinstance(dataset, FactorDataset):
        raise VaelabError(f"dataset must be a FactorDataset or a dataset name, got {type(dataset).__name__}")

    if run is None:
        _probe(encode, dataset)
    sampler = CodeSampler(encode, dataset, batch_size=batch_size, progress=progress)
    ctx = {"n_jobs": n_jobs, "encode_params": encode_params, "run": run}
    result: dict = {}
    seconds, cpu, conv, skipped, warned, settings = {}, {}, {}, {}, {}, {}

    def settings_for(name):
        kw = profile_settings(name, profile)
        kw.update(options.get(name, {}))
        return kw

    def attempt(name, fn):
        """Run fn() recording warnings; a VaelabError skips the metric (or propagates if it was named)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = fn()
            except VaelabError as e:
                if explicit:
                    raise
                skipped[name] = str(e)
                out = None
            except TypeError as e:  # a bad option name
                if "unexpected keyword" in str(e):
                    raise VaelabError(f"{METRICS[name].title}: {e}") from None
                raise
        msgs = sorted({str(w.message).splitlines()[0] for w in caught
                       if issubclass(w.category, (RuntimeWarning, UserWarning))})
        if msgs:
            warned.setdefault(name, []).extend(msgs)
        return out

    def record(name, values, n_conv, t0, c0):
        seconds[name] = time.perf_counter() - t0
        cpu[name] = time.process_time() - c0
        conv[name] = int(n_conv)
        for key, value in values.items():
            result[f"{name}.{key}"] = value
        if progress:
            from tqdm import tqdm

            head = METRICS[name].headline[0]
            tqdm.write(f"{name}: {head} = {_fmt(values.get(head))} ({seconds[name]:.1f} s)", file=sys.stderr)

    for name in names:
        reason = _skip_reason(METRICS[name], dataset, run)
        if reason is not None:
            if explicit:
                raise VaelabError(f"{METRICS[name].title}: {reason}")
            skipped[name] = reason

    background, parallel = {}, {}
    try:
        # the encoding's whole size is known from the metrics' counts before any of them runs: one bar
        # with its real total (or every image encoded up front when the draws would touch nearly all)
        sampler.plan(sum(planned_draws(n, settings_for(n)) for n in names if n not in skipped))
        # DCI's gradient-boosted trees dominate the cost: with worker processes they start first and run
        # while the other metrics are computed here (same numbers; its time overlaps theirs)
        if "dci" in names and "dci" not in skipped:
            from .dci import _resolve_jobs

            kw = settings_for("dci")
            if _resolve_jobs(kw.get("n_jobs", n_jobs), max(dataset.num_factors, 1)) > 1:
                t0, c0 = time.perf_counter(), time.process_time()
                job = attempt("dci", lambda: _start_dci(sampler, seed, kw, ctx))
                if job is not None:
                    background["dci"] = (job, kw, t0, time.process_time() - c0)
                    parallel["dci"] = job.fits.jobs
        for name in names:
            if name in skipped or name in background:
                continue
            kw = settings_for(name)
            t0, c0 = time.perf_counter(), time.process_time()
            out = attempt(name, lambda: METRICS[name].run(sampler, seed, kw, ctx))
            if out is not None:
                settings[name] = kw
                record(name, *out, t0, c0)
        for name, (job, kw, t0, c_start) in list(background.items()):
            c0 = time.process_time() - c_start  # this process's CPU: starting + collecting only
            out = attempt(name, lambda: _dci_values(job.result(), sampler))
            background.pop(name)
            if out is not None:
                settings[name] = kw
                record(name, *out, t0, c0)
    finally:
        for job, *_ in background.values():  # an error elsewhere: stop the workers' queue
            job.cancel()
        sampler.close()
    names_done = [n for n in names if n in seconds]
    seconds["encode"] = sampler.encode_seconds
    seconds["total"] = time.perf_counter() - t_start
    conv["total"] = sum(conv.values())
    result.update({
        "seed": seed,
        "profile": profile,
        "metrics": names_done,
        "skipped": skipped,
        "dataset": {"name": dataset.name, "num_images": len(dataset), "image_shape": list(dataset.image_shape),
                    "factor_names": list(dataset.factor_names), "factor_sizes": [int(s) for s in dataset.factor_sizes],
                    "is_grid": bool(dataset.is_grid), "hidden_size": int(getattr(dataset, "hidden_size", 1))},
        "num_latents": sampler.num_latents,
        "images_encoded": sampler.images_encoded,
        "seconds": seconds,
        "cpu_seconds": cpu,  # this process only (DCI's worker processes not included)
        "background": parallel,  # metric -> worker processes; its seconds overlap the other metrics'
        "convergence_warnings": conv,
        "warnings": warned,
        "settings": settings,
        "versions": versions(),
    })
    if run is not None:
        result["run"] = str(run.path)
        if getattr(run, "step", None) is not None:
            result["step"] = int(run.step)
    result = _jsonable(result)
    if save and out_path is not None:
        _write_json(out_path, result)
        result["path"] = str(out_path)
    return result


# ----------------------------------------------------------------------------- table
def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4f}"
    return str(v)


def latent_assignment(result: dict) -> list[str]:
    """Lines saying which latent carries each factor: MIG's mutual information over the factor's
    entropy (0 to 1), the best latent and the runner-up (their difference is the factor's MIG)."""
    mi, ent = result.get("mig.mutual_info"), result.get("mig.entropy")
    if not mi or not isinstance(ent, dict) or len(mi[0]) != len(ent):
        return []
    m = np.asarray(mi, dtype=float)  # latents x factors
    names = list(ent)
    width = max(len(n) for n in names)
    out = ["which latent carries each factor (mutual information / factor entropy, from MIG):"]
    for j, name in enumerate(names):
        norm = m[:, j] / ent[name] if ent[name] > 0 else np.zeros(len(m))
        order = np.argsort(-norm, kind="stable")
        second = f"   next z{order[1]} {norm[order[1]]:.2f}" if len(order) > 1 else ""
        out.append(f"  {name:<{width}}  z{order[0]} {norm[order[0]]:.2f}{second}")
    return out


#: the scores whose chance level is 1/K: both classify which of the K factors was held fixed
CHANCE_KEYS = ("beta_vae.eval_accuracy", "beta_vae.train_accuracy", "factor_vae.eval_accuracy",
               "factor_vae.train_accuracy")
#: per-latent KL (nats / image) above which the report's KL bars count a latent as carrying information;
#: vaelab's own cut (the quick-start model's switched-off latents sit below 0.02), not from a paper
KL_ACTIVE_NATS = 0.02


def chance_level(result: dict, key: str) -> float | None:
    """1/K for the accuracies of :data:`CHANCE_KEYS` (K from ``result["dataset"]``), else None."""
    k = len(((result.get("dataset") or {}).get("factor_sizes")) or [])
    return 1.0 / k if key in CHANCE_KEYS and k else None


def below_chance_reason(metric: str, num_active: list | None = None) -> str:
    """Why a BetaVAE / FactorVAE accuracy can fall below chance. ``num_active``: FactorVAE's active-dimension
    count of each run behind the value (None: unknown)."""
    if metric == "factor_vae":
        none = [n for n in (num_active or []) if isinstance(n, (int, float)) and n == 0]
        if none:
            of = f"{len(none)} of {len(num_active)} runs" if len(num_active) > 1 else "the run"
            return (f"{of} had no active latent by FactorVAE's test (no mean code with std >= its threshold, "
                    f"0.05 by default), and then the score is 0 by definition: no latent is left to vote")
        return ("the majority vote of the training votes does worse than guessing on fresh votes: the active "
                "latents carry no factor it can tell apart (or too few votes)")
    return ("the linear classifier does worse than guessing on fresh points: the codes barely change with the "
            "factor held fixed (a collapsed or untrained model), or too few points")


def below_chance_notes(result: dict) -> list[str]:
    """One line per BetaVAE / FactorVAE accuracy below its chance level 1/K, with the likely reason."""
    out = []
    for key in CHANCE_KEYS:
        v, c = result.get(key), chance_level(result, key)
        if c is None or not isinstance(v, (int, float)) or isinstance(v, bool) or not v < c:
            continue
        metric = key.split(".")[0]
        active = [result.get("factor_vae.num_active_dims")] if metric == "factor_vae" else None
        out.append(f"below chance: {key} {_fmt(v)} < 1/K = {c:.3f}: {below_chance_reason(metric, active)}")
    return out


def active_latent_counts(result: dict) -> list[tuple[str, int, int | None, str]]:
    """(key, count, of how many latents, what it counts and its threshold) for every count of "active"
    latents in ``result``: each metric has its own test, so the counts differ (from the strictest to the
    loosest: KL, variance of the mean, FactorVAE's std cut, IRS's non-constant)."""
    d = result.get("num_latents")
    st = result.get("settings") or {}
    out = []
    kl = result.get("latent.kl_per_latent")
    if isinstance(kl, list) and kl:
        n = (st.get("latent") or {}).get("num_train")
        out.append(("latent.kl_per_latent", sum(1 for x in kl if x > KL_ACTIVE_NATS), len(kl),
                    f"KL(q(z_j|x) || N(0, 1)) > {KL_ACTIVE_NATS} nats / image, mean over "
                    f"{f'{n:,} ' if n else ''}images: latents that carry information (the report's KL bars)"))
    if isinstance(result.get("latent.active_units"), int):
        t = (st.get("latent") or {}).get("threshold", 0.01)
        out.append(("latent.active_units", result["latent.active_units"], d,
                    f"variance over the data of the mean code > {t} (Burda et al. 2016's active units)"))
    if isinstance(result.get("factor_vae.num_active_dims"), int):
        t = (st.get("factor_vae") or {}).get("threshold", 0.05)
        out.append(("factor_vae.num_active_dims", result["factor_vae.num_active_dims"], d,
                    f"std over the data of the mean code >= {t} (FactorVAE's pruning, dlib; only these vote)"))
    if isinstance(result.get("irs.num_active_dims"), int):
        out.append(("irs.num_active_dims", result["irs.num_active_dims"], d,
                    "std of the mean code > 0 (IRS drops only exactly constant latents)"))
    return out


def format_table(result: dict) -> str:
    """Scores as a plain-text table: metric, key, value, seconds (first row of each metric)."""
    rows = [("metric", "key", "value", "seconds")]  # key: the eval.json name after "metric."
    for name in result.get("metrics", []):
        m = METRICS.get(name)
        if m is None:
            continue
        first = True
        for key in m.headline:
            full = f"{name}.{key}"
            if full not in result:
                continue
            secs = f"{result['seconds'].get(name, 0.0):.1f}" if first else ""
            rows.append((name if first else "", key, _fmt(result[full]), secs))
            first = False
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    sec = result.get("seconds", {})
    lines.append(f"{'':<{w[0]}}  {'encoding (within the above)':<{w[1]}}  {'':>{w[2]}}  {sec.get('encode', 0):>{w[3]}.1f}")
    lines.append(f"{'':<{w[0]}}  {'total':<{w[1]}}  {'':>{w[2]}}  {sec.get('total', 0):>{w[3]}.1f}")
    for name, jobs in result.get("background", {}).items():
        lines.append(f"note: {name} ran in {jobs} worker processes alongside the other metrics; "
                     f"its time overlaps theirs")
    for name, reason in result.get("skipped", {}).items():
        lines.append(f"skipped {name}: {reason}")
    lines += latent_assignment(result)
    k = len((result.get("dataset") or {}).get("factor_sizes") or [])
    guessed = [n for n in ("beta_vae", "factor_vae") if f"{n}.eval_accuracy" in result]
    if k and guessed:  # both classify which factor was fixed: chance is 1/K
        lines.append(f"note: chance level of {' and '.join(guessed)} accuracy is 1/K = {1 / k:.3f} ({k} factors)")
    lines += [f"warning: {note}" for note in below_chance_notes(result)]
    counts = active_latent_counts(result)
    if len(counts) > 1:
        lines.append("active latents: each count has its own test, so they differ")
    if counts:
        w = max(len(c[0]) for c in counts)
        for key, n, of, rule in counts:
            lines.append(f"  {key:<{w}}  {n:>3}{f' of {of}' if of else ''}  {rule}")
    if result.get("latent.active_units") == 0:
        lines.append("warning: no latent is active (Var[mu] < 0.01 for every latent, Burda et al.): the model "
                     "has collapsed to the prior and the scores above say nothing about disentanglement")
    for name, msgs in result.get("warnings", {}).items():
        for msg in msgs:
            lines.append(f"warning ({name}): {msg}")
    total_conv = result.get("convergence_warnings", {}).get("total", 0)
    if total_conv:
        lines.append(f"note: {total_conv} scikit-learn ConvergenceWarning(s), as in the reference "
                     f"(counts per metric in eval.json)")
    return "\n".join(lines)
