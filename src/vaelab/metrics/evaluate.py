"""``evaluate``: every metric on one model, the numbers in one namespaced dict, saved as ``eval.json``.

The metrics are the ones registered in :mod:`vaelab.metrics.registry` (each metric module declares its
own name, needs, defaults, headline keys, draws and scheduling there; plugins add theirs the same way).
:func:`evaluate` has three steps: resolve the inputs (the run or encoder, the dataset, which metrics
apply and with what settings), schedule the metrics on one shared :class:`~vaelab.metrics.sampling.CodeSampler`
(metrics that use worker processes, DCI's trees, start first and are collected last) and assemble the
result.

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
# the registry, under the names this module has always offered
from .registry import (METRICS, PROFILES, Metric, Pending, metric_names, planned_draws, profile_settings,  # noqa: F401
                       register_metric, resolve_metrics)
from .registry import skip_reason as _skip_reason


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
    from .sampling import CodeSampler

    t_start = time.perf_counter()
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

    # 1. inputs: the encoder (and run), the dataset, and each metric's settings (or why it is skipped)
    inputs = _resolve_inputs(run_or_encode, dataset, out)
    sampler = CodeSampler(inputs.encode, inputs.dataset, batch_size=batch_size, progress=progress)
    scores = _Scores(explicit=explicit, progress=progress)
    plan = _plan(names, inputs, profile, options, scores)
    # 2. schedule: every metric on the one sampler
    _schedule(plan, sampler, seed, {"run": inputs.run, "encode_params": inputs.encode_params, "n_jobs": n_jobs},
              scores)
    # 3. assemble
    result = _assemble(scores, names, inputs, sampler, seed, profile, t_start)
    if save and inputs.out_path is not None:
        _write_json(inputs.out_path, result)
        result["path"] = str(inputs.out_path)
    return result


@dataclass
class _Inputs:
    """What the metrics score: the encoder, the dataset, and the run when there is one."""

    encode: Callable
    dataset: object
    run: object | None
    encode_params: Callable | None  # a run's posterior parameters (mu, logvar) of uint8 images
    out_path: Path | None  # where eval.json goes (None: not written)


def _resolve_inputs(run_or_encode, dataset, out) -> _Inputs:
    """A run folder, a Run, an encode callable or an nn.Module, and the dataset to score on (a bare
    encoder is probed once on two images: a broken one is one clear error)."""
    from ..data.base import FactorDataset

    run = None
    if isinstance(run_or_encode, (str, os.PathLike)):
        from ..training import load_run

        run = load_run(run_or_encode)
    elif hasattr(run_or_encode, "encode") and hasattr(run_or_encode, "path"):
        run = run_or_encode
    elif not callable(run_or_encode):
        raise VaelabError("evaluate needs a run folder, a Run, an encode callable or an nn.Module")
    if run is not None:
        encode, encode_params = run.encode, getattr(run, "encode_params", None)
        if dataset is None:
            dataset = run.dataset()
        out_path = _resolve_out(out) if out is not None else Path(run.path) / "eval.json"
    else:
        encode, encode_params = as_encode(run_or_encode), None  # a function of uint8 images, or an nn.Module
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
    return _Inputs(encode, dataset, run, encode_params, out_path)


def _plan(names: list[str], inputs: _Inputs, profile: str, options: dict, scores: "_Scores") -> dict[str, dict]:
    """name -> the settings it runs with (its defaults under ``profile``, then ``options``), for the
    metrics that apply; the others are skipped with the reason (an error for a metric named explicitly)."""
    plan = {}
    for name in names:
        reason = _skip_reason(METRICS[name], inputs.dataset, inputs.run)
        if reason is None:
            plan[name] = {**profile_settings(name, profile), **options.get(name, {})}
        elif scores.explicit:
            raise VaelabError(f"{METRICS[name].title}: {reason}")
        else:
            scores.skipped[name] = reason
    return plan


@dataclass
class _Scores:
    """What the metrics of one evaluation gave: values by ``metric.key`` (in the order they finished) and,
    per metric, wall and CPU seconds, convergence warnings, other warnings, settings, worker processes;
    the metrics skipped, with why."""

    explicit: bool  # metrics named by the user: a metric that cannot run is an error, not skipped
    progress: bool
    values: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)
    conv: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    warned: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    workers: dict = field(default_factory=dict)

    def attempt(self, name: str, fn):
        """fn(), recording its warnings; a VaelabError skips the metric (or propagates if it was named)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = fn()
            except VaelabError as e:
                if self.explicit:
                    raise
                self.skipped[name] = str(e)
                out = None
            except TypeError as e:  # a bad option name
                if "unexpected keyword" in str(e):
                    raise VaelabError(f"{METRICS[name].title}: {e}") from None
                raise
        msgs = sorted({str(w.message).splitlines()[0] for w in caught
                       if issubclass(w.category, (RuntimeWarning, UserWarning))})
        if msgs:
            self.warned.setdefault(name, []).extend(msgs)
        return out

    def record(self, name: str, settings: dict, out: tuple[dict, int], t0: float, c0: float) -> None:
        values, n_conv = out
        self.settings[name] = settings
        self.seconds[name] = time.perf_counter() - t0
        self.cpu[name] = time.process_time() - c0
        self.conv[name] = int(n_conv)
        for key, value in values.items():
            self.values[f"{name}.{key}"] = value
        if self.progress:
            from tqdm import tqdm

            head = METRICS[name].headline[0]
            tqdm.write(f"{name}: {head} = {_fmt(values.get(head))} ({self.seconds[name]:.1f} s)", file=sys.stderr)


def _schedule(plan: dict[str, dict], sampler, seed: int, inputs: dict, scores: _Scores) -> None:
    """Run the metrics of ``plan`` (name -> settings, in order) on the shared sampler. The encoding's
    whole size is known from their ``draws`` before any runs (one progress bar with its real total, or
    every image encoded up front when the draws would touch nearly all). Metrics using worker processes
    (their ``workers``, DCI's gradient-boosted trees, which dominate the cost) start first and are
    collected after the others, which run here meanwhile: the same numbers, their time overlapping.
    ``inputs``: what a metric function may ask for by name (registry.INPUTS)."""
    pending: dict[str, tuple] = {}
    try:
        sampler.plan(sum(planned_draws(name, kw) for name, kw in plan.items()))
        for name, kw in plan.items():
            m = METRICS[name]
            if m.workers is None or m.workers(kw, sampler.dataset, inputs["n_jobs"]) <= 1:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            out = scores.attempt(name, lambda: m.call(sampler, seed, kw, inputs))
            if isinstance(out, Pending):
                pending[name] = (out, t0, time.process_time() - c0)
                scores.workers[name] = out.workers
            elif out is not None:  # it finished at once
                scores.record(name, kw, out, t0, c0)
        for name, kw in plan.items():
            if name in scores.skipped or name in pending or name in scores.seconds:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            out = scores.attempt(name, lambda: METRICS[name].run(sampler, seed, kw, inputs))
            if out is not None:
                scores.record(name, kw, out, t0, c0)
        for name, (job, t0, c_start) in list(pending.items()):
            c0 = time.process_time() - c_start  # this process's CPU: starting + collecting only
            out = scores.attempt(name, lambda: METRICS[name].collect(job))
            pending.pop(name)
            if out is not None:
                scores.record(name, plan[name], out, t0, c0)
    finally:
        for job, *_ in pending.values():  # an error elsewhere: stop the workers' queue
            job.cancel()
        sampler.close()


def _assemble(scores: _Scores, names: list[str], inputs: _Inputs, sampler, seed: int, profile: str,
              t_start: float) -> dict:
    """The result: every value, then what was run and how (eval.json's plain keys), JSON-ready."""
    dataset, run = inputs.dataset, inputs.run
    seconds, conv = scores.seconds, scores.conv
    seconds["encode"] = sampler.encode_seconds
    seconds["total"] = time.perf_counter() - t_start
    conv["total"] = sum(conv.values())
    result = dict(scores.values)
    result.update({
        "seed": seed,
        "profile": profile,
        "metrics": [n for n in names if n in scores.settings],
        "skipped": scores.skipped,
        "dataset": {"name": dataset.name, "num_images": len(dataset), "image_shape": list(dataset.image_shape),
                    "factor_names": list(dataset.factor_names), "factor_sizes": [int(s) for s in dataset.factor_sizes],
                    "is_grid": bool(dataset.is_grid), "hidden_size": int(getattr(dataset, "hidden_size", 1))},
        "num_latents": sampler.num_latents,
        "images_encoded": sampler.images_encoded,
        "seconds": seconds,
        "cpu_seconds": scores.cpu,  # this process only (worker processes not included)
        "background": scores.workers,  # metric -> worker processes; its seconds overlap the other metrics'
        "convergence_warnings": conv,
        "warnings": scores.warned,
        "settings": scores.settings,
        "versions": versions(),
    })
    if run is not None:
        result["run"] = str(run.path)
        if getattr(run, "step", None) is not None:
            result["step"] = int(run.step)
    return _jsonable(result)


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
