"""InfoVAE with the MMD divergence (MMD-VAE) as a vaelab plugin: this file is all of it.

Zhao, Song & Ermon, "InfoVAE: Balancing Learning and Inference in Variational Autoencoders", AAAI 2019
(arXiv:1706.02262), section 4 ("The InfoVAE model family"): the ELBO's KL term reweighted and a
divergence between the aggregate posterior q(z) and the prior p(z) added,

    loss = recon + (1 − α)·KL(q(z|x) ‖ p(z)) + (α + λ − 1)·D(q(z) ‖ p(z)),

the paper's objective with its sign flipped (vaelab minimises), reduced as every vaelab loss: summed
over pixels and latents, averaged over the batch. α = 0, λ = 1 is the plain VAE; α = 1 drops the KL
term and leaves λ·D (the paper's MMD-VAE). D is the squared maximum mean discrepancy between the
batch's posterior samples z_i ~ q(z|x_i) (draws of q(z)) and as many draws of N(0, I) (the paper's
choice of D that needs no adversary), estimated without bias (Gretton et al. 2012, "A Kernel
Two-Sample Test", JMLR, eq. 3) with one of two kernels:

* ``imq``: k(a, b) = C / (C + ‖a − b‖²), C = 2·D_z (Tolstikhin et al. 2018, "Wasserstein
  Auto-Encoders", ICLR: C = 2·d_z·σ² for a N(0, σ²I) prior, here σ² = 1);
* ``rbf``: k(a, b) = exp(−‖a − b‖² / C), the same scale.

Use it without editing vaelab::

    vaelab --plugin examples/infovae.py train examples/infovae-dsprites.toml --steps 500
    vaelab sweep examples/infovae-dsprites.toml --grid model.lambda_=10,1000 --mode vmap --steps 200
    vaelab evaluate runs/infovae-dsprites        # the run's config.toml recorded the plugin

What vaelab needs to know about the objective is declared on the class (see ``vaelab.models.VAE``):
its [model] keys and defaults, which of them a vmapped sweep may vary, and every random draw of one
iteration (``step_noise``; the prior samples go through ``self.draw`` so a vmapped sweep can feed
each model its own).
"""
from __future__ import annotations

import torch

from vaelab.models import VAE
from vaelab.plugins import register_objective


def mmd_unbiased(a: torch.Tensor, b: torch.Tensor, kernel: str = "imq") -> torch.Tensor:
    """Unbiased squared MMD between samples ``a`` (n×D) and ``b`` (m×D), n, m >= 2 (Gretton et al. 2012,
    eq. 3): the means of k over distinct pairs within ``a`` and within ``b``, minus twice the mean of k
    across. Static shapes, no host sync (it runs in a captured step)."""
    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    scale = 2.0 * d

    def k(x, y):
        sq = (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(-1)
        return scale / (scale + sq) if kernel == "imq" else torch.exp(-sq / scale)

    def within(x, size):
        kx = k(x, x)
        return (kx.sum() - kx.diagonal().sum()) / (size * (size - 1))

    return within(a, n) + within(b, m) - 2.0 * k(a, b).mean()


@register_objective
class InfoVAE(VAE):
    """loss = recon + (1 − α)·KL + (α + λ − 1)·MMD(q(z), N(0, I)); logs ``mmd`` beside recon and kl."""

    objective = "infovae"
    defaults = {
        # vaelab example values, not the paper's: α = 0 keeps the ELBO's KL; λ = 1000 lets the MMD of a
        # batch (about 0.01 to 1) count beside a reconstruction of hundreds of nats per image
        "alpha": 0.0,
        "lambda_": 1000.0,  # λ (with the underscore that Python gives names that are keywords)
        "kernel": "imq",
    }
    choices = {"kernel": ("imq", "rbf")}
    signed = ("alpha",)  # α is any real number in the paper (α < 0 penalises the mutual information)
    sweep_keys = ("alpha", "lambda_")  # plain arithmetic in the loss: one vmapped step for a grid of them

    def step_noise(self, batch_size):
        # z ~ q(z|x) (reparameterize), then the prior samples the MMD compares them with
        return super().step_noise(batch_size) + [("normal", (batch_size, self.latent_dim))]

    def _objective(self, out, x, step):
        z = out["z"]
        prior = self.draw("normal", z.shape, z.device)
        mmd = mmd_unbiased(z, prior, self.kernel)
        loss = out["recon"] + (1.0 - self.alpha) * out["kl"] + (self.alpha + self.lambda_ - 1.0) * mmd
        return {"loss": loss, "mmd": mmd}
