"""``factorvae`` (Kim & Mnih 2018), docs/objectives.md#factorvae.

VAE loss = recon + KL + γ·TC_est, TC_est = mean of D(z)₀ − D(z)₁ (logit "from q(z)" minus logit
"permuted"). Discriminator loss = ½[CE(D(z), 0) + CE(D(z̃), 1)], z̃ = each latent column independently
permuted across the batch. One iteration (:meth:`FactorVAE.update`):

1. encode x₁, sample z₁, decode; D(z₁) evaluated with *detached* discriminator parameters, so the VAE
   loss has no path into D; backward; step the "vae" optimiser (encoder + decoder only);
2. z₁.detach() and z̃ = permute(z₂) with z₂ from a second batch (``permute_source = "second_batch"``,
   1Konny: encoded with sampling, no gradient) or z₂ = z₁ (``"same_batch"``, dlib ``shuffle_codes``);
3. discriminator backward (its inputs are detached: nothing reaches the encoder); step the "disc"
   optimiser.

The permutation is a per-column argsort of uniform noise: static shapes, no host sync.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..nets import disc_mlp
from .base import VAE

__all__ = ["FactorVAE", "permute_dims", "permute_with"]


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Independent random permutation of every column of ``z`` (B×D) across the batch."""
    return permute_with(z, torch.rand(z.shape, device=z.device, generator=generator))


def permute_with(z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Every column of ``z`` permuted by the ranks of the same column of uniform ``noise`` (B×D)."""
    return torch.gather(z, 0, noise.argsort(dim=0))


class FactorVAE(VAE):
    objective = "factorvae"
    counts = ("disc_layers",)
    defaults = {
        "gamma": 6.4,  # 1Konny/FactorVAE scripts/run_dsprites_gamma6p4.sh
        "disc_layers": 5,  # 1Konny/FactorVAE model.py (dlib fc_discriminator: 6)
        "disc_init": "normal02",  # 1Konny/FactorVAE normal_init (dlib: glorot)
        "permute_source": "second_batch",  # 1Konny/FactorVAE (dlib: same_batch)
    }
    choices = {"disc_init": ("normal02", "glorot"), "permute_source": ("second_batch", "same_batch")}
    common_overrides = {"net": "fvae64"}  # 1Konny/FactorVAE
    sweep_keys = ("gamma",)
    forward_methods = ("_vae_terms", "_second_codes", "_disc_terms")  # what update runs the nets through

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.disc = disc_mlp(self.latent_dim, hidden_layers=self.disc_layers, init=self.disc_init)
        self.batches_per_step = 2 if self.permute_source == "second_batch" else 1

    def param_groups(self):
        vae = [p for name, p in self.named_parameters() if not name.startswith("disc.")]
        return {"vae": vae, "disc": list(self.disc.parameters())}

    # ------------------------------------------------------------------ pieces

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.batches_per_step == 1:
            return x, None
        if x.shape[0] % 2:
            raise ValueError("factorvae with permute_source='second_batch' expects 2·B images per step")
        b = x.shape[0] // 2
        return x[:b], x[b:]

    def _disc_frozen(self, z: torch.Tensor) -> torch.Tensor:
        """D(z) with the discriminator's parameters detached: gradients reach z only."""
        params = {name: p.detach() for name, p in self.disc.named_parameters()}
        return functional_call(self.disc, params, (z,))

    def _vae_terms(self, x1: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self._vae_forward(x1)
        logits = self._disc_frozen(out["z"])
        tc = (logits[:, 0] - logits[:, 1]).mean()
        return {"loss": out["recon"] + out["kl"] + self.gamma * tc, "recon": out["recon"], "kl": out["kl"],
                "kl_per_dim": out["kl_per_dim"], "tc": tc, "z": out["z"]}

    def _second_codes(self, x2: torch.Tensor | None, z1: torch.Tensor) -> torch.Tensor:
        if x2 is None:
            return z1.detach()
        with torch.no_grad():
            mu, logvar = self.encode(x2)
            return self.reparameterize(mu, logvar)

    def _disc_terms(self, z_real: torch.Tensor, z_source: torch.Tensor) -> dict[str, torch.Tensor]:
        b = z_real.shape[0]
        z_perm = permute_with(z_source, self.draw("uniform", z_source.shape, z_source.device))
        logp = F.log_softmax(self.disc(torch.cat([z_real, z_perm], 0)), dim=1)
        logp_real, logp_perm = logp[:b], logp[b:]
        disc_loss = -0.5 * (logp_real[:, 0].mean() + logp_perm[:, 1].mean())
        p0_real, p0_perm = logp_real[:, 0].exp(), logp_perm[:, 0].exp()
        acc = 0.5 * ((p0_real >= 0.5).float().mean() + (p0_perm < 0.5).float().mean())
        return {"disc_loss": disc_loss, "disc_acc": acc, "p0_real": p0_real.mean(), "p0_perm": p0_perm.mean()}

    # ------------------------------------------------------------------ API

    def loss(self, x, step=0):
        x1, x2 = self._split(x)
        terms = self._vae_terms(x1)
        z1 = terms.pop("z").detach()
        terms.update(self._disc_terms(z1, self._second_codes(x2, z1)))
        return terms

    def update(self, x, step, optimizers):
        opt_vae, opt_disc = optimizers["vae"], optimizers["disc"]
        x1, x2 = self._split(x)
        # 1. VAE step (the discriminator is outside this graph's parameters)
        terms = self._vae_terms(x1)
        opt_vae.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt_vae.step()
        # 2. discriminator inputs: detached z1 and permuted z2 (z2 encoded after the VAE step, as 1Konny)
        z1 = terms.pop("z").detach()
        d_terms = self._disc_terms(z1, self._second_codes(x2, z1))
        # 3. discriminator step
        opt_disc.zero_grad(set_to_none=True)
        d_terms["disc_loss"].backward()
        opt_disc.step()
        terms.update(d_terms)
        return {k: v.detach() for k, v in terms.items()}

    # ------------------------------------------------------------------ noise and the vmapped step

    def step_noise(self, batch_size):
        """z₁ ~ q(z|x₁) [, z₂ ~ q(z|x₂)], then the permutation's uniform noise (the order of update)."""
        shape = (batch_size, self.latent_dim)
        return [("normal", shape)] * self.batches_per_step + [("uniform", shape)]

    def vmapped_update(self, vm, x, step):
        """:meth:`update`'s three steps for M stacked models: the VAE gradient and step, the second
        batch's codes (after that step), the discriminator gradient and step."""
        noise = iter(vm.noise)
        b = x.shape[1] // self.batches_per_step
        x1, x2 = (x[:, :b], x[:, b:]) if self.batches_per_step == 2 else (x, None)
        grads, terms = vm.grad("_vae_terms", ["vae"], (x1,), noise=[next(noise)])
        z1 = terms.pop("z")
        vm.optimizer_step("vae", grads)
        z2 = z1 if x2 is None else vm.call("_second_codes", (x2, z1), noise=[next(noise)])
        grads, d_terms = vm.grad("_disc_terms", ["disc"], (z1, z2), noise=[next(noise)], loss="disc_loss")
        vm.optimizer_step("disc", grads)
        terms.update(d_terms)
        return terms
