"""One HTML page per run (``RUN/report.html``) and one comparison page for several runs.

The page is self-contained: every picture is embedded as a base64 data URI, styles and the few lines
of script (sortable tables) are inline, nothing is fetched from the network. The pictures come from
``RUN/images/`` and are rendered first when missing (:func:`render_all`, which records what it drew
in ``images/pictures_step<S>.json``). Everything else is read from the run folder: config.toml,
metrics.jsonl, eval.json (scores) and experiments/<name>/ (UG-VAE experiment figures and numbers).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import shlex
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..config import flatten
from ..errors import VaelabError
from . import common, plots
from . import recon as rc
from . import sample as sm
from . import traverse as tv

MANIFEST_VERSION = 1
COMMON_MODEL_KEYS = {"objective", "net", "latent_dim", "likelihood", "variance", "net_options"}
IMAGE_TYPES = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".svg": "image/svg+xml", ".webp": "image/webp"}


# ====================================================================== pictures
def render_all(run, out=None, force: bool = False, seed: int = 0, quiet: bool = True) -> dict:
    """Every picture the report shows, for the run's loaded checkpoint, into ``RUN/images`` (or ``out``).

    Returns the manifest (file names relative to the images folder). Pictures already made for this
    step are reused unless ``force``; the curves are redrawn when metrics.jsonl is newer."""
    d = common.out_dir(run, out)
    tag = common.step_tag(run.step)
    mpath = d / f"pictures_{tag}.json"
    manifest = None
    if mpath.is_file() and not force:
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError:
            manifest = None
        if manifest is not None and (manifest.get("version") != MANIFEST_VERSION
                                     or not all((d / f).is_file() for f in _manifest_files(manifest))):
            manifest = None
    if manifest is None:
        t0 = time.perf_counter()
        manifest = _render(run, d, tag, seed)
        manifest["render_seconds"] = round(time.perf_counter() - t0, 3)
        _write_page(mpath, json.dumps(manifest, indent=1))
        if not quiet:
            print(f"rendered the pictures of {run.path} at step {run.step} in {manifest['render_seconds']:.1f} s")
    metrics = Path(run.path) / "metrics.jsonl"
    stale = [f for f in manifest.get("plots", []) if not (d / f).is_file()
             or (metrics.is_file() and (d / f).stat().st_mtime < metrics.stat().st_mtime)]
    if stale or (not manifest.get("plots") and metrics.is_file()):
        try:
            manifest["plots"] = [p.name for p in plots.write_plots(run.path, d)]
        except VaelabError:
            manifest["plots"] = []
        mpath.write_text(json.dumps(manifest, indent=1))
    return manifest


def _manifest_files(m: dict) -> list[str]:
    files = [m["reconstruction"], m["samples"], m["kl_bars"], *m.get("plots", [])]
    for t in m["traversals"]:
        files.append(t["png"])
        files += list(t.get("gifs", {}).values())
        if t.get("origin_png"):
            files.append(t["origin_png"])
    return files


def _render(run, d: Path, tag: str, seed: int) -> dict:
    ref = tv.reference(run, seed=seed)
    m: dict = {"version": MANIFEST_VERSION, "step": run.step, "latent_dim": run.latent_dim,
               "kl": [float(x) for x in ref.kl], "kl_batch": int(len(ref.indices))}
    m["reconstruction"] = rc.write_reconstruction(run, d, seed=seed).name
    m["samples"] = sm.write_samples(run, d, seed=seed).name
    m["kl_bars"] = plots.kl_bar_chart(ref.kl, d / f"kl_bars_{tag}.png",
                                      title=f"per-latent KL, step {run.step} ({len(ref.indices)} images)").name
    values = tv.traversal_values()
    m["values"] = [float(v) for v in values]
    defaults = tv.make_origins(run, seed=seed, ref=ref)
    extra = tv.make_origins(run, zero=True, prior=True, seed=seed, ref=ref)
    m["traversals"] = []
    for origin, gif in [(o, True) for o in defaults] + [(o, False) for o in extra]:
        t = tv.traversal(run, origin, values, ref=ref)
        paths = tv.save_traversal(t, d, run.step, gif=gif)
        entry = {"name": origin.name, "label": origin.label, "index": origin.index, "dims": t.dims,
                 "png": paths[0].name}
        if gif:
            folder = paths[1].parent.name
            entry["gifs"] = {"all": f"{folder}/all.gif", **{f"z{j}": f"{folder}/z{j:02d}.gif" for j in t.dims}}
        if origin.image is not None:
            stem = paths[0].stem
            entry["origin_png"] = common.save_png(origin.image.transpose(1, 2, 0),
                                                  d / f"{stem}_origin.png").name
        m["traversals"].append(entry)
    m["plots"] = []
    if (Path(run.path) / "metrics.jsonl").is_file():
        try:
            m["plots"] = [p.name for p in plots.write_plots(run.path, d)]
        except VaelabError:
            pass
    return m


# ====================================================================== run facts (no model needed)


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _metric_headlines() -> dict[str, tuple[str, list[str]]]:
    """metric name -> (title, headline keys, the score first), from the evaluator's registry."""
    try:
        from ..metrics.evaluate import METRICS
    except ImportError:  # pragma: no cover - the metrics package is part of vaelab
        return {}
    return {n: (m.title, list(m.headline)) for n, m in METRICS.items()}


def score_rows(data: dict) -> list[tuple[str, str, float, bool]]:
    """(metric, key, value, headline?) of the scalar scores in an eval.json dict (``"mig.score"`` style keys;
    metrics in the order the file lists them, headline keys first)."""
    heads = _metric_headlines()
    names = data.get("metrics")
    if not isinstance(names, list):
        names = sorted({k.split(".", 1)[0] for k in data if "." in k})
    rows = []
    for name in names:
        keys = [k.split(".", 1)[1] for k in data if k.startswith(f"{name}.") and _is_number(data[k])]
        head = [k for k in heads.get(name, ("", []))[1] if k in keys]
        for k in head + sorted(k for k in keys if k not in head):
            rows.append((name, k, float(data[f"{name}.{k}"]), k in head))
    return rows


def scores(run_dir: Path, data=None) -> dict[str, float]:
    """The score of each metric in ``eval.json`` (its first headline value, e.g. ``mig.score``), or {}
    (``data``: that file's contents when the caller has read it already)."""
    if data is None:
        data = read_json(Path(run_dir) / "eval.json")
    if not isinstance(data, dict):
        return {}
    out = {}
    for name, key, value, _ in score_rows(data):  # headline keys come first: the first row is the score
        if not any(k.startswith(f"{name}.") for k in out):
            out[f"{name}.{key}"] = value
    return out


def last_terms(rows: list[dict]) -> dict:
    """The last logged value of every scalar term (training and validation)."""
    out = {}
    for r in rows:
        for k, v in r.items():
            if k != "step" and _is_number(v):
                out[k] = float(v)
    return out


def run_facts(run_dir) -> dict:
    """What the comparison table shows about a run, from its files only."""
    from ..config import read_toml
    from ..training import checkpoint
    from ..training.logger import read_metrics

    run_dir = Path(run_dir)
    cfg = read_toml(run_dir / "config.toml")
    model = cfg.get("model", {})
    rows = read_metrics(run_dir)
    cks = checkpoint.list_checkpoints(run_dir)
    steps = [r["step"] for r in rows if isinstance(r.get("step"), int)]
    ev = read_json(run_dir / "eval.json")
    return {
        "name": run_dir.name, "path": run_dir, "preset": cfg.get("name", ""),
        "objective": model.get("objective", "?"), "net": model.get("net", ""),
        "latent_dim": model.get("latent_dim"), "dataset": cfg.get("data", {}).get("name", "?"),
        "hparams": {k: v for k, v in model.items() if k not in COMMON_MODEL_KEYS and not isinstance(v, dict)},
        "lr": {g: o.get("lr") for g, o in cfg.get("optim", {}).items() if isinstance(o, dict)},
        "batch_size": cfg.get("train", {}).get("batch_size"),
        "seed": cfg.get("train", {}).get("seed"),
        "steps": max(steps) if steps else (int(cks[-1].name.split("-")[-1]) if cks else 0),
        "planned_steps": cfg.get("train", {}).get("steps"),
        "terms": last_terms([r for r in rows if not any(k.startswith("val.") for k in r)]),
        "val_terms": last_terms([r for r in rows if any(k.startswith("val.") for k in r)]),
        "scores": scores(run_dir, ev),
        "scored_step": ev.get("step") if isinstance(ev, dict) else None,
    }


# ====================================================================== HTML pieces
CSS = """
:root { --fg:#1d2430; --muted:#5d6b7e; --line:#dfe4ea; --bg:#ffffff; --accent:#2557a7; --soft:#f5f7fa; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width:1200px; margin:0 auto; padding:18px 22px 60px; }
main.wide { max-width:1800px; }
header h1 { margin:0 0 4px; font-size:24px; }
.sub { color:var(--muted); margin:0 0 10px; }
nav { position:sticky; top:0; background:rgba(255,255,255,.95); border-bottom:1px solid var(--line);
      padding:6px 0; margin-bottom:10px; z-index:1; }
nav a { margin-right:14px; color:var(--accent); text-decoration:none; font-size:14px; }
h2 { font-size:19px; margin:28px 0 8px; padding-top:6px; border-top:1px solid var(--line); }
h3 { font-size:15px; margin:18px 0 6px; }
img { max-width:100%; height:auto; }
img.px { image-rendering:pixelated; }
table { border-collapse:collapse; font-size:13.5px; }
th, td { border-bottom:1px solid var(--line); padding:4px 10px; text-align:left; vertical-align:top; }
th { background:var(--soft); font-weight:600; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; }
table.sortable th { cursor:pointer; user-select:none; white-space:nowrap; }
table.runs td { white-space:nowrap; }
table.sortable th.asc::after { content:" \\25B2"; font-size:10px; }
table.sortable th.desc::after { content:" \\25BC"; font-size:10px; }
.scroll { overflow-x:auto; max-width:100%; }
pre { background:var(--soft); padding:10px; overflow:auto; font-size:12.5px; max-height:480px; }
details summary { cursor:pointer; color:var(--accent); margin:6px 0; }
.row { display:flex; flex-wrap:wrap; gap:18px; align-items:flex-start; }
figure { margin:0 0 12px; }
figcaption { color:var(--muted); font-size:13px; margin-top:2px; }
.gifs { display:flex; flex-wrap:wrap; gap:8px; }
.gifs figure { text-align:center; }
.note { color:var(--muted); font-size:13px; }
.stale { color:#a33; font-weight:600; }
"""

SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var dir = th.classList.contains("asc") ? -1 : 1;
      Array.prototype.forEach.call(heads, function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(dir > 0 ? "asc" : "desc");
      function key(r) {
        var c = r.cells[col], v = c.hasAttribute("data-v") ? c.getAttribute("data-v") : c.textContent.trim();
        var n = parseFloat(v);
        return v === "" ? null : (isNaN(n) ? v.toLowerCase() : n);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        if (typeof x !== typeof y) { return typeof x === "number" ? -1 : 1; }
        return (x < y ? -1 : x > y ? 1 : 0) * dir;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def num(v, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}"


def data_uri(path: Path) -> str:
    mime = IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def img(path: Path, alt: str, *, scale: float = 1.0, pixel: bool = False) -> str:
    """An embedded <img>; ``scale`` enlarges small pixel pictures (nearest neighbour with ``pixel``)."""
    from PIL import Image

    w = h = None
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # not an image Pillow knows (svg): let the browser size it
        pass
    size = f' width="{round(w * scale)}" height="{round(h * scale)}"' if w else ""
    cls = ' class="px"' if pixel else ""
    return f'<img src="{data_uri(path)}" alt="{esc(alt)}"{size}{cls} loading="eager">'


def kv_table(items, numeric: bool = True) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td{' class=n' if numeric and _is_number(v) else ''}>"
                   f"{esc(num(v) if _is_number(v) else v)}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def page(title: str, body: str, script: str = "", wide: bool = False) -> str:
    js = f"<script>{script}</script>" if script else ""
    main = "<main class=wide>" if wide else "<main>"
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="vaelab"><title>{esc(title)}</title>'
            f'<link rel="icon" href="data:,">'
            f"<style>{CSS}</style></head><body>{main}{body}</main>{js}</body></html>\n")


# ====================================================================== one run
def _config_section(run, facts: dict) -> str:
    cfg = run.cfg
    parts = ["<h2 id=config>Config</h2>"]
    desc = [f"<b>{esc(cfg.name)}</b>"]
    if cfg.description:
        desc.append(esc(cfg.description))
    parts.append(f"<p>{' — '.join(desc)}</p>")
    if cfg.source:
        parts.append(f'<p class=note>source: {esc(cfg.source)}</p>')
    items = [("objective", facts["objective"]), ("net", facts["net"]), ("latent_dim", facts["latent_dim"])]
    items += [(k, v) for k, v in run.config["model"].items()
              if k not in ("objective", "net", "latent_dim") and not isinstance(v, dict)]
    items += [("dataset", run.config["data"]["name"]), ("batch_size", facts["batch_size"]),
              ("steps (planned)", facts["planned_steps"]), ("seed", run.config["train"].get("seed"))]
    items += [(f"lr.{g}", v) for g, v in facts["lr"].items()]
    parts.append(kv_table(items))
    toml_path = Path(run.path) / "config.toml"
    text = toml_path.read_text() if toml_path.is_file() else cfg.to_toml()
    parts.append(f"<details><summary>config.toml</summary><pre>{esc(text)}</pre></details>")
    return "".join(parts)


def _scores_section(run_dir: Path, step: int | None = None) -> str:
    data = read_json(run_dir / "eval.json")
    if not isinstance(data, dict):
        return ""
    heads = _metric_headlines()
    rows = score_rows(data)
    main = [r for r in rows if r[3]] or rows
    extra = [r for r in rows if not r[3]] if len(main) < len(rows) else []
    out = ["<h2 id=scores>Disentanglement scores</h2>"]
    facts = [f"{k} {data[k]}" for k in ("step", "profile", "seed") if k in data and not isinstance(data[k], dict)]
    if facts:
        out.append(f"<p class=note>eval.json: {esc(', '.join(facts))}</p>")
    scored = data.get("step")
    if step is not None and isinstance(scored, int) and scored != step:
        out.append(f"<p class=stale>These scores are of the checkpoint at step {scored:,}; the rest of this page "
                   f"shows step {step:,}. Run <code>vaelab evaluate {esc(run_dir)}</code> to score it.</p>")
    if main:
        out.append(_score_table(main, heads))
    else:
        out.append("<p class=note>eval.json holds no scores.</p>")
    if extra:
        out.append(f"<details><summary>more numbers</summary>{_score_table(extra, heads)}</details>")
    notes = _below_chance_notes(data)
    if notes:
        out.append("".join(f"<p class=stale>{esc(n)}</p>" for n in notes))
    out.append(_active_latents_table(data))
    factor_names = (data.get("dataset") or {}).get("factor_names") if isinstance(data.get("dataset"), dict) else None
    breakdowns = [(k, v) for k, v in data.items() if "." in k and isinstance(v, (dict, list)) and v]
    if breakdowns:
        parts = [f"<h3>{esc(k)}</h3>{_breakdown(v, factor_names, k)}" for k, v in breakdowns]
        out.append(f"<details><summary>breakdowns</summary>{''.join(parts)}</details>")
    skipped = data.get("skipped")
    if isinstance(skipped, dict) and skipped:
        out.append("<p class=note>skipped: " + "; ".join(f"{esc(k)} ({esc(v)})" for k, v in skipped.items()) + "</p>")
    return "".join(out)


def _score_table(rows, heads) -> str:
    body, last = [], None
    for name, key, value, _ in rows:
        title = heads.get(name, (name, []))[0] if name != last else ""
        last = name
        body.append(f"<tr><th>{esc(title)}</th><td>{esc(key)}</td><td class=n>{esc(num(value))}</td></tr>")
    return ("<table><thead><tr><th>metric</th><th>value</th><th class=n></th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


#: eval.json matrices whose rows are factors and columns latents (FactorVAE's votes: factor k held fixed,
#: latent j won the vote); every other matrix there is latents x factors
FACTOR_ROWS = {"factor_vae.votes_train", "factor_vae.votes_eval"}


def _below_chance_notes(data: dict) -> list[str]:
    try:
        from ..metrics.evaluate import below_chance_notes
    except ImportError:  # pragma: no cover - the metrics package is part of vaelab
        return []
    return below_chance_notes(data)


def _active_latents_table(data: dict) -> str:
    """What each "active latents" count of eval.json counts, with its threshold (they differ by design)."""
    try:
        from ..metrics.evaluate import active_latent_counts
    except ImportError:  # pragma: no cover
        return ""
    counts = active_latent_counts(data)
    if not counts:
        return ""
    rows = "".join(f"<tr><th>{esc(k)}</th><td class=n>{n}{f' of {of}' if of else ''}</td><td>{esc(rule)}</td></tr>"
                   for k, n, of, rule in counts)
    return ("<h3>Active latents</h3><p class=note>Each count has its own test, so they differ; from the strictest "
            "to the loosest:</p><table><thead><tr><th>count</th><th class=n>latents</th><th>what it counts</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _axis_labels(n: int, factor_names, latents: bool) -> list[str]:
    if latents:
        return [f"z{i}" for i in range(n)]
    return list(factor_names) if factor_names and len(factor_names) == n else [f"factor {i}" for i in range(n)]


def _breakdown(v, factor_names=None, key: str = "") -> str:
    """A dict of numbers as a key/value table, a matrix as a shaded table: latents x factors, or factors x
    latents for the keys in :data:`FACTOR_ROWS`; rows and columns are labelled by what they are."""
    if isinstance(v, dict):
        return kv_table([(k, x if _is_number(x) else json.dumps(x)[:80]) for k, x in v.items()])
    a = v
    if isinstance(a, list) and a and all(isinstance(r, list) and r and all(_is_number(x) for x in r) for r in a):
        m = np.asarray(a, dtype=np.float64)
        if m.ndim == 2:
            top = float(np.nanmax(np.abs(m))) or 1.0
            factor_rows = key in FACTOR_ROWS
            rows = _axis_labels(m.shape[0], factor_names, latents=not factor_rows)
            cols = _axis_labels(m.shape[1], factor_names, latents=factor_rows)
            corner = "factor \\ latent" if factor_rows else "latent \\ factor"
            head = f"<tr><th>{esc(corner)}</th>" + "".join(f"<th class=n>{esc(c)}</th>" for c in cols) + "</tr>"
            body = "".join(
                f"<tr><th>{esc(rows[i])}</th>" + "".join(
                    f'<td class=n style="background:rgba(37,87,167,{min(abs(x) / top, 1) * 0.6:.2f})">{esc(num(x, 2))}</td>'
                    for x in row) + "</tr>" for i, row in enumerate(m))
            return f"<div class=scroll><table>{head}{body}</table></div>"
    if isinstance(a, list) and all(_is_number(x) for x in a):
        return f"<p>{esc(', '.join(num(x) for x in a))}</p>"
    return f"<pre>{esc(json.dumps(a)[:2000])}</pre>"


def _experiments_section(run_dir: Path) -> str:
    root = run_dir / "experiments"
    if not root.is_dir():
        return ""
    blocks = []
    for exp in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in exp.rglob("*") if p.is_file())
        pics = [p for p in files if p.suffix.lower() in IMAGE_TYPES]
        jsons = [p for p in files if p.suffix.lower() == ".json"]
        if not pics and not jsons:
            continue
        parts = [f"<h3>{esc(exp.name)}</h3>"]
        if pics:
            figs = "".join(f"<figure>{img(p, p.stem)}<figcaption>{esc(p.relative_to(exp))}</figcaption></figure>"
                           for p in pics)
            parts.append(f'<div class=row>{figs}</div>')
        for j in jsons:
            data = read_json(j)
            flat = flatten(data) if isinstance(data, dict) else {"value": data}
            items = []
            for k, v in flat.items():
                if _is_number(v) or isinstance(v, str):
                    items.append((k, v))
                elif isinstance(v, list) and len(v) <= 12 and all(_is_number(x) for x in v):
                    items.append((k, ", ".join(num(x) for x in v)))
                elif isinstance(v, list):
                    items.append((k, f"[{len(v)} values]"))
            parts.append(f"<p class=note>{esc(j.relative_to(exp))}</p>{kv_table(items[:300])}")
        blocks.append("".join(parts))
    if not blocks:
        return ""
    return "<h2 id=experiments>UG-VAE experiments</h2>" + "".join(blocks)


def run_report_html(run, manifest: dict, images_dir: Path) -> str:
    run_dir = Path(run.path)
    facts = run_facts(run_dir)
    d = Path(images_dir)
    step = manifest["step"]
    title = f"{run_dir.name} — vaelab report"
    sections = []
    head = (f"<header><h1>{esc(run_dir.name)}</h1><p class=sub>{esc(facts['objective'])} · {esc(facts['net'])} · "
            f"{esc(facts['dataset'])} · {facts['latent_dim']} latents · checkpoint step {step:,}"
            f" · report written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>"
            f"<p class=note>run folder {esc(run_dir.resolve())}</p>"
            f"<p class=note>Explore interactively (a slider per latent, decoded as you drag): "
            f"<code>vaelab explore {esc(shlex.quote(str(run_dir.resolve())))}</code></p></header>")
    sc = _scores_section(run_dir, step)
    ex = _experiments_section(run_dir)
    links = [("config", "Config")] + ([("scores", "Scores")] if sc else []) + [
        ("curves", "Curves"), ("recon", "Reconstructions"), ("traversals", "Traversals"), ("samples", "Samples"),
        ("kl", "Per-latent KL")] + ([("experiments", "Experiments")] if ex else [])
    sections.append(head + "<nav>" + "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in links) + "</nav>")
    sections.append(_config_section(run, facts))
    if sc:
        sections.append(sc)

    # curves
    parts = ["<h2 id=curves>Training curves</h2>"]
    if manifest.get("plots"):
        parts += [f"<figure>{img(d / p, p)}</figure>" for p in manifest["plots"]]
    else:
        parts.append("<p class=note>metrics.jsonl has no rows yet.</p>")
    t = facts["terms"]
    if t:
        keys = [k for k in t if not k.startswith("lr.")]
        parts.append("<details><summary>last logged values</summary>"
                     + kv_table([(k, t[k]) for k in keys] + list(facts["val_terms"].items())) + "</details>")
    sections.append("".join(parts))

    # reconstructions (small pixel pictures are enlarged, nearest neighbour)
    rp = d / manifest["reconstruction"]
    sections.append("<h2 id=recon>Reconstructions</h2><p class=note>Each row of data images sits above its "
                    "reconstructions (decoded posterior means).</p>"
                    f"<figure>{img(rp, 'reconstructions', scale=_fit(rp, 820), pixel=True)}</figure>")

    # traversals
    vals = manifest["values"]
    parts = ["<h2 id=traversals>Latent traversals</h2>",
             f"<p class=note>One row per latent, sorted by its KL (nats, mean over {manifest['kl_batch']} images, "
             f"written beside each row); columns set that latent to {num(vals[0])} … {num(vals[-1])} "
             f"({len(vals)} values) and keep the others at the origin's code. The animations go through the "
             f"same values and back.</p>"]
    for tr in manifest["traversals"]:
        parts.append(f"<h3>{esc(tr['label'])}</h3><div class=row>")
        if tr.get("origin_png"):
            parts.append(f"<figure>{img(d / tr['origin_png'], 'origin image', scale=2, pixel=True)}"
                         f"<figcaption>origin</figcaption></figure>")
        tp = d / tr["png"]
        parts.append(f"<figure>{img(tp, 'traversal ' + tr['name'], scale=_fit(tp, 900), pixel=True)}</figure></div>")
        gifs = tr.get("gifs") or {}
        if "all" in gifs:
            ap = d / gifs["all"]
            parts.append(f"<figure>{img(ap, 'all latents', scale=_fit(ap, 1100), pixel=True)}"
                         f"<figcaption>all latents together</figcaption></figure>")
        per = [(k, v) for k, v in gifs.items() if k != "all"]
        if per:
            figs = "".join(f"<figure>{img(d / v, k, scale=_fit(d / v, 96, most=4), pixel=True)}<figcaption>{esc(k)}"
                           f" · KL {num(manifest['kl'][int(k[1:])], 2)}</figcaption></figure>" for k, v in per)
            parts.append(f"<div class=gifs>{figs}</div>")
    sections.append("".join(parts))

    sp = d / manifest["samples"]
    sections.append("<h2 id=samples>Samples from the prior</h2>"
                    f"<figure>{img(sp, 'samples', scale=_fit(sp, 820), pixel=True)}</figure>")

    kl = manifest["kl"]
    order = sorted(range(len(kl)), key=lambda j: -kl[j])
    table = kv_table([(f"z{j}", kl[j]) for j in order])
    from ..metrics.evaluate import KL_ACTIVE_NATS

    live = sum(1 for x in kl if x > KL_ACTIVE_NATS)
    sections.append(f"<h2 id=kl>Per-latent KL</h2><p class=note>{live} of {len(kl)} latents carry more than "
                    f"{KL_ACTIVE_NATS} nats / image (KL of q(z|x) from the prior, mean over {manifest['kl_batch']} "
                    f"images); the others are switched off. Other counts of active latents use other tests "
                    f"(listed under Scores once the run is evaluated).</p>"
                    f"<div class=row><figure>{img(d / manifest['kl_bars'], 'KL bars')}"
                    f"</figure><details><summary>values</summary>{table}</details></div>")
    if ex:
        sections.append(ex)
    return page(title, "".join(sections))


def _fit(path: Path, width: int, most: float = 2.0) -> float:
    """Display scale of a picture: enlarged up to ``most`` times, but never wider than ``width`` pixels."""
    from PIL import Image

    with Image.open(path) as im:
        w = im.size[0]
    return min(most, width / w)


def write_report(run, out=None, step: int | None = None, force: bool = False, quiet: bool = True) -> Path:
    """Write ``RUN/report.html`` (or ``out``) for a run folder or :class:`Run`; returns its path."""
    run = common.open_run(run, step=step)
    manifest = render_all(run, force=force, quiet=quiet)
    path = Path(out) if out else Path(run.path) / "report.html"
    return _write_page(path, run_report_html(run, manifest, Path(run.path) / "images"))


def _write_page(path: Path, text: str) -> Path:
    from ..data.prepare import atomic_write_bytes

    try:
        atomic_write_bytes(Path(path), text.encode("utf-8"))
    except OSError as e:
        raise VaelabError(f"cannot write {path}: {e.strerror or e}") from None
    return Path(path)


# ====================================================================== comparison
def _is_num(v, none_ok=False) -> bool:
    return (none_ok and v is None) or _is_number(v)


def read_study(path: Path) -> dict | None:
    """A sweep's study.json for the comparison page (None: there is none). One that is not what
    ``vaelab evaluate SWEEP`` writes is one clear error, not a traceback halfway through the page."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        why = f"not JSON: {str(e)[:80]}"
    else:
        why = _study_problem(study)
        if why is None:
            return study
    raise VaelabError(f"{path} is not a study table vaelab wrote ({why}); write it again with `vaelab evaluate "
                      f"{path.parent}`, or move it away")


def _study_problem(study) -> str | None:
    if not isinstance(study, dict):
        return "not a JSON object"
    rows = study.get("settings", [])
    if not isinstance(rows, list):
        return "'settings' is not a list"
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not isinstance(r.get("setting"), dict):
            return f"settings[{i}] is not an object with a 'setting' object"
        if not _is_num(r.get("runs"), none_ok=True) or not isinstance(r.get("scores", {}), dict):
            return f"settings[{i}] has no run count or no 'scores' object"
        if not isinstance(r.get("notes") or [], list):
            return f"settings[{i}].notes is not a list"
        for name, sc in r.get("scores", {}).items():
            if sc is None:
                continue
            if not (isinstance(sc, dict) and _is_num(sc.get("mean")) and _is_num(sc.get("std"), none_ok=True)
                    and _is_num(sc.get("n")) and _is_num(sc.get("chance"), none_ok=True)):
                return f"settings[{i}].scores[{name!r}] is not {{mean, std, n}}"
    return None


def _study_section(study) -> str:
    """The study table (``vaelab evaluate SWEEP``'s study.json): per setting, mean ± std over seeds."""
    if not isinstance(study, dict) or not isinstance(study.get("settings"), list) or not study["settings"]:
        return ""
    rows = study["settings"]
    keys = sorted({k for r in rows for k in r.get("setting", {})})
    scores = sorted({k for r in rows for k in r.get("scores", {})})
    head = "".join(f"<th>{esc(k)}</th>" for k in keys) + "<th>runs</th>" + "".join(f"<th>{esc(k)}</th>" for k in scores)
    body = []
    for r in rows:
        cells = [_num_td(r["setting"].get(k)) for k in keys] + [_num_td(r.get("runs"))]
        for k in scores:
            sc = r["scores"].get(k)
            if sc is None:
                cells.append('<td data-v=""></td>')
            else:
                if sc.get("std") is None or sc["n"] < 2:  # one value: its count, no spread
                    text = f"{num(sc['mean'])} (n={sc['n']})"
                else:
                    text = f"{num(sc['mean'])} ± {num(sc['std'])}" + (f" (n={sc['n']})" if sc["n"] != r["runs"]
                                                                       else "")
                low = sc.get("chance") is not None and sc["mean"] < sc["chance"]
                mark = (f' title="below chance (1/K = {sc["chance"]:.3f}); see the notes under the table"'
                        if low else "")
                cells.append(f'<td class="n{" stale" if low else ""}"{mark} data-v="{esc(repr(float(sc["mean"])))}">'
                             f'{esc(text + (" !" if low else ""))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = [(", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["setting"].items()) or "all runs", n)
             for r in rows for n in r.get("notes") or []]
    notes_html = "".join(f"<p class=stale>! {esc(where)}: {esc(n)}</p>" for where, n in notes)
    return (f"<h2>Study: each setting's scores, mean ± std over seeds</h2>"
            f'<div class=scroll><table class="sortable runs" id=study><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>{notes_html}"
            f"<p class=note>From study.json (<code>vaelab evaluate SWEEP</code>, seed {esc(study.get('seed'))}, "
            f"profile {esc(study.get('profile'))}).</p>")


def comparison_html(facts: list[dict], reports: list[Path], out: Path, study: dict | None = None) -> str:
    """The comparison page: one sortable row per run. Settings every run shares are listed once
    above the table instead of as columns. ``study``: a study.json to show above the runs."""
    term_pref = ["loss", "recon", "kl"]
    term_keys = [k for k in term_pref if any(k in f["terms"] for f in facts)]
    term_keys += sorted({k for f in facts for k in f["terms"]
                         if k not in term_pref and not k.startswith("lr.") and k not in plots.NOT_TERMS
                         and k != plots.SPEED})
    # (header, value getter, is a setting)
    cols = [("model", lambda f: f"{f['objective']}/{f['net']}", True), ("dataset", lambda f: f["dataset"], True),
            ("latents", lambda f: f["latent_dim"], True)]
    cols += [(k, (lambda k: lambda f: f["hparams"].get(k))(k), True)
             for k in sorted({k for f in facts for k in f["hparams"]})]
    cols += [(f"lr.{g}", (lambda g: lambda f: f["lr"].get(g))(g), True)
             for g in sorted({g for f in facts for g in f["lr"]})]
    cols += [("batch", lambda f: f["batch_size"], True), ("seed", lambda f: f.get("seed"), True),
             ("steps", lambda f: f["steps"], False)]
    cols += [(k, (lambda k: lambda f: f["terms"].get(k))(k), False) for k in term_keys]
    cols += [(k, (lambda k: lambda f: f["val_terms"].get(k))(k), False)
             for k in sorted({k for f in facts for k in f["val_terms"]})]
    if any(f["scores"] for f in facts):  # the checkpoint each run's scores are of (eval.json's step)
        cols += [("scored at", lambda f: f.get("scored_step") if f["scores"] else None, False)]
    cols += [(k, (lambda k: lambda f: f["scores"].get(k))(k), False)
             for k in sorted({k for f in facts for k in f["scores"]})]
    shared = []
    if len(facts) > 1:
        keep = []
        for c in cols:
            vals = [c[1](f) for f in facts]
            if c[2] and all(v == vals[0] for v in vals):
                shared.append((c[0], vals[0]))
            else:
                keep.append(c)
        cols = keep
    head = "<th>run</th>" + "".join(f"<th>{esc(c[0])}</th>" for c in cols)
    body = []
    for f, rp in zip(facts, reports):
        href = quote(Path(os.path.relpath(rp, out.parent)).as_posix())
        cells = [f'<td data-v="{esc(f["name"])}"><a href="{href}">{esc(f["name"])}</a></td>']
        cells += [_num_td(c[1](f)) for c in cols]
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = (f'<div class=scroll><table class="sortable runs" id=runs><thead><tr>{head}</tr></thead>'
             f"<tbody>{''.join(body)}</tbody></table></div>")
    intro = (f"<header><h1>Run comparison</h1><p class=sub>{len(facts)} runs under {esc(out.parent)} · "
             f"written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} · click a column header to sort, "
             f"a run name for its report</p></header>")
    common_line = ("<p><b>All runs:</b> " + ", ".join(f"{esc(k)} {esc(num(v) if _is_number(v) else v)}"
                                                      for k, v in shared if v is not None) + "</p>") if shared else ""
    note = ("<p class=note>Terms are the last logged training values (val.* the last validation); "
            "scores come from each run's eval.json (<code>vaelab evaluate</code>), one per metric.</p>")
    return page("vaelab run comparison", intro + _study_section(study) + common_line + table + note, SORT_JS,
                wide=True)


def _num_td(v) -> str:
    if v is None:
        return '<td data-v=""></td>'
    if _is_number(v):
        return f'<td class=n data-v="{esc(repr(float(v)))}">{esc(num(v))}</td>'
    return f"<td>{esc(v)}</td>"


def write_comparison(runs, out=None, step: int | None = None, force: bool = False, quiet: bool = True) -> Path:
    """Each run's report plus one comparison page (default: the runs' common parent/comparison.html)."""
    paths = []
    for r in runs:
        p = Path(getattr(r, "path", r)).resolve()
        if p not in paths:
            paths.append(p)
    out = Path(out) if out else Path(os.path.commonpath([str(p.parent) for p in paths])) / "comparison.html"
    out = out.resolve()
    study = read_study(out.parent / "study.json")  # a damaged one is an error before any page is written
    reports = []
    for p in paths:
        reports.append(write_report(p, step=step, force=force, quiet=quiet))
        if not quiet:  # each run's page as it is written (the caller prints the comparison page's path)
            print(reports[-1])
    return _write_page(out, comparison_html([run_facts(p) for p in paths], reports, out, study=study))


def report(runs, out=None, step: int | None = None, force: bool = False, quiet: bool = True) -> Path:
    """``vaelab report``: one run -> its report.html; several -> their reports and a comparison page."""
    from ..training.run import is_run_dir

    runs = list(runs) if isinstance(runs, (list, tuple)) else [runs]
    if not runs:
        raise VaelabError("report needs at least one run folder")
    if len(runs) == 1:  # a study folder (`vaelab study`): its own report
        from ..studies import is_study_dir

        p = Path(getattr(runs[0], "path", runs[0]))
        if p.is_dir() and is_study_dir(p):
            from .study_report import write_study_report

            return write_study_report(p, out=out)
    expanded = []
    for r in runs:  # a sweep folder stands for its runs (its comparison page lands in it)
        p = Path(getattr(r, "path", r))
        if p.is_dir() and (p / "sweep.json").is_file() and not is_run_dir(p):
            from ..metrics.study import runs_of

            expanded += runs_of([p])[0]
            if out is None and len(runs) == 1:
                out = p / "comparison.html"
        else:
            expanded.append(r)
    runs = expanded
    for r in runs:  # every folder is checked before any work starts
        p = Path(getattr(r, "path", r))
        if not p.is_dir():
            raise VaelabError(f"{p} is not a folder: expected a run folder made by `vaelab train`")
        if not is_run_dir(p):
            raise VaelabError(f"{p} is not a run folder (no config.toml); train one with `vaelab train`")
    if len({Path(getattr(r, "path", r)).resolve() for r in runs}) == 1:
        return write_report(runs[0], out=out, step=step, force=force, quiet=quiet)
    return write_comparison(runs, out=out, step=step, force=force, quiet=quiet)
