"""``vae`` and ``betavae`` (Higgins et al. 2017, "H"): loss = recon + β·KL (docs/objectives.md#vae-and-beta-vae)."""
from __future__ import annotations

from .base import VAE

__all__ = ["VAE", "BetaVAE"]


class BetaVAE(VAE):
    objective = "betavae"
    defaults = {
        "beta": 4.0,  # Higgins et al. 2017, dSprites (via YannDubs/disentangling-vae hyperparam.ini)
    }
    sweep_keys = ("beta",)

    def _objective(self, out, x, step):
        return {"loss": out["recon"] + self.beta * out["kl"]}
