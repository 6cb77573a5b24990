"""UG-VAE interpolation (paper §4.1; docs/experiments.md#interpolation; ipeis/UG-VAE ``experiments/interpolation.py``).

* ``encoding``: two batches; μ_z of each batch's first image and μ_β of each batch (π from μ_z); rows move
  β from batch A's to batch B's, columns move z from image a's to image b's; one steps×steps grid.
  On a dataset with a ``domain`` factor the two batches come one from each domain.
* ``sampling`` (what the reference's main runs): for each mixture component d, rows move β linearly from
  +1.5·𝟙 to −1.5·𝟙; for each β take μ_d(β) from the prior net; columns move z from μ_d(β) − 3 to
  μ_d(β) + 3, every dimension together; one steps×steps grid per component.

Numbers: mean absolute pixel change between neighbouring rows (the global latent's effect) and between
neighbouring columns (the local latent's effect), per grid.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import VaelabError
from . import common

VARIANTS = ("encoding", "sampling", "both")
BETA_RANGE = 1.5  # reference: β from +1.5·1 to −1.5·1
Z_RANGE = 3.0  # reference: z from μ_d(β) − 3 to μ_d(β) + 3


def grid_changes(grid: torch.Tensor) -> dict:
    """Mean |Δpixel| between neighbouring rows and between neighbouring columns of an R×C×... grid."""
    g = torch.as_tensor(grid).float()
    rows = (g[1:] - g[:-1]).abs().mean().item() if g.shape[0] > 1 else 0.0
    cols = (g[:, 1:] - g[:, :-1]).abs().mean().item() if g.shape[1] > 1 else 0.0
    return {"row_change": rows, "col_change": cols}


@torch.no_grad()
def encoding_grid(model, images_a: torch.Tensor, images_b: torch.Tensor, steps: int = 7) -> dict:
    """Grid for two uint8 batches: rows interpolate μ_β (A → B), columns μ_z of the batches' first images
    (a → b). Returns ``grid`` (steps×steps×C×H×W float), ``beta`` (steps×dβ: the row codes), and the
    endpoints."""
    ea = common.encode_batches(model, images_a, np.arange(len(images_a))[None])
    eb = common.encode_batches(model, images_b, np.arange(len(images_b))[None])
    mu_beta = np.concatenate([ea["mu_beta"], eb["mu_beta"]])
    z_ab = np.stack([ea["mu_z"][0, 0], eb["mu_z"][0, 0]])
    lam = torch.linspace(0, 1, steps)
    mb = torch.from_numpy(mu_beta)
    za = torch.from_numpy(z_ab)
    betas = (1 - lam)[:, None] * mb[0] + lam[:, None] * mb[1]  # rows
    zs = (1 - lam)[:, None] * za[0] + lam[:, None] * za[1]  # columns
    z = zs.unsqueeze(0).expand(steps, -1, -1).reshape(steps * steps, -1)
    beta = betas.unsqueeze(1).expand(-1, steps, -1).reshape(steps * steps, -1)
    imgs = common.decode_means(model, z, beta)
    return {"grid": imgs.reshape(steps, steps, *imgs.shape[1:]), "beta": betas.numpy(), "z": zs.numpy(),
            "mu_beta": mu_beta, "mu_z": z_ab}


@torch.no_grad()
def sampling_grids(model, steps: int = 7, components=None, beta_range: float = BETA_RANGE,
                   z_range: float = Z_RANGE) -> torch.Tensor:
    """One steps×steps grid per component (K×steps×steps×C×H×W): rows β from +beta_range·1 to
    −beta_range·1; columns z from μ_d(β) − z_range to μ_d(β) + z_range (all dimensions together)."""
    ks = list(range(model.K)) if components is None else list(components)
    dev = next(model.parameters()).device
    lam = torch.linspace(0, 1, steps)
    betas = (beta_range * (1 - lam) - beta_range * lam)[:, None].expand(steps, model.dim_beta).contiguous()
    means, _ = model.prior_components(betas.to(dev))  # steps×K×dz
    means = means.cpu()
    offsets = torch.linspace(-z_range, z_range, steps)
    out = []
    for k in ks:
        z = means[:, k, None, :] + offsets[None, :, None]  # rows (β) × columns (z offset) × dz
        beta = betas[:, None, :].expand(steps, steps, -1)
        imgs = common.decode_means(model, z.reshape(steps * steps, -1), beta.reshape(steps * steps, -1))
        out.append(imgs.reshape(steps, steps, *imgs.shape[1:]))
    return torch.stack(out)


def _pick_pair(dataset, batch_size: int, rng: np.random.Generator):
    """Two batches of indices: one per domain when the dataset has a ``domain`` factor, else random."""
    n = len(dataset)
    if dataset.has_factors and "domain" in dataset.factor_names:
        col = dataset.factors[:, dataset.factor_names.index("domain")].numpy()
        doms = np.unique(col)
        if len(doms) >= 2:
            a = common.random_batches(np.flatnonzero(col == doms[0]), 1, batch_size, rng)[0]
            b = common.random_batches(np.flatnonzero(col == doms[1]), 1, batch_size, rng)[0]
            names = domain_names(dataset)
            return a, b, f"batch A from domain {names.get(int(doms[0]), doms[0])!s}, batch B from " \
                         f"domain {names.get(int(doms[1]), doms[1])!s}"
    pair = common.random_batches(np.arange(n), 2, batch_size, rng)
    return pair[0], pair[1], "two random batches of the run's dataset"


def domain_names(dataset) -> dict:
    names = dataset.meta.get("domains") if isinstance(dataset.meta, dict) else None
    if names:
        return {i: str(v) for i, v in enumerate(names)}
    return {}


def _encoding_figure(res_dir, grid, img_a, img_b, title, formats):
    steps = grid.shape[0]
    fig, axes = common.new_figure(1, 3, figsize=(2 + steps * 0.9, steps * 0.9 + 0.6),
                                  gridspec_kw={"width_ratios": [1, steps, 1]})
    common.show(axes[0], common.tile(img_a[None, None]), "image a\n(batch A)")
    common.show(axes[1], common.tile(grid), None)
    common.show(axes[2], common.tile(img_b[None, None]), "image b\n(batch B)")
    axes[1].set_ylabel("global β: batch A → batch B", fontsize=9)
    axes[1].set_xlabel("local z: image a → image b", fontsize=9)
    axes[1].set_title(title, fontsize=9)
    return common.save_figure(fig, res_dir, "encoding", formats)


def _sampling_overview(res_dir, grids, ks, formats, z_range, beta_range):
    n = len(grids)
    cols = min(n, 5)
    rows = int(np.ceil(n / cols))
    steps = grids.shape[1]
    cell = 0.32 * steps
    fig, axes = common.new_figure(rows, cols, figsize=(cols * cell + 0.4, rows * (cell + 0.3) + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            common.show(ax, common.tile(grids[i]), f"component {ks[i]}")
        else:
            ax.axis("off")
    fig.suptitle(f"UG-VAE sampling: rows β = +{beta_range:g}·1 → −{beta_range:g}·1, "
                 f"columns z = μ_d(β) − {z_range:g} → + {z_range:g}", fontsize=9)
    return common.save_figure(fig, res_dir, "sampling", formats)


def run_interpolation(run, *, variant: str = "both", steps: int = 7, batch_size: int | None = None,
                      seed: int = 0, split: str | None = None, components=None,
                      formats=common.DEFAULT_FORMATS, beta_range: float = BETA_RANGE,
                      z_range: float = Z_RANGE, raw_grids: bool = False) -> common.Results:
    """Run the interpolation experiment on a UG-VAE run (a path or a loaded run).

    Figures: ``encoding`` (the encoding grid with its two source images) and ``sampling`` (one panel per
    component); ``raw_grids`` also writes each grid as a PNG at the images' own resolution."""
    if variant not in VARIANTS:
        raise VaelabError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if steps < 2:
        raise VaelabError(f"--steps must be at least 2, got {steps}")
    run = common.ugvae_run(run)
    model = run.model
    if components is not None:
        bad = [k for k in components if not 0 <= int(k) < model.K]
        if bad:
            raise VaelabError(f"component(s) {bad} out of range: the model has K = {model.K}")
    bs = int(batch_size or run.cfg.train.batch_size)
    res = common.Results(run, "interpolation", {"variant": variant, "steps": steps, "batch_size": bs,
                                                "seed": seed, "beta_range": beta_range, "z_range": z_range})
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    if variant in ("encoding", "both"):
        ds = common.run_dataset(run, split)
        common.check_images_fit(model, ds, f"dataset {ds.name!r}")
        ia, ib, how = _pick_pair(ds, bs, rng)
        xa, xb = ds.gather(torch.from_numpy(ia)), ds.gather(torch.from_numpy(ib))
        out = encoding_grid(model, xa, xb, steps)
        grid = out["grid"]
        img_a = xa[0].float() / 255.0
        img_b = xb[0].float() / 255.0
        res.figures(_encoding_figure(res.dir, grid, img_a, img_b, f"{ds.name}: {how}", formats))
        if raw_grids:
            res.figures([common.save_array_png(common.tile(grid), res.dir / "encoding_grid.png")])
        ch = grid_changes(grid)
        res["encoding"] = {**ch, "batches": how, "indices_a": ia.tolist()[:8], "indices_b": ib.tolist()[:8],
                           "beta_distance": float(np.linalg.norm(out["mu_beta"][0] - out["mu_beta"][1])),
                           "z_distance": float(np.linalg.norm(out["mu_z"][0] - out["mu_z"][1]))}
        res.summary["encoding_row_change"] = ch["row_change"]
        res.summary["encoding_col_change"] = ch["col_change"]
        res.summary["encoding_beta_distance"] = res.data["encoding"]["beta_distance"]
        if "domain" not in how:
            res.note("on a one-domain dataset two random batches have nearly the same μ_β, so the rows of the "
                     "encoding grid barely change; the sampling grids show what the global latent does")
        res.note(f"encoding grid: {how} of {bs} images ({ds.name}, split {ds.meta.get('split', split or run.cfg.data.split)}); "
                 "rows move the global latent μ_β (top: batch A, bottom: batch B), columns move the local "
                 "latent μ_z (left: image a, right: image b); π from μ_z; model in eval mode")

    if variant in ("sampling", "both"):
        ks = list(range(model.K)) if components is None else [int(k) for k in components]
        grids = sampling_grids(model, steps, ks, beta_range, z_range)
        res.figures(_sampling_overview(res.dir, grids, ks, formats, z_range, beta_range))
        per = []
        for k, g in zip(ks, grids):
            if raw_grids:
                res.figures([common.save_array_png(common.tile(g), res.dir / f"sampling_component{k:02d}.png")])
            per.append({"component": k, **grid_changes(g)})
        res["sampling"] = {"components": per}
        res.summary["sampling_row_change"] = float(np.mean([p["row_change"] for p in per]))
        res.summary["sampling_col_change"] = float(np.mean([p["col_change"] for p in per]))
        res.note(f"sampling grids: one per mixture component ({len(ks)} of K = {model.K}); rows move β from "
                 f"+{beta_range:g}·1 to −{beta_range:g}·1, columns move z from μ_d(β) − {z_range:g} to "
                 f"μ_d(β) + {z_range:g} in every dimension (reference interpolation.py)")
    res.note("row_change / col_change: mean absolute pixel change between neighbouring rows (global latent) "
             "and neighbouring columns (local latent), pixels in [0, 1]")
    res.write()
    return res
