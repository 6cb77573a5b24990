"""The vmapped step: M models of one architecture trained in one step (``vaelab sweep --mode vmap``).

One :class:`~vaelab.training.trainer.Trainer` per run does the set-up and the bookkeeping (sampler,
logging, validation, pictures, checkpoints, due when :class:`~vaelab.training.schedule.LoopSchedule`
says, as for a run trained alone); the M models' parameters are stacked, and one step trains
all of them: ``torch.func.vmap`` over ``grad`` of ``functional_call(model.loss)`` with the stacked
parameters (``randomness="different"``). Hyperparameters that differ across the sweep (β, γ, C_max,
...: the objective's ``sweep_keys``) enter the vmapped loss as per-model tensors. Each model keeps its
own data order (its own sampler and seed, as alone), its own noise (its own generator, started from the
state the trainer alone would have after building the model, drawn in the order the objective's
``step_noise`` lists — a dataset view's image noise first, then the model's: so a vmapped model matches
a model trained alone up to float rounding) and its own Adam state. The objective's ``vmapped_update``
says what one iteration is, with :meth:`VmapSweep.grad`, :meth:`VmapSweep.call` and
:meth:`VmapSweep.optimizer_step`: one gradient of ``loss`` (the default), or FactorVAE's three vmapped
calls (VAE gradient, second-batch codes, discriminator gradient) with the VAE step in between (docs/objectives.md#factorvae
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
from .schedule import LoopSchedule
from .trainer import Interrupted, deferred_interrupts

__all__ = ["vmap_problem", "StackedAdam", "VmapSweep"]

# [model] keys that may differ across a vmapped sweep: the objective's sweep_keys (plain arithmetic in the
# loss, entered as per-model tensors). Anything else that differs (net, latent_dim, likelihood, variance,
# c_steps, estimator, ...) changes the computation's structure: use mode "sequential".
_TRAIN_MAY_DIFFER = ("seed", "out")


# ---------------------------------------------------------------------------------------- which sweeps vmap
def vmap_problem(cfgs: list[Config]) -> str | None:
    """Why these configs cannot share one vmapped step (None when they can)."""
    from ..models import objective_class

    first = cfgs[0]
    cls = objective_class(first.model["objective"])
    problem = cls.vmap_problem()
    if problem is not None:
        return problem
    allowed = set(cls.sweep_keys)
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
def _injected(model, hparams: dict, noise: list):
    """Per-model hyperparameters as tensors and per-model noise (drawn outside vmap, in the order of the
    model's ``step_noise``) in the model: its ``reparameterize`` and ``draw`` take the next noise tensor."""
    saved = {k: model.__dict__[k] for k in hparams}
    feed = iter(noise)

    def fed(what, shape):
        t = next(feed, None)
        if t is None or tuple(t.shape) != tuple(shape):
            raise VaelabError(f"{model.objective}: the vmapped step drew {what} of shape {tuple(shape)} where "
                              f"step_noise lists {'nothing more' if t is None else tuple(t.shape)}; list every "
                              f"draw of one iteration in step_noise, in order")
        return t

    def reparameterize(mu, logvar):
        return mu + torch.exp(0.5 * logvar) * fed("a posterior sample", mu.shape)

    def draw(kind, shape, device=None):
        return fed(f"{kind} noise", shape)

    try:
        for k, v in hparams.items():
            model.__dict__[k] = v
        model.__dict__["reparameterize"] = reparameterize
        model.__dict__["draw"] = draw
        yield
    finally:
        model.__dict__.update(saved)
        model.__dict__.pop("reparameterize", None)
        model.__dict__.pop("draw", None)


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
        problem = tr0.model.vmap_problem()
        if problem is not None:
            raise VaelabError(f"{problem}; use --mode sequential")
        self.tensor_keys = [k for k in type(tr0.model).sweep_keys
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
        self.calls: dict[str, _Call] = {}  # method name -> the module functional_call calls
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
        self.noise: list[torch.Tensor] = []  # this iteration's noise, M×... per entry of step_noise
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

    def _noise(self) -> list[torch.Tensor]:
        """This iteration's noise: per entry of the model's ``step_noise``, M×shape, model k's drawn from
        its own generator in the order the model alone draws it."""
        dev = self.device
        plan = self.template.step_noise(self.b)
        per_model = []
        for g in self.generators:
            draws = []
            for kind, shape in plan:
                if kind == "normal":
                    draws.append(torch.randn(shape, generator=g, device=dev))
                elif kind == "uniform":
                    draws.append(torch.rand(shape, generator=g, device=dev))
                else:
                    raise VaelabError(f"{self.objective}: step_noise lists {kind!r} noise; valid: normal, uniform")
            per_model.append(draws)
        return [torch.stack([draws[j] for draws in per_model]) for j in range(len(plan))]

    # ---------------------------------------------------------------- one step
    def _params(self, groups) -> dict:
        out = {}
        for g in groups:
            out.update(self.stacked[g])
        return out

    def _call(self, method: str) -> "_Call":
        if method not in self.calls:
            self.calls[method] = _Call(self.template, method)
        return self.calls[method]

    def grad(self, method: str, wrt, args: tuple, shared: tuple = (), noise=(), loss: str = "loss"):
        """Per model, the gradient of ``terms[loss]`` of ``model.method(*args, *shared)`` with respect to
        the parameters of the groups ``wrt`` (the other groups' parameters held constant), and the terms
        detached. ``args`` are stacked (M×...), ``shared`` the same for every model, ``noise`` the entries
        of :attr:`noise` this call draws, in order. Returns ``(grads, terms)``: grads for :meth:`optimizer_step`."""
        wrt = [wrt] if isinstance(wrt, str) else list(wrt)
        rest = [g for g in self.groups if g not in wrt]
        call, template = self._call(method), self.template

        def fn(p_wrt, p_rest, buffers, args, noise, hp):
            with _injected(template, hp, list(noise)):
                terms = torch.func.functional_call(call, {**p_wrt, **p_rest, **buffers}, (*args, *shared))
            return terms[loss], {k: v.detach() for k, v in terms.items()}

        f = self._vmap(self._grad(fn, has_aux=True), randomness="different")
        return f(self._params(wrt), self._params(rest), self.buffers, tuple(args), list(noise), self.hparams)

    def call(self, method: str, args: tuple, shared: tuple = (), noise=()):
        """Per model, ``model.method(*args, *shared)`` without gradients (see :meth:`grad`)."""
        call, template = self._call(method), self.template

        def fn(params, buffers, args, noise, hp):
            with _injected(template, hp, list(noise)):
                return torch.func.functional_call(call, {**params, **buffers}, (*args, *shared))

        return self._vmap(fn, randomness="different")(self._params(list(self.groups)), self.buffers, tuple(args),
                                                      list(noise), self.hparams)

    def optimizer_step(self, group: str, grads: dict):
        """The Adam step of parameter group ``group`` for every model (``grads`` from :meth:`grad`)."""
        self._adam_step(group, grads)

    def step_all(self, step_t: torch.Tensor) -> dict:
        """One iteration of every model: the model's ``vmapped_update`` on a batch and this step's noise."""
        x = self._batch()
        self.noise = self._noise()
        return self.template.vmapped_update(self, x, step_t)

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
            tr.use_finite_record(self.term_names, self.first_bad[k])
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
                raise e.prefixed(f"{tr.run_dir.name}: ") from None

    def fit(self) -> list[Path]:
        from tqdm.auto import tqdm

        from ..data.prepare import quiet as bars_off  # VAELAB_QUIET, or stderr not a terminal

        from .logger import RunLogger

        schedule = LoopSchedule(self.cfg.train)  # the runs differ only by seed in [train] (vmap_problem)
        trainers = self.trainers
        for tr in trainers:
            tr.logger = RunLogger(tr.run_dir, tensorboard=tr.cfg.train.tensorboard, upto=tr.step)
            tr.model.train()
        self.template.train()
        step_t = torch.zeros((), dtype=torch.int64, device=self.device)
        bar = tqdm(total=schedule.steps, initial=self.step, disable=self.quiet or bars_off(), unit="it",
                   dynamic_ncols=True, desc=f"sweep of {self.M}")
        t_last, s_last = time.perf_counter(), self.step
        try:
            with deferred_interrupts() as self._stop_request:
                self._loop(schedule, trainers, step_t, bar, t_last, s_last)
        except KeyboardInterrupt as e:
            bar.close()
            if self.step > 0 and isinstance(e, Interrupted):  # between two iterations (twice: at once, unsaved)
                self._save_all()
                if not self.quiet:
                    print(f"interrupted at step {self.step}: checkpoints saved; continue with --resume")
            raise
        finally:
            bar.close()
            for tr in trainers:
                if getattr(tr, "logger", None) is not None:
                    tr.logger.close()
                tr.release()  # the run folder's lock (a trainer lives on in reference cycles)
        return [tr.run_dir for tr in trainers]

    def _loop(self, schedule: LoopSchedule, trainers, step_t, bar, t_last, s_last):
        terms = None
        while self.step < schedule.steps:
            if self._stop_request.requested:  # Ctrl-C / SIGTERM: acted on here only, between iterations
                raise Interrupted
            for tr in trainers:
                tr.step = self.step
                tr.set_lrs()
            step_t.fill_(self.step)
            terms = self.step_all(step_t)
            self._track(terms, step_t)
            self.step += 1
            bar.update(1)
            due = schedule.due(self.step)  # each phase for every model before the next phase
            if due.log:
                now = time.perf_counter()
                rate = (self.step - s_last) / max(now - t_last, 1e-9)
                for tr in trainers:
                    tr.elapsed += now - t_last
                self._for_each("log", lambda k, tr: tr.log({n: v[k] for n, v in terms.items()}, rate))
                t_last, s_last = time.perf_counter(), self.step
                bar.set_postfix(loss=f"{float(terms['loss'].mean()):.4g}", refresh=False)
            if due.validate:
                self._for_each("validate", lambda k, tr: tr.validation_step())
            if due.pictures:
                self._for_each("images", lambda k, tr: tr.save_images())
            if due.checkpoint:
                self._save_all()
        if terms is None:  # nothing left to do (resumed a finished sweep)
            self._save_all()

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
