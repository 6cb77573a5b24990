"""``evaluate``: every metric on one model, the numbers in one namespaced dict, saved as ``eval.json``.

The default profile uses dlib's study counts (SPEC.md 5); ``fast`` draws 10x fewer points (for use during
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
    nats per image (SPEC 1.3 reductions): ``reconstruction`` -log p(x|z) with one posterior draw z
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
            ["elbo", "reconstruction", "kl", "reconstruction_at_mean"], 0, ("reconstruction", "fit"), _run_elbo),
]}
# fmt: on

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


def metric_names() -> list[str]:
    return list(METRICS)


def resolve_metrics(metrics) -> tuple[list[str], bool]:
    """(metric names in canonical order, whether the user named them explicitly)."""
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
        if run.config["model"]["objective"] == "ugvae":
            return "UG-VAE's bound has a global term per batch: its training log holds it (kl_beta)"
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
        json.dump(data, fh, indent=1)  # inf stays Infinity (Python's JSON), SPEC 5.8
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


# ----------------------------------------------------------------------------- evaluate
def evaluate(run_or_encode, dataset=None, metrics="all", seed: int = 0, profile: str = "default", out=None,
             *, options: dict | None = None, n_jobs: int | None = None, batch_size: int = 2048,
             progress: bool = False, save: bool = True) -> dict:
    """Score a model with every metric (or those named in ``metrics``) and save ``eval.json``.

    run_or_encode: a run folder (path), a Run (``vaelab.training.load_run``), or an ``encode`` callable
        (uint8 images B x C x H x W -> B x D posterior means); with a callable ``dataset`` is required and
        eval.json is written only where ``out`` says.
    dataset: a FactorDataset, a dataset name for ``vaelab.data.load``, or None (the run's own dataset).
    metrics: "all", a comma-separated string or a list of names (``metric_names()``). With "all",
        metrics that cannot apply (no factors, not a grid) are skipped with the reason recorded;
        naming one that cannot apply is an error.
    seed: every metric draws from ``numpy.random.default_rng(seed)``; no global RNG is touched.
    profile: "default" (SPEC / dlib counts) or "fast" (10x fewer points, for use during training).
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
        raise VaelabError("evaluate needs a run folder, a Run, or an encode callable")
    if run is not None:
        encode = run.encode
        encode_params = getattr(run, "encode_params", None)
        if dataset is None:
            dataset = run.dataset()
        out_path = _resolve_out(out) if out is not None else Path(run.path) / "eval.json"
    else:
        encode = run_or_encode
        encode_params = None
        if dataset is None:
            raise VaelabError("evaluate with an encode callable needs a dataset (a FactorDataset or a name)")
        out_path = _resolve_out(out) if out is not None else None
    if isinstance(dataset, str):
        from ..data import load

        dataset = load(dataset)
    if not isinstance(dataset, FactorDataset):
        raise VaelabError(f"dataset must be a FactorDataset or a dataset name, got {type(dataset).__name__}")

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
