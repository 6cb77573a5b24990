"""``annealedvae`` (Burgess et al. 2018, "B"): loss = recon + γ·|KL − C(t)| (docs/objectives.md#annealedvae).

C(t) = C_start + (C_max − C_start)·min(1, t/T) moves every iteration (1Konny/Beta-VAE, disvae, dlib);
t = completed iterations. KL is the batch-mean total KL. In eval mode the loss uses C_max.
"""
from __future__ import annotations

import torch

from .base import VAE, step_tensor

__all__ = ["AnnealedVAE"]


class AnnealedVAE(VAE):
    objective = "annealedvae"
    defaults = {
        "gamma": 1000.0,  # Burgess et al. 2018 via dlib / disvae (1Konny/Beta-VAE README example)
        "c_max": 25.0,  # Burgess et al. dSprites (miyosuda/disentangled_vae#8, dlib, disvae)
        "c_start": 0.0,  # dlib, disvae
        "c_steps": 100000,  # T: dlib iteration_threshold, disvae
    }
    sweep_keys = ("gamma", "c_max", "c_start")  # not c_steps: a Python branch reads it

    def capacity(self, step) -> torch.Tensor:
        """C(t) as a 0-dim float tensor (C_max in eval mode); no host sync."""
        dev = next(self.parameters()).device
        if not self.training or self.c_steps <= 0:
            return torch.full((), float(self.c_max), device=dev)
        t = step_tensor(step, dev)
        frac = torch.clamp(t / float(self.c_steps), max=1.0)
        return self.c_start + (self.c_max - self.c_start) * frac

    def _objective(self, out, x, step):
        c = self.capacity(step)
        return {"loss": out["recon"] + self.gamma * (out["kl"] - c).abs(), "capacity": c}
