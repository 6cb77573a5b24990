"""Many models at once: seeds × hyperparameter sweeps trained in one process and one step.

``sweep("betavae-dsprites-higgins", grid={"model.beta": [1, 2, 4]}, seeds=[0, 1, 2])`` expands to
M = 9 configs, one run folder each (``DIR/<name>-<k>/``: config.toml, metrics.jsonl, checkpoints/,
images/, the same files and checkpoint format as ``vaelab train``, so :func:`vaelab.load_run` opens
each run as if it had been trained alone, and ``vaelab train --resume`` continues it alone).

Two modes:

* ``vmap``: one :class:`~vaelab.training.trainer.Trainer` per run does the set-up and the
  bookkeeping (sampler, logging, validation, images, checkpoints); the M models' parameters are
  stacked, and one step trains all of them: ``torch.func.vmap`` over ``grad`` of
  ``functional_call(model.loss)`` with the stacked parameters (``randomness="different"``).
  Hyperparameters that differ across the sweep (β, γ, C_max, ...: :data:`TENSOR_KEYS`) enter the
  vmapped loss as per-model tensors. Each model keeps its own data order (its own sampler and seed,
  as alone), its own noise (its own generator, started from the state the trainer alone would have
  after building the model, drawn in the same order — a dataset view's image noise first, then the
  model's: so a vmapped model matches a model trained alone up to float rounding) and its own Adam
  state. FactorVAE's two-optimiser iteration runs as three vmapped calls (VAE gradient, second-batch
  codes, discriminator gradient) with the VAE step in between (SPEC 3.4 order).
* ``sequential``: one trainer after another (any objective and any difference between runs).

Adam on stacked tensors: Adam is elementwise, so one Adam over the stacked ``M × ...`` parameters
with the same hyperparameters is exactly M independent Adams (one shared step count: all models
step together). :class:`StackedAdam` keeps each group's parameters, moments and gradients as one
``M × P`` buffer (each trainer's parameters and Adam moments are views into its row, so checkpoints
need no copies), and takes lr, betas, eps and weight decay per model (``M × 1`` columns where they
differ, e.g. an lr sweep or an lr schedule; plain floats where they agree).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..config import Config, parse_override, resolve
from ..errors import VaelabError
from .trainer import _sigterm_as_interrupt

__all__ = ["TENSOR_KEYS", "MODES", "BACKENDS", "expand", "vmap_problem", "StackedAdam", "VmapSweep", "sweep",
           "train_group", "parse_grid"]

MODES = ("auto", "vmap", "sequential")

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


# ---------------------------------------------------------------------------------------- configs
def parse_grid(items) -> dict[str, list]:
    """``["model.beta=1,2,4", "model.gamma=10,20"]`` -> ``{"model.beta": [1, 2, 4], ...}``."""
    grid: dict[str, list] = {}
    for item in items or []:
        if "=" not in item:
            raise VaelabError(f"bad --grid {item!r}: expected key=v1,v2,..., e.g. model.beta=1,2,4")
        key, raw = item.split("=", 1)
        values = []
        for part in raw.split(","):
            if not part.strip():
                raise VaelabError(f"bad --grid {item!r}: empty value")
            _, v = parse_override(f"{key}={part.strip()}")
            values.append(v)
        grid[key.strip()] = values
    return grid


def expand(preset_or_config, grid: dict | None = None, seeds=None, overrides=None, out=None
           ) -> tuple[list[Config], list[dict], Path]:
    """The sweep's configs (grid product, seeds innermost), their distinguishing values, and DIR."""
    base = resolve(preset_or_config, overrides)
    grid = dict(grid or {})
    for key in grid:
        if key in ("train.seed", "train.out"):
            raise VaelabError(f"--grid {key}: use --seeds for seeds (the sweep names its run folders)")
    seeds = list(seeds) if seeds else [base.train.seed]
    out_dir = Path(out) if out else Path("runs") / f"{base.name}-sweep"
    keys = list(grid)
    cfgs, labels = [], []
    for k, (combo, seed) in enumerate(itertools.product(itertools.product(*[grid[x] for x in keys]), seeds)):
        over = {key: v for key, v in zip(keys, combo)}
        label = {**over, "train.seed": seed}
        over.update({"train.seed": seed, "train.out": str(out_dir / f"{base.name}-{k}")})
        cfg = resolve(base.to_dict(), over)
        cfgs.append(cfg)
        labels.append(label)
    return cfgs, labels, out_dir


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
            tr.logger = RunLogger(tr.run_dir, tensorboard=tr.cfg.train.tensorboard)
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


# ---------------------------------------------------------------------------------------- entry point
class SweepResult(list):
    """The run folders of a sweep (a list of Paths), with ``mode``, ``note`` and ``out`` (DIR)."""

    mode: str = "vmap"
    note: str | None = None
    out: Path | None = None


def _shared_dataset(cfgs, dataset, device):
    from .trainer import load_dataset, pick_device

    ds = dataset if dataset is not None else load_dataset(cfgs[0])
    dev = pick_device(cfgs[0].train.device if device is None else device)
    if dev.type == "cuda" and ds.images.device.type == "cpu":
        ds = ds.to(dev)  # one copy on the GPU for every run (each trainer would copy its own)
    return ds


BACKENDS = ("local", "ray")


def sweep(preset_or_config, grid=None, seeds=None, *, overrides=None, steps: int | None = None, out=None,
          device: str | None = None, mode: str = "auto", quiet: bool = False, resume: bool = False,
          dataset=None, backend: str = "local", ray_address: str | None = None,
          runs_per_task: int | None = None, gpus_per_task: float | None = None) -> SweepResult:
    """Train every config of a sweep; returns the run folders (``.mode`` says how they were trained).

    ``mode``: ``vmap`` (all models in one vmapped step), ``sequential`` (one after another), or
    ``auto``: vmap on a GPU, sequential on the CPU, where the vmapped step is the slower one
    (benchmarks/throughput.py --small: 0.92x at M = 4, 0.52x at M = 16 on 2 cores).

    ``grid``: ``{"model.beta": [1, 2, 4]}`` (or ``--grid`` strings); ``seeds``: list of ints (default:
    the preset's seed); ``overrides``: ``--set`` strings or a dotted dict applied to every run.

    Where the runs go: ``backend="local"`` trains them in this process, or, under ``torchrun`` (N
    processes), each process trains every N-th run on its own GPU (``cuda:LOCAL_RANK``).
    ``backend="ray"`` sends them to a Ray cluster (``ray_address``; none: a local Ray started for
    the sweep) as tasks of ``runs_per_task`` runs (default 1 for sequential, 16 for vmap), each
    task holding ``gpus_per_task`` GPUs (default 1 where the cluster has GPUs, else 0; fractions
    share a GPU). The run folders must be on a file system every Ray node sees."""
    if mode not in MODES:
        raise VaelabError(f"unknown sweep mode {mode!r}; valid: {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise VaelabError(f"unknown sweep backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if isinstance(grid, (list, tuple)):
        grid = parse_grid(grid)
    over = {}
    if overrides:
        items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
        for k, v in items:
            over[".".join(k) if isinstance(k, list) else k] = v
    if steps is not None:
        over["train.steps"] = steps
    if "train.steps" in over and "train.epochs" not in over:
        over["train.epochs"] = 0.0  # an explicit length wins over a preset's epoch count (as `train`)
    if device is not None:
        over["train.device"] = device
    cfgs, labels, out_dir = expand(preset_or_config, grid, seeds, over, out)
    if resume:  # each run continues from its own saved config; only explicit overrides change it
        from ..config import read_toml

        resumed = []
        for cfg in cfgs:
            saved = Path(cfg.train.out) / "config.toml"
            if not saved.is_file():
                raise VaelabError(f"nothing to resume in {saved.parent}: no config.toml (start the sweep "
                                  f"without --resume)")
            extra = {**over, "train.out": cfg.train.out}
            resumed.append(resolve(read_toml(saved), extra))
        cfgs = resumed
    if any(c.train.folds for c in cfgs):
        raise VaelabError("a sweep does not run k-fold configs (train.folds); run them with `vaelab train`")
    from . import distributed

    ctx = distributed.from_env()
    if ctx.active and backend == "ray":
        raise VaelabError("--backend ray is not run under torchrun; start it as one process")
    result = SweepResult()
    result.out = out_dir
    if ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest = {"runs": [{"name": Path(c.train.out).name, "path": str(Path(c.train.out)), "values": lab}
                             for c, lab in zip(cfgs, labels)]}
        (out_dir / "sweep.json").write_text(json.dumps(manifest, indent=1))
    if backend == "ray":
        result.mode, result.note = _ray_sweep(cfgs, mode, resume, quiet, ray_address, runs_per_task,
                                              gpus_per_task)
    else:
        if ctx.active:  # torchrun: every N-th run here, on this rank's GPU
            for cfg in cfgs:
                cfg.train.device = distributed.device_for(ctx, cfg.train.device)
            dev = torch.device(cfgs[0].train.device)
            if dev.type == "cuda":
                torch.cuda.set_device(dev)  # streams and graph captures on this rank's GPU
        group = distributed.shard(cfgs, ctx) if ctx.active else cfgs
        created = distributed.setup(ctx, torch.device("cpu"), timeout_hours=24 * 7)
        try:
            if group:
                result.mode, result.note = train_group(group, mode, resume=resume, quiet=quiet, dataset=dataset)
            ctx.barrier()  # rank 0 returns (and prints the table) once every rank's runs are done
        finally:
            distributed.teardown(created)
    if ctx.main:
        manifest["mode"] = result.mode
        (out_dir / "sweep.json").write_text(json.dumps(manifest, indent=1))
    result.extend(Path(c.train.out) for c in cfgs)
    return result


def train_group(cfgs: list[Config], mode: str = "auto", *, resume: bool = False, quiet: bool = False,
                dataset=None) -> tuple[str, str | None]:
    """Train ``cfgs`` in this process: one vmapped step for all (``vmap``) or one after another.
    Returns (the mode used, a note when vmap fell back to sequential)."""
    from .trainer import Trainer, pick_device

    if mode == "auto":
        mode = "vmap" if pick_device(cfgs[0].train.device).type == "cuda" else "sequential"
    note = None
    if mode == "vmap":
        problem = vmap_problem(cfgs)
        if problem:
            mode = "sequential"
            note = f"sweep: {problem}; training the runs one after another (--mode sequential)"
            if not quiet:
                print(note)
    if mode == "sequential":
        datasets: dict[str, object] = {}  # one copy per distinct [data] table (and device)
        for cfg in cfgs:
            key = json.dumps([dataclasses.asdict(cfg.data), cfg.train.device], sort_keys=True, default=str)
            if key not in datasets:
                datasets[key] = _shared_dataset([cfg], dataset, None)
            tr = Trainer(cfg, run_dir=Path(cfg.train.out), resume=resume, quiet=quiet, dataset=datasets[key])
            tr.fit()
        return mode, note

    ds = _shared_dataset(cfgs, dataset, None)
    trainers = []
    for cfg in cfgs:
        tr = Trainer(cfg, run_dir=Path(cfg.train.out), resume=resume, quiet=True, dataset=ds)
        # the RNG state the trainer alone would draw its training noise from (after building the
        # model, or restored from its checkpoint)
        tr._sweep_cpu_rng = torch.get_rng_state()
        tr._sweep_dev_rng = (torch.cuda.get_rng_state(tr.device) if tr.device.type == "cuda"
                             else torch.get_rng_state())
        trainers.append(tr)
    VmapSweep(trainers, quiet=quiet).fit()
    return mode, note


# ---------------------------------------------------------------------------------------- Ray
def _ray_task(cfg_dicts: list[dict], mode: str, resume: bool) -> tuple[list[str], str, str | None]:
    """What one Ray task runs: a group of runs, trained as ``vaelab sweep`` would here."""
    cfgs = [resolve(d) for d in cfg_dicts]
    used, note = train_group(cfgs, mode, resume=resume, quiet=True)
    return [c.train.out for c in cfgs], used, note


def _ray_sweep(cfgs, mode, resume, quiet, address, runs_per_task, gpus_per_task) -> tuple[str, str | None]:
    from ..cluster import RaySession

    if runs_per_task is not None and runs_per_task < 1:
        raise VaelabError(f"--runs-per-task must be at least 1, got {runs_per_task}")
    if gpus_per_task is not None and not gpus_per_task >= 0:
        raise VaelabError(f"--gpus-per-task must be 0 or more (a fraction shares a GPU), got {gpus_per_task}")
    with RaySession(address, quiet) as ray:
        if gpus_per_task is None:
            gpus_per_task = 1.0 if ray.gpus > 0 else 0.0
        if runs_per_task is None:  # vmapped groups on GPUs; one run per task on CPUs
            runs_per_task = 1 if mode == "sequential" or gpus_per_task == 0 else 16
        groups = [cfgs[i:i + runs_per_task] for i in range(0, len(cfgs), runs_per_task)]
        modes, notes, done = set(), [], 0
        for _, (paths, used, note) in ray.map(_ray_task, [([c.to_dict() for c in g], mode, resume) for g in groups],
                                              num_gpus=gpus_per_task, what="sweep task"):
            modes.add(used)
            if note:
                notes.append(note)
            done += len(paths)
            if not quiet:
                print(f"ray: {done}/{len(cfgs)} runs done ({', '.join(Path(p).name for p in paths)})")
    return ("+".join(sorted(modes)) or mode), (notes[0] if notes else None)
