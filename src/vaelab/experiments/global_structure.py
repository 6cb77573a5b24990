"""What UG-VAE's global latent captures (paper §4.3; docs/experiments.md).

(a) ``attributes`` (ipeis/UG-VAE ``experiments/celeba_attributes.py``): batches whose images all have an attribute
    (default ``Male``), batches whose images all lack it, and random batches -> global means μ_β (π from μ_z);
    2-D map; StandardScaler + SVC (linear; RBF with gamma 1/n_features),
    ``train_test_split(test_size=0.2, random_state=42)``, for attribute vs not and for the three classes.
    Batches are drawn at random from the run's split (the reference takes them in file order:
    a documented defect).
(b) ``series`` (ipeis/UG-VAE ``experiments/mnist_series.py``): MNIST batches whose digits follow a rule (even, odd,
    Fibonacci, primes; :mod:`vaelab.experiments.series`) vs random batches; 2-D maps of local means μ_z
    (coloured by digit) and global means μ_β (coloured by rule); classifiers for rule vs random and for the
    five classes, held out (the protocol of docs/experiments.md#classifier-protocol) and 5-fold cross-validated with a random-label baseline.

``kind = "auto"`` picks (b) for a dataset with a ``digit`` factor and (a) for one with the attribute.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import VaelabError, closest
from . import common
from .series import RULES, SeriesSampler

KINDS = ("auto", "attributes", "series")
DEFAULT_RANDOM = {"attributes": 300, "series": 400}  # reference: 300 random CelebA batches, 400 MNIST


def pick_kind(ds, kind: str, attribute: str) -> str:
    if kind not in KINDS:
        raise VaelabError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    names = ds.factor_names if ds.has_factors else []
    if kind == "auto":
        if "digit" in names:
            return "series"
        if attribute in names:
            return "attributes"
        raise VaelabError(f"dataset {ds.name!r} has neither a 'digit' factor (MNIST series) nor the attribute "
                          f"{attribute!r}{closest(attribute, names)}; choose --kind and --attribute")
    if kind == "series" and "digit" not in names:
        raise VaelabError(f"--kind series needs MNIST digit labels; dataset {ds.name!r} has no 'digit' factor")
    if kind == "attributes" and attribute not in names:
        raise VaelabError(f"dataset {ds.name!r} has no attribute {attribute!r}{closest(attribute, names)}")
    return kind


def _classify(res: common.Results, key: str, x, y, seed: int):
    svm = common.holdout_svm(x, y)
    cv = common.cv_accuracy(x, y, folds=5, seed=seed)
    res[key] = {"svm_holdout": svm, "cross_validated": cv}
    return svm, cv


def _embed_title(embed: str) -> str:
    return {"tsne": "t-SNE", "pca": "PCA"}.get(embed, embed)


def run_global_structure(run, *, kind: str = "auto", attribute: str = "Male", attribute_batches: int = 100,
                         series_batches: int = 200, random_batches: int | None = None,
                         local_points: int = 1000, batch_size: int | None = None, embed: str = "tsne",
                         seed: int = 0, split: str | None = None,
                         formats=common.DEFAULT_FORMATS) -> common.Results:
    """Run the global-structure experiment on a UG-VAE run (a path or a loaded run)."""
    run = common.ugvae_run(run)
    model = run.model
    ds = common.run_dataset(run, split)
    common.check_images_fit(model, ds, f"dataset {ds.name!r}")
    kind = pick_kind(ds, kind, attribute)
    n_random = int(random_batches if random_batches is not None else DEFAULT_RANDOM[kind])
    bs = int(batch_size or run.cfg.train.batch_size)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = {"kind": kind, "batch_size": bs, "random_batches": n_random, "embed": embed, "seed": seed,
              "split": ds.meta.get("split", split or run.cfg.data.split), "dataset": ds.name}
    if kind == "attributes":
        params.update(attribute=attribute, attribute_batches=attribute_batches)
    else:
        params.update(series_batches=series_batches, local_points=local_points, rules=list(RULES))
    res = common.Results(run, "global_structure", params)
    if kind == "attributes":
        _attributes(res, ds, model, attribute, int(attribute_batches), n_random, bs, rng, embed, seed, formats)
    else:
        _series(res, ds, model, int(series_batches), n_random, int(local_points), bs, rng, embed, seed, formats)
    res.note("the global posterior pools per-image contributions (a product of Gaussians), so μ_β depends on the "
             "batch's set of images, not on their order")
    res.write()
    return res


# ---------------------------------------------------------------------------------------------- (a)

def _attributes(res, ds, model, attribute, n_attr, n_random, bs, rng, embed, seed, formats):
    col = ds.factors[:, ds.factor_names.index(attribute)].numpy()
    pos, neg = np.flatnonzero(col == 1), np.flatnonzero(col == 0)
    if len(pos) == 0 or len(neg) == 0:
        raise VaelabError(f"every image of {ds.name!r} has the same {attribute!r} value: nothing to compare")
    for what, pool in ((attribute, pos), (f"not {attribute}", neg), ("all", np.arange(len(ds)))):
        if len(pool) < bs:
            res.note(f"only {len(pool)} images for '{what}' batches, fewer than a batch of {bs}: images drawn "
                     f"with replacement")
    b_rand = common.random_batches(np.arange(len(ds)), n_random, bs, rng)
    b_pos = common.random_batches(pos, n_attr, bs, rng)
    b_neg = common.random_batches(neg, n_attr, bs, rng)
    enc = common.encode_batches(model, ds, np.concatenate([b_rand, b_pos, b_neg]))
    mb = enc["mu_beta"]
    lab = np.concatenate([np.zeros(n_random, np.int64), np.ones(n_attr, np.int64), np.full(n_attr, 2, np.int64)])
    names = {0: "random", 1: attribute, 2: f"not {attribute}"}

    two = lab > 0
    svm2, cv2 = _classify(res, "two_class", mb[two], lab[two], seed)
    svm3, cv3 = _classify(res, "three_class", mb, lab, seed)
    res.summary.update({
        "attribute_linear_train": svm2.get("linear_train"), "attribute_linear_test": svm2.get("linear_test"),
        "attribute_rbf_train": svm2.get("rbf_train"), "attribute_rbf_test": svm2.get("rbf_test"),
        "attribute_chance_test": svm2.get("chance_test"),
        "attribute_cv_accuracy": cv2.get("accuracy"), "attribute_cv_random_labels": cv2.get("random_labels"),
        "three_class_linear_test": svm3.get("linear_test"), "three_class_rbf_test": svm3.get("rbf_test"),
        "three_class_chance_test": svm3.get("chance_test"),
    })
    res.note(f"(a) attributes: {n_attr} batches of {attribute} = 1, {n_attr} of {attribute} = -1 and {n_random} random "
             f"batches of {bs} from {ds.name} ({len(ds):,} images), drawn at random (the reference takes file order)")
    res.note("accuracies: StandardScaler + SVC (linear; RBF gamma 1/n_features), held-out "
             "train_test_split(test_size=0.2, random_state=42) as the reference; *_cv_*: 5-fold cross-validated "
             "logistic regression and the same with permuted labels")
    res.note("reference (CelebA, 20/50/20, 20 epochs): two-class 100 % train / 85 % test; three classes linear "
             "84/66 %, RBF 89/63 % (docs/targets.md#targets, code comments)")

    emb = common.embed_2d(mb, embed, seed)
    fig, ax = common.new_figure(1, 1, figsize=(6, 5))
    common.scatter_by_label(ax, emb, np.array([names[v] for v in lab], dtype=object),
                            order=["random", attribute, f"not {attribute}"], size=10)
    ax.set_title(f"global means μ_β ({_embed_title(embed)}), batches of {bs}\n{attribute} vs not: linear SVM test "
                 f"{svm2.get('linear_test', float('nan')):.2f} (chance {svm2.get('chance_test', float('nan')):.2f})",
                 fontsize=9)
    res.figures(common.save_figure(fig, res.dir, "global_map", formats))


# ---------------------------------------------------------------------------------------------- (b)

def _series(res, ds, model, n_series, n_random, n_local, bs, rng, embed, seed, formats):
    labels = ds.factors[:, ds.factor_names.index("digit")].numpy()
    sampler = SeriesSampler(labels, RULES, batch_size=bs)
    b_ser, d_ser, r_ser = sampler.batches(n_series, rng)
    b_rand = common.random_batches(np.arange(len(ds)), n_random, bs, rng)
    enc = common.encode_batches(model, ds, np.concatenate([b_ser, b_rand]))
    mb = enc["mu_beta"]
    rule_names = ["random", *RULES]
    rule_lab = np.concatenate([np.array([1 + RULES.index(r) for r in r_ser], np.int64),
                               np.zeros(n_random, np.int64)])
    is_series = (rule_lab > 0).astype(np.int64)

    svm2, cv2 = _classify(res, "series_vs_random", mb, is_series, seed)
    svm5, cv5 = _classify(res, "five_class", mb, rule_lab, seed)
    svm4, cv4 = (_classify(res, "rule_among_series", mb[is_series == 1], rule_lab[is_series == 1], seed)
                 if len(np.unique(r_ser)) > 1 else ({}, {}))
    res.summary.update({
        "series_linear_train": svm2.get("linear_train"), "series_linear_test": svm2.get("linear_test"),
        "series_rbf_train": svm2.get("rbf_train"), "series_rbf_test": svm2.get("rbf_test"),
        "series_chance_test": svm2.get("chance_test"),
        "series_cv_accuracy": cv2.get("accuracy"), "series_cv_random_labels": cv2.get("random_labels"),
        "series_cv_chance": cv2.get("chance"),
        "five_class_linear_test": svm5.get("linear_test"), "five_class_rbf_test": svm5.get("rbf_test"),
        "five_class_chance_test": svm5.get("chance_test"),
        "rule_cv_accuracy": cv4.get("accuracy"), "rule_cv_random_labels": cv4.get("random_labels"),
    })
    counts = {r: int(sum(1 for x in r_ser if x == r)) for r in RULES}
    res["batches"] = {"series": counts, "random": n_random}
    res.note(f"(b) MNIST series: {n_series} series batches ({', '.join(f'{k} {v}' for k, v in counts.items())}) and "
             f"{n_random} random batches of {bs} images from {ds.name} split "
             f"{ds.meta.get('split', '?')} ({len(ds):,} images); each series batch is 128 consecutive digits "
             "(wrapping) of a rule's first 256 stream digits, each digit a random MNIST image of that class")
    res.note("series_* : rule (any) vs random batch from μ_β. *_linear_/*_rbf_test: held-out accuracy, "
             "StandardScaler + SVC, train_test_split(test_size=0.2, random_state=42) (docs/experiments.md#classifier-protocol); *_chance_test: "
             "majority-class rate of that test set. series_cv_accuracy: 5-fold cross-validated logistic "
             "regression; series_cv_random_labels: the same with permuted labels. five_class: random / even / "
             "odd / Fibonacci / primes; rule_cv: which rule, among series batches only")

    # maps: local means of the first series images (by digit), global means (by rule)
    mz = enc["mu_z"][:n_series].reshape(-1, enc["mu_z"].shape[-1])[:n_local]
    dz = d_ser.reshape(-1)[:n_local]
    e_local = common.embed_2d(mz, embed, seed)
    e_global = common.embed_2d(mb, embed, seed)
    fig, axes = common.new_figure(1, 2, figsize=(11, 5))
    common.scatter_by_label(axes[0], e_local, dz, order=list(range(10)), size=6)
    axes[0].set_title(f"local means μ_z of {len(mz)} series images ({_embed_title(embed)}), by digit", fontsize=9)
    common.scatter_by_label(axes[1], e_global, np.array([rule_names[v] for v in rule_lab], dtype=object),
                            order=rule_names, size=10,
                            colors={"random": "#bbbbbb", "even": "#1f77b4", "odd": "#d62728",
                                    "fibonacci": "#2ca02c", "primes": "#ff7f0e"})
    axes[1].set_title(f"global means μ_β of {len(mb)} batches ({_embed_title(embed)}), by rule\nseries vs random: "
                      f"linear SVM test {svm2.get('linear_test', float('nan')):.2f}, RBF "
                      f"{svm2.get('rbf_test', float('nan')):.2f} (chance {svm2.get('chance_test', float('nan')):.2f})",
                      fontsize=9)
    res.figures(common.save_figure(fig, res.dir, "series_maps", formats))
