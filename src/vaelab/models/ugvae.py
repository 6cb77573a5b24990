"""``ugvae`` — Unsupervised Global VAE (Peis, Olmos & Artés-Rodríguez; ipeis/UG-VAE ``models.py``), docs/objectives.md#ug-vae, docs/nets.md#ug-vae-nets.

Generative model for a batch X = {x_1..x_B}: β ~ N(0, I); d_i ~ Uniform{1..K};
z_i | d_i = k, β ~ N(μ_k(β), diag σ²_k(β)); x_i | z_i, β ~ likelihood(f([z_i, β])).
Inference: q(z_i|x_i) Gaussian from the trunk h_i; q(d_i|z_i) = Cat(π_i) from the sampled z_i;
q(β|X) = product of the B Gaussian contributions N(m_i, s²_i) computed from [h_i, π_i] (precision-weighted
pooling). −ELBO summed over the batch, divided by B (docs/conventions.md#reduction): loss = recon + kl_z + kl_d + kl_beta/B.

Logged terms: ``recon``, ``kl_z``, ``kl_d`` per image (batch means); ``kl_beta`` is the KL of the one
global posterior of the batch (not divided by B); ``kl`` = kl_z + kl_d + kl_beta/B, so loss = recon + kl;
``kl_per_dim`` = the per-dimension kl_z (batch mean), which orders traversals.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import VaelabError
from ..nets import UGVAE_NETS, UGVAE_TRUNK_FEATURES
from .base import VAE
from .likelihood import kl_normal

__all__ = ["UGVAE", "pool_gaussians", "kl_gaussians"]

PI_EPS = 1e-20  # added to the softmax of q(d|z), as the reference


def pool_gaussians(m: torch.Tensor, logvar: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of Gaussians N(m_i, exp(logvar_i)) over ``dim`` (up to normalisation):
    precision Λ = Σ_i 1/s²_i, mean (Σ_i m_i/s²_i)/Λ. Returns (mean, ln(1/Λ)), computed stably."""
    weights = torch.softmax(-logvar, dim=dim)
    return (weights * m).sum(dim), -torch.logsumexp(-logvar, dim=dim)


def kl_gaussians(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """Elementwise KL(N(μ_q, σ²_q) ‖ N(μ_p, σ²_p)) (broadcasting)."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p) - 1.0)


class UGVAE(VAE):
    objective = "ugvae"
    counts = ("dim_beta", "K")
    defaults = {
        "dim_beta": 20,  # ipeis/UG-VAE README (MNIST and CelebA runs)
        "K": 10,  # ipeis/UG-VAE README MNIST run
    }
    #: UG-VAE's Gaussian likelihood with var_x 0.2 (ipeis/UG-VAE README / train.py CLI default)
    common_overrides = {"net": "ugvae_fc28", "likelihood": "gaussian", "variance": 0.2}
    aliases = {"dim_z": "latent_dim"}  # the reference's name (ipeis/UG-VAE train.py --dim_z)
    sweep_keys = None  # no vmapped step yet: one global draw per batch besides the per-image ones
    per_image_elbo = False
    elbo_note = "UG-VAE's bound has a global term per batch: its training log holds it (kl_beta)"
    mixture_prior = True  # p(z | d, β): K components
    global_latent = True  # β, inferred per batch

    def __init__(self, image_shape, latent_dim: int, net: str | None = None, likelihood: str = "gaussian",
                 variance: float = 0.2, net_options: dict | None = None, num_train: int | None = None, **params):
        super().__init__(image_shape, latent_dim, net=net, likelihood=likelihood, variance=variance,
                         net_options=net_options, num_train=num_train, **params)

    def _build_networks(self) -> None:
        if self.net_name not in UGVAE_NETS:
            raise VaelabError(f"objective 'ugvae' needs net 'ugvae_fc28' (28×28) or 'ugvae_conv64' (64×64), "
                              f"got {self.net_name!r}")
        if self.net_options:
            raise VaelabError(f"net {self.net_name!r} takes no net_options, got {sorted(self.net_options)}")
        for key in ("dim_beta", "K"):
            if getattr(self, key) < 1:
                raise VaelabError(f"ugvae: {key} must be at least 1, got {getattr(self, key)}")
        trunk_b, dec_b = UGVAE_NETS[self.net_name]
        f, dz, db, k = UGVAE_TRUNK_FEATURES, self.latent_dim, self.dim_beta, self.K
        self.trunk = trunk_b(self.image_shape)
        self.qz = nn.Linear(f, 2 * dz)  # q(z|x)
        self.qd = nn.Sequential(nn.Linear(dz, 256), nn.Tanh(), nn.Linear(256, k))  # q(d|z) logits
        self.qbeta = nn.Linear(f + k, 2 * db)  # per-sample contribution to q(β|X)
        # K prior nets p(z|d=k, β): Lin(dβ→256) ReLU Lin(256→2dz), stored stacked (one batched matmul)
        self.prior_w1 = nn.Parameter(torch.empty(k, db, 256))
        self.prior_b1 = nn.Parameter(torch.empty(k, 256))
        self.prior_w2 = nn.Parameter(torch.empty(k, 256, 2 * dz))
        self.prior_b2 = nn.Parameter(torch.empty(k, 2 * dz))
        for w, b, fan_in in ((self.prior_w1, self.prior_b1, db), (self.prior_w2, self.prior_b2, 256)):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)
        self.decoder = dec_b(self.image_shape, dz + db)

    # ------------------------------------------------------------------ inference

    def _local(self, x):
        h = self.trunk(x)
        q = self.qz(h)
        return h, q[:, : self.latent_dim], q[:, self.latent_dim:]

    def local_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): ``(mu_z, logvar_z)``, each B×dz."""
        _, mu, logvar = self._local(x)
        return mu, logvar

    encode = local_posterior

    def component_probs(self, z: torch.Tensor) -> torch.Tensor:
        """q(d|z) = π (B×K), softmax + 1e-20 as the reference."""
        return torch.softmax(self.qd(z), dim=-1) + PI_EPS

    def contributions(self, h: torch.Tensor, pi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample global contributions (m_i, ln s²_i), each B×dβ."""
        g = self.qbeta(torch.cat([h, pi], dim=1))
        return g[:, : self.dim_beta], g[:, self.dim_beta:]

    def image_contributions(self, x: torch.Tensor, use_mean: bool = True):
        """Per image: ``(mu_z, m_i, ln s²_i)``, q(z|x)'s means and the image's Gaussian contribution to
        q(β|X); pooling the contributions of any set of images (:func:`pool_gaussians`) gives that set's
        global posterior. With ``use_mean`` the π come from μ_z (the experiments), else from a sampled z."""
        h, mu, logvar = self._local(x)
        z = mu if use_mean else self.reparameterize(mu, logvar)
        m, logs2 = self.contributions(h, self.component_probs(z))
        return mu, m, logs2

    def global_posterior(self, x: torch.Tensor, use_mean: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """q(β|X) pooled over the whole batch ``x``: ``(mu_beta, logvar_beta)``, each of shape (dβ,)."""
        _, m, logs2 = self.image_contributions(x, use_mean)
        return pool_gaussians(m, logs2, dim=0)

    # ------------------------------------------------------------------ generative side

    def _prior(self, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(means, log-variances) of the K components for β of shape (dβ,) -> K×dz or (n, dβ) -> n×K×dz."""
        single = beta.dim() == 1
        b = beta.reshape(-1, self.dim_beta)
        hidden = torch.relu(torch.einsum("nb,kbh->nkh", b, self.prior_w1) + self.prior_b1)
        out = torch.einsum("nkh,kho->nko", hidden, self.prior_w2) + self.prior_b2
        means, logvars = out[..., : self.latent_dim], torch.tanh(out[..., self.latent_dim:])  # var ∈ [e⁻¹, e]
        if single:
            return means[0], logvars[0]
        return means, logvars

    def prior_components(self, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z|d=k, β) for every k: ``(means, variances)``, K×dz for β (dβ,), n×K×dz for β (n, dβ)."""
        means, logvars = self._prior(beta)
        return means, logvars.exp()

    def decode(self, z: torch.Tensor, beta: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output ``o`` for [z_i, β]; β None -> zeros, β (dβ,) -> shared by the batch."""
        if beta is None:
            beta = z.new_zeros(self.dim_beta)
        if beta.dim() == 1:
            beta = beta.unsqueeze(0).expand(z.shape[0], -1)
        return self.decoder(torch.cat([z, beta], dim=1))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean images decoded from μ_z and the batch's posterior-mean β (π from μ_z)."""
        mu, m, logs2 = self.image_contributions(x)
        mu_beta, _ = pool_gaussians(m, logs2, dim=0)
        return self.mean_image(self.decode(mu, mu_beta))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """One shared β ~ N(0, I); for each component k, n codes z ~ p(z|d=k, β) decoded to mean images.
        Returns K×n×C×H×W."""
        dev = self.prior_w1.device
        beta = torch.randn(self.dim_beta, device=dev, generator=generator)
        means, logvars = self._prior(beta)  # K×dz
        eps = torch.randn(self.K, n, self.latent_dim, device=dev, generator=generator)
        z = means.unsqueeze(1) + torch.exp(0.5 * logvars).unsqueeze(1) * eps  # K×n×dz
        o = self.decode(z.reshape(-1, self.latent_dim), beta)
        return self.mean_image(o).reshape(self.K, n, *o.shape[1:])

    # ------------------------------------------------------------------ objective

    def elbo_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image terms (B vectors ``recon``, ``kl_z``, ``kl_d``; ``kl_z_dims`` B×dz) and ``kl_beta``."""
        h, mu_z, logvar_z = self._local(x)
        z = self.reparameterize(mu_z, logvar_z)
        pi = self.component_probs(z)  # from the sampled z
        m, logs2 = self.contributions(h, pi)
        mu_b, logvar_b = pool_gaussians(m, logs2, dim=0)
        beta = self.reparameterize(mu_b, logvar_b)  # one β per batch
        means, logvars = self._prior(beta)  # K×dz
        o = self.decode(z, beta)
        kl_ikj = kl_gaussians(mu_z.unsqueeze(1), logvar_z.unsqueeze(1), means.unsqueeze(0), logvars.unsqueeze(0))
        kl_z_dims = (pi.unsqueeze(2) * kl_ikj).sum(1)  # B×dz
        return {
            "recon": self.recon(o, x),
            "kl_z": kl_z_dims.sum(1),
            "kl_z_dims": kl_z_dims,
            "kl_d": (pi * (torch.log(pi) + math.log(self.K))).sum(1),
            "kl_beta": kl_normal(mu_b, logvar_b).sum(),
        }

    def loss(self, x, step=0):
        t = self.elbo_terms(x)
        b = x.shape[0]
        recon, kl_z, kl_d = t["recon"].mean(), t["kl_z"].mean(), t["kl_d"].mean()
        kl = kl_z + kl_d + t["kl_beta"] / b
        return {"loss": recon + kl, "recon": recon, "kl": kl, "kl_per_dim": t["kl_z_dims"].mean(0),
                "kl_z": kl_z, "kl_d": kl_d, "kl_beta": t["kl_beta"]}
