"""Reconstruction terms (docs/conventions.md#likelihoods) and Gaussian KL helpers (docs/conventions.md#posterior-and-kl).

All functions return per-image (or per-image, per-dimension) values; the objectives reduce them as
docs/conventions.md#reduction says: sum over pixels, mean over the batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import VaelabError, closest

LIKELIHOODS = ("bernoulli", "gaussian", "laplace")
LOG_2PI = math.log(2.0 * math.pi)

__all__ = ["LIKELIHOODS", "check_likelihood", "recon_loss", "mean_image", "kl_normal", "log_normal"]


def check_likelihood(likelihood: str, variance: float) -> None:
    if likelihood not in LIKELIHOODS:
        raise VaelabError(f"unknown likelihood {likelihood!r}{closest(str(likelihood), LIKELIHOODS)}; "
                          f"valid: {', '.join(LIKELIHOODS)}")
    if isinstance(variance, bool) or not isinstance(variance, (int, float)) or not variance > 0:
        raise VaelabError(f"likelihood variance must be a positive number, got {variance!r}")


def mean_image(o: torch.Tensor) -> torch.Tensor:
    """Mean image of both likelihoods: sigmoid of the decoder output."""
    return torch.sigmoid(o)


def recon_loss(o: torch.Tensor, x: torch.Tensor, likelihood: str = "bernoulli", variance: float = 0.5) -> torch.Tensor:
    """Negative log-likelihood per image: a ``B`` vector summed over all C·H·W pixel terms.

    * bernoulli: ℓ = softplus(o) − x·o (cross-entropy on logits; also for continuous x in [0, 1]).
    * gaussian(σ²): m = sigmoid(o), ℓ = (x − m)²/(2σ²) + ½ ln(2πσ²) (the constant is included).
    * laplace(σ²): m = sigmoid(o), scale b = √(σ²/2) (σ² is the Laplace variance 2b²),
      ℓ = |x − m|/b + ln(2b) (YannDubs/disentangling-vae's rec_dist "laplace": 3·|x − m|, i.e. b = ⅓).
    """
    if likelihood == "bernoulli":
        ell = F.binary_cross_entropy_with_logits(o, x, reduction="none")
        return ell.flatten(1).sum(1)
    if likelihood == "gaussian":
        sq = (x - torch.sigmoid(o)).pow(2).flatten(1).sum(1)
        pixels = x[0].numel()
        return sq / (2.0 * variance) + pixels * 0.5 * (LOG_2PI + math.log(variance))
    if likelihood == "laplace":
        b = math.sqrt(variance / 2.0)
        ab = (x - torch.sigmoid(o)).abs().flatten(1).sum(1)
        return ab / b + x[0].numel() * math.log(2.0 * b)
    raise VaelabError(f"unknown likelihood {likelihood!r}; valid: {', '.join(LIKELIHOODS)}")


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(μ, σ²) ‖ N(0, 1)) = ½(μ² + σ² − ln σ² − 1); same shape as ``mu``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise ln N(z; μ, exp(logvar)) (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))
