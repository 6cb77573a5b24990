"""Objectives (SPEC §3): one module per objective, a registry, and :func:`build_model`.

``build_model(cfg, image_shape, num_train)`` takes the [model] table of a config: the common keys
``objective, net, latent_dim, likelihood, variance, net_options`` plus the objective's own keys, flat.
Defaults resolve as: :data:`COMMON_DEFAULTS` < :func:`objective_defaults` (the objective's keys, plus
the common keys whose default differs for it, e.g. UG-VAE's gaussian likelihood with σ² 0.2) < cfg.
"""
from __future__ import annotations

from typing import Any

from ..errors import VaelabError, closest
from .annealed import AnnealedVAE
from .base import VAE
from .btcvae import BetaTCVAE
from .dipvae import DIPVAE
from .factorvae import FactorVAE
from .likelihood import LIKELIHOODS, mean_image, recon_loss
from .ugvae import UGVAE
from .vae import BetaVAE

__all__ = [
    "OBJECTIVES", "COMMON_DEFAULTS", "COMMON_KEYS", "build_model", "objective_defaults", "model_defaults",
    "VAE", "BetaVAE", "AnnealedVAE", "FactorVAE", "BetaTCVAE", "DIPVAE", "UGVAE",
    "LIKELIHOODS", "recon_loss", "mean_image",
]

OBJECTIVES: dict[str, type[VAE]] = {
    "vae": VAE,
    "betavae": BetaVAE,
    "annealedvae": AnnealedVAE,
    "factorvae": FactorVAE,
    "btcvae": BetaTCVAE,
    "dipvae": DIPVAE,
    "ugvae": UGVAE,
}

COMMON_DEFAULTS: dict[str, Any] = {
    "net": "burgess64",  # Burgess et al. 2018 (1Konny/Beta-VAE BetaVAE_B)
    "latent_dim": 10,  # every dSprites reference (1Konny, dlib, disvae)
    "likelihood": "bernoulli",  # 1Konny, dlib, disvae on dSprites
    "variance": 0.5,  # σ² ½ = plain sum of squared errors (1Konny "gaussian", dlib l2_loss), SPEC §1.2
    "net_options": {},
}
COMMON_KEYS = ("objective",) + tuple(COMMON_DEFAULTS)


def objective_class(objective: str) -> type[VAE]:
    if objective not in OBJECTIVES:
        raise VaelabError(f"unknown objective {objective!r}{closest(str(objective), OBJECTIVES)}; "
                          f"valid: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[objective]


def objective_defaults(objective: str) -> dict[str, Any]:
    """The objective's own keys with their defaults, plus common keys whose default differs for it."""
    cls = objective_class(objective)
    return {**cls.defaults, **cls.common_overrides}


def model_defaults(objective: str) -> dict[str, Any]:
    """The whole resolved [model] table for an objective with every default filled in."""
    return {"objective": objective, **COMMON_DEFAULTS, **objective_defaults(objective)}


def build_model(cfg: dict, image_shape, num_train: int | None = None) -> VAE:
    """Build the model a [model] table describes (see the module docstring)."""
    cfg = dict(cfg)
    if "objective" not in cfg:
        raise VaelabError(f"the [model] table needs an objective; valid: {', '.join(OBJECTIVES)}")
    objective = cfg.pop("objective")
    cls = objective_class(objective)
    if objective == "ugvae" and "dim_z" in cfg:  # UG-VAE's name for the local latent size
        dim_z = cfg.pop("dim_z")
        if "latent_dim" in cfg and cfg["latent_dim"] != dim_z:
            raise VaelabError(f"ugvae: dim_z ({dim_z}) and latent_dim ({cfg['latent_dim']}) disagree; set one")
        cfg["latent_dim"] = dim_z
    valid = sorted(set(COMMON_KEYS) | set(cls.defaults) | ({"dim_z"} if objective == "ugvae" else set()))
    for key in cfg:
        if key not in valid:
            raise VaelabError(f"unknown [model] key {key!r} for objective {objective!r}{closest(key, valid)}; "
                              f"valid: {', '.join(valid)}")
    settings = {**COMMON_DEFAULTS, **cls.common_overrides, **cfg}
    options = settings.pop("net_options")
    if not isinstance(options, dict):
        raise VaelabError(f"model.net_options must be a table, got {options!r}")
    latent_dim = settings.pop("latent_dim")
    return cls(tuple(image_shape), latent_dim, net=settings.pop("net"), likelihood=settings.pop("likelihood"),
               variance=settings.pop("variance"), net_options=options, num_train=num_train, **settings)
