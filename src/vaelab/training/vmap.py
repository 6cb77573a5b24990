"""The vmapped step: M models of one architecture trained in one step (``vaelab sweep --mode vmap``).

One :class:`~vaelab.training.trainer.Trainer` per run does the set-up and the bookkeeping (sampler,
logging, validation, images, checkpoints); the M models' parameters are stacked, and one step trains
all of them: ``torch.func.vmap`` over ``grad`` of ``functional_call(model.loss)`` with the stacked
parameters (``randomness="different"``). Hyperparameters that differ across the sweep (β, γ, C_max,
...: :data:`TENSOR_KEYS`) enter the vmapped loss as per-model tensors. Each model keeps its own data
order (its own sampler and seed, as alone), its own noise (its own generator, started from the state
the trainer alone would have after building the model, drawn in the same order — a dataset view's
image noise first, then the model's: so a vmapped model matches a model trained alone up to float
rounding) and its own Adam state. FactorVAE's two-optimiser iteration runs as three vmapped calls
(VAE gradient, second-batch codes, discriminator gradient) with the VAE step in between (SPEC 3.4
order).

Adam on stacked tensors: Adam is elementwise, so one Adam over the stacked ``M × ...`` parameters
with the same hyperparameters is exactly M independent Adams (one shared step count: all models
step together). :class:`StackedAdam` keeps each group's parameters, moments and gradients as one
``M × P`` buffer (each trainer's parameters and Adam moments are views into its row, so checkpoints
need no copies), and takes lr, betas, eps and weight decay per model (``M × 1`` columns where they
differ, e.g. an lr sweep or an lr schedule; plain floats where they agree).
"""
from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..config import Config
from ..errors import VaelabError
from .trainer import _sigterm_as_interrupt

__all__ = ["TENSOR_KEYS", "vmap_problem", "StackedAdam", "VmapSweep"]

#: [model] keys that may differ across a vmapped sweep: they are plain arithmetic in the loss, so
#: they enter it as per-model tensors. Anything else that differs (net, latent_dim, likelihood,
#: variance, c_steps, estimator, ...) changes the computation's structure: use mode "sequential".
TENSOR_KEYS: dict[str, tuple[str, ...]] = {
    "vae": (),
    "betavae": ("beta",),
    "annealedvae": ("gamma", "c_max", "c_start"),
    "btcvae": ("alpha", "beta", "gamma"),
    "dipvae": ("lambda_od", "lambda_d_factor"),
    "factorvae": ("gamma",),
}

_TRAIN_MAY_DIFFER = ("seed", "out")


# ---------------------------------------------------------------------------------------- which sweeps vmap
def vmap_problem(cfgs: list[Config]) -> str | None:
    """Why these configs cannot share one vmapped step (None when they can)."""
    first = cfgs[0]
    objective = first.model["objective"]
    if objective not in TENSOR_KEYS:
        return f"{objective} has no vmapped step yet"
    allowed = set(TENSOR_KEYS[objective])
    for cfg in cfgs[1:]:
        for key in sorted(set(first.model) | set(cfg.model)):
            if key not in allowed and first.model.get(key) != cfg.model.get(key):
                return f"model.{key} differs across the sweep (only {', '.join(sorted(allowed)) or 'seeds'} may)"
        if cfg.data != first.data:
            return "the [data] tables differ across the sweep"
        for f in first.train.__dataclass_fields__:
            if f not in _TRAIN_MAY_DIFFER and getattr(first.train, f) != getattr(cfg.train, f):
                return f"train.{f} differs across the sweep"
        if set(cfg.optim) != set(first.optim):
            return "the optimiser groups differ across the sweep"
    if first.train.folds:
        return "k-fold runs (train.folds) are not vmapped"
    return None


# ---------------------------------------------------------------------------------------- Adam
def _column(values: list[float], ref: torch.Tensor):
    """One float when every model agrees, else an M×1 tensor (a per-model column)."""
    if all(v == values[0] for v in values):
        return float(values[0])
    return torch.tensor(values, dtype=ref.dtype, device=ref.device).reshape(-1, 1)


class StackedAdam:
    """Adam over an ``M × P`` buffer: M independent Adams (torch.optim.Adam's arithmetic, per row).

    ``flat`` holds the M models' parameters of one group (row k = model k, in ``names`` order),
    ``exp_avg`` / ``exp_avg_sq`` the moments, ``t`` the shared step count. :meth:`step` takes the
    gradient as one ``M × P`` tensor and per-model lr, betas, eps, weight decay (lists of M floats)."""

    def __init__(self, flat: torch.Tensor, t: int = 0):
        self.flat = flat
        self.exp_avg = torch.zeros_like(flat)
        self.exp_avg_sq = torch.zeros_like(flat)
        self.t = int(t)
        self._cache: dict = {}

    def _col(self, key: str, values: list[float]):
        hit = self._cache.get(key)
        if hit is not None and hit[0] == values:
            return hit[1]
        col = _column(values, self.flat)
        self._cache[key] = (list(values), col)
        return col

    @torch.no_grad()
    def step(self, grad: torch.Tensor, lr: list[float], beta1: list[float], beta2: list[float],
             eps: list[float], weight_decay: list[float]):
        self.t += 1
        t = self.t
        p, m, v = self.flat, self.exp_avg, self.exp_avg_sq
        if any(w != 0 for w in weight_decay):
            wd = self._col("wd", weight_decay)
            grad = grad.add(p, alpha=wd) if isinstance(wd, float) else grad + wd * p
        b1, b2 = self._col("b1", beta1), self._col("b2", beta2)
        m.lerp_(grad, 1 - b1)
        if isinstance(b2, float):
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        else:
            v.mul_(b2).addcmul_(grad, grad * (1 - b2))
        # bias corrections in double on the host, as torch.optim.Adam (non-capturable) does
        bc1 = [1 - b ** t for b in beta1]
        bc2_sqrt = self._col(f"bc2@{t}", [(1 - b ** t) ** 0.5 for b in beta2])
        step_size = self._col(f"ss@{t}", [a / c for a, c in zip(lr, bc1)])
        denom = (v.sqrt() / bc2_sqrt).add_(self._col("eps", eps))
        if isinstance(step_size, float):
            p.addcdiv_(m, denom, value=-step_size)
        else:
            p.addcdiv_(m * (-step_size), denom)
        for key in [k for k in self._cache if "@" in k and not k.endswith(f"@{t}")]:
            del self._cache[key]


# ---------------------------------------------------------------------------------------- the vmapped step
class _Call(nn.Module):
    """``functional_call`` calls ``forward``: this one calls a named method of the model."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.m = model
        self.method = method

    def forward(self, *args):
        return getattr(self.m, self.method)(*args)


@contextmanager
def _injected(model, hparams: dict, normals: list, uniform=None):
    """Per-model hyperparameters as tensors and per-model noise (drawn outside vmap) in the model."""
    from ..models import factorvae as fv

    saved = {k: model.__dict__[k] for k in hparams}
    feed = iter(normals)
    try:
        for k, v in hparams.items():
            model.__dict__[k] = v
        model.__dict__["reparameterize"] = lambda mu, logvar: mu + torch.exp(0.5 * logvar) * next(feed)
        if uniform is not None:
            saved_perm = fv.permute_dims
            fv.permute_dims = lambda z, generator=None: torch.gather(z, 0, uniform.argsort(dim=0))
        yield
    finally:
        model.__dict__.update(saved)
        model.__dict__.pop("reparameterize", None)
        if uniform is not None:
            fv.permute_dims = saved_perm


class VmapSweep:
    """Trains M trainers' models in one vmapped step (see the module docstring)."""

    def __init__(self, trainers: list, quiet: bool = False):
        from torch.func import grad, vmap

        self.trainers = trainers
        self.quiet = quiet
        tr0 = trainers[0]
        self.cfg = tr0.cfg
        self.device = tr0.device
        self.M = len(trainers)
        steps = {tr.step for tr in trainers}
        if len(steps) != 1:
            raise VaelabError(f"the sweep's runs are at different steps ({sorted(steps)}); resume them one by one "
                              f"with `vaelab train --resume` or use --mode sequential")
        self.step = steps.pop()
        self.objective = self.cfg.model["objective"]
        self.tensor_keys = [k for k in TENSOR_KEYS[self.objective]
                            if len({repr(tr.cfg.model[k]) for tr in trainers}) > 1]
        dev = self.device
        # per-model noise generators: the state each trainer alone would draw its noise from
        self.generators, self.cpu_rng = [], []
        for tr in trainers:
            self.cpu_rng.append(tr._sweep_cpu_rng)
            g = torch.Generator(device=dev)
            g.set_state(tr._sweep_dev_rng)
            self.generators.append(g)

        # the template: a copy whose parameters are swapped for the stacked ones inside vmap
        self.template = copy.deepcopy(tr0.model)
        self.calls = {name: _Call(self.template, name) for name in
                      ("loss", "_vae_terms", "_second_codes", "_disc_terms")}
        groups0 = tr0.model.param_groups()
        pname = {id(p): n for n, p in tr0.model.named_parameters()}
        self.groups = {g: [pname[id(p)] for p in ps] for g, ps in groups0.items()}
        self.adams: dict[str, StackedAdam] = {}
        self.stacked: dict[str, dict[str, torch.Tensor]] = {}
        self.shapes: dict[str, tuple] = {}
        for g, names in self.groups.items():
            self._stack_group(g, names)
        bnames = [n for n, _ in tr0.model.named_buffers()]
        self.buffers = {}
        for n in bnames:
            stacked = torch.stack([dict(tr.model.named_buffers())[n].detach() for tr in trainers]).clone()
            for k, tr in enumerate(trainers):  # each trainer's buffer becomes a view of its row
                _set_tensor(tr.model, n, stacked[k])
            self.buffers[f"m.{n}"] = stacked
        self.hparams = {k: torch.tensor([float(tr.cfg.model[k]) for tr in trainers], device=dev)
                        for k in self.tensor_keys}
        self.d = tr0.model.latent_dim
        self.b = tr0.cfg.train.batch_size
        self.n_batches = tr0.model.batches_per_step
        self.images = tr0.sampler.images
        self.view = tr0.sampler.view
        if any(tr.sampler.images is not self.images for tr in trainers):
            raise VaelabError("the sweep's trainers must share one dataset")
        self._vmap, self._grad = vmap, grad
        self.first_bad = None
        self.term_names: list[str] = []

    # ---------------------------------------------------------------- stacking
    def _stack_group(self, g: str, names: list[str]):
        trs = self.trainers
        shapes = [dict(trs[0].model.named_parameters())[n].shape for n in names]
        sizes = [math.prod(s) for s in shapes]
        flat = torch.empty(self.M, sum(sizes), device=self.device)
        opt_states = []
        for k, tr in enumerate(trs):
            params = dict(tr.model.named_parameters())
            flat[k] = torch.cat([params[n].detach().reshape(-1) for n in names])
            opt_states.append(tr.optimizers[g])
        t0 = {int(float(st["step"])) for opt in opt_states for st in opt.state.values()} or {0}
        if len(t0) != 1:
            raise VaelabError("the sweep's optimiser states are at different steps")
        adam = StackedAdam(flat, t=t0.pop())
        # each trainer's parameters, and its Adam's moments, become views into row k
        for k, tr in enumerate(trs):
            params = dict(tr.model.named_parameters())
            opt = tr.optimizers[g]
            a = 0
            for n, shape, size in zip(names, shapes, sizes):
                p = params[n]
                st = opt.state.get(p)
                if st:
                    adam.exp_avg[k, a:a + size] = st["exp_avg"].reshape(-1).to(self.device)
                    adam.exp_avg_sq[k, a:a + size] = st["exp_avg_sq"].reshape(-1).to(self.device)
                p.data = flat[k, a:a + size].view(shape)
                opt.state[p] = {"step": torch.tensor(float(adam.t)),
                                "exp_avg": adam.exp_avg[k, a:a + size].view(shape),
                                "exp_avg_sq": adam.exp_avg_sq[k, a:a + size].view(shape)}
                a += size
        views, a = {}, 0
        for n, shape, size in zip(names, shapes, sizes):
            views[f"m.{n}"] = flat[:, a:a + size].view(self.M, *shape)
            a += size
        self.adams[g] = adam
        self.stacked[g] = views
        self.shapes[g] = (names, shapes, sizes)

    def _adam_step(self, g: str, grads: dict):
        names, shapes, sizes = self.shapes[g]
        flat_grad = torch.cat([grads[f"m.{n}"].reshape(self.M, -1) for n in names], dim=1)
        pgs = [tr.optimizers[g].param_groups[0] for tr in self.trainers]
        self.adams[g].step(flat_grad, [float(pg["lr"]) for pg in pgs], [float(pg["betas"][0]) for pg in pgs],
                           [float(pg["betas"][1]) for pg in pgs], [float(pg["eps"]) for pg in pgs],
                           [float(pg["weight_decay"]) for pg in pgs])

    # ---------------------------------------------------------------- data and noise
    def _batch(self) -> torch.Tensor:
        idx = torch.stack([tr.sampler.next_indices(self.n_batches) for tr in self.trainers])
        x = self.images[idx.to(self.images.device)]
        if self.view is not None:  # model k's image noise from its own generator, first, as alone
            x = torch.stack([self.view(x[k], generator=g) for k, g in enumerate(self.generators)])
        return x.to(self.device, non_blocking=True).float().div_(255.0)

    def _noise(self):
        """Per model, in the order the model alone draws it: randn (z₁) [, randn (z₂)] [, rand (perm)]."""
        dev, shape = self.device, (self.b, self.d)
        fvae = self.objective == "factorvae"
        n_normal = 1 + (1 if fvae and self.n_batches == 2 else 0)
        normals = [[] for _ in range(n_normal)]
        uniform = []
        for g in self.generators:
            for j in range(n_normal):
                normals[j].append(torch.randn(shape, generator=g, device=dev))
            if fvae:
                uniform.append(torch.rand(shape, generator=g, device=dev))
        return [torch.stack(n) for n in normals], (torch.stack(uniform) if fvae else None)

    # ---------------------------------------------------------------- one step
    def _params(self, groups=None) -> dict:
        out = {}
        for g in (groups or self.groups):
            out.update(self.stacked[g])
        return out

    def step_all(self, step_t: torch.Tensor) -> dict:
        if self.objective == "factorvae":
            return self._step_factorvae(step_t)
        x = self._batch()
        (eps,), _ = self._noise()
        call, template = self.calls["loss"], self.template

        def loss_fn(params, buffers, x, eps, hp, step):
            with _injected(template, hp, [eps]):
                terms = torch.func.functional_call(call, {**params, **buffers}, (x, step))
            return terms["loss"], {k: v.detach() for k, v in terms.items()}

        fn = self._vmap(self._grad(loss_fn, has_aux=True), in_dims=(0, 0, 0, 0, 0, None), randomness="different")
        grads, terms = fn(self._params(), self.buffers, x, eps, self.hparams, step_t)
        (g,) = self.groups
        self._adam_step(g, grads)
        return terms

    def _step_factorvae(self, step_t):
        x = self._batch()
        normals, uniform = self._noise()
        b = self.b
        x1, x2 = (x[:, :b], x[:, b:]) if self.n_batches == 2 else (x, None)
        template, calls = self.template, self.calls
        vmap, grad = self._vmap, self._grad

        # 1. VAE step: D(z₁) with the discriminator's parameters detached (SPEC 3.4)
        def vae_loss(pv, pd, buffers, x1, eps, hp):
            with _injected(template, hp, [eps]):
                t = torch.func.functional_call(calls["_vae_terms"], {**pv, **pd, **buffers}, (x1,))
            z = t.pop("z")
            return t["loss"], ({k: v.detach() for k, v in t.items()}, z.detach())

        fn = vmap(grad(vae_loss, has_aux=True), in_dims=(0, 0, 0, 0, 0, 0), randomness="different")
        g_vae, (terms, z1) = fn(self._params(["vae"]), self._params(["disc"]), self.buffers, x1, normals[0],
                                self.hparams)
        self._adam_step("vae", g_vae)

        # 2. second-batch codes, encoded after the VAE step with sampling, no gradient
        if x2 is not None:
            def codes(pv, buffers, x2, z1, eps):
                with _injected(template, {}, [eps]):
                    return torch.func.functional_call(calls["_second_codes"], {**pv, **buffers}, (x2, z1))

            z2 = vmap(codes, randomness="different")(self._params(["vae"]), self.buffers, x2, z1, normals[1])
        else:
            z2 = z1

        # 3. discriminator step on z₁ (detached) and the permuted z₂
        def disc_loss(pd, z1, z2, u):
            with _injected(template, {}, [], uniform=u):
                d = torch.func.functional_call(calls["_disc_terms"], pd, (z1, z2))
            return d["disc_loss"], {k: v.detach() for k, v in d.items()}

        fn = vmap(grad(disc_loss, has_aux=True), randomness="different")
        g_disc, d_terms = fn(self._params(["disc"]), z1, z2, uniform)
        self._adam_step("disc", g_disc)
        terms.update(d_terms)
        return terms

    # ---------------------------------------------------------------- bookkeeping
    def _track(self, terms, step_t):
        if self.first_bad is None:
            self.term_names = [k for k, v in terms.items() if v.ndim == 1]
            self.first_bad = torch.full((self.M, len(self.term_names)), -1, dtype=torch.int64, device=self.device)
        bad = ~torch.isfinite(torch.stack([terms[k].float() for k in self.term_names], dim=1))
        self.first_bad = torch.where(bad & (self.first_bad < 0), step_t, self.first_bad)

    def _sync_trainer(self, k: int):
        tr = self.trainers[k]
        tr.step = self.step
        if self.first_bad is not None:
            tr._bad_steps = self.first_bad[k]
            tr._term_names = self.term_names
        for g, adam in self.adams.items():
            for st in tr.optimizers[g].state.values():
                st["step"] = torch.tensor(float(adam.t))

    @contextmanager
    def _rng_of(self, k: int):
        """The global RNG holds model k's state while its trainer saves a checkpoint."""
        cpu = torch.get_rng_state()
        dev = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        if dev is None:  # on the CPU the noise came from the CPU generator
            torch.set_rng_state(self.generators[k].get_state())
        else:
            torch.set_rng_state(self.cpu_rng[k])
            torch.cuda.set_rng_state(self.generators[k].get_state(), self.device)
        try:
            yield
        finally:
            torch.set_rng_state(cpu)
            if dev is not None:
                torch.cuda.set_rng_state(dev, self.device)

    def _for_each(self, what: str, fn):
        for k, tr in enumerate(self.trainers):
            self._sync_trainer(k)
            try:
                fn(k, tr)
            except VaelabError as e:
                raise VaelabError(f"{tr.run_dir.name}: {e}") from None

    def fit(self) -> list[Path]:
        from tqdm.auto import tqdm

        from .logger import RunLogger

        tc = self.cfg.train
        trainers = self.trainers
        for tr in trainers:
            tr.logger = RunLogger(tr.run_dir, tensorboard=tr.cfg.train.tensorboard, upto=tr.step)
            tr.model.train()
        self.template.train()
        step_t = torch.zeros((), dtype=torch.int64, device=self.device)
        bar = tqdm(total=tc.steps, initial=self.step, disable=self.quiet, unit="it", dynamic_ncols=True,
                   desc=f"sweep of {self.M}")
        t_last, s_last = time.perf_counter(), self.step
        try:
            with _sigterm_as_interrupt():
                self._loop(tc, trainers, step_t, bar, t_last, s_last)
        except KeyboardInterrupt:
            bar.close()
            if self.step > 0:
                self._save_all()
                if not self.quiet:
                    print(f"interrupted at step {self.step}: checkpoints saved; continue with --resume")
            raise
        finally:
            bar.close()
            for tr in trainers:
                if getattr(tr, "logger", None) is not None:
                    tr.logger.close()
        return [tr.run_dir for tr in trainers]

    def _loop(self, tc, trainers, step_t, bar, t_last, s_last):
        terms = None
        while self.step < tc.steps:
            for tr in trainers:
                tr.step = self.step
                tr._set_lrs()
            step_t.fill_(self.step)
            terms = self.step_all(step_t)
            self._track(terms, step_t)
            self.step += 1
            bar.update(1)
            done = self.step == tc.steps
            if self.step % tc.log_every == 0 or done:
                now = time.perf_counter()
                rate = (self.step - s_last) / max(now - t_last, 1e-9)
                for tr in trainers:
                    tr.elapsed += now - t_last
                self._for_each("log", lambda k, tr: tr._log({n: v[k] for n, v in terms.items()}, rate))
                t_last, s_last = time.perf_counter(), self.step
                bar.set_postfix(loss=f"{float(terms['loss'].mean()):.4g}", refresh=False)
            if tc.val_every and (self.step % tc.val_every == 0 or done):
                self._for_each("validate", self._validate)
            if (tc.image_every and self.step % tc.image_every == 0) or done:
                self._for_each("images", lambda k, tr: tr.save_images())
            if (tc.checkpoint_every and self.step % tc.checkpoint_every == 0) or done:
                self._save_all()
        if terms is None:  # nothing left to do (resumed a finished sweep)
            self._save_all()

    def _validate(self, k, tr):
        if tr.val_indices is not None:
            v = tr.validate()
            tr.logger.log(self.step, v)
            tr._plateau_update(v.get("val.loss", math.inf))

    def _save_all(self):
        def save(k, tr):
            with self._rng_of(k):
                tr.save_checkpoint()
        self._for_each("checkpoint", save)


def _set_tensor(module: nn.Module, dotted: str, value: torch.Tensor):
    *path, leaf = dotted.split(".")
    for p in path:
        module = getattr(module, p)
    if leaf in module._buffers:
        module._buffers[leaf] = value
    else:
        setattr(module, leaf, value)
