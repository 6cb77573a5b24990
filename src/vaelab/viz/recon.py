"""Reconstructions: rows of originals, each over the row of their reconstructions (1Konny/FactorVAE), labelled."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.views import torch_generator
from ..errors import VaelabError
from . import common
from .common import to_uint8

DEFAULT_N = 32
ROW = 8  # images per row pair


def pick_images(run, n: int, seed: int = 0) -> np.ndarray:
    """``n`` dataset indices (sorted, seeded): from the run's validation split when it has one
    (images the model never trained on), else from the whole dataset."""
    ds = common.dataset_of(run)
    pool = np.arange(len(ds))
    frac = float(run.cfg.data.val_fraction or 0.0)
    if frac > 0:
        from ..data.splits import train_val_split

        _, val = train_val_split(len(ds), frac, run.cfg.train.seed)
        if len(val) >= n:
            pool = np.asarray(val)
    if n > len(pool):
        raise VaelabError(f"asked for {n} images but the dataset has {len(pool):,}")
    return np.sort(np.random.default_rng(seed).choice(pool, size=n, replace=False))


@torch.no_grad()
def reconstructions(run, images_u8) -> np.ndarray:
    """uint8 mean images decoded from the posterior mean of uint8 ``images_u8`` (one batch; UG-VAE
    uses the batch's posterior-mean β)."""
    x = torch.as_tensor(images_u8).to(run.device).float().div_(255.0)
    return to_uint8(run.model.reconstruct(x))


ROW_LABELS = ("data", "recon")  # written left of each row of originals and of reconstructions


def pairs_grid(originals: np.ndarray, recons: np.ndarray, per_row: int = ROW, labels: bool = True) -> np.ndarray:
    """Rows of up to ``per_row`` originals, each directly above its reconstructions; with ``labels`` a
    left margin says which row is which (``data`` / ``recon``)."""
    n = len(originals)
    per_row = max(1, min(per_row, n))
    blank = np.full((1, *originals.shape[1:]), 255, np.uint8)
    cells = []
    for a in range(0, n, per_row):
        o, r = originals[a:a + per_row], recons[a:a + per_row]
        fill = np.repeat(blank, per_row - len(o), axis=0)
        cells += [o, fill, r, fill]
    g = common.grid(np.concatenate(cells), nrow=per_row)
    if not labels:
        return g
    h, w = originals.shape[2:4]
    left = max(common.text_width(t) for t in ROW_LABELS) + 6
    texts = []
    for i in range(2 * (-(-n // per_row))):  # row pairs: originals, then their reconstructions
        y0, _ = common.cell_origin(i, 0, h, w)
        texts.append((3, y0 + max(0, h // 2 - 6), ROW_LABELS[i % 2]))
    return common.add_margins(g, left=left, texts=texts)


def reconstruction_grid(run, n: int = DEFAULT_N, indices=None, seed: int = 0,
                        per_row: int = ROW) -> tuple[np.ndarray, np.ndarray]:
    """(grid ``H x W x 3``, dataset indices shown)."""
    ds = common.dataset_of(run)
    if indices is None:
        if n < 1:
            raise VaelabError(f"--n must be at least 1, got {n}")
        indices = pick_images(run, n, seed)
    indices = np.asarray(indices, dtype=np.int64)
    for i in indices:
        common.check_index(int(i), len(ds))
    x = ds.gather(torch.from_numpy(indices), torch_generator(seed)).numpy()
    return pairs_grid(x, reconstructions(run, x), per_row), indices


def write_reconstruction(run, out=None, n: int = DEFAULT_N, indices=None, seed: int = 0) -> Path:
    g, _ = reconstruction_grid(run, n, indices, seed)
    return common.save_png(g, common.out_dir(run, out) / f"reconstruct_{common.step_tag(run.step)}.png")
