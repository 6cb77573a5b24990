"""``vaelab study PROTOCOL``: a published study run as the field runs it — every objective of a
protocol (:mod:`vaelab.protocols`) at each of its regularisation strengths and seeds, trained,
scored and summarised in one folder.

The study folder (``runs/<protocol>`` unless ``--out``)::

    STUDY/protocol.toml    the protocol as it was read (the study's definition)
    STUDY/plan.json        protocol digest, steps, --set overrides, and the selection: every
                           (model, values, seeds) asked for so far, merged, plus each invocation's own
    STUDY/<model>/         one sweep folder per objective (sweep.json, study.json of `vaelab evaluate`)
    STUDY/<model>/<model>-<key><value>-s<seed>/   one run folder per run (as `vaelab train` makes)
    STUDY/study.json       every run of the selection (trained step, scores), per-setting summaries
    STUDY/report.html, STUDY/figures/*.png        the study report (:mod:`vaelab.viz.study_report`)

Each objective is one sweep (:func:`vaelab.training.sweep.sweep`: vmapped on a GPU, torchrun ranks or
Ray) run with ``resume=True``, so the same command continues a study that was stopped at any moment:
trained runs are kept, a stopped run resumes from its newest checkpoint, the rest start; then the
trained runs are scored by :func:`vaelab.metrics.study.evaluate_runs`, which reuses every eval.json
already written with the same settings. A run folder's name depends only on its model, value and seed,
so selecting more values or seeds later adds runs beside the old ones (the plan records the union).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

from .errors import VaelabError, closest
from .protocols import Protocol, load_protocol

__all__ = ["run_study", "estimate_study", "select", "parse_values", "study_steps", "run_name", "format_value",
           "merge_plan", "collect", "eta_seconds", "format_duration", "is_study_dir"]

VERSION = 1
PLAN, SUMMARY, PROTOCOL_COPY = "plan.json", "study.json", "protocol.toml"
# where the data is and which device trains: may change between two starts of one study
MOVABLE = ("data.root", "train.device")


# ---------------------------------------------------------------------------------------- selection
def format_value(v) -> str:
    """A value as it appears in a run folder name: 4.0 -> "4", 0.5 -> "0.5"."""
    f = float(v)
    return str(int(f)) if f.is_integer() and abs(f) < 1e15 else repr(f)


def run_name(model: str, key: str, value, seed: int) -> str:
    """``betavae-beta4-s0``: the folder of one run, the same whatever else the study selects."""
    return f"{model}-{key.split('.')[-1]}{format_value(value)}-s{int(seed)}"


def _split(text, what: str) -> list[str]:
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts) or not all(parts):
        raise VaelabError(f"bad {what} {text!r}: expected comma-separated names or numbers, none empty")
    return parts


def parse_values(items, protocol: Protocol) -> dict[str, list]:
    """``["betavae=1,16", "factorvae=10"]`` (or ``{"betavae": [1, 16]}``) -> the protocol's values picked,
    per model, in the protocol's order. A model or value the protocol does not have is an error."""
    if not items:
        return {}
    pairs = []
    if isinstance(items, dict):
        pairs = [(m, list(v) if isinstance(v, (list, tuple)) else [v]) for m, v in items.items()]
    else:
        for item in items:
            if "=" not in str(item):
                raise VaelabError(f"bad --values {item!r}: expected MODEL=V1,V2 (e.g. betavae=1,16); models: "
                                  f"{', '.join(protocol.models)}")
            m, raw = str(item).split("=", 1)
            vals = []
            for part in _split(raw, f"--values {item}"):
                try:
                    vals.append(float(part))
                except ValueError:
                    raise VaelabError(f"bad --values {item!r}: {part!r} is not a number") from None
            pairs.append((m.strip(), vals))
    out: dict[str, list] = {}
    for m, vals in pairs:
        spec = protocol.models.get(m)
        if spec is None:
            raise VaelabError(f"--values {m}=...: unknown model {m!r}{closest(m, protocol.models)}; protocol "
                              f"{protocol.name} has {', '.join(protocol.models)}")
        if m in out:
            raise VaelabError(f"--values {m} is given twice: give all its values in one --values {m}=v1,v2")
        if not vals:
            raise VaelabError(f"--values {m}= gives no value")
        chosen = []
        for v in vals:
            match = [p for p in spec.values if _is_number(v) and float(p) == float(v)]
            if not match:
                shown = format_value(v) if _is_number(v) else repr(v)
                raise VaelabError(f"--values {m}: {shown} is not one of "
                                  f"protocol {protocol.name}'s {spec.key} values for {m} "
                                  f"({', '.join(format_value(p) for p in spec.values)})")
            if match[0] in chosen:
                raise VaelabError(f"--values {m} gives {format_value(v)} twice")
            chosen.append(match[0])
        out[m] = [p for p in spec.values if p in chosen]
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def select(protocol: Protocol, models=None, values=None, seeds=None) -> dict[str, dict]:
    """The runs asked for: ``{model: {"values": [...], "seeds": [...]}}`` in the protocol's order.

    ``models``: names (list or "a,b"; None: all); ``values``: :func:`parse_values` input (None: all of
    each model's); ``seeds``: ints (None: the protocol's). Anything the protocol lacks is an error."""
    if models is None:
        names = list(protocol.models)
    else:
        names = _split(models, "--models") if isinstance(models, str) else [str(m) for m in models]
        if not names:
            raise VaelabError("--models is empty: name at least one, e.g. --models " + next(iter(protocol.models)))
        for m in names:
            if m not in protocol.models:
                raise VaelabError(f"--models: unknown model {m!r}{closest(m, protocol.models)}; protocol "
                                  f"{protocol.name} has {', '.join(protocol.models)}")
        twice = [m for i, m in enumerate(names) if m in names[:i]]
        if twice:
            raise VaelabError(f"--models names {twice[0]} twice")
    picked = parse_values(values, protocol)
    for m in picked:
        if m not in names:
            raise VaelabError(f"--values {m}=... but --models leaves {m} out: add it to --models or drop its --values")
    if seeds is None:
        chosen_seeds = list(protocol.seeds)
    else:
        chosen_seeds = [int(s) for s in seeds]
        if not chosen_seeds:
            raise VaelabError("--seeds is empty: give at least one seed, e.g. 0,1")
        for s in chosen_seeds:
            if s not in protocol.seeds:
                raise VaelabError(f"--seeds: seed {s} is not one of protocol {protocol.name}'s seeds "
                                  f"({_span(protocol.seeds)})")
        twice = [s for i, s in enumerate(chosen_seeds) if s in chosen_seeds[:i]]
        if twice:
            raise VaelabError(f"--seeds gives {twice[0]} twice")
        chosen_seeds = [s for s in protocol.seeds if s in chosen_seeds]
    return {m: {"values": picked.get(m, list(protocol.models[m].values)), "seeds": list(chosen_seeds)}
            for m in protocol.models if m in names}


def _span(seeds) -> str:
    s = sorted(seeds)
    return f"{s[0]}..{s[-1]}" if s == list(range(s[0], s[-1] + 1)) and len(s) > 2 else ", ".join(map(str, s))


def study_steps(protocol: Protocol, steps: int | None = None, scale: float | None = None) -> int:
    """Training iterations of every run: ``steps``, or ``scale`` x the protocol's, or the protocol's."""
    if steps is not None and scale is not None:
        raise VaelabError("--steps and --scale both set the run length: give one")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise VaelabError(f"--steps must be a positive number of iterations, got {steps!r}")
        return steps
    if scale is not None:
        if not _is_number(scale) or scale <= 0:
            raise VaelabError(f"--scale must be a positive fraction of the protocol's {protocol.steps:,} steps, "
                              f"got {scale!r}")
        return max(1, round(protocol.steps * float(scale)))
    return protocol.steps


# ---------------------------------------------------------------------------------------- the plan
def _override_dict(items) -> dict:
    from .config import parse_override

    out = {}
    for item in items or []:
        parts, value = parse_override(item)
        out[".".join(parts)] = value
    return out


def merge_plan(old: dict | None, new: dict) -> tuple[dict, list[str]]:
    """The plan a study folder records after this start, and what changed (lines to print).

    ``new``: {"protocol", "digest", "steps", "overrides", "selection", "metrics", ...} of this start. A
    different protocol, step count or --set override (other than where the data is and which device,
    :data:`MOVABLE`) is an error: the runs would not be one study. A different selection merges: the
    plan's selection is the union of every start's, each start's own kept in ``history``."""
    if old is None:
        plan = {"version": VERSION, **{k: new[k] for k in ("protocol", "digest", "steps", "overrides")},
                "selection": new["selection"], "history": [_history(new)]}
        return plan, []
    if old.get("digest") != new["digest"]:
        raise VaelabError(f"this study folder holds protocol {old.get('protocol')!r} as it was when the study "
                          f"started (its protocol.toml); the protocol given now differs ({new['protocol']!r}): "
                          f"use another --out for another protocol")
    if old.get("steps") != new["steps"]:
        raise VaelabError(f"this study trains every run for {old.get('steps')} steps; this start asks for "
                          f"{new['steps']}: give --steps {old.get('steps')} (or the --scale that makes it), or "
                          f"use another --out")
    a = {k: v for k, v in _override_dict(old.get("overrides")).items() if k not in MOVABLE}
    b = {k: v for k, v in _override_dict(new["overrides"]).items() if k not in MOVABLE}
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>"))
        k = diff[0]
        raise VaelabError(f"--set {k} differs from the study's first start (then: {_show(a.get(k))}, now: "
                          f"{_show(b.get(k))}): the runs would not be one study; give the same --set overrides "
                          f"(only {', '.join(MOVABLE)} may change), or use another --out")
    selection, changes = {}, []
    models = list(dict.fromkeys([*old.get("selection", {}), *new["selection"]]))
    for m in models:
        o = old.get("selection", {}).get(m, {"values": [], "seeds": []})
        n = new["selection"].get(m, {"values": [], "seeds": []})
        values = _union(o["values"], n["values"])
        seeds = sorted(set(o["seeds"]) | set(n["seeds"]))
        selection[m] = {"values": values, "seeds": seeds}
        added_v = [v for v in values if not any(float(v) == float(w) for w in o["values"])]
        added_s = [s for s in seeds if s not in o["seeds"]]
        if m not in old.get("selection", {}):
            changes.append(f"study: adds model {m} ({len(values)} values x {len(seeds)} seeds)")
        elif added_v or added_s:
            what = [f"values {', '.join(format_value(v) for v in added_v)}"] if added_v else []
            what += [f"seeds {', '.join(map(str, added_s))}"] if added_s else []
            changes.append(f"study: {m} adds {' and '.join(what)} to the runs selected before (kept)")
    plan = {**old, "overrides": new["overrides"], "selection": selection,
            "history": [*old.get("history", []), _history(new)]}
    return plan, changes


def _show(v) -> str:
    return "unset" if v is None else repr(v)


def _union(a: list, b: list) -> list:
    out = list(a)
    for v in b:
        if not any(float(v) == float(w) for w in out):
            out.append(v)
    return sorted(out, key=float)


def _history(new: dict) -> dict:
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "selection": new["selection"],
            "metrics": new.get("metrics"), "overrides": new["overrides"]}


def is_study_dir(path) -> bool:
    p = Path(path)
    return (p / PLAN).is_file() and (p / PROTOCOL_COPY).is_file()


# ---------------------------------------------------------------------------------------- status
def _runs_of(selection: dict, protocol: Protocol):
    """(model, value, seed) of every run of a selection, in order."""
    for m, sel in selection.items():
        for v in sel["values"]:
            for s in sel["seeds"]:
                yield m, v, s


def _newest_step(run: Path) -> int | None:
    from .training import checkpoint

    cks = checkpoint.list_checkpoints(run)
    return int(cks[-1].name[len(checkpoint.PREFIX):]) if cks else None


def _status(out: Path, protocol: Protocol, selection: dict, steps: int, metrics, eval_kw) -> list[dict]:
    from .metrics.study import reusable

    rows = []
    for m, v, s in _runs_of(selection, protocol):
        spec = protocol.models[m]
        path = out / m / run_name(m, spec.key, v, s)
        step = _newest_step(path) if path.is_dir() else None
        trained = step is not None and step >= steps
        ev = reusable(path, metrics, eval_kw["seed"], eval_kw["profile"], eval_kw["dci_trees"]) if trained else None
        rows.append({"model": m, "value": v, "seed": s, "path": path, "step": step or 0, "trained": trained,
                     "eval": ev})
    return rows


def _rates(out: Path, models) -> dict[str, float]:
    """Measured training iterations per second of each model's runs (median of their logged it/s)."""
    from .training.logger import read_metrics

    rates = {}
    for m in models:
        folder = out / m
        vals = []
        if folder.is_dir():  # the most recently trained runs (at most 20) stand for the model
            logs = [p / "metrics.jsonl" for p in folder.iterdir() if (p / "metrics.jsonl").is_file()]
            for log in sorted(logs, key=lambda f: f.stat().st_mtime)[-20:]:
                try:
                    rows = read_metrics(log.parent)
                except (VaelabError, OSError):
                    continue
                vals += [float(r["it_per_s"]) for r in rows[1:][-50:] if _is_number(r.get("it_per_s"))
                         and r["it_per_s"] > 0]  # the first record holds the start-up (compile, capture)
        if vals:
            rates[m] = statistics.median(vals)
    return rates


def _vmapped(out: Path, model: str, default: bool) -> bool:
    try:
        return json.loads((out / model / "sweep.json").read_text()).get("mode") == "vmap"
    except (OSError, ValueError, AttributeError):
        return default


def eta_seconds(remaining: dict[str, list[int]], rates: dict[str, float], vmapped: dict[str, bool],
                to_score: int, score_seconds: float | None) -> float | None:
    """Seconds left: per model, the steps its runs still need at its measured rate (vmapped runs all
    advance together: the most steps left; one after another: their sum), plus the runs to score at the
    measured seconds per scoring. A model with steps left and no measured rate borrows the mean rate of
    the others; None when nothing was measured yet."""
    total = 0.0
    known = [r for r in rates.values() if r > 0]
    for m, left in remaining.items():
        need = max(left, default=0) if vmapped.get(m) else sum(left)
        if need <= 0:
            continue
        rate = rates.get(m) or (statistics.mean(known) if known else None)
        if not rate:
            return None
        total += need / rate
    if to_score:
        if score_seconds is None:
            return None
        total += to_score * score_seconds
    return total


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _progress_line(rows, out, steps, vmap_default: bool) -> str:
    n = len(rows)
    trained = sum(r["trained"] for r in rows)
    scored = sum(r["eval"] is not None for r in rows)
    models = list(dict.fromkeys(r["model"] for r in rows))
    remaining = {m: [max(steps - r["step"], 0) for r in rows if r["model"] == m and not r["trained"]] for m in models}
    rates = _rates(out, models)
    vm = {m: _vmapped(out, m, vmap_default) for m in models}
    secs = [float(r["eval"]["seconds"]["total"]) for r in rows if r["eval"] is not None
            and _is_number((r["eval"].get("seconds") or {}).get("total"))]
    score_s = statistics.mean(secs) if secs else None
    eta = eta_seconds(remaining, rates, vm, n - scored, score_s)
    left = sum(sum(v) for v in remaining.values())
    basis = []
    if rates:
        basis.append("training " + ", ".join(f"{m} {r:.3g} it/s" for m, r in rates.items()))
    if score_s is not None:
        basis.append(f"scoring {score_s:.3g} s/run")
    how = f" (measured on this study's runs: {'; '.join(basis)})" if basis else ""
    why = "" if eta is not None else " (after the first measured steps or scores)"
    return (f"study: {n} runs selected; trained {trained}/{n}, scored {scored}/{n}; to do: {n - trained} to train "
            f"({left:,} steps), {n - scored} to score; ETA {format_duration(eta)}{why}{how}")


# ---------------------------------------------------------------------------------------- the work
def _check_overrides(protocol: Protocol, selection: dict, overrides) -> list[str]:
    from .config import parse_override

    items = list(overrides or [])
    for item in items:
        parts, _ = parse_override(item)
        key = ".".join(parts)
        if key == "train.seed":
            raise VaelabError("--set train.seed: the study sets the seeds; pick them with --seeds")
        if key in ("train.steps", "train.epochs"):
            raise VaelabError(f"--set {key}: the study sets the run length; use --steps N or --scale F")
        if key == "train.out":
            raise VaelabError("--set train.out: the study names its run folders; use --out for the study folder")
        for m in selection:
            if protocol.models[m].key == key:
                raise VaelabError(f"--set {key}: that is the key the study varies for {m}; pick its values with "
                                  f"--values {m}=...")
    return items


def _write_json(path: Path, obj):
    from .data.prepare import atomic_write_json

    atomic_write_json(path, obj)


def _sweep_manifest(out: Path, model: str, protocol: Protocol, selection: dict, steps: int, mode: str | None):
    """STUDY/<model>/sweep.json: the trained runs of the whole selection (what `vaelab evaluate` scores)."""
    spec = protocol.models[model]
    runs = []
    for v in selection[model]["values"]:
        for s in selection[model]["seeds"]:
            name = run_name(model, spec.key, v, s)
            step = _newest_step(out / model / name) if (out / model / name).is_dir() else None
            if step is not None and step >= steps:
                runs.append({"name": name, "path": str(out / model / name), "values": {spec.key: v, "train.seed": s}})
    manifest = {"runs": runs, "study": protocol.name, "model": model}
    if mode:
        manifest["mode"] = mode
    _write_json(out / model / "sweep.json", manifest)
    return runs


def collect(out: Path, protocol: Protocol, plan: dict, metrics: list[str], eval_kw: dict) -> dict:
    """study.json: every run of the plan's selection (step, scores when scored with these settings) and,
    per model, the per-setting summaries (mean ± std over seeds) of the scored runs."""
    from .metrics.evaluate import METRICS
    from .metrics.study import summarize

    selection = plan["selection"]
    rows = _status(out, protocol, selection, plan["steps"], metrics, eval_kw)
    runs, settings = [], {}
    for m in selection:
        spec = protocol.models[m]
        results, labels = [], []
        for r in (r for r in rows if r["model"] == m):
            entry = {"model": m, "key": spec.key, "value": r["value"], "seed": r["seed"],
                     "name": r["path"].name, "path": str(r["path"].relative_to(out)), "step": r["step"],
                     "trained": r["trained"], "scored": r["eval"] is not None}
            if r["eval"] is not None:
                ev = r["eval"]
                entry["scores"] = {f"{n}.{h}": ev[f"{n}.{h}"] for n in ev.get("metrics", []) if n in METRICS
                                   for h in METRICS[n].headline if _is_number(ev.get(f"{n}.{h}"))}
                entry["eval_seconds"] = (ev.get("seconds") or {}).get("total")
                results.append(ev)
                labels.append({spec.key: r["value"], "train.seed": r["seed"]})
            runs.append(entry)
        settings[m] = summarize(results, labels) if results else []
    return {
        "version": VERSION,
        "protocol": {"name": protocol.name, "description": protocol.description, "source": protocol.source,
                     "paper": protocol.paper, "steps": protocol.steps, "digest": protocol.digest},
        "steps": plan["steps"],
        "overrides": plan.get("overrides", []),
        "eval": {"metrics": metrics, **eval_kw},
        "models": [{"name": m, "title": protocol.models[m].title, "preset": protocol.models[m].preset,
                    "key": protocol.models[m].key, "values": selection[m]["values"], "seeds": selection[m]["seeds"]}
                   for m in selection],
        "runs": runs,
        "progress": {"runs": len(runs), "trained": sum(r["trained"] for r in runs),
                     "scored": sum(r["scored"] for r in runs)},
        "settings": settings,
    }


def _prepare(protocol, models, values, seeds, steps, scale, overrides, metrics, out):
    from .metrics.evaluate import resolve_metrics
    from .paths import require_folder

    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    selection = select(proto, models, values, seeds)
    n_steps = study_steps(proto, steps, scale)
    names, _ = resolve_metrics(metrics if metrics is not None else proto.metrics)
    items = _check_overrides(proto, selection, overrides)
    out = require_folder(Path(out) if out else Path("runs") / proto.name, "--out", "the study")
    return proto, selection, n_steps, names, items, out


def run_study(protocol, *, models=None, values=None, seeds=None, steps: int | None = None,
              scale: float | None = None, out=None, overrides=None, metrics=None, device: str | None = None,
              mode: str = "auto", backend: str = "local", ray_address: str | None = None,
              runs_per_task: int | None = None, gpus_per_task: float | None = None, eval_device: str = "auto",
              profile: str = "default", eval_seed: int = 0, jobs: int | None = None,
              dci_trees: str = "vectorised", report: bool = True, quiet: bool = False, say=print) -> tuple[dict, Path]:
    """Train what is missing, score what is unscored, write STUDY/study.json (and the report); returns
    (study, STUDY). Started again with the same arguments it continues where it stopped (see the
    module docstring). ``backend``/``mode``/``device``/Ray options: as :func:`vaelab.training.sweep.sweep`
    (training) and :func:`vaelab.metrics.study.evaluate_runs` (scoring, ``eval_device``)."""
    from .metrics.study import evaluate_runs
    from .training import distributed
    from .training.sweep import sweep
    from .training.trainer import pick_device

    say = say if (say and not quiet) else (lambda *a, **k: None)
    proto, selection, n_steps, names, items, out = _prepare(protocol, models, values, seeds, steps, scale,
                                                            overrides, metrics, out)
    if profile not in ("default", "fast"):
        raise VaelabError(f"unknown profile {profile!r}; choose default or fast")
    if jobs is not None and jobs < 1:
        raise VaelabError(f"--jobs must be a positive number of processes, got {jobs}")
    eval_kw = {"seed": eval_seed, "profile": profile, "dci_trees": dci_trees}
    ctx = distributed.from_env()
    old = None
    if (out / PLAN).is_file():
        try:
            old = json.loads((out / PLAN).read_text())
        except ValueError:
            raise VaelabError(f"{out / PLAN} is damaged (not JSON): it is the study's record; restore it or use "
                              f"another --out") from None
    elif ctx.main and out.is_dir() and any(out.iterdir()):  # (torchrun: rank 0 writes the folder)
        raise VaelabError(f"--out {out} is a folder that holds something other than a study (no {PLAN}): choose an "
                          f"empty or new folder")
    new = {"protocol": proto.name, "digest": proto.digest, "steps": n_steps, "overrides": items,
           "selection": selection, "metrics": names}
    plan, changes = merge_plan(old, new)
    if ctx.main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VaelabError(f"cannot create the study folder --out {out}: {e.strerror or e}") from None
        _write_json(out / PLAN, plan)  # first: a folder with plan.json is this study's, whatever stopped after
        if not (out / PROTOCOL_COPY).is_file():
            from .data.prepare import atomic_write_bytes

            atomic_write_bytes(out / PROTOCOL_COPY, proto.text.encode("utf-8"))
    for line in changes:
        say(line)
    dev = pick_device(device or "auto")
    vmap_default = dev.type == "cuda" and mode != "sequential"
    rows = _status(out, proto, selection, n_steps, names, eval_kw)
    say(f"study {proto.name} in {out}: {', '.join(selection)}; {n_steps:,} steps per run; "
        f"metrics {', '.join(names)}")
    say(_progress_line(rows, out, n_steps, vmap_default))
    for m in selection:
        spec = proto.models[m]
        sel = selection[m]
        mine = [r for r in rows if r["model"] == m]
        if not all(r["trained"] for r in mine):
            say(f"study: training {m} ({spec.key} {', '.join(format_value(v) for v in sel['values'])}; seeds "
                f"{_span(sel['seeds'])})")
            res = sweep(spec.preset, {spec.key: sel["values"]}, sel["seeds"],
                        overrides=[*proto.overrides, *spec.overrides, *items], steps=n_steps, out=out / m,
                        device=device, mode=mode, quiet=quiet, resume=True, backend=backend, ray_address=ray_address,
                        runs_per_task=runs_per_task, gpus_per_task=gpus_per_task,
                        names=lambda label, m=m, key=spec.key: run_name(m, key, label[key], label["train.seed"]))
            used = res.mode
        else:
            used = None
        if not ctx.main:
            continue
        trained = _sweep_manifest(out, m, proto, plan["selection"], n_steps, used or _mode_of(out / m))
        if trained:
            reused = [0]

            def tell(line, reused=reused):
                if "eval.json reused" in line:
                    reused[0] += 1
                else:
                    say(line)

            evaluate_runs([out / m], metrics=names, seed=eval_seed, profile=profile, dci_trees=dci_trees,
                          device=eval_device, n_jobs=jobs, backend=backend,
                          ray_address=ray_address if backend == "ray" else None,
                          say=tell if not quiet else None, progress=not quiet)
            if reused[0]:
                say(f"study: {m}: {reused[0]} run(s) already scored with these settings (kept)")
        study = collect(out, proto, plan, names, eval_kw)
        _write_json(out / SUMMARY, study)
        before = [(r["trained"], r["eval"] is not None) for r in mine]
        rows = _status(out, proto, selection, n_steps, names, eval_kw)
        if [(r["trained"], r["eval"] is not None) for r in rows if r["model"] == m] != before:
            say(_progress_line(rows, out, n_steps, vmap_default))  # after work done: the counts and ETA now
    if not ctx.main:
        return {}, out
    study = collect(out, proto, plan, names, eval_kw)
    _write_json(out / SUMMARY, study)
    say(f"wrote {out / SUMMARY}")
    if report:
        from .viz.study_report import write_study_report

        path = write_study_report(out)
        say(f"wrote {path}")
    return study, out


def _mode_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / "sweep.json").read_text()).get("mode")
    except (OSError, ValueError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------- estimate
def estimate_study(protocol, *, models=None, values=None, seeds=None, steps: int | None = None,
                   scale: float | None = None, out=None, overrides=None, metrics=None, device: str | None = None,
                   mode: str = "auto", burst: int = 200, eval_device: str = "auto", profile: str = "default",
                   eval_seed: int = 0, jobs: int | None = None, score: bool = True, say=print) -> dict:
    """How long the study would take here: a timed burst of ``burst`` steps per model on this device (its
    runs vmapped together as the study would train them, or one run where they go one after another),
    scaled to the steps left, plus one scoring timed and multiplied by the runs left to score. Nothing
    is written to the study folder (the bursts train in a temporary folder)."""
    import tempfile

    from .metrics.evaluate import evaluate
    from .training import load_run
    from .training.logger import read_metrics
    from .training.sweep import sweep
    from .training.trainer import pick_device
    from .training.vmap import vmap_problem

    say = say or (lambda *a, **k: None)
    if not isinstance(burst, int) or burst < 2:
        raise VaelabError(f"--estimate-steps must be at least 2, got {burst!r}")
    proto, selection, n_steps, names, items, out = _prepare(protocol, models, values, seeds, steps, scale,
                                                            overrides, metrics, out)
    eval_kw = {"seed": eval_seed, "profile": profile, "dci_trees": "vectorised"}
    rows = _status(out, proto, selection, n_steps, names, eval_kw) if (out / PLAN).is_file() else [
        {"model": m, "value": v, "seed": s, "step": 0, "trained": False, "eval": None}
        for m, v, s in _runs_of(selection, proto)]
    dev = pick_device(device or "auto")
    burst = min(burst, max(n_steps, 2))  # never longer than the runs themselves
    log = max(1, burst // 5)
    result = {"device": str(dev), "steps": n_steps, "models": {}, "burst": burst}
    total = 0.0
    last_run = None
    with tempfile.TemporaryDirectory(prefix="vaelab-estimate-") as tmp:
        for m, sel in selection.items():
            spec = proto.models[m]
            mine = [r for r in rows if r["model"] == m]
            left = [max(n_steps - r["step"], 0) for r in mine if not r["trained"]]
            if not left:
                result["models"][m] = {"runs_left": 0, "seconds": 0.0}
                continue
            over = [*proto.overrides, *spec.overrides, *items, f"train.log_every={log}", "train.checkpoint_every=0",
                    "train.image_every=0", "train.tensorboard=false", "train.val_every=0"]
            from .config import resolve

            probe = resolve(spec.preset, over)
            vmapped = (dev.type == "cuda" and mode != "sequential"
                       and vmap_problem([probe, probe]) is None)
            # the group the study would train: every run of the model vmapped together, else one run
            grid_vals = sel["values"] if vmapped else sel["values"][:1]
            burst_seeds = sel["seeds"] if vmapped else sel["seeds"][:1]
            t0 = time.perf_counter()
            res = sweep(spec.preset, {spec.key: grid_vals}, burst_seeds, overrides=over, steps=burst,
                        out=Path(tmp) / m, device=device, mode=mode, quiet=True,
                        names=lambda label, m=m, key=spec.key: run_name(m, key, label[key], label["train.seed"]))
            wall = time.perf_counter() - t0
            recs = [r for r in read_metrics(res[0]) if _is_number(r.get("it_per_s"))]
            rates = [float(r["it_per_s"]) for r in recs[1:]] or [float(r["it_per_s"]) for r in recs]
            rate = statistics.median(rates) if rates else burst / wall
            need = max(left) if vmapped else sum(left)
            secs = need / rate
            total += secs
            last_run = res[0]
            result["models"][m] = {"runs_left": len(left), "group": len(grid_vals) * len(burst_seeds),
                                   "mode": res.mode, "it_per_s": rate, "steps_left": sum(left), "seconds": secs}
            say(f"estimate: {m}: {len(left)} run(s) to train, {res.mode}"
                f"{f' ({len(res)} vmapped)' if res.mode == 'vmap' else ''}: {rate:.3g} it/s measured over {burst} "
                f"steps -> {format_duration(secs)}")
        to_score = sum(r["eval"] is None for r in rows)
        if score and to_score and last_run is not None:
            t0 = time.perf_counter()
            ev = evaluate(load_run(last_run, device=eval_device), metrics=names, seed=eval_seed, profile=profile,
                          n_jobs=jobs, save=False)
            per = float((ev.get("seconds") or {}).get("total") or (time.perf_counter() - t0))
            result["score_seconds_per_run"] = per
            result["runs_to_score"] = to_score
            total += per * to_score
            say(f"estimate: scoring {to_score} run(s) ({', '.join(names)}, profile {profile}) at {per:.3g} s/run -> "
                f"{format_duration(per * to_score)}")
    result["seconds"] = total
    say(f"estimate: about {format_duration(total)} in all on {dev} (this machine's speed now; other load slows it)")
    return result
