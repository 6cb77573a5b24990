"""k-fold cross-validation: K models, each validated on the one fold it never trained on.

(scarletteshu/Pytorch-bcvae rotated its validation fold every epoch while one model kept training, so every fold
was trained on; docs/recipes.md#upstream-quirks.) Each fold is an ordinary run folder ``RUN/fold-<k>``; the summary
``RUN/folds.json`` holds every fold's final validation terms and their mean and std.
"""
from __future__ import annotations

import json

import numpy as np

from ..config import Config
from ..data.prepare import atomic_write_bytes
from ..data.splits import kfold_indices
from ..paths import require_folder
from .lock import claim_folder
from .trainer import RUN_DIR, Trainer, default_run_dir, load_dataset


def run_folds(cfg: Config, *, quiet: bool = False, resume: bool = False) -> dict:
    root = default_run_dir(cfg)
    require_folder(root, RUN_DIR, "the k-fold runs")
    dataset = load_dataset(cfg)  # (before the folder is made: a bad data root leaves nothing behind)
    lock = claim_folder(root, "the k-fold runs", RUN_DIR)  # a new, empty or vaelab folder; one writer
    try:
        return _run_folds(cfg, root, dataset, quiet=quiet, resume=resume)
    finally:
        lock.release()


def _run_folds(cfg: Config, root, dataset, *, quiet: bool, resume: bool) -> dict:
    k = cfg.train.folds
    atomic_write_bytes(root / "config.toml", cfg.to_toml().encode())
    folds = kfold_indices(len(dataset), k, cfg.train.seed)
    results = []
    for i, (train_idx, val_idx) in enumerate(folds):
        fold_cfg = Config.from_dict(cfg.to_dict()).validate()
        fold_cfg.train.folds = 0
        fold_dir = root / f"fold-{i}"
        fold_cfg.train.out = str(fold_dir)
        done = fold_dir.exists() and (fold_dir / "checkpoints").exists()
        trainer = Trainer(fold_cfg, run_dir=fold_dir, resume=resume and done, quiet=quiet, dataset=dataset,
                          train_indices=train_idx, val_indices=val_idx)
        try:
            trainer.fit()
            val = trainer.validate()
        finally:
            trainer.close()
        results.append({"fold": i, "train_size": len(train_idx), "val_size": len(val_idx), **val})
        if not quiet:
            print(f"fold {i}: " + "  ".join(f"{k}={v:.6g}" for k, v in val.items() if k == "val.loss"))
    keys = sorted({k for r in results for k in r if k.startswith("val.")})
    summary = {"folds": results,
               "mean": {k: float(np.mean([r[k] for r in results])) for k in keys},
               "std": {k: float(np.std([r[k] for r in results], ddof=1)) for k in keys}}
    atomic_write_bytes(root / "folds.json", json.dumps(summary, indent=1).encode())
    if not quiet:
        m, s = summary["mean"].get("val.loss"), summary["std"].get("val.loss")
        if m is not None:
            print(f"{k}-fold cross-validation: val.loss = {m:.6g} +- {s:.3g}  ({root / 'folds.json'})")
    return summary
