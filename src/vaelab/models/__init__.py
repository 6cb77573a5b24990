"""Objectives (docs/objectives.md): one module per objective, a registry, and :func:`build_model`.

``build_model(cfg, image_shape, num_train)`` takes the [model] table of a config: the common keys
``objective, net, latent_dim, likelihood, variance, net_options`` plus the objective's own keys, flat.
Defaults resolve as: :data:`COMMON_DEFAULTS` < :func:`objective_defaults` (the objective's keys, plus
the common keys whose default differs for it, e.g. UG-VAE's gaussian likelihood with σ² 0.2) < cfg.
"""
from __future__ import annotations

import keyword
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
    "register_objective", "objective_class", "resolve_aliases",
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
    "variance": 0.5,  # σ² ½ = plain sum of squared errors (1Konny "gaussian", dlib l2_loss), docs/conventions.md#likelihoods
    "net_options": {},
}
COMMON_KEYS = ("objective",) + tuple(COMMON_DEFAULTS)


def register_objective(cls: type[VAE]) -> type[VAE]:
    """Add an objective: a :class:`VAE` subclass whose ``objective`` attribute names it (its [model] keys
    in ``defaults``, what the rest of vaelab needs to know in the class attributes of :class:`VAE`).
    Returns the class, so it also works as a class decorator; a name taken by another class is an error."""
    from ..plugins import claim

    if not (isinstance(cls, type) and issubclass(cls, VAE)):
        raise VaelabError(f"register_objective takes a subclass of vaelab.models.VAE, got {cls!r}")
    name = cls.__dict__.get("objective")
    if not isinstance(name, str) or not name:
        raise VaelabError(f"{cls.__qualname__} needs its own objective = \"name\" to be registered")
    bad = [k for k in cls.defaults if not k.isidentifier() or keyword.iskeyword(k)]
    if bad:  # they become attributes of the model (and torch.compile's guards name them)
        raise VaelabError(f"objective {name!r}: [model] key {bad[0]!r} is not a Python name; e.g. {bad[0]}_")
    claim(OBJECTIVES, "objective", name, cls)
    return cls


def objective_class(objective: str) -> type[VAE]:
    if objective not in OBJECTIVES:
        from ..plugins import load_entry_points

        load_entry_points()  # an installed plugin's objective
    if objective not in OBJECTIVES:
        raise VaelabError(f"unknown objective {objective!r}{closest(str(objective), OBJECTIVES)}; "
                          f"valid: {', '.join(OBJECTIVES)} (or your own, from a plugin: --plugin FILE.py)")
    return OBJECTIVES[objective]


def objective_defaults(objective: str) -> dict[str, Any]:
    """The objective's own keys with their defaults, plus common keys whose default differs for it."""
    cls = objective_class(objective)
    return {**cls.defaults, **cls.common_overrides}


def model_defaults(objective: str) -> dict[str, Any]:
    """The whole resolved [model] table for an objective with every default filled in."""
    return {"objective": objective, **COMMON_DEFAULTS, **objective_defaults(objective)}


def resolve_aliases(cfg: dict) -> dict:
    """A copy of the [model] table ``cfg`` with the objective's alias keys under their own names
    (``VAE.aliases``, e.g. UG-VAE's ``dim_z`` -> ``latent_dim``); both names with different values is an error."""
    cls = objective_class(cfg["objective"])
    out = dict(cfg)
    for alias, key in cls.aliases.items():
        if alias in out:
            value = out.pop(alias)
            if key in out and out[key] != value:
                raise VaelabError(f"{cls.objective}: {alias} ({value}) and {key} ({out[key]}) disagree; set one")
            out[key] = value
    return out


def build_model(cfg: dict, image_shape, num_train: int | None = None) -> VAE:
    """Build the model a [model] table describes (see the module docstring)."""
    if "objective" not in cfg:
        raise VaelabError(f"the [model] table needs an objective; valid: {', '.join(OBJECTIVES)}")
    cfg = resolve_aliases(cfg)
    objective = cfg.pop("objective")
    cls = objective_class(objective)
    valid = sorted(set(COMMON_KEYS) | set(cls.defaults) | set(cls.aliases))
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
