"""Decoded draws from the prior.

VAEs: ``n`` codes z ~ N(0, I), decoded to mean images, in a square-ish grid.
UG-VAE (docs/objectives.md#ug-vae): one global β ~ N(0, I) shared by all images; row k holds draws
z ~ p(z | d = k, β) of mixture component k, decoded with that β.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError
from . import common
from .common import add_margins, to_uint8

DEFAULT_N = 64  # 8 x 8, the usual sample grid (UG-VAE reference: 64 per component)
PER_COMPONENT = 8  # UG-VAE: draws per component row
MAX_N = 4096  # one picture: 64 x 64 cells (about 4,200 pixels a side at 64 x 64 images)
BATCH = 512  # codes decoded at a time


@torch.no_grad()
def sample_grid(run, n: int = DEFAULT_N, seed: int = 0, per_component: int = PER_COMPONENT) -> np.ndarray:
    """The sample picture as an ``H x W x 3`` uint8 array (seeded; the global RNG is untouched)."""
    if n < 1 or per_component < 1:
        raise VaelabError("the number of samples must be at least 1")
    model = run.model
    total = n if not model.mixture_prior else per_component * int(model.K)
    if total > MAX_N:
        what = f"{n:,} samples" if not model.mixture_prior else f"{per_component:,} per component x {int(model.K)}"
        raise VaelabError(f"{what} is too many for one picture: at most {MAX_N:,} images; ask for fewer "
                          f"(several seeds give more)")
    g = torch.Generator(device=run.device).manual_seed(seed)
    if not model.mixture_prior:
        z = torch.randn(n, run.latent_dim, generator=g, device=run.device)
        images = np.concatenate([to_uint8(run.decode(z[i:i + BATCH])) for i in range(0, n, BATCH)])
        return common.grid(images, nrow=math.ceil(math.sqrt(n)))
    imgs = to_uint8(model.sample(per_component, generator=g))  # K×n×C×H×W
    k, m = imgs.shape[:2]
    body = common.grid(imgs.reshape(k * m, *imgs.shape[2:]), nrow=m)
    h, w = imgs.shape[-2:]
    left = common.text_width(f"d={k - 1}") + 8
    texts = [(4, common.cell_origin(i, 0, h, w)[0] + h // 2 - 5, f"d={i}") for i in range(k)]
    return add_margins(body, left=left, texts=texts)


def write_samples(run, out=None, n: int = DEFAULT_N, seed: int = 0, per_component: int = PER_COMPONENT) -> Path:
    g = sample_grid(run, n, seed, per_component)
    return common.save_png(g, common.out_dir(run, out) / f"sample_{common.step_tag(run.step)}.png")
