"""The fast path: one training iteration eagerly, under ``torch.compile``, or captured whole in one CUDA graph.

:func:`make_step` wraps ``model.update`` (every optimiser once, docs/conventions.md#training-conventions) and the batch draw into one
callable, ``terms = step_fn(step_t)``, in one of four modes:

* ``"off"``: eager, exactly the trainer's loop body (``x = sampler.next(); model.update(x, step_t, opts)``).
* ``"compile"``: ``torch.compile(model.update)`` (default backend inductor, default mode: kernel fusion
  without CUDA graphs of its own; ``"reduce-overhead"`` would wrap pieces of the step, split at
  ``backward()``, in cudagraph trees, which the ``"cuda-graph"`` mode already does whole, and
  ``"max-autotune"`` costs minutes of compilation for a step this small). Same sampler as ``"off"``.
* ``"cuda-graph"``: the data on the GPU as uint8 and the batch indices on the device
  (:class:`DeviceSampler`: static index buffers, a fresh permutation per epoch drawn outside the graph
  from a device generator seeded by (seed, epoch)), Adam made ``capturable`` with its state initialised,
  a few warm-up iterations on a side stream (on a copy of model and optimisers, so they do not count
  as training), then the whole iteration (gather, forward, backward, every optimiser step, FactorVAE's
  permutation, the capacity schedule via ``step_t``, the device-side finite check) captured once with
  :class:`torch.cuda.graph` and replayed every call. Outputs are static tensors, overwritten by each
  replay; read them every k steps, not every step. Learning rates set as floats in the param groups
  (schedules) are copied into device tensors the graph reads, only when they change.
* ``"auto"``: ``"cuda-graph"`` on CUDA when the step captures, else ``"compile"`` when it is available,
  else ``"off"``. On the CPU the fast path is ``"off"``.

Where a step cannot be captured (capture raises), the step falls back and ``step_fn.note`` holds one
line for the trainer to print. ``bf16=True`` runs the model's forward pieces under
``torch.autocast(device_type, torch.bfloat16)`` with the returned terms cast back to float32
(backward and optimiser steps stay outside autocast).
"""
from __future__ import annotations

import copy
import importlib.util
import types

import torch

from ..data.views import show
from ..errors import VaelabError

__all__ = ["MODES", "DeviceSampler", "FastStep", "make_step", "make_capturable", "compile_available",
           "resolve_mode"]

MODES = ("off", "compile", "cuda-graph", "auto")
WARMUP_ITERS = 3  # eager iterations on a side stream before capture (CUDA graphs docs: "a few")


# ---------------------------------------------------------------------------------------- helpers
def compile_available(device) -> bool:
    """Whether ``torch.compile`` with its default backend can run on ``device`` here."""
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return False
    except Exception:  # pragma: no cover - platforms without dynamo
        return False
    if torch.device(device).type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return True


def resolve_mode(mode: str, device) -> tuple[str, str | None]:
    """(mode to try first, note) for a requested mode on ``device``. On the CPU ``auto`` is ``off``."""
    if mode not in MODES:
        raise VaelabError(f"unknown fast mode {mode!r}; valid: {', '.join(MODES)}")
    dev = torch.device(device)
    if dev.type != "cuda":
        if mode == "auto":
            return "off", None
        if mode == "cuda-graph":
            return "off", f"fast path: cuda-graph needs a CUDA device (training on {dev.type}); running eagerly"
    return mode, None


def make_capturable(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Turn an Adam (or AdamW) into ``capturable=True`` in place, with the same state.

    Missing state is initialised as Adam's first step would (zeros, step 0), ``step`` tensors move
    to the parameter's device as float32, so a CUDA graph can capture ``optimizer.step()``."""
    for group in optimizer.param_groups:
        if group.get("fused"):
            raise VaelabError("a fused Adam cannot be made capturable; build it with fused=False")
        group["capturable"] = True
        for p in group["params"]:
            st = optimizer.state[p]
            if len(st) == 0:
                st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group.get("amsgrad"):
                    st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            else:
                st["step"] = torch.as_tensor(st["step"], dtype=torch.float32).to(p.device).reshape(())
    return optimizer


def _indexed(device) -> torch.device:
    """``cuda`` -> ``cuda:<current>`` so devices compare equal to the ones tensors report."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def _mix_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for (seed, epoch): each epoch's permutation is reproducible from these two."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 64)
    x ^= x >> 31
    return x % (1 << 63)


# ---------------------------------------------------------------------------------------- device sampler
class DeviceSampler:
    """Batch indices drawn on the device into static buffers: one gather per step, no host sync.

    ``buf`` holds the current epoch's permutation of the training indices (``epoch_permutation``)
    or a block of ``⌊N/b⌋`` steps of uniform draws (``iid``); ``offset`` (device scalar) says where
    the step reads. :meth:`advance` (host, before the step) moves the position and draws a new
    permutation when fewer than one step's images are left (the partial remainder is dropped: static
    shapes); :meth:`gather` (inside a captured step) reads ``b = batch_size·n_batches`` images.
    Each epoch's buffer comes from a device generator seeded by (seed, epoch), so the state to save
    is the host-sampler format: the buffer as ``sampler.perm``, ``pos`` (images used in it) and
    ``epoch`` — :class:`~vaelab.training.sampler.BatchSampler` can read it, and a resumed run draws
    the same batches."""

    def __init__(self, images: torch.Tensor, indices: torch.Tensor | None, batch_size: int, *,
                 n_batches: int = 1, mode: str = "epoch_permutation", seed: int = 0, host_generator=None,
                 view=None):
        self.images = images
        self.view = view  # the dataset's image view (on the images' device): noise from the default generator
        self.device = images.device
        n_all = images.shape[0]
        idx = torch.arange(n_all) if indices is None else torch.as_tensor(indices)
        self.indices = idx.to(device=self.device, dtype=torch.int64)
        self.batch_size = int(batch_size)
        self.n_batches = int(n_batches)
        self.items = self.batch_size * self.n_batches
        self.mode = mode
        self.seed = int(seed)
        n = len(self.indices)
        if n < self.items:
            raise VaelabError(f"the training split has {n} images, fewer than one step's {self.items}; "
                              f"lower train.batch_size")
        length = n if mode == "epoch_permutation" else (n // self.items) * self.items
        self.buf = torch.empty(length, dtype=torch.int64, device=self.device)
        self.offset = torch.zeros((), dtype=torch.int64, device=self.device)
        self._arange = torch.arange(self.items, device=self.device)
        self.pos = 0
        self.epoch = 0
        self.filled = False
        self.host_generator = host_generator if host_generator is not None else torch.Generator().manual_seed(self.seed)

    @classmethod
    def from_host(cls, sampler, n_batches: int = 1) -> "DeviceSampler":
        """Continue a :class:`BatchSampler` (same images, indices, epoch and position) on the device."""
        ds = cls(sampler.images, sampler.indices, sampler.batch_size, n_batches=n_batches, mode=sampler.mode,
                 seed=sampler.generator.initial_seed(), host_generator=sampler.generator,
                 view=getattr(sampler, "view", None))
        ds._load_position(sampler.perm, sampler.pos, sampler.epoch)
        return ds

    @property
    def steps_per_epoch(self) -> int:
        return len(self.buf) // self.items

    def _load_position(self, perm: torch.Tensor, pos: int, epoch: int):
        self.epoch = int(epoch)
        self.pos = int(pos)
        self.filled = len(perm) == len(self.buf) and len(perm) > 0
        if self.filled:
            self.buf.copy_(perm.to(self.device, torch.int64))

    def _refresh(self):
        self.epoch += 1
        gen = torch.Generator(device=self.device).manual_seed(_mix_seed(self.seed, self.epoch))
        n = len(self.indices)
        if self.mode == "epoch_permutation":
            pick = torch.randperm(n, generator=gen, device=self.device)
        else:
            pick = torch.randint(n, (len(self.buf),), generator=gen, device=self.device)
        self.buf.copy_(self.indices[pick])
        self.pos = 0
        self.filled = True

    def advance(self):
        """Host side of a step: move to the next ``items`` images (new epoch when needed)."""
        if not self.filled or self.pos + self.items > len(self.buf):
            self._refresh()
        self.offset.fill_(self.pos)
        self.pos += self.items

    def gather(self) -> torch.Tensor:
        """The step's images as float in [0, 1]: static shapes, capturable (a view's noise too)."""
        idx = self.buf.index_select(0, self._arange + self.offset)
        return show(self.images.index_select(0, idx), self.view).float().div_(255.0)

    def next(self, n_batches: int | None = None) -> torch.Tensor:
        if n_batches is not None and n_batches != self.n_batches:
            raise ValueError(f"this DeviceSampler draws {self.n_batches} batches per step, not {n_batches}")
        self.advance()
        return self.gather()

    # ---------------------------------------------------------------- state (BatchSampler format)
    def state(self) -> tuple[dict, dict]:
        perm = self.buf.detach().cpu().clone() if self.filled else torch.empty(0, dtype=torch.int64)
        return ({"sampler.generator": self.host_generator.get_state(), "sampler.perm": perm},
                {"pos": self.pos, "epoch": self.epoch, "mode": self.mode, "device": True})

    def load_state(self, tensors: dict, info: dict):
        if "sampler.generator" in tensors:
            self.host_generator.set_state(tensors["sampler.generator"])
        self._load_position(tensors["sampler.perm"], info["pos"], info["epoch"])


# ---------------------------------------------------------------------------------------- bf16
def _forward_methods(model) -> tuple[str, ...]:
    """The methods of ``model.update`` that run the networks forward (autocast wraps these only; the
    objective declares them, ``VAE.forward_methods``); () = wrap the whole of ``update``."""
    methods = getattr(type(model), "autocast_methods", None)
    return tuple(methods()) if methods is not None else ()


def _to_float(out):
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    if isinstance(out, tuple):
        return tuple(_to_float(v) for v in out)
    return out


def _autocast_wrapper(name: str, device_type: str):
    def wrapped(self, *args, **kwargs):
        with torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False):
            out = getattr(type(self), name)(self, *args, **kwargs)
        return _to_float(out)
    wrapped.__name__ = name
    return wrapped


def _install_bf16(model, device_type: str) -> list[str]:
    names = _forward_methods(model)
    for name in names:  # bound to the instance: a deepcopy of the model rebinds to the copy
        model.__dict__[name] = types.MethodType(_autocast_wrapper(name, device_type), model)
    return list(names)


# ---------------------------------------------------------------------------------------- the step
class FastStep:
    """``terms = step_fn(step_t)``: one training iteration (draws its own batch).

    Attributes: ``mode`` (what runs: off / compile / cuda-graph), ``note`` (one line for the user, or
    None), ``sampler`` (the sampler whose state checkpoints must save), ``step_t`` (a 0-dim int64
    device tensor; pass it back each call after ``step_t.fill_(step)`` to spare a copy),
    ``first_bad`` / ``term_names`` (per scalar term, the first step whose value was not finite, -1
    if none: kept on the device, read it when logging)."""

    def __init__(self, model, optimizers: dict, sampler, mode: str, device, *, bf16: bool = False,
                 compile_backend: str | None = None, compile_mode: str | None = None,
                 warmup: int = WARMUP_ITERS):
        self.model = model
        self.optimizers = dict(optimizers)
        self.device = _indexed(device)
        self.sampler = sampler
        self.n_batches = int(getattr(model, "batches_per_step", 1))
        self.bf16 = bool(bf16)
        self.note: str | None = None
        self.first_bad: torch.Tensor | None = None
        self.term_names: list[str] = []
        self.step_t = torch.zeros((), dtype=torch.int64, device=self.device)
        self._patched: list[str] = []
        self._autocast_all = False
        if self.bf16:
            self._patched = _install_bf16(model, self.device.type)
            self._autocast_all = not self._patched
        self._update = model.update
        self._graph = None
        self.requested = mode
        want, self.note = resolve_mode(mode, self.device)
        chain = {"auto": ["cuda-graph", "compile", "off"], "cuda-graph": ["cuda-graph", "off"],
                 "compile": ["compile"], "off": ["off"]}[want]
        notes = []
        for i, m in enumerate(chain):
            if m == "compile" and mode == "auto" and not compile_available(self.device):
                continue
            try:
                if m == "cuda-graph":
                    self._setup_graph(warmup)
                elif m == "compile":
                    self._update = torch.compile(model.update, backend=compile_backend or "inductor",
                                                 mode=compile_mode)
                self.mode = m
                break
            except Exception as e:  # noqa: BLE001 - any capture failure falls back, with a note
                if i == len(chain) - 1:
                    raise
                msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
                notes.append(f"{m} failed ({type(e).__name__}: {msg})")
        if notes:
            self.note = f"fast path: {'; '.join(notes)}; running {self.mode}"
        self._first_compiled_call = self.mode == "compile"

    # ---------------------------------------------------------------- shared pieces
    def _run_update(self, x, step_t, model=None, optimizers=None, update=None):
        model = model if model is not None else self.model
        update = update if update is not None else (self._update if model is self.model else model.update)
        optimizers = optimizers if optimizers is not None else self.optimizers
        if self._autocast_all:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False):
                return _to_float(update(x, step_t, optimizers))
        return update(x, step_t, optimizers)

    def _scalars(self, terms) -> list[str]:
        return [k for k, v in terms.items() if isinstance(v, torch.Tensor) and v.ndim == 0]

    def _track(self, terms, step_t):
        """first_bad[k] = first step whose term k was not finite (device-side, no sync)."""
        if self.first_bad is None:
            self.term_names = self._scalars(terms)
            self.first_bad = torch.full((len(self.term_names),), -1, dtype=torch.int64, device=self.device)
        bad = ~torch.isfinite(torch.stack([terms[k].float() for k in self.term_names]))
        self.first_bad.copy_(torch.where(bad & (self.first_bad < 0), step_t.to(torch.int64), self.first_bad))

    def _step_input(self, step_t):
        if step_t is self.step_t:
            return self.step_t
        if isinstance(step_t, torch.Tensor):
            self.step_t.copy_(step_t.reshape(()))
        else:
            self.step_t.fill_(int(step_t))
        return self.step_t

    # ---------------------------------------------------------------- the call
    def __call__(self, step_t) -> dict[str, torch.Tensor]:
        step_t = self._step_input(step_t)
        if self._graph is not None:
            self._sync_lrs()
            self.sampler.advance()
            self._graph.replay()
            return self._static_terms
        x = self.sampler.next(self.n_batches)
        if self._first_compiled_call:
            self._first_compiled_call = False
            try:
                terms = self._run_update(x, step_t)
            except Exception as e:  # noqa: BLE001 - auto: a backend that fails to compile -> eager
                if self.requested != "auto":
                    raise
                msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
                self.note = f"fast path: compile failed ({type(e).__name__}: {msg}); running off"
                self.mode, self._update = "off", self.model.update
                terms = self._run_update(x, step_t)
        else:
            terms = self._run_update(x, step_t)
        self._track(terms, step_t)
        return terms

    def close(self):
        """Undo the bf16 method patches (the model is then plain again)."""
        for name in self._patched:
            self.model.__dict__.pop(name, None)
        self._patched = []

    # ---------------------------------------------------------------- CUDA graph
    def _sync_lrs(self):
        """Learning rates the trainer set as floats -> the device tensors the graph reads."""
        for (g, i), t in self._lr_tensors.items():
            lr = self.optimizers[g].param_groups[i]["lr"]
            if isinstance(lr, torch.Tensor):
                continue
            if self._lr_cache[(g, i)] != lr:
                t.fill_(lr)
                self._lr_cache[(g, i)] = lr

    def _setup_graph(self, warmup: int):
        dev = self.device
        if not torch.cuda.is_available() or dev.type != "cuda":
            raise VaelabError("CUDA graphs need a CUDA device")
        images = self.sampler.images
        if _indexed(images.device) != dev:
            raise VaelabError("the training images are not on the GPU (too large?); a captured step "
                              "needs the data on the device")
        host_sampler = self.sampler
        dsampler = (host_sampler if isinstance(host_sampler, DeviceSampler)
                    else DeviceSampler.from_host(host_sampler, self.n_batches))
        lr_tensors, lr_cache, saved_flags = {}, {}, {}
        for g, opt in self.optimizers.items():
            saved_flags[g] = [pg.get("capturable", False) for pg in opt.param_groups]
            make_capturable(opt)
            for i, pg in enumerate(opt.param_groups):
                lr = float(pg["lr"])
                lr_tensors[(g, i)] = torch.tensor(lr, dtype=torch.float32, device=dev)
                lr_cache[(g, i)] = lr
        try:
            self._capture(dsampler, lr_tensors, warmup)
        except BaseException:
            for g, opt in self.optimizers.items():
                opt.zero_grad(set_to_none=True)
                for i, pg in enumerate(opt.param_groups):
                    pg["lr"] = lr_cache[(g, i)]
                    pg["capturable"] = saved_flags[g][i]
                    if not pg["capturable"]:  # plain Adam keeps `step` on the host (no sync per step)
                        for p in pg["params"]:
                            st = opt.state.get(p)
                            if st and isinstance(st.get("step"), torch.Tensor):
                                st["step"] = st["step"].detach().to("cpu", torch.float32)
            self._graph = None
            self.first_bad, self.term_names = None, []
            raise
        finally:
            for g, opt in self.optimizers.items():
                for i, pg in enumerate(opt.param_groups):
                    if isinstance(pg["lr"], torch.Tensor):
                        pg["lr"] = lr_cache[(g, i)]
        # the graph holds the optimiser's kernels; the param groups go back to plain Adam settings so
        # checkpoints look like any other run's (the capturable state tensors stay where they are)
        for g, opt in self.optimizers.items():
            for pg in opt.param_groups:
                pg["capturable"] = False
        self._lr_tensors, self._lr_cache = lr_tensors, lr_cache
        self.sampler = dsampler

    def _capture(self, dsampler: DeviceSampler, lr_tensors: dict, warmup: int):
        dev = self.device
        model, opts = self.model, self.optimizers
        for (g, i), t in lr_tensors.items():
            opts[g].param_groups[i]["lr"] = t
        # warm-up on a copy, on a side stream, RNG untouched: it initialises the libraries' lazy state
        # (cuBLAS/cuDNN handles, autograd's stream bookkeeping) without training the real model
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        dev_index = dev.index if dev.index is not None else torch.cuda.current_device()
        with torch.cuda.stream(side), torch.random.fork_rng(devices=[dev_index]):
            w_model, w_opts = copy.deepcopy((model, opts))
            w_step = torch.zeros((), dtype=torch.int64, device=dev)
            if not dsampler.filled:  # valid indices for the warm-up reads (the first advance draws)
                dsampler.buf.copy_(dsampler.indices[: len(dsampler.buf)])
            for _ in range(max(1, warmup)):
                x = dsampler.gather()
                terms = self._run_update(x, w_step, w_model, w_opts)
            names = self._scalars(terms)
            del w_model, w_opts, terms, x
        torch.cuda.current_stream(dev).wait_stream(side)
        torch.cuda.synchronize(dev)
        self.term_names = names
        self.first_bad = torch.full((len(names),), -1, dtype=torch.int64, device=dev)
        for opt in opts.values():
            opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            x = dsampler.gather()
            terms = self._run_update(x, self.step_t, model, opts, update=model.update)
            bad = ~torch.isfinite(torch.stack([terms[k].float() for k in names]))
            self.first_bad.copy_(torch.where(bad & (self.first_bad < 0), self.step_t, self.first_bad))
        self._graph = graph
        self._static_terms = terms


def make_step(model, optimizers: dict, sampler_or_images, mode: str = "auto", device=None, *,
              bf16: bool = False, batch_size: int | None = None, seed: int = 0,
              sampling: str = "epoch_permutation", compile_backend: str | None = None,
              compile_mode: str | None = None, warmup: int = WARMUP_ITERS, view=None) -> FastStep:
    """One training iteration as a callable: ``terms = make_step(...)(step_t)``.

    ``sampler_or_images``: the trainer's sampler (``BatchSampler`` or :class:`DeviceSampler`), or a
    uint8 image tensor ``N×C×H×W`` (then ``batch_size``, ``seed`` and ``sampling`` build a
    :class:`DeviceSampler` over all of it, shown through ``view`` if given). ``mode``: off | compile |
    cuda-graph | auto (see the module docstring). Build it after any resume (the captured graph holds the
    optimiser state's tensors)."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    sampler = sampler_or_images
    if isinstance(sampler_or_images, torch.Tensor):
        if batch_size is None:
            raise ValueError("make_step on an image tensor needs batch_size")
        images = sampler_or_images
        if dev.type == "cuda" and images.device.type != "cuda":
            images = images.to(dev)
        if view is not None:
            view = view.to(images.device)
        sampler = DeviceSampler(images, None, batch_size, n_batches=getattr(model, "batches_per_step", 1),
                                mode=sampling, seed=seed, view=view)
    return FastStep(model, optimizers, sampler, mode, dev, bf16=bf16, compile_backend=compile_backend,
                    compile_mode=compile_mode, warmup=warmup)
