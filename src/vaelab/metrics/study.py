"""Many runs' scores in one table: the study view of a sweep (seeds × hyperparameters).

disentanglement_lib's study reports each metric as the mean over seeds of every setting (docs/recipes.md#disentanglement_lib-protocol).
:func:`summarize` does that from the runs' ``eval.json`` results: runs whose labels agree once the
seed is left out form one setting; each headline score becomes mean, sample standard deviation
(None for a single run: one value has none) and count over the runs that have it, and the BetaVAE /
FactorVAE accuracies their chance level 1/K, a mean below it explained in the row's ``notes``
(:func:`summarize` and :func:`format_study` are pure functions of plain dicts).

:func:`evaluate_runs` does the work behind ``vaelab evaluate SWEEP``: it scores each run that has no
``eval.json`` with the same settings at its newest step (here, one after another, or as tasks on a
Ray cluster), then writes ``study.json``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import VaelabError
from .evaluate import METRICS, below_chance_reason, chance_level

__all__ = ["summarize", "format_study", "score_cell", "runs_of", "evaluate_runs", "score_run", "SEED_KEY"]

SEED_KEY = "train.seed"


def _setting(label: dict, ignore) -> str:
    return json.dumps({k: v for k, v in label.items() if k not in ignore}, sort_keys=True, default=str)


def summarize(results: list[dict], labels: list[dict], ignore=(SEED_KEY,)) -> list[dict]:
    """One row per setting, in first-seen order: ``{"setting": {...}, "runs": n, "scores":
    {"mig.score": {"mean", "std", "n"}, ...}, "notes": [...]}``. ``std`` is the sample standard
    deviation, None when one run has the score; the BetaVAE / FactorVAE accuracies also hold
    ``chance`` (1/K), and each mean below it gets a line in ``notes`` saying why (e.g. no active
    latent). ``results[i]`` is run i's eval.json dict and ``labels[i]`` its distinguishing values (a
    sweep's grid values and seed)."""
    if len(results) != len(labels):
        raise ValueError("one label per result")
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(_setting(label, ignore), []).append(i)
    rows = []
    for key, members in groups.items():
        scores: dict[str, dict] = {}
        notes: list[str] = []
        names = [n for n in METRICS if any(n in (results[i].get("metrics") or []) for i in members)]
        for name in names:
            for head in METRICS[name].headline:
                full = f"{name}.{head}"
                vals = [float(results[i][full]) for i in members
                        if isinstance(results[i].get(full), (int, float)) and not isinstance(results[i][full], bool)
                        and math.isfinite(float(results[i][full]))]
                if not vals:
                    continue
                mean = sum(vals) / len(vals)
                std = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None)
                scores[full] = {"mean": mean, "std": std, "n": len(vals)}
                chance = chance_level(results[members[0]], full)
                if chance is not None:
                    scores[full]["chance"] = chance
                    if mean < chance:
                        active = ([results[i].get("factor_vae.num_active_dims") for i in members]
                                  if name == "factor_vae" else None)
                        notes.append(f"{full} {mean:.4f} is below chance (1/K = {chance:.3f}): "
                                     f"{below_chance_reason(name, active)}")
        rows.append({"setting": json.loads(key), "runs": len(members), "scores": scores, "notes": notes})
    return rows


def score_cell(s: dict, runs: int, digits: int = 3) -> str:
    """A summarised score as text: ``mean±std``, the count when it is not every run, and for one value
    no std (``0.197 (n=1)``); a mean below chance ends in ``!`` (its row's notes say why)."""
    if s.get("std") is None or s["n"] < 2:
        cell = f"{s['mean']:.{digits}f} (n={s['n']})"
    else:
        cell = f"{s['mean']:.{digits}f}±{s['std']:.{digits}f}" + (f" (n={s['n']})" if s["n"] < runs else "")
    if s.get("chance") is not None and s["mean"] < s["chance"]:
        cell += " !"
    return cell


def format_study(rows: list[dict]) -> str:
    """Plain-text table: one line per setting, each metric's score as mean ± std (n < runs noted; one
    value: its n, no std); scores below chance marked ``!`` and explained under the table."""
    cols = []
    for name, m in METRICS.items():
        full = f"{name}.{m.headline[0]}"
        if any(full in r["scores"] for r in rows):
            cols.append((name, full))
    keys = sorted({k for r in rows for k in r["setting"]})
    head = [*(k.split(".")[-1] for k in keys), "runs", *(name for name, _ in cols)]
    table = [head]
    for r in rows:
        line = [str(r["setting"].get(k, "")) for k in keys] + [str(r["runs"])]
        for _, full in cols:
            s = r["scores"].get(full)
            line.append("-" if s is None else score_cell(s, r["runs"]))
        table.append(line)
    w = [max(len(t[i]) for t in table) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w[i]) if i >= len(keys) else c.ljust(w[i]) for i, c in enumerate(t)) for t in table]
    lines.insert(1, "-" * len(lines[0]))
    for r in rows:
        where = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["setting"].items()) or "all runs"
        lines += [f"! {where}: {note}" for note in r.get("notes", [])]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- the work
def _run_name(entry: dict, manifest: Path) -> str:
    """The folder, inside the sweep folder, of one run of sweep.json: its ``name``, else the last part
    of its ``path``. The runs of a sweep folder are always its own subfolders (never the ``path`` as
    written), so a moved or copied sweep folder stands for its own runs, not the original's."""
    name = entry.get("name")
    if name is None and isinstance(entry.get("path"), str):
        name = Path(entry["path"]).name
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise VaelabError(f"{manifest} is not a sweep manifest written by `vaelab sweep` (run {name!r} is not "
                          f"a folder name)")
    return name


def runs_of(items) -> tuple[list[Path], list[dict], Path | None]:
    """(run folders, their labels, where study.json goes: None for a single run) from run folders
    and sweep folders (``sweep.json``: its runs, the subfolders it names, labelled by their grid values
    and seed)."""
    paths, labels, summary = [], [], None
    for item in items:
        path = Path(item)
        if not path.is_dir():
            raise VaelabError(f"{path} is not a folder: expected a run folder made by `vaelab train` or a sweep "
                              f"folder made by `vaelab sweep`")
        manifest = path / "sweep.json"
        if manifest.is_file() and not (path / "config.toml").is_file():
            bad = VaelabError(f"{manifest} is not a sweep manifest written by `vaelab sweep`")
            try:
                runs = json.loads(manifest.read_text())["runs"]
            except (ValueError, KeyError, TypeError):
                raise bad from None
            if not isinstance(runs, list):
                raise bad
            if not runs:
                raise VaelabError(f"{manifest} lists no runs: nothing to score")
            for r in runs:
                if not isinstance(r, dict) or not isinstance(r.get("values", {}), dict):
                    raise bad
                paths.append(path / _run_name(r, manifest))
                labels.append(dict(r.get("values", {})))
            summary = path / "study.json" if len(items) == 1 else None
        else:
            paths.append(path)
            labels.append({"run": path.name})
    if len(paths) > 1 and summary is None:
        summary = Path(os.path.commonpath([str(p.resolve().parent) for p in paths])) / "study.json"
    return paths, labels, (summary if len(paths) > 1 else None)


def _newest_step(path: Path) -> int | None:
    from ..training import checkpoint

    cks = checkpoint.list_checkpoints(path)
    return int(cks[-1].name[len(checkpoint.PREFIX):]) if cks else None


def reusable(path: Path, metrics: list[str], seed: int, profile: str, dci_trees: str) -> dict | None:
    """The run's eval.json when it holds ``metrics`` with these settings at the run's newest step."""
    try:
        data = json.loads((Path(path) / "eval.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    same = (data.get("seed") == seed and data.get("profile") == profile
            and data.get("step") == _newest_step(path) and set(metrics) <= set(data.get("metrics") or [])
            and ("dci" not in metrics or (data.get("settings") or {}).get("dci", {}).get("trees") == dci_trees))
    return data if same else None


def score_run(path, metrics: str, seed: int, profile: str, dci_trees: str, device: str = "cpu",
              n_jobs: int | None = None, progress: bool = False) -> dict:
    """Load a run and score it (writes RUN/eval.json): one Ray task of :func:`evaluate_runs`."""
    from ..training import load_run
    from .evaluate import evaluate

    run = load_run(path, device=device)
    return evaluate(run, metrics=metrics, seed=seed, profile=profile, n_jobs=n_jobs, progress=progress,
                    options={"dci": {"trees": dci_trees}})


def evaluate_runs(items, *, metrics: str = "all", seed: int = 0, profile: str = "default",
                  dci_trees: str = "vectorised", device: str = "cpu", n_jobs: int | None = None,
                  force: bool = False, backend: str = "local", ray_address: str | None = None,
                  out=None, say=print, progress: bool = False) -> tuple[dict, Path]:
    """Score every run of ``items`` (run and sweep folders) and write the study; returns (study, path).

    ``backend="ray"``: the runs to score become Ray tasks (one CPU each, on ``ray_address`` or a local
    Ray); ``say``: where the per-run lines go (None: nowhere); ``progress``: each scoring's progress bars."""
    from .evaluate import resolve_metrics

    names, _ = resolve_metrics(metrics)
    if backend not in ("local", "ray"):
        raise VaelabError(f"unknown backend {backend!r}; valid: local, ray")
    if ray_address is not None and backend != "ray":
        raise VaelabError("--ray-address only applies with --backend ray")
    paths, labels, summary = runs_of(items)
    if summary is None:
        summary = Path(paths[0]) / "study.json"
    summary = Path(out) if out else summary
    say = say or (lambda *a, **k: None)
    results: list[dict | None] = [None] * len(paths)
    todo = []
    for k, path in enumerate(paths):
        if not path.is_dir():
            raise VaelabError(f"{path} is not a folder: the sweep lists a run that is not there")
        results[k] = None if force else reusable(path, names, seed, profile, dci_trees)
        if results[k] is not None:
            say(f"[{k + 1}/{len(paths)}] {path.name}: eval.json reused (step {results[k].get('step')}; "
                f"--force scores again)")
        else:
            todo.append(k)
    if backend == "ray" and todo:
        from ..cluster import RaySession

        with RaySession(ray_address, quiet=not progress) as ray:
            args = [(str(paths[k]), metrics, seed, profile, dci_trees, device, n_jobs) for k in todo]
            for done, (i, result) in enumerate(ray.map(score_run, args, what="scoring task"), 1):
                results[todo[i]] = result
                say(f"ray: {done}/{len(todo)} scored ({paths[todo[i]].name})")
    else:
        for k in todo:
            say(f"[{k + 1}/{len(paths)}] {paths[k].name}")
            results[k] = score_run(paths[k], metrics, seed, profile, dci_trees, device, n_jobs,
                                   progress=progress)
    rows = summarize(results, labels)
    study = {"runs": [{"path": str(p), "values": lab} for p, lab in zip(paths, labels)],
             "seed": seed, "profile": profile, "metrics": names, "settings": rows}
    from ..data.prepare import atomic_write_json

    atomic_write_json(summary, study)
    return study, summary
