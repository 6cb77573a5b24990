"""Pictures during training: what the trainer writes to images/ and TensorBoard every m steps."""
from __future__ import annotations

import numpy as np
import torch

from . import traverse as tv
from .common import to_uint8
from .recon import pairs_grid

LIVE_STEPS = 10  # traversal values, -3..3 as the command's default
LIVE_ROWS = 16  # at most this many latents (the highest-KL ones) in the live traversal


@torch.no_grad()
def training_images(model, images_uint8, device) -> dict[str, np.ndarray]:
    """``{"reconstruction", "traversal"}`` -> ``H x W x 3`` uint8 pictures of ``model`` on a few images.

    * reconstruction: the images (one row) over their reconstructions from the posterior mean;
    * traversal: the first image's posterior mean, one row per latent (sorted by the batch's per-latent
      KL, written beside each row; the 16 highest-KL latents of larger models), values -3..3.

    No randomness is used (the global torch RNG is untouched); the model is put in eval mode and back."""
    was_training = model.training
    model.eval()
    try:
        x_u8 = torch.as_tensor(images_uint8)
        if x_u8.ndim == 3:
            x_u8 = x_u8.unsqueeze(1)
        x = x_u8.to(device).float().div_(255.0)
        mu, logvar = model.encode(x)
        kl, beta = tv.kl_per_latent(model, x, mu, logvar)
        if beta is None:
            recon = model.mean_image(model.decode(mu))
        else:
            recon = model.mean_image(model.decode(mu, beta))
        originals = x_u8.cpu().numpy()
        pictures = {"reconstruction": pairs_grid(originals, to_uint8(recon), per_row=len(originals))}

        def decode(z: np.ndarray) -> np.ndarray:
            zt = torch.as_tensor(z, device=device)
            o = model.decode(zt) if beta is None else model.decode(zt, beta)
            return to_uint8(model.mean_image(o))

        origin = tv.Origin("live", "image 0", mu[0].float().cpu().numpy())
        kl = kl.double().cpu().numpy()
        dims = sorted(range(len(kl)), key=lambda j: (-kl[j], j))[:LIVE_ROWS]
        t = tv.build_traversal(decode, int(model.latent_dim), origin, tv.traversal_values(steps=LIVE_STEPS),
                               dims, kl)
        pictures["traversal"] = t.image
        return pictures
    finally:
        model.train(was_training)
