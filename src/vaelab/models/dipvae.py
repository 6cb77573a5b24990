"""``dipvae`` I and II (Kumar et al. 2018; dlib ``methods/unsupervised/vae.py`` DIPVAE), docs/objectives.md#dip-vae.

Cov_μ = (1/B) Σ μ μᵀ − μ̄ μ̄ᵀ (biased). I: Σ = Cov_μ. II: Σ = Cov_μ + diag(batch mean of σ²).
penalty = λ_od Σ_{i≠j} Σ_ij² + λ_d Σ_i (Σ_ii − 1)², λ_d = lambda_d_factor·λ_od; loss = recon + KL + penalty.
"""
from __future__ import annotations

import torch

from .base import VAE

__all__ = ["DIPVAE", "dip_covariance", "dip_penalty"]


def dip_covariance(mu: torch.Tensor, logvar: torch.Tensor, kind: str = "i") -> torch.Tensor:
    """The D×D matrix Σ the DIP penalty regularises."""
    mean = mu.mean(0)
    cov = (mu.t() @ mu) / mu.shape[0] - torch.outer(mean, mean)
    if kind == "ii":
        # the batch-mean variance of each dimension goes on that dimension's diagonal entry only
        # (not the scalar average of nmichlo/disent's type II)
        cov = cov + torch.diag(logvar.exp().mean(0))
    return cov


def dip_penalty(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    diag = torch.diagonal(cov)
    off = (cov - torch.diag(diag)).pow(2).sum()
    return lambda_od * off + lambda_d * (diag - 1.0).pow(2).sum()


class DIPVAE(VAE):
    objective = "dipvae"
    defaults = {
        "kind": "i",  # dlib dip_type
        "lambda_od": 10.0,  # dlib study midpoint, Kumar et al.
        "lambda_d_factor": 10.0,  # dlib: λ_d = 10·λ_od for DIP-VAE-I (use 1 for II)
    }
    choices = {"kind": ("i", "ii")}
    sweep_keys = ("lambda_od", "lambda_d_factor")

    def _objective(self, out, x, step):
        cov = dip_covariance(out["mu"], out["logvar"], self.kind)
        dip = dip_penalty(cov, self.lambda_od, self.lambda_d_factor * self.lambda_od)
        return {"loss": out["recon"] + out["kl"] + dip, "dip": dip}
