"""The report of a study folder (``vaelab study``; ``vaelab report STUDY``): STUDY/report.html, one
self-contained page, and its figures as PNG files in STUDY/figures/.

Figures (Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of
Disentangled Representations", ICML, Fig. 1 and Fig. 2 style), all from STUDY/study.json:

* ``scores_by_objective.png``: per metric, the distribution of the scores of each objective over all
  its settings and seeds (box plot with every run's point);
* ``spearman.png``: the Spearman rank correlation between the metrics over all scored runs;
* ``strength_<model>.png``: for each objective, each metric against its regularisation strength (each
  seed's point and the mean over seeds; log x where the values span a decade or more);
* ``tradeoff.png``: each metric against the reconstruction (``elbo.reconstruction``, nats / image).

The numbers come from :mod:`vaelab.metrics.study_stats` (pure functions); this module only draws.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import math
from pathlib import Path

import numpy as np

from ..errors import VaelabError
from ..metrics import study_stats as st

__all__ = ["write_study_report", "study_html", "plot_keys", "label_of"]

FIGURES = "figures"


def _registry():
    from ..metrics.evaluate import METRICS

    return METRICS


def plot_keys(study: dict) -> list[str]:
    """The scores the report plots: each scored metric's headline score (its first headline key) in the
    metric registry's order, without the fit (elbo) and the latent counts, which are not disentanglement
    scores (the reconstruction is the trade-off plot's x axis)."""
    metrics = _registry()
    runs = [r for r in study.get("runs", []) if r.get("scores")]
    order = [f"{n}.{m.headline[0]}" for n, m in metrics.items() if n not in ("elbo", "latent")]
    have = set(st.score_keys(runs))
    return [k for k in order if k in have]


_LABELS = {"modularity.modularity": "Modularity", "modularity.explicitness_test": "Explicitness (test)",
           "unsupervised.gaussian_total_correlation": "Gaussian total correlation",
           "unsupervised.gaussian_wasserstein_correlation": "Gaussian Wasserstein correlation",
           "elbo.reconstruction": "Reconstruction"}


def label_of(key: str) -> str:
    """``"mig.score"`` -> ``"MIG"``; ``"dci.disentanglement"`` -> ``"DCI disentanglement"``."""
    if key in _LABELS:
        return _LABELS[key]
    metrics = _registry()
    name, _, head = key.partition(".")
    m = metrics.get(name)
    if m is None:
        return key
    if head in ("score",) or (head == m.headline[0] and name in ("beta_vae", "factor_vae")):
        return m.title
    return f"{m.title} {head.replace('_', ' ')}"


def _axis(key: str) -> str:
    unit = st.UNITS.get(key, "")
    return f"{label_of(key)}" + (f" ({unit})" if unit else "")


# ---------------------------------------------------------------------------------------- drawing
def _figure(n: int, ncols: int, panel=(4.0, 3.0)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(max(panel[0] * ncols, 7.0), panel[1] * nrows + 0.5), dpi=100)  # room for the title
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    return fig, axes


def _save(fig, path: Path) -> Path:
    from ..data.prepare import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _titles(study: dict) -> dict:
    return {m["name"]: m.get("title", m["name"]) for m in study.get("models", [])}


def plot_distributions(study: dict, runs, keys, path: Path) -> Path:
    titles = _titles(study)
    fig, axes = _figure(len(keys), 3, (4.2, 3.4))
    rng = np.random.default_rng(0)  # the jitter of the points only
    for ax, key in zip(axes, keys):
        dist = st.distributions(runs, key)
        models = [m for m, v in dist.items() if v]
        cols = _colours(len(dist))
        data = [dist[m] for m in models]
        if data:
            ax.boxplot(data, positions=range(len(models)), widths=0.55, showfliers=False,
                       medianprops={"color": "black"})
        for i, m in enumerate(models):
            xs = i + rng.uniform(-0.15, 0.15, len(dist[m]))
            ax.scatter(xs, dist[m], s=12, alpha=0.7, color=cols[list(dist).index(m)], zorder=3)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([f"{titles.get(m, m)}\n(n={len(dist[m])})" for m in models], fontsize=8)
        ax.set_ylabel(_axis(key), fontsize=8)
        ax.set_title(label_of(key), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Scores per objective over all settings and seeds (n = runs)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return _save(fig, path)


def plot_spearman(runs, keys, path: Path) -> Path:
    rho, n = st.spearman_matrix(runs, keys)
    k = len(keys)
    fig, (ax,) = _figure(1, 1, (1.2 + 0.85 * k, 0.9 + 0.75 * k))
    im = ax.imshow(rho, vmin=-1, vmax=1, cmap="RdBu_r")
    labels = [label_of(x) for x in keys]
    ax.set_xticks(range(k))
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(k))
    ax.set_yticklabels(labels, fontsize=8)
    total = len([r for r in runs if r.get("scores")])
    for a in range(k):
        for b in range(k):
            text = "-" if not np.isfinite(rho[a, b]) else f"{100 * rho[a, b]:.0f}"
            if n[a, b] != total:
                text += f"\nn={n[a, b]}"
            ax.text(b, a, text, ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(rho[a, b]) and abs(rho[a, b]) > 0.6 else "black")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("Spearman rank correlation", fontsize=8)
    ax.set_title(f"Rank correlation between metrics (x100) over {total} runs", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_strength(study: dict, runs, model: str, keys, path: Path) -> Path:
    titles = _titles(study)
    spec = next((m for m in study.get("models", []) if m["name"] == model), {"key": "value"})
    fig, axes = _figure(len(keys), 3, (4.0, 3.0))
    for ax, key in zip(axes, keys):
        curve = st.strength_curve(runs, model, key)
        xs = [c["value"] for c in curve]
        for c in curve:
            ys = [p[1] for p in c["points"]]
            ax.scatter([c["value"]] * len(ys), ys, s=14, color="0.55", alpha=0.8, zorder=2,
                       label="each seed" if c is curve[0] else None)
        if curve:
            ax.plot(xs, [c["mean"] for c in curve], "o-", color="C0", zorder=3, label="mean over seeds")
            for c in curve:
                ax.annotate(f"n={c['n']}", (c["value"], c["mean"]), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=7, color="C0")
            if st.spans_decades(xs):
                ax.set_xscale("log")
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{x:g}" for x in xs], fontsize=8)
            ax.minorticks_off()
        ax.set_xlabel(f"{spec['key']} (regularisation strength)", fontsize=8)
        ax.set_ylabel(_axis(key), fontsize=8)
        ax.set_title(label_of(key), fontsize=10)
        ax.grid(alpha=0.3)
        if curve and key == keys[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{titles.get(model, model)}: scores against {spec['key']} (n = seeds per value)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


def plot_tradeoff(study: dict, runs, keys, path: Path) -> Path:
    titles = _titles(study)
    fig, axes = _figure(len(keys), 3, (4.0, 3.0))
    models = list(dict.fromkeys(r["model"] for r in runs))
    cols = dict(zip(models, _colours(len(models))))
    for ax, key in zip(axes, keys):
        pts = st.tradeoff(runs, key)
        for m, p in pts.items():
            ax.scatter([x for x, _, _ in p], [y for _, y, _ in p], s=14, alpha=0.8, color=cols[m],
                       label=f"{titles.get(m, m)} (n={len(p)})")
        ax.set_xlabel("reconstruction −log p(x|z) (nats / image)", fontsize=8)
        ax.set_ylabel(_axis(key), fontsize=8)
        ax.set_title(label_of(key), fontsize=10)
        ax.grid(alpha=0.3)
        if pts:
            ax.legend(fontsize=7)
    fig.suptitle("Each metric against the reconstruction the run gave up (n = runs)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


# ---------------------------------------------------------------------------------------- page
def _fmt(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3f}"


def _cell(mean, std, n) -> str:
    """``0.512 ± 0.031 (n=3)``; one value has no spread: ``0.512 (n=1)``."""
    if mean is None:
        return ""
    return f"{_fmt(mean)} ± {_fmt(std)} (n={n})" if std is not None else f"{_fmt(mean)} (n={n})"


def best_table_html(study: dict, runs, keys) -> str:
    from .report import esc, num

    titles = _titles(study)
    models = [m["name"] for m in study.get("models", []) if any(r["model"] == m["name"] for r in runs)]
    keymap = {m["name"]: m["key"].split(".")[-1] for m in study.get("models", [])}
    head = "<th>metric</th>" + "".join(f"<th>{esc(titles.get(m, m))}</th>" for m in models)
    body = []
    for key in [*keys, *([st.RECONSTRUCTION] if any(st.RECONSTRUCTION in (r.get("scores") or {}) for r in runs) else [])]:
        best = {b["model"]: b for b in st.best_settings(runs, key)}
        better = "lower" if key in st.LOWER_IS_BETTER else "higher"
        cells = [f"<th>{esc(_axis(key))}<br><span class=note>{better} is better</span></th>"]
        for m in models:
            b = best.get(m)
            cells.append("<td></td>" if b is None else
                         f"<td class=n>{esc(keymap.get(m, 'value'))} = {esc(num(b['value']))}<br>"
                         f"{esc(_cell(b['mean'], b['std'], b['n']))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "<p class=note>Per objective, the regularisation strength whose mean over seeds is best, with that "
            "mean ± the sample standard deviation over its seeds and n, the number of seeds scored (no ± for "
            "n = 1).</p>")


def _settings_tables(study: dict, keys) -> str:
    from .report import esc, num

    titles = _titles(study)
    parts = []
    for m, rows in (study.get("settings") or {}).items():
        if not rows:
            continue
        skeys = [k for k in [*keys, st.RECONSTRUCTION] if any(k in r.get("scores", {}) for r in rows)]
        head = "<th>setting</th><th class=n>runs</th>" + "".join(f"<th>{esc(label_of(k))}</th>" for k in skeys)
        body = []
        for r in rows:
            setting = ", ".join(f"{k.split('.')[-1]} = {num(v)}" for k, v in r.get("setting", {}).items())
            cells = [f"<td>{esc(setting)}</td><td class=n>{r.get('runs')}</td>"]
            for k in skeys:
                s = r["scores"].get(k)
                cells.append("<td></td>" if s is None else f"<td class=n>{esc(_cell(s['mean'], s.get('std'), s['n']))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        parts.append(f"<h3>{esc(titles.get(m, m))}</h3><div class=scroll><table><thead><tr>{head}</tr></thead>"
                     f"<tbody>{''.join(body)}</tbody></table></div>")
    return "".join(parts)


def study_html(study: dict, figures: list[tuple[str, Path, str]], keys) -> str:
    from .report import esc, img, page

    proto = study.get("protocol", {})
    prog = study.get("progress", {})
    runs = [r for r in study.get("runs", []) if r.get("scores")]
    ev = study.get("eval", {})
    head = (f"<header><h1>Study {esc(proto.get('name', ''))}</h1>"
            f"<p class=sub>{esc(proto.get('description', ''))}</p>"
            f"<p class=note>source: {esc(proto.get('source', ''))}; paper: {esc(proto.get('paper', ''))}</p>"
            f"<p>{prog.get('runs', 0)} runs selected: {prog.get('trained', 0)} trained to "
            f"{study.get('steps', 0):,} steps (protocol: {proto.get('steps', 0):,}), {prog.get('scored', 0)} scored "
            f"(metrics {esc(', '.join(ev.get('metrics', [])))}; profile {esc(ev.get('profile'))}, eval seed "
            f"{esc(ev.get('seed'))}). The figures show the {len(runs)} scored runs."
            + (f" Overrides: <code>{esc(' '.join(study.get('overrides') or []))}</code>." if study.get("overrides") else "")
            + f"</p><p class=note>written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}</p></header>")
    sections = [head]
    if not runs:
        sections.append("<p>No run is scored yet: run the same <code>vaelab study</code> command again to continue.</p>")
        return page(f"study {proto.get('name', '')}", "".join(sections))
    sections.append("<h2 id=best>Best setting per objective</h2>" + best_table_html(study, runs, keys))
    for title, path, caption in figures:
        sections.append(f"<h2>{esc(title)}</h2><figure>{img(path, title)}<figcaption>{esc(caption)}</figcaption></figure>")
    sections.append("<h2 id=settings>Every setting: mean ± std over seeds</h2>" + _settings_tables(study, keys))
    return page(f"study {proto.get('name', '')}", "".join(sections), wide=True)


def write_study_report(study_dir, out=None) -> Path:
    """STUDY/report.html (or ``out``) and STUDY/figures/*.png from STUDY/study.json; returns the page."""
    from .report import _write_page

    d = Path(study_dir)
    path = d / "study.json"
    try:
        study = json.loads(path.read_text())
    except FileNotFoundError:
        raise VaelabError(f"{path} not found: run `vaelab study` on this folder first (it writes study.json)") from None
    except (OSError, ValueError) as e:
        raise VaelabError(f"{path} cannot be read ({type(e).__name__}): run `vaelab study` again to rewrite it") from None
    runs = [r for r in study.get("runs", []) if r.get("scores")]
    keys = plot_keys(study)
    figdir = d / FIGURES
    figures = []
    if runs and keys:
        figures.append(("Scores per objective", plot_distributions(study, runs, keys, figdir / "scores_by_objective.png"),
                        "Each metric's scores per objective over all its settings and seeds (box: quartiles and "
                        "median; points: runs; n under each objective). Locatello et al. 2019, Fig. 1 style."))
        if len(keys) > 1:
            figures.append(("Rank correlation between metrics", plot_spearman(runs, keys, figdir / "spearman.png"),
                            "Spearman rank correlation (x100) between the metrics over all scored runs; n in a cell "
                            "where fewer runs have both scores. Locatello et al. 2019, Fig. 2 style."))
        for m in study.get("models", []):
            if any(r["model"] == m["name"] for r in runs):
                figures.append((f"{m.get('title', m['name'])} against {m['key']}",
                                plot_strength(study, runs, m["name"], keys, figdir / f"strength_{m['name']}.png"),
                                "Grey: each seed's score; blue: the mean over seeds, n = seeds at that value."))
        if any(st.RECONSTRUCTION in r["scores"] for r in runs):
            figures.append(("Trade-off with reconstruction", plot_tradeoff(study, runs, keys, figdir / "tradeoff.png"),
                            "Each run's score against its reconstruction term (elbo.reconstruction: −log p(x|z) with "
                            "one posterior draw, nats per image, lower is a better fit)."))
    html = study_html(study, figures, keys)
    return _write_page(Path(out) if out else d / "report.html", html)
