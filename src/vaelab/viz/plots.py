"""Curves from metrics.jsonl and per-latent KL charts (matplotlib, Agg canvas; pyplot is not used,
so an interactive backend a user has chosen is left alone).

* ``curves.png``: one panel per scalar term (loss, recon, kl, tc, disc_acc, ...), validation values
  (``val.<term>``) over the training curve of the same term, the capacity C dashed over the KL for
  capacity runs, learning rates and speed in panels of their own; log scale on a panel whose values
  are all positive and span two decades or more.
* ``kl_latents.png``: every vector term (``kl_per_dim``) over time, one line per latent, plus a bar
  chart of its last logged value.
* :func:`kl_bar_chart`: per-latent KL bars (the report's chart, from the reference batch).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import VaelabError

NOT_TERMS = {"step", "epoch", "time", "images_per_s"}  # x-axis alternatives and a duplicate of it_per_s
SPEED = "it_per_s"
CAPACITY = "capacity"


def _num(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)  # "nan" / "inf" as the logger writes them
        except ValueError:
            return None
    return None


def metric_series(rows: list[dict]):
    """``(scalars, vectors)``: key -> (steps, values) and key -> (steps, T x D array)."""
    scalars: dict[str, tuple[list, list]] = {}
    vectors: dict[str, tuple[list, list]] = {}
    for row in rows:
        step = row.get("step")
        if step is None:
            continue
        for k, v in row.items():
            if k in NOT_TERMS:
                continue
            if isinstance(v, list):
                vals = [_num(x) for x in v]
                if vals and None not in vals:
                    s, a = vectors.setdefault(k, ([], []))
                    if a and len(a[-1]) != len(vals):
                        continue
                    s.append(step)
                    a.append(vals)
                continue
            x = _num(v)
            if x is not None:
                s, a = scalars.setdefault(k, ([], []))
                s.append(step)
                a.append(x)
    scalars = {k: (np.asarray(s), np.asarray(a, dtype=np.float64)) for k, (s, a) in scalars.items()}
    vectors = {k: (np.asarray(s), np.asarray(a, dtype=np.float64)) for k, (s, a) in vectors.items()}
    return scalars, vectors


def wants_log(*arrays) -> bool:
    """All finite values positive and spanning at least two decades."""
    vals = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    vals = vals[np.isfinite(vals)]
    return len(vals) > 1 and bool((vals > 0).all()) and vals.max() / vals.min() >= 100.0


def _figure(n_panels: int, ncols: int = 3, panel=(4.2, 2.8), title: bool = False):
    """A figure of ``n_panels`` axes on a grid, margins fixed in inches (constrained layout costs
    more than the drawing itself)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    w, h = panel[0] * ncols, panel[1] * nrows + (0.4 if title else 0.0)
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    top_in = 0.3 + (0.4 if title else 0.0)
    fig.subplots_adjust(left=0.75 / w, right=1 - 0.2 / w, bottom=0.5 / h, top=1 - top_in / h,
                        wspace=0.95 / (panel[0] - 0.95), hspace=0.8 / (panel[1] - 0.8))
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


#: units of the logged terms (docs/conventions.md#reduction: sums over pixels and latents, means over the batch); UG-VAE's
#: kl_beta is one global latent per batch, so it is per batch (its loss adds kl_beta / batch size)
UNITS = {**{k: "nats / image" for k in ("loss", "recon", "kl", "kl_z", "kl_d", "tc", "mi", "dwkl", "dip",
                                         "capacity")},
         "kl_beta": "nats / batch",
         # FactorVAE's discriminator: its cross-entropy per code (mean over true and permuted codes), the
         # fraction of codes it classifies right, and the mean probability it gives "true" to each kind
         "disc_loss": "cross-entropy (nats / code)", "disc_acc": "accuracy (fraction)",
         "p0_real": "P(true) on true codes", "p0_perm": "P(true) on permuted codes",
         "learning rate": "learning rate", "iterations / s": "iterations / s"}


def _panels(scalars: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(title, [(key, style), ...])] in a stable, readable order."""
    keys = list(scalars)
    terms = [k for k in keys if not k.startswith(("val.", "lr.")) and k not in (SPEED, CAPACITY)]
    for k in keys:  # validation terms logged without a training counterpart
        if k.startswith("val.") and k[4:] not in scalars:
            terms.append(k)
    first = ["loss", "recon", "kl"]
    terms = [k for k in first if k in terms] + [k for k in terms if k not in first]
    panels = []
    for k in terms:
        lines = [(k, "train")]
        if not k.startswith("val.") and f"val.{k}" in scalars:
            lines.append((f"val.{k}", "val"))
        if k == "kl" and CAPACITY in scalars:
            lines.append((CAPACITY, "capacity"))
        panels.append((k, lines))
    if CAPACITY in scalars and "kl" not in scalars:
        panels.append((CAPACITY, [(CAPACITY, "train")]))
    lrs = [k for k in keys if k.startswith("lr.")]
    if lrs:
        panels.append(("learning rate", [(k, "lr") for k in lrs]))
    if SPEED in scalars:
        panels.append(("iterations / s", [(SPEED, "train")]))
    return panels


def plot_curves(rows: list[dict], path, title: str | None = None) -> Path | None:
    """``curves.png`` from metrics rows; None if there is no scalar to plot."""
    scalars, _ = metric_series(rows)
    panels = _panels(scalars)
    if not panels:
        return None
    fig, axes = _figure(len(panels), title=bool(title))
    styles = {"train": dict(color="C0", lw=1.2), "val": dict(color="C3", lw=1.2, marker="o", ms=3),
              "capacity": dict(color="k", lw=1.0, ls="--"), "lr": dict(lw=1.2)}
    for ax, (name, lines) in zip(axes, panels):
        for key, style in lines:
            s, v = scalars[key]
            label = {"val": "validation", "capacity": "C (capacity)"}.get(style, key if style == "lr" else "train")
            if style == "train" and any(st == "capacity" for _, st in lines):
                label = "KL"
            ax.plot(s, v, label=label, **styles[style])
        has_c = any(st == "capacity" for _, st in lines)
        if not has_c and wants_log(*(scalars[k][1] for k, _ in lines)):  # C vs KL reads best on a linear axis
            ax.set_yscale("log")
        ax.set_title(f"{name} and C (capacity)" if has_c else name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        unit = UNITS.get(name[4:] if name.startswith("val.") else name)
        if unit:
            ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.08 / fig.get_figheight(), va="top")
    return _save(fig, path)


def plot_latent_kl(rows: list[dict], path) -> Path | None:
    """``kl_latents.png``: each vector term over time (one line per latent) and its last value as bars."""
    _, vectors = metric_series(rows)
    if not vectors:
        return None
    fig, axes = _figure(2 * len(vectors), ncols=2, panel=(6.0, 3.2))
    for i, (key, (s, a)) in enumerate(vectors.items()):
        ax, bx = axes[2 * i], axes[2 * i + 1]
        d = a.shape[1]
        cmap = _colours(d)
        for j in range(d):
            ax.plot(s, a[:, j], color=cmap[j], lw=1.1, label=f"z{j}")
        if wants_log(a[a > 0]) and (a > 0).all():
            ax.set_yscale("log")
        ax.set_title(f"{key} over time", fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(_vector_unit(key), fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if d <= 16:
            ax.legend(fontsize=6, ncol=2 if d > 8 else 1, loc="upper left")
        _bars(bx, a[-1], f"{key} at step {int(s[-1])}", cmap, ylabel=_vector_unit(key))
    return _save(fig, path)


def _vector_unit(key: str) -> str:
    """y label of a per-latent term (``kl_per_dim``: each latent's KL, nats per image)."""
    return "KL (nats / image)" if key.startswith("kl") else key


def _colours(d: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if d <= 10 else "tab20"]
    return [cmap(j % cmap.N) for j in range(d)]


def _bars(ax, values, title: str, colours=None, ylabel: str = "KL (nats)"):
    d = len(values)
    ax.bar(np.arange(d), values, color=colours or "C0")
    ax.set_xticks(np.arange(d))
    ax.set_xticklabels([f"z{j}" for j in range(d)], fontsize=7 if d <= 16 else 5, rotation=0 if d <= 16 else 90)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3)


def kl_bar_chart(kl, path, title: str = "per-latent KL") -> Path:
    """Bars of per-latent KL (nats), one per latent in index order."""
    kl = np.asarray(kl, dtype=np.float64)
    fig, (ax,) = _figure(1, panel=(max(4.0, 0.45 * len(kl) + 1.5), 2.8))
    _bars(ax, kl, title, _colours(len(kl)))
    return _save(fig, path)


def read_rows(run_dir, step: int | None = None) -> list[dict]:
    """metrics.jsonl rows of a run folder, up to ``step`` if given."""
    from ..training.logger import read_metrics
    from ..training.run import is_run_dir

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VaelabError(f"{run_dir} is not a folder: expected a run folder made by `vaelab train`")
    if not is_run_dir(run_dir):
        raise VaelabError(f"{run_dir} is not a run folder (no config.toml); train one with `vaelab train`")
    rows = read_metrics(run_dir)
    if step is not None:
        if step < 0:
            raise VaelabError(f"--step must be >= 0, got {step}")
        last = max((r["step"] for r in rows if isinstance(r.get("step"), int)), default=None)
        if last is not None and step > last:
            raise VaelabError(f"--step {step} is past the last logged step ({last}) of {run_dir}")
        rows = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= step]
    if not rows:
        where = f" up to step {step}" if step is not None else ""
        raise VaelabError(f"{run_dir / 'metrics.jsonl'} has no rows{where}: nothing to plot yet")
    return rows


def write_plots(run_dir, out=None, step: int | None = None) -> list[Path]:
    """``curves.png`` and ``kl_latents.png`` (suffixed ``_step<S>`` when cut at ``step``)."""
    run_dir = Path(run_dir)
    rows = read_rows(run_dir, step)
    d = Path(out) if out else run_dir / "images"
    d.mkdir(parents=True, exist_ok=True)
    tag = "" if step is None else f"_step{int(step):08d}"
    paths = [plot_curves(rows, d / f"curves{tag}.png", title=run_dir.name),
             plot_latent_kl(rows, d / f"kl_latents{tag}.png")]
    return [p for p in paths if p is not None]
