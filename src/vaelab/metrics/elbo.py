"""The model's fit: reconstruction, KL and ELBO per image (not a dlib metric: what a sweep's scores were
bought with; docs/metrics.md).

On ``num_train`` images drawn i.i.d. with ``seed`` (the rows the ``latent`` metric's KL reads), in nats
per image (the reductions of docs/conventions.md#reduction): ``reconstruction`` -log p(x|z) with one
posterior draw z (seeded), ``kl`` KL(q(z|x) || N(0, I)), ``elbo`` = -(reconstruction + kl), and
``reconstruction_at_mean`` -log p(x|mu) (no noise). The β-VAE trade-off: how much fit each setting of a
sweep gave up for its scores.
"""
from __future__ import annotations

from .registry import no_draws, register_metric

DEFAULTS = dict(num_train=10_000)
_BATCH = 512  # images per forward pass


def elbo_score(model, dataset, seed: int = 0, num_train: int = DEFAULTS["num_train"], device=None) -> dict:
    """``reconstruction``, ``reconstruction_at_mean``, ``kl`` and ``elbo`` (nats per image) of ``model`` on
    ``num_train`` images of ``dataset`` (module docstring). ``device``: where ``model`` is (default: its
    parameters' device)."""
    import torch

    from ..data.views import torch_generator
    from ..models.likelihood import kl_normal
    from .sampling import _count, iid_rows

    num_train = _count(num_train, "num_train")
    dev = device if device is not None else next(model.parameters()).device
    rows = iid_rows(dataset, seed, num_train)
    noise = torch.Generator(device=dev).manual_seed(seed)
    view_noise = torch_generator(seed)
    sums = {"reconstruction": 0.0, "reconstruction_at_mean": 0.0, "kl": 0.0}
    with torch.no_grad():
        for i in range(0, len(rows), _BATCH):
            x = dataset.gather(torch.from_numpy(rows[i:i + _BATCH]), view_noise).to(dev).float().div_(255.0)
            mu, logvar = model.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=noise, device=dev, dtype=mu.dtype)
            sums["reconstruction"] += float(model.recon(model.decode(z), x).double().sum())
            sums["reconstruction_at_mean"] += float(model.recon(model.decode(mu), x).double().sum())
            sums["kl"] += float(kl_normal(mu, logvar).double().sum())
    out = {k: v / len(rows) for k, v in sums.items()}
    out["elbo"] = -(out["reconstruction"] + out["kl"])
    return out


def _without_per_image_elbo(dataset, run) -> str | None:
    """Objectives whose loss is not a per-image ELBO (UG-VAE's global term) are skipped, saying why."""
    from ..models import objective_class

    cls = objective_class(run.config["model"]["objective"])
    if not cls.per_image_elbo:
        return cls.elbo_note or f"{cls.objective} has no per-image ELBO"
    return None


@register_metric("elbo", title="Reconstruction / ELBO", needs="model", defaults=DEFAULTS,
                 headline=["elbo", "reconstruction", "kl", "reconstruction_at_mean"], min_factors=0,
                 aliases=("reconstruction", "fit"), draws=no_draws, skip=_without_per_image_elbo)
def evaluate_elbo(sampler, seed, run, **settings) -> dict:
    """eval.json's ``elbo.*``: :func:`elbo_score` of the run's model on the images of ``sampler.dataset``."""
    return elbo_score(run.model, sampler.dataset, seed, device=run.device, **settings)
