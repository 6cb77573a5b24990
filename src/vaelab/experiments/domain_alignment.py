"""UG-VAE domain alignment (paper §4.2; docs/experiments.md#domain-alignment; ipeis/UG-VAE ``experiments/domain_alignment.py``).

On a two-domain dataset, encode one-domain batches (half from each domain) and mixed batches (each image's
domain with p ½) to their global means μ_β; map them in 2-D (t-SNE or PCA) coloured by domain, with the
interpolation path between two more batches (one per domain; the grid of that interpolation is saved too).

Numbers:
* ``domain_accuracy``: cross-validated accuracy (stratified 5-fold, StandardScaler + logistic regression)
  of telling the domain of a one-domain batch from μ_β, against ``random_label_accuracy``, the same with
  the labels randomly permuted (and ``chance``, the majority rate);
* held-out SVM accuracies (the protocol of docs/experiments.md#classifier-protocol) of the same task;
* ``mixed_position``: where mixed batches fall on the line between the two domains' mean μ_β
  (0 = domain A's mean, 1 = domain B's), and its correlation with each mixed batch's fraction of B images.

Domains: the run's own dataset when it has a ``domain`` factor (celeba_faces, cars_chairs,
mnist_inverted_mix, ...); ``domains=[A, B]`` names two datasets (``NAME``, ``NAME=ROOT``, or
``NAME-inverted`` for 255 − images); an MNIST run without a second domain gets MNIST vs inverted MNIST.
Mode ``reference`` reproduces the reference's map: mixed batches only, each labelled by its first image.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import VaelabError
from . import common
from .interpolation import encoding_grid, grid_changes

MODES = ("single_domain", "reference")
_INVERTED_SUFFIXES = ("-inverted", "_inverted")


# ---------------------------------------------------------------------------------------------- domains

def _to_model_images(ds, model, name: str, notes: list) -> torch.Tensor:
    """The dataset's images with the model's channels and size (grey <-> RGB, area resize), noted."""
    x = ds.images if ds.view is None else ds.gather(slice(None))  # a view: every image shown once
    c, h, w = model.image_shape
    if x.shape[1] != c:
        if x.shape[1] == 1 and c == 3:
            x = x.expand(-1, 3, -1, -1)
            notes.append(f"{name}: grey images repeated to 3 channels for the model")
        elif x.shape[1] == 3 and c == 1:
            x = x.float().mean(1, keepdim=True).round().to(torch.uint8)
            notes.append(f"{name}: RGB images averaged to grey for the model")
        else:
            raise VaelabError(f"{name}: {x.shape[1]}-channel images cannot feed a {c}-channel model")
    if tuple(x.shape[2:]) != (h, w):
        out = []
        for s in range(0, len(x), 4096):
            xb = x[s:s + 4096].float()
            out.append(torch.nn.functional.interpolate(xb, size=(h, w), mode="area").round().clamp(0, 255)
                       .to(torch.uint8))
        notes.append(f"{name}: images resized from {tuple(x.shape[2:])} to {(h, w)} (area) for the model")
        x = torch.cat(out)
    return x.contiguous()


def _load_named(spec: str, run, split: str, notes: list):
    """One domain from ``NAME``, ``NAME=ROOT`` or ``NAME-inverted`` (255 − images)."""
    from .. import data

    name, _, root = spec.partition("=")
    name = name.strip()
    inverted = False
    for suf in _INVERTED_SUFFIXES:
        if name.endswith(suf):
            name, inverted = name[: -len(suf)], True
            break
    if not name:
        raise VaelabError(f"--domains: empty dataset name in {spec!r}")
    run_name = run.cfg.data.name
    if not root and run.cfg.data.root and (run_name == name or run_name.startswith(name + "_")):
        root = run.cfg.data.root  # same source as the run's data (e.g. mnist for mnist_inverted_mix)
    data.get(name)  # unknown names: one line with the closest match
    errors = []
    ds = None
    for sp in dict.fromkeys((split, "all", "train")):
        try:
            ds = data.load(name, root=root or None, split=sp)
            if sp != split:
                notes.append(f"{name}: split {split!r} unavailable, used {sp!r}")
            break
        except VaelabError as e:
            errors.append(e)
            if "split" not in str(e):
                break
    if ds is None:
        raise errors[0]
    label = name + ("-inverted" if inverted else "")
    return ds, inverted, label


def resolve_domains(run, domains=None, split: str | None = None):
    """Images (uint8, the model's shape), domain label per image (0/1), the two names, the source name and
    notes."""
    model = run.model
    notes: list[str] = []
    split = split or run.cfg.data.split
    if domains is None:
        ds = common.run_dataset(run, split)
        if ds.has_factors and "domain" in ds.factor_names:
            dom = ds.factors[:, ds.factor_names.index("domain")].numpy()
            names = list(ds.meta.get("domains") or ["domain 0", "domain 1"])
            if len(np.unique(dom)) != 2:
                raise VaelabError(f"dataset {ds.name!r} must hold exactly two domains, found {len(np.unique(dom))}")
            notes.append(f"domains from the run's own dataset {ds.name!r} (split {split}): "
                         f"{names[0]} vs {names[1]}")
            return _to_model_images(ds, model, ds.name, notes), dom.astype(np.int64), names[:2], ds.name, notes
        if ds.name == "mnist" or (ds.has_factors and ds.factor_names == ["digit"]):
            domains = ["mnist", "mnist-inverted"]
            notes.append("the run's dataset has one domain; no second real dataset here, so domain B is "
                         "built from it: MNIST vs inverted MNIST (255 − x, as the mnist_inverted_mix dataset)"
                         + ("" if run.cfg.data.name.startswith("mnist_inverted") else
                            "; the model was trained on plain MNIST only, so domain B is out of its training "
                            "distribution"))
        else:
            raise VaelabError(f"the run's dataset {ds.name!r} has no 'domain' factor; name two datasets with "
                              f"--domains A,B (e.g. --domains {ds.name},{ds.name}-inverted)")
    if len(domains) != 2:
        raise VaelabError(f"domain alignment needs exactly two domains, got {len(domains)}")
    loaded = []
    for spec in domains:
        ds, inverted, label = _load_named(spec, run, split, notes)
        x = _to_model_images(ds, model, label, notes)
        if inverted:
            x = 255 - x
        loaded.append((x, label))
    (xa, na), (xb, nb) = loaded
    if na == nb:
        nb = nb + " (2)"
    images = torch.cat([xa, xb])
    dom = np.concatenate([np.zeros(len(xa), np.int64), np.ones(len(xb), np.int64)])
    notes.append(f"domains named: {na} ({len(xa):,} images) vs {nb} ({len(xb):,} images)")
    return images, dom, [na, nb], f"{na}+{nb}", notes


# ---------------------------------------------------------------------------------------------- experiment

def _line_position(points, mean_a, mean_b):
    d = mean_b - mean_a
    denom = float(d @ d)
    if denom <= 0:
        return np.full(len(points), np.nan)
    return (points - mean_a) @ d / denom


def run_domain_alignment(run, *, domains=None, n_batches: int = 100, mixed_batches: int = 50,
                         batch_size: int | None = None, steps: int = 7, embed: str = "tsne",
                         mode: str = "single_domain", seed: int = 0, split: str | None = None,
                         formats=common.DEFAULT_FORMATS) -> common.Results:
    """Run the domain-alignment experiment on a UG-VAE run (a path or a loaded run)."""
    if mode not in MODES:
        raise VaelabError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if steps < 2:
        raise VaelabError(f"--steps must be at least 2, got {steps}")
    if n_batches < 4:
        raise VaelabError(f"--batches must be at least 4 (two per domain for the classifier), got {n_batches}")
    if mixed_batches < 0:
        raise VaelabError(f"--mixed-batches must be >= 0, got {mixed_batches}")
    run = common.ugvae_run(run)
    model = run.model
    bs = int(batch_size or run.cfg.train.batch_size)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    images, dom, names, source, notes = resolve_domains(run, domains, split)
    res = common.Results(run, "domain_alignment", {
        "domains": names, "source": source, "mode": mode, "batches": n_batches, "mixed_batches": mixed_batches,
        "batch_size": bs, "steps": steps, "embed": embed, "seed": seed})
    for n in notes:
        res.note(n)
    pools = [np.flatnonzero(dom == d) for d in (0, 1)]
    for d, pool in enumerate(pools):
        if len(pool) < bs:
            res.note(f"domain {names[d]} has {len(pool)} images, fewer than a batch of {bs}: batches drawn "
                     f"with replacement")

    def mixed(n):
        out = np.empty((n, bs), np.int64)
        frac = np.empty(n)
        for i in range(n):
            which = rng.integers(0, 2, size=bs)  # each image's domain with p 1/2 (reference mixed batches)
            for d in (0, 1):
                sel = which == d
                out[i, sel] = pools[d][rng.integers(len(pools[d]), size=int(sel.sum()))]
            frac[i] = which.mean()
        return out, frac

    if mode == "single_domain":
        na = n_batches // 2
        single = np.concatenate([common.random_batches(pools[0], na, bs, rng),
                                 common.random_batches(pools[1], n_batches - na, bs, rng)])
        single_lab = np.concatenate([np.zeros(na, np.int64), np.ones(n_batches - na, np.int64)])
        mix, mix_frac = mixed(int(mixed_batches))
    else:  # reference: mixed batches only, each labelled by its first image's domain
        single, _ = mixed(n_batches)
        single_lab = dom[single[:, 0]]
        mix, mix_frac = np.zeros((0, bs), np.int64), np.zeros(0)
        res.note("mode 'reference': the map batches are mixed (each image's domain with p 1/2) and labelled by "
                 "their first image, as ipeis/UG-VAE does; the label says little about the batch, so the "
                 "classifier is expected near chance")
    pair = [common.random_batches(pools[d], 1, bs, rng)[0] for d in (0, 1)]

    enc = common.encode_batches(model, images, np.concatenate([single, mix]) if len(mix) else single)
    mb_single = enc["mu_beta"][: len(single)]
    mb_mix = enc["mu_beta"][len(single):]

    # numbers
    cv = common.cv_accuracy(mb_single, single_lab, folds=5, seed=seed)
    svm = common.holdout_svm(mb_single, single_lab)
    res["classifier"] = {"cross_validated": cv, "svm_holdout": svm,
                         "task": "domain of a batch from its global mean μ_β"}
    res.summary["domain_accuracy"] = cv.get("accuracy")
    res.summary["random_label_accuracy"] = cv.get("random_labels")
    res.summary["chance"] = cv.get("chance")
    res.summary["svm_linear_test"] = svm.get("linear_test")
    res.summary["svm_rbf_test"] = svm.get("rbf_test")
    ma, mb_ = mb_single[single_lab == 0].mean(0), mb_single[single_lab == 1].mean(0)
    spread = float(np.mean([np.linalg.norm(mb_single[single_lab == d] - m, axis=1).mean()
                            for d, m in ((0, ma), (1, mb_))]))
    res.summary["domain_mean_distance"] = float(np.linalg.norm(mb_ - ma))
    res.summary["within_domain_spread"] = spread
    if len(mb_mix) and mode == "single_domain":
        pos = _line_position(mb_mix, ma, mb_)
        res.summary["mixed_position"] = float(np.mean(pos))
        res["mixed"] = {"position_mean": float(np.mean(pos)), "position_std": float(np.std(pos)),
                        "fraction_b_mean": float(np.mean(mix_frac)),
                        "corr_position_fraction_b": float(np.corrcoef(pos, mix_frac)[0, 1])
                        if len(pos) > 2 and np.std(pos) > 0 and np.std(mix_frac) > 0 else None}
        res.note("mixed_position: mean position of the mixed batches on the line from domain A's mean μ_β (0) to "
                 "domain B's (1); about 0.5 when the global latent encodes the batch's domain mix")
    res.note(f"domain_accuracy: {cv.get('folds', '?')}-fold cross-validated accuracy (StandardScaler + logistic "
             f"regression) on the one-domain batches' μ_β; random_label_accuracy: the same with the labels "
             f"permuted at random (mean of 5 draws); svm_*_test: the protocol of docs/experiments.md#classifier-protocol (StandardScaler + SVC, "
             f"train_test_split(test_size=0.2, random_state=42))")

    # interpolation between one batch of each domain
    ia, ib = pair
    out = encoding_grid(model, images[torch.from_numpy(ia)], images[torch.from_numpy(ib)], steps)
    grid = out["grid"]
    fig, ax = common.new_figure(1, 1, figsize=(steps * 0.9 + 0.4, steps * 0.9 + 0.6))
    common.show(ax, common.tile(grid), f"{names[0]} → {names[1]}")
    ax.set_ylabel(f"global β: {names[0]} batch → {names[1]} batch", fontsize=8)
    ax.set_xlabel("local z: first image of each batch", fontsize=8)
    res.figures(common.save_figure(fig, res.dir, "interpolation", formats))
    res["interpolation"] = grid_changes(grid)

    # map
    path = out["beta"]
    allpts = np.concatenate([mb_single, mb_mix, path]) if len(mb_mix) else np.concatenate([mb_single, path])
    emb = common.embed_2d(allpts, embed, seed)
    e_single = emb[: len(mb_single)]
    e_mix = emb[len(mb_single): len(mb_single) + len(mb_mix)]
    e_path = emb[len(emb) - len(path):]
    fig, ax = common.new_figure(1, 1, figsize=(6, 5))
    labels = np.array([names[d] for d in single_lab], dtype=object)
    if len(e_mix):
        pts = np.concatenate([e_single, e_mix])
        labels = np.concatenate([labels, np.array(["mixed"] * len(e_mix), dtype=object)])
    else:
        pts = e_single
    order = [names[0], names[1], "mixed"]
    common.scatter_by_label(ax, pts, labels, order=order)
    ax.plot(e_path[:, 0], e_path[:, 1], "-o", color="black", ms=4, lw=1.2, label="interpolation")
    ax.annotate("A", e_path[0], fontsize=9, weight="bold")
    ax.annotate("B", e_path[-1], fontsize=9, weight="bold")
    lab = "single-domain" if mode == "single_domain" else "first-image-labelled (reference)"
    ax.set_title(f"μ_β of {len(single)} {lab} batches"
                 + (f" + {len(e_mix)} mixed" if len(e_mix) else "")
                 + f" ({ {'tsne': 't-SNE', 'pca': 'PCA'}.get(embed, embed)})\ndomain accuracy {cv.get('accuracy', float('nan')):.2f} "
                   f"(random labels {cv.get('random_labels', float('nan')):.2f})", fontsize=9)
    ax.legend(fontsize=7, loc="best", framealpha=0.7)
    res.figures(common.save_figure(fig, res.dir, "domain_map", formats))
    res.write()
    return res
