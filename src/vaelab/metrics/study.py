"""Many runs' scores in one table: the study view of a sweep (seeds × hyperparameters).

disentanglement_lib's study reports each metric as the mean over seeds of every setting (SPEC 4.2).
:func:`summarize` does that from the runs' ``eval.json`` results: runs whose labels agree once the
seed is left out form one setting; each headline score becomes mean, sample standard deviation
(0 for a single run) and count over the runs that have it. Pure functions of plain dicts.
"""
from __future__ import annotations

import json
import math

from .evaluate import METRICS

__all__ = ["summarize", "format_study", "SEED_KEY"]

SEED_KEY = "train.seed"


def _setting(label: dict, ignore) -> str:
    return json.dumps({k: v for k, v in label.items() if k not in ignore}, sort_keys=True, default=str)


def summarize(results: list[dict], labels: list[dict], ignore=(SEED_KEY,)) -> list[dict]:
    """One row per setting, in first-seen order: ``{"setting": {...}, "runs": n, "scores":
    {"mig.score": {"mean", "std", "n"}, ...}}``. ``results[i]`` is run i's eval.json dict and
    ``labels[i]`` its distinguishing values (a sweep's grid values and seed)."""
    if len(results) != len(labels):
        raise ValueError("one label per result")
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(_setting(label, ignore), []).append(i)
    rows = []
    for key, members in groups.items():
        scores: dict[str, dict] = {}
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
                std = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0)
                scores[full] = {"mean": mean, "std": std, "n": len(vals)}
        rows.append({"setting": json.loads(key), "runs": len(members), "scores": scores})
    return rows


def format_study(rows: list[dict]) -> str:
    """Plain-text table: one line per setting, each metric's score as mean ± std (n < runs noted)."""
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
            if s is None:
                line.append("-")
            else:
                cell = f"{s['mean']:.3f}±{s['std']:.3f}" if r["runs"] > 1 else f"{s['mean']:.3f}"
                line.append(cell + (f" (n={s['n']})" if s["n"] < r["runs"] else ""))
        table.append(line)
    w = [max(len(t[i]) for t in table) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w[i]) if i >= len(keys) else c.ljust(w[i]) for i, c in enumerate(t)) for t in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
