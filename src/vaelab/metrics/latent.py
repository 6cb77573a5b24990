"""Per-latent diagnostics from posterior parameters: KL per dimension and active units.

* ``kl_per_latent(mu, logvar)``: batch mean of KL(q(z_j|x) || N(0, 1)) = 1/2 (mu^2 + sigma^2 - ln sigma^2 - 1)
  per dimension (docs/conventions.md#posterior-and-kl; traversals are ordered by it).
* ``active_units(mu, threshold=0.01)``: Burda et al. (2016, "Importance Weighted Autoencoders"): a unit is
  active when the variance over the data of its posterior mean exceeds 0.01 (unbiased variance here).
"""
from __future__ import annotations

import numpy as np

from ..errors import VaelabError
from .info import as_codes
from .registry import register_metric

DEFAULTS = dict(num_train=10_000, threshold=0.01)  # Burda et al.: Cov_x(E_q[u]) > 0.01


def kl_per_latent(mu, logvar) -> np.ndarray:
    """``D`` array: mean over the batch of each dimension's KL to the N(0, 1) prior (nats)."""
    m = as_codes(mu, "mu")
    lv = as_codes(logvar, "logvar")
    if m.shape != lv.shape:
        raise VaelabError(f"mu {m.shape} and logvar {lv.shape} must have the same shape")
    return np.mean(0.5 * (m ** 2 + np.exp(lv) - lv - 1.0), axis=0)


def latent_variances(mu) -> np.ndarray:
    """Unbiased variance over the data of each posterior-mean dimension (``D``)."""
    m = as_codes(mu, "mu")
    if m.shape[0] < 2:
        raise VaelabError("active units need at least 2 points")
    return np.var(m, axis=0, ddof=1)


def active_units_mask(mu, threshold: float = 0.01) -> np.ndarray:
    """``D`` bool: variance over the data of the posterior mean > ``threshold``."""
    return latent_variances(mu) > threshold


def active_units(mu, threshold: float = 0.01) -> int:
    """Number of active units (Burda et al.): dimensions whose posterior mean varies (variance > 0.01)."""
    return int(active_units_mask(mu, threshold).sum())


def active_units_score(encode, dataset, seed: int = 0, num_train: int = DEFAULTS["num_train"],
                       threshold: float = DEFAULTS["threshold"], *, sampler=None) -> dict:
    """Active units on ``num_train`` images drawn from ``dataset``: ``count``, ``variance`` (D), ``active`` (D)."""
    from .sampling import get_sampler

    s = get_sampler(encode, dataset, sampler)
    rng = np.random.default_rng(seed)
    var = latent_variances(s.sample_unlabelled(num_train, rng))
    return {"count": int((var > threshold).sum()), "variance": var, "active": var > threshold}


@register_metric("latent", title="Latents", needs="images", defaults=DEFAULTS, headline=["active_units", "kl_total"],
                 min_factors=0, aliases=("active_units", "kl"))
def evaluate_latent(sampler, seed, encode_params=None, **settings) -> dict:
    """eval.json's ``latent.*``: the active units and each code's variance; with a run's posterior
    parameters (``encode_params``) also the KL per latent and its total, on the rows ``elbo`` reads."""
    d = active_units_score(None, sampler.dataset, seed, sampler=sampler, **settings)
    out = {"active_units": d["count"], "variance": d["variance"].tolist()}
    if encode_params is not None:
        import torch

        from ..data.views import torch_generator
        from .sampling import iid_rows

        ds = sampler.dataset
        rows = iid_rows(ds, seed, settings.get("num_train", DEFAULTS["num_train"]))
        mu, logvar = encode_params(ds.gather(torch.from_numpy(rows), torch_generator(seed)))
        kl = kl_per_latent(mu, logvar)
        out["kl_per_latent"] = kl.tolist()
        out["kl_total"] = float(kl.sum())
    return out
