"""The VAE base class every objective derives from (docs/conventions.md, docs/objectives.md#vae-and-beta-vae).

A model is an ``nn.Module`` holding an encoder (images -> ``B×2D``: μ then ln σ²) and a decoder
(codes -> logits ``o``). ``loss(x, step)`` returns a dict of named terms with ``"loss"``; ``update``
runs one whole training iteration (every optimiser once, docs/conventions.md#training-conventions). Both have static shapes and no
host synchronisation, so the trainer may run them eagerly, under ``torch.compile`` or inside a CUDA
graph. ``step`` is a 0-dim tensor on the model's device or a Python int (completed iterations).

The plain ``vae`` objective is this class: loss = recon + KL.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import VaelabError, closest
from ..nets import build_net, canonical_net
from .likelihood import check_likelihood, kl_normal, mean_image, recon_loss

__all__ = ["VAE", "step_tensor"]


def step_tensor(step, device) -> torch.Tensor:
    """``step`` (tensor or int) as a float32 0-dim tensor on ``device`` without a host sync."""
    if isinstance(step, torch.Tensor):
        return step.to(device=device, dtype=torch.float32).reshape(())
    return torch.full((), float(step), device=device, dtype=torch.float32)


class VAE(nn.Module):
    """Plain VAE (``objective = "vae"``): loss = recon + KL, reduced per docs/conventions.md#reduction."""

    objective: ClassVar[str] = "vae"
    #: the objective's own [model] keys and their defaults (sources in comments of each subclass)
    defaults: ClassVar[dict[str, Any]] = {}
    #: allowed values for string-valued keys
    choices: ClassVar[dict[str, tuple]] = {}
    #: integer keys that count something and must be >= 1 (every other number must be finite and >= 0:
    #: weights, capacities and schedules of these objectives are never negative)
    counts: ClassVar[tuple[str, ...]] = ()
    #: number keys that may be negative (any finite value), exceptions to the rule above
    signed: ClassVar[tuple[str, ...]] = ()
    #: common keys whose default differs for this objective (e.g. UG-VAE's gaussian likelihood)
    common_overrides: ClassVar[dict[str, Any]] = {}
    #: images per iteration = batches_per_step × batch size (FactorVAE second_batch: 2)
    batches_per_step: int = 1

    # ---- what the rest of vaelab asks an objective (the defaults fit a one-loss VAE with a N(0, I) prior;
    # an objective declares its own here and no other module checks its name)
    #: other names of [model] keys, {alias: key} (UG-VAE's reference calls latent_dim dim_z); a config may
    #: use either name, not both with different values
    aliases: ClassVar[dict[str, str]] = {}
    #: [model] keys a vmapped sweep (`vaelab sweep --mode vmap`) may vary across its models: plain
    #: arithmetic in the loss, fed in as per-model tensors. None: the objective has no vmapped step
    sweep_keys: ClassVar[tuple[str, ...] | None] = ()
    #: the methods `update` runs the networks through (the fast path's bf16 autocast wraps these); a
    #: subclass that overrides `update` declares its own, else autocast wraps the whole of `update`
    forward_methods: ClassVar[tuple[str, ...]] = ("loss",)
    #: whether one image's ELBO (recon + KL(q(z|x) ‖ N(0, I))) is the model's bound, so that evaluate's
    #: `elbo` metric applies; when it is not, `elbo_note` says why
    per_image_elbo: ClassVar[bool] = True
    elbo_note: ClassVar[str] = ""
    #: the prior is a mixture: `sample(n)` returns n draws per component, K×n×C×H×W
    mixture_prior: ClassVar[bool] = False
    #: a global latent per batch beside the per-image codes (decode(z, beta), global_posterior,
    #: prior_components, dim_beta): traversals use it, and the UG-VAE experiments need it
    global_latent: ClassVar[bool] = False

    @classmethod
    def _declared_with_update(cls, attr: str) -> bool:
        """Whether ``attr`` comes from the class that defines ``update`` or from a subclass of it."""
        def owner(name):
            return next(k for k in cls.__mro__ if name in k.__dict__)
        return issubclass(owner(attr), owner("update"))

    @classmethod
    def autocast_methods(cls) -> tuple[str, ...]:
        """The methods bf16 autocast wraps (``forward_methods``); () = wrap the whole of ``update``."""
        return tuple(cls.forward_methods) if cls._declared_with_update("forward_methods") else ()

    @classmethod
    def vmap_problem(cls) -> str | None:
        """Why this objective has no vmapped step (None when it has one)."""
        if cls.sweep_keys is None:
            return f"{cls.objective} has no vmapped step yet"
        if not cls._declared_with_update("vmapped_update"):
            return f"{cls.objective} has its own update but no vmapped_update: it has no vmapped step yet"
        return None

    def __init__(self, image_shape, latent_dim: int, net: str | None = None, likelihood: str = "bernoulli",
                 variance: float = 0.5, net_options: dict | None = None, num_train: int | None = None,
                 **params):
        super().__init__()
        check_likelihood(likelihood, variance)
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise VaelabError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood
        self.variance = float(variance)
        self.num_train = None if num_train is None else int(num_train)
        self.hparams = self._resolve_params(params)
        for key, value in self.hparams.items():
            setattr(self, key, value)
        self.net_name = canonical_net(net if net is not None else self.common_overrides.get("net", "burgess64"))
        self.net_options = dict(net_options or {})
        self._build_networks()

    # ------------------------------------------------------------------ construction

    @classmethod
    def _resolve_params(cls, params: dict) -> dict:
        out = dict(cls.defaults)
        for key, value in params.items():
            if key not in cls.defaults:
                valid = sorted(cls.defaults)
                raise VaelabError(
                    f"unknown key {key!r} for objective {cls.objective!r}{closest(key, valid)}; "
                    f"valid: {', '.join(valid) if valid else '(none)'}"
                )
            default = cls.defaults[key]
            if key in cls.choices:
                if value not in cls.choices[key]:
                    raise VaelabError(
                        f"{cls.objective}: {key} must be one of {', '.join(map(repr, cls.choices[key]))}, "
                        f"got {value!r}{closest(str(value), cls.choices[key])}"
                    )
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise VaelabError(f"{cls.objective}: {key} must be true or false, got {value!r}")
            elif isinstance(default, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)  # e.g. c_steps = 1e5 in TOML
                if isinstance(value, bool) or not isinstance(value, int):
                    raise VaelabError(f"{cls.objective}: {key} must be an integer, got {value!r}")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise VaelabError(f"{cls.objective}: {key} must be a number, got {value!r}")
                value = float(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key in cls.signed:
                if not math.isfinite(value):
                    raise VaelabError(f"{cls.objective}: {key} must be finite, got {value!r}")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                least = 1 if key in cls.counts else 0
                if not math.isfinite(value) or value < least:
                    raise VaelabError(f"{cls.objective}: {key} must be {'a count >= 1' if least else 'finite and >= 0'}, "
                                      f"got {value!r}")
            out[key] = value
        return out

    def _build_networks(self) -> None:
        self.encoder, self.decoder = build_net(self.net_name, self.image_shape, self.latent_dim, self.net_options)

    def config(self) -> dict:
        """The [model] table that rebuilds this model with :func:`vaelab.models.build_model`."""
        return {
            "objective": self.objective,
            "net": self.net_name,
            "latent_dim": self.latent_dim,
            "likelihood": self.likelihood,
            "variance": self.variance,
            "net_options": dict(self.net_options),
            **self.hparams,
        }

    # ------------------------------------------------------------------ the model

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters ``(mu, logvar)``, each ``B×D``."""
        h = self.encoder(x)
        return h[:, : self.latent_dim], h[:, self.latent_dim:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unconstrained decoder output ``o`` (``B×C×H×W``)."""
        return self.decoder(z)

    @staticmethod
    def mean_image(o: torch.Tensor) -> torch.Tensor:
        return mean_image(o)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """The code the metrics score: posterior means ``B×D``."""
        return self.encode(x)[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean image decoded from the posterior mean."""
        return self.mean_image(self.decode(self.representation(x)))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images of ``n`` codes drawn from the prior N(0, I)."""
        dev = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, device=dev, generator=generator)
        return self.mean_image(self.decode(z))

    def recon(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-image negative log-likelihood (``B`` vector)."""
        return recon_loss(o, x, self.likelihood, self.variance)

    def _vae_forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        o = self.decode(z)
        kl_nd = kl_normal(mu, logvar)
        return {
            "mu": mu, "logvar": logvar, "z": z, "o": o,
            "recon": self.recon(o, x).mean(),
            "kl": kl_nd.sum(1).mean(),
            "kl_per_dim": kl_nd.mean(0),
        }

    def _objective(self, out: dict[str, torch.Tensor], x: torch.Tensor, step) -> dict[str, torch.Tensor]:
        return {"loss": out["recon"] + out["kl"]}

    def loss(self, x: torch.Tensor, step=0) -> dict[str, torch.Tensor]:
        """Named terms for a batch ``x`` (float ``B×C×H×W`` in [0, 1]) at iteration ``step``."""
        out = self._vae_forward(x)
        terms = self._objective(out, x, step)
        return {"loss": terms.pop("loss"), "recon": out["recon"], "kl": out["kl"],
                "kl_per_dim": out["kl_per_dim"], **terms}

    # ------------------------------------------------------------------ training

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups, one optimiser each (the trainer builds one Adam per group)."""
        return {"vae": list(self.parameters())}

    def update(self, x: torch.Tensor, step, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        """One training iteration: zero grads, backward, step every optimiser; detached terms."""
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        terms = self.loss(x, step)
        terms["loss"].backward()
        for opt in optimizers.values():
            opt.step()
        return {k: v.detach() for k, v in terms.items()}

    # ------------------------------------------------------------------ noise and the vmapped step

    def step_noise(self, batch_size: int) -> list[tuple[str, tuple[int, ...]]]:
        """Every random draw of one training iteration, in the order the iteration makes them:
        ``("normal" | "uniform", shape)``, the posterior samples of :meth:`reparameterize` and the draws
        of :meth:`draw`. A vmapped sweep draws these from each model's own generator beforehand and feeds
        them in this order, so each model gets the noise it would draw trained alone."""
        return [("normal", (batch_size, self.latent_dim))]

    def draw(self, kind: str, shape, device) -> torch.Tensor:
        """A random draw of the iteration other than the posterior sample (FactorVAE's permutation noise,
        samples of the prior): ``"normal"`` or ``"uniform"``, float32 on ``device``. Draw through here, and
        list the draw in :meth:`step_noise`, so that a vmapped sweep can feed it."""
        if kind == "normal":
            return torch.randn(shape, device=device)
        if kind == "uniform":
            return torch.rand(shape, device=device)
        raise ValueError(f"unknown kind of noise {kind!r}; valid: normal, uniform")

    def vmapped_update(self, vm, x: torch.Tensor, step) -> dict[str, torch.Tensor]:
        """:meth:`update` for the M stacked models of a vmapped sweep (``vm``: the
        :class:`~vaelab.training.vmap.VmapSweep`; ``x``: M×B×C×H×W). One gradient of :meth:`loss` for
        every parameter group, then each group's Adam step. An objective that overrides :meth:`update`
        overrides this too, with ``vm.grad``, ``vm.call`` and ``vm.optimizer_step`` (see FactorVAE)."""
        grads, terms = vm.grad("loss", vm.groups, (x,), shared=(step,), noise=vm.noise)
        for g in vm.groups:
            vm.optimizer_step(g, grads)
        return terms
