"""The training loop: one loop for every objective.

Read it top to bottom: set up (data, model, optimisers, sampler, resume), then the loop
``x = sampler.next(); terms = model.update(x, step, optimizers)``, and every k steps the
bookkeeping (log, validate, images, checkpoint). The iteration itself has static shapes and no
host syncs: values are read on log steps only; non-finite terms are caught on the device (the
first bad step per term is recorded without a sync) and reported exactly on the next read.

Nothing is lost, whatever happens: Ctrl-C and SIGTERM are acted on between two iterations only
(a checkpoint of a consistent state, then stop); a checkpoint is written only when every tensor is
finite; a failed write (a full disk) is one line that names the intact checkpoint; the run folder
is locked while it is written, and only a new, empty or vaelab folder is written (training/lock.py).
"""
from __future__ import annotations

import copy
import math
import signal
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..config import Config, resolve
from ..data.views import show, torch_generator
from ..errors import VaelabError, naming
from ..hooks import training_pictures
from ..paths import require_folder
from . import checkpoint, distributed
from .lock import claim_folder
from .logger import RunLogger
from .sampler import BatchSampler
from .schedule import LoopSchedule

IMAGE_ROWS = 8  # images shown in reconstruction grids


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VaelabError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise VaelabError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise VaelabError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise VaelabError(f"device {name!r} requested but MPS (Apple GPUs) is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda"):
        raise VaelabError(f"device {name!r} cannot train or run a model; use auto, cpu, cuda or cuda:N")
    return dev


def default_run_dir(cfg: Config) -> Path:
    return Path(cfg.train.out) if cfg.train.out else Path("runs") / cfg.name


def load_dataset(cfg: Config):
    from .. import data

    return data.load(cfg.data.name, root=cfg.data.root or None, split=cfg.data.split,
                     size=cfg.data.size or None, **cfg.data.options)


class _NoLogger:
    """What ranks >= 1 log to: nothing (rank 0 writes the run folder)."""

    def log(self, step, record):
        pass

    def image(self, tag, step, array_hwc):
        pass

    def picture(self, name, step, array_hwc):
        pass

    def close(self):
        pass


#: how the Python API and the command line name the arguments the trainer's errors mention
RUN_DIR = ("run_dir", "--out")
RESUME = ("resume=True", "--resume")


def _resume_from(step: int):
    return (f"resume=True, resume_step={step}", f"--resume --step {step}")


class RunWarning(UserWarning):
    """A run folder needed repair (shown as one ``vaelab: warning:`` line)."""


def _scalar_terms(terms: dict) -> dict:
    return {k: v for k, v in terms.items() if isinstance(v, torch.Tensor) and v.ndim == 0}


class Interrupted(KeyboardInterrupt):
    """Raised between two iterations once a stop was asked for (a loop that saved what it had first)."""


class StopRequest:
    """Set by SIGINT (Ctrl-C) or SIGTERM (cluster pre-emption) while training; the loop reads it between
    two iterations, so a stop never lands inside one (see :func:`deferred_interrupts`)."""

    def __init__(self):
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""


@contextmanager
def deferred_interrupts():
    """Within the block, SIGINT and SIGTERM only set the yielded :class:`StopRequest`: the loop stops at
    the top of its next iteration and saves a checkpoint in which step, weights, optimiser moments,
    sampler position and RNG all agree. The same signal a second time stops at once (KeyboardInterrupt,
    no checkpoint of that moment; the ones on disk stay complete). The previous handlers come back
    afterwards. Outside the main thread signals cannot be caught: the block runs unchanged."""
    stop = StopRequest()

    def handler(signum, frame):
        if stop.signal == signum:
            raise KeyboardInterrupt
        stop.signal = signum

    old = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield stop
    finally:
        for sig, prev in old.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)


class Trainer:
    """Trains one model from a validated :class:`Config` into one run folder.

    The trainer works on its own copy of ``cfg`` (``trainer.cfg``; the caller's is left as it is). When
    the bookkeeping is due is :class:`~vaelab.training.schedule.LoopSchedule`'s answer for
    ``trainer.cfg.train``. ``dist``: this process's :class:`~vaelab.training.distributed.Context` when
    the run is shared by several processes (torchrun; see distributed.py): rank 0 writes the run folder,
    every rank trains on its slice of each batch. ``pictures``: what draws the training pictures,
    ``fn(model, images_uint8, device) -> {name: H x W x 3 uint8}`` (default: every function registered
    in :mod:`vaelab.hooks`; None: no pictures)."""

    def __init__(self, cfg: Config, *, run_dir: Path | None = None, resume: bool = False,
                 quiet: bool = False, dataset=None, train_indices=None, val_indices=None,
                 dist: distributed.Context | None = None, resume_step: int | None = None,
                 pictures=training_pictures):
        """``resume_step``: with ``resume``, continue from the checkpoint at that step instead of the
        newest (the newer ones are moved to ``checkpoints/set-aside-<time>/``, not deleted). Rank 0
        holds the run folder's lock (training/lock.py) from here until :meth:`close`."""
        self._lock = None
        self.pictures = pictures
        try:
            self._setup(cfg, run_dir=run_dir, resume=resume, quiet=quiet, dataset=dataset,
                        train_indices=train_indices, val_indices=val_indices, dist=dist, resume_step=resume_step)
        except BaseException:
            self.release()
            raise

    def _setup(self, cfg: Config, *, run_dir, resume, quiet, dataset, train_indices, val_indices, dist,
               resume_step):
        cfg = self.cfg = copy.deepcopy(cfg)  # epochs are resolved to steps below, in this copy only
        self.run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
        self.dist = dist or distributed.Context()
        self.main = self.dist.main
        self.quiet = quiet or not self.main
        self.device = pick_device(distributed.device_for(self.dist, cfg.train.device))
        self._own_group = distributed.setup(self.dist, self.device)
        tc = cfg.train

        require_folder(self.run_dir, RUN_DIR, "the run")
        if self.main and self.run_dir.exists():  # a folder not vaelab's, or written by another process: refused
            self._lock = claim_folder(self.run_dir, "the run", RUN_DIR)
        # ---- resume: `cfg` is the run's saved config plus the caller's explicit overrides (see train())
        ck_state = None
        if resume:
            ck_path = checkpoint.find(self.run_dir, resume_step)
            ck_tensors, ck_state = checkpoint.load(ck_path)
            if "imported" in ck_state:  # `vaelab import`: weights only, no optimiser or sampler state
                raise VaelabError(f"{self.run_dir} holds a model imported from {ck_state['imported'].get('format')}: "
                                  f"its weights only, nothing to resume training from; train a new run instead")
        elif checkpoint.list_checkpoints(self.run_dir):
            raise naming("{run} already holds a run with checkpoints; pass {resume} to continue it, or choose "
                         "another {out}", run=str(self.run_dir), resume=RESUME, out=RUN_DIR)

        # ---- data
        self.dataset = dataset if dataset is not None else load_dataset(cfg)
        n = len(self.dataset)
        if train_indices is None:
            if cfg.data.val_fraction > 0:
                from ..data.splits import train_val_split

                train_indices, val_indices = train_val_split(n, cfg.data.val_fraction, tc.seed)
            else:
                train_indices = np.arange(n)
        self.train_indices = torch.as_tensor(np.asarray(train_indices), dtype=torch.int64)
        self.val_indices = None if val_indices is None else torch.as_tensor(np.asarray(val_indices), dtype=torch.int64)
        if tc.epochs > 0:
            per_epoch = len(self.train_indices) // tc.batch_size
            tc.steps = int(tc.epochs * per_epoch)
            if tc.steps < 1:
                raise VaelabError(f"train.epochs = {tc.epochs:g} gives no iteration ({len(self.train_indices):,} "
                                  f"training images, {per_epoch:,} batches of {tc.batch_size} per epoch): give "
                                  f"more epochs, or train.steps")
            tc.epochs = 0.0  # resolved: the saved config holds the step count
        tc.validate()  # the config saved with the run must read back valid
        self.schedule = LoopSchedule(tc)  # (made again by fit, from trainer.cfg as it is then)

        # ---- model and optimisers
        from ..models import build_model

        torch.manual_seed(tc.seed)
        self.model = build_model(cfg.model, self.dataset.image_shape, num_train=len(self.train_indices)).to(self.device)
        groups = self.model.param_groups()
        missing = [g for g in groups if g not in cfg.optim]
        if missing:
            raise VaelabError(f"the {cfg.model['objective']} model has parameter group {missing[0]!r} "
                              f"but the config has no [optim.{missing[0]}] table")
        extra = [g for g in cfg.optim if g not in groups]
        if extra:
            raise VaelabError(f"[optim.{extra[0]}] does not match a parameter group of the "
                              f"{cfg.model['objective']} model (groups: {', '.join(groups)})")
        self.optimizers = {
            g: torch.optim.Adam(params, lr=cfg.optim[g].lr, betas=tuple(cfg.optim[g].betas),
                                eps=cfg.optim[g].eps, weight_decay=cfg.optim[g].weight_decay)
            for g, params in groups.items()}
        for opt in self.optimizers.values():
            self.dist.average_gradients(opt)  # torchrun: mean gradient over ranks before each step
        self.plateau = {g: {"factor": 1.0, "best": math.inf, "bad": 0} for g in groups}

        images = self.dataset.images
        if self.device.type == "cuda" and images.device.type == "cpu":
            images = images.to(self.device)  # uint8 on the GPU: a batch is one gather
        view = self.dataset.view  # noise drawn per batch on the images' device, from the checkpointed RNG
        if view is not None:
            view = view.to(images.device)
        self.sampler = BatchSampler(images, self.train_indices, tc.batch_size, mode=cfg.data.sampling,
                                    seed=tc.seed, device=self.device, rank=self.dist.rank, world=self.dist.world,
                                    view=view)
        self.step = 0
        self.elapsed = 0.0
        if ck_state is not None:
            try:
                self._restore(ck_tensors, ck_state)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                raise VaelabError(f"checkpoint {ck_path} is corrupt (its state.json does not fit: "
                                  f"{type(e).__name__}: {str(e)[:120]})") from None
        if self.main:
            if self._lock is None:  # a new folder: made only now that config, data and model are good
                self._lock = claim_folder(self.run_dir, "the run", RUN_DIR)
            if ck_state is None and checkpoint.list_checkpoints(self.run_dir):  # a run started meanwhile
                raise naming("{run} already holds a run with checkpoints; pass {resume} to continue it, or "
                             "choose another {out}", run=str(self.run_dir), resume=RESUME, out=RUN_DIR)
            if ck_state is not None:
                self._set_aside_newer(self.step)
        if self.dist.active:  # every rank from rank 0's weights; ranks >= 1 draw their own noise
            self.dist.broadcast_module(self.model)
            if not self.main:
                torch.manual_seed(distributed.noise_seed(tc.seed, self.dist.rank, self.step))
        if self.main:
            from ..data.prepare import atomic_write_bytes

            try:
                atomic_write_bytes(self.run_dir / "config.toml", self.cfg.to_toml().encode())
            except OSError as e:
                raise VaelabError(f"cannot write {self.run_dir / 'config.toml'}: {checkpoint.disk_error_text(e)}") from None
        self._bad_steps = None  # per-term first non-finite step, on the device
        self._term_names: list[str] = []
        self.last_checkpoint: Path | None = None
        self.step_fn = None
        self._picture_idx: torch.Tensor | None = None  # the images of the training pictures (save_images)

    # ------------------------------------------------------------------ the run folder
    def release(self):
        """Release the run folder's lock (another process may then write it)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _set_aside_newer(self, step: int):
        """Resuming from an older checkpoint: the newer ones (another history) are moved, not deleted, to
        ``checkpoints/set-aside-<time>/`` with a copy of metrics.jsonl, so neither they nor their rotation
        mix with the new history."""
        import datetime as _dt
        import shutil

        newer = [p for p in checkpoint.list_checkpoints(self.run_dir) if checkpoint.step_of(p.name) > step]
        if not newer:
            return
        dest = self.run_dir / "checkpoints" / f"set-aside-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        try:
            dest.mkdir()
            for p in newer:
                p.rename(dest / p.name)
            if (self.run_dir / "metrics.jsonl").is_file():
                shutil.copy2(self.run_dir / "metrics.jsonl", dest / "metrics.jsonl")
        except OSError as e:
            raise VaelabError(f"cannot set the checkpoints after step {step} aside in {dest}: "
                              f"{checkpoint.disk_error_text(e)}") from None
        if not self.quiet:
            print(f"resume from step {step}: the {len(newer)} newer checkpoint(s) and the metrics so far are "
                  f"kept in {dest}")

    def _newest_checkpoint_text(self) -> str:
        try:
            cks = checkpoint.list_checkpoints(self.run_dir)
        except OSError:
            cks = []
        return f"the newest checkpoint is {cks[-1]}" if cks else "no checkpoint has been saved"

    def _last_finite(self):
        """(text, how to resume from it) for the newest checkpoint: every checkpoint was checked finite."""
        try:
            cks = checkpoint.list_checkpoints(self.run_dir)
        except OSError:
            cks = []
        if not cks:
            return "no checkpoint was saved before it", ("", "")
        s = checkpoint.step_of(cks[-1].name)
        how = _resume_from(s)
        return f"the last finite checkpoint is {cks[-1]}", (f"; continue from it with {how[0]}",
                                                            f"; continue from it with {how[1]}")

    def _io_error(self, e: OSError) -> VaelabError:
        where = e.filename if e.filename is not None else self.run_dir
        return naming("training stopped at step {step}: cannot write {where}: {why}; {kept}; make room (or raise "
                      "the limit) and continue with {resume}", step=self.step, where=str(where),
                      why=checkpoint.disk_error_text(e), kept=self._newest_checkpoint_text(), resume=RESUME)

    def _close_logger(self):
        try:
            self.logger.close()
        except Exception:  # a full disk: the error that stopped the run is the one to report
            pass

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> tuple[dict, dict]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_info = {}
        for g, opt in self.optimizers.items():
            t, info = checkpoint.optimizer_to_flat(g, opt)
            tensors.update(t)
            optim_info[g] = info
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        st, sinfo = self.sampler.state()
        tensors.update(st)
        state = {"step": self.step, "config": self.cfg.to_dict(), "optim": optim_info, "sampler": sinfo,
                 "plateau": self.plateau, "elapsed": self.elapsed, "format": 1,
                 "image_shape": list(self.dataset.image_shape), "num_train": len(self.train_indices)}
        return tensors, state

    def _restore(self, tensors: dict, state: dict):
        model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.model.load_state_dict(model_sd)
        except RuntimeError as e:
            raise VaelabError(f"checkpoint does not match the model: {checkpoint.state_dict_mismatch(e)}") from None
        for g, opt in self.optimizers.items():
            checkpoint.optimizer_from_flat(g, opt, tensors, state["optim"][g])
        torch.set_rng_state(tensors["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.sampler.load_state(tensors, state["sampler"])
        self.plateau = state.get("plateau", self.plateau)
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))

    def save_checkpoint(self) -> Path | None:
        self._check_finite()  # never save a model that has gone NaN
        if not self.main:
            return None
        tensors, state = self._state()
        try:
            self.last_checkpoint = checkpoint.save(self.run_dir, self.step, tensors, state,
                                                   keep=self.cfg.train.keep_checkpoints)
        except checkpoint.NonFinite as e:  # finite terms, but a weight, buffer or Adam moment is not
            where, how = self._last_finite()
            raise naming("non-finite value in tensor {name!r} at step {step}: training stopped; {where}{how} "
                         "(lower the learning rate or check the data)", name=e.name, step=self.step,
                         where=where, how=how) from None
        return self.last_checkpoint

    # ------------------------------------------------------------------ finite checks
    def _track_finite(self, terms: dict, step_t: torch.Tensor):
        scalars = _scalar_terms(terms)
        if self._bad_steps is None:
            self._term_names = list(scalars)
            self._bad_steps = torch.full((len(scalars),), -1, dtype=torch.int64, device=self.device)
        bad = ~torch.isfinite(torch.stack([scalars[k].float() for k in self._term_names]))
        self._bad_steps = torch.where(bad & (self._bad_steps < 0), step_t, self._bad_steps)

    def use_finite_record(self, term_names: list[str], first_bad_steps: torch.Tensor):
        """Take the per-term first non-finite steps from a loop that tracks them itself (a vmapped sweep
        tracks every model's at once)."""
        self._term_names = term_names
        self._bad_steps = first_bad_steps

    def _check_finite(self):
        if self._bad_steps is None:
            return
        bad = self._bad_steps.tolist()
        hits = [(s, name) for s, name in zip(bad, self._term_names) if s >= 0]
        if hits:
            s, name = min(hits)
            where, how = self._last_finite()
            raise naming("non-finite value in term {name!r} at step {step}: training stopped; {where}{how} "
                         "(lower the learning rate or check the data)", name=name, step=s + 1, where=where, how=how)

    # ------------------------------------------------------------------ lr schedules
    def set_lrs(self):
        """Each optimiser's learning rate at this step (its schedule, and the plateau factor)."""
        for g, opt in self.optimizers.items():
            lr = self.cfg.optim[g].lr_at(self.step, self.plateau[g]["factor"])
            for pg in opt.param_groups:
                pg["lr"] = lr

    def plateau_update(self, val_loss: float):
        """Step the ``plateau`` schedules with a validation loss."""
        for g, p in self.plateau.items():
            oc = self.cfg.optim[g]
            if oc.schedule != "plateau":
                continue
            if val_loss < p["best"] - 1e-12:
                p["best"], p["bad"] = val_loss, 0
            else:
                p["bad"] += 1
                if p["bad"] > oc.patience:
                    p["factor"] *= oc.decay
                    p["bad"] = 0

    # ------------------------------------------------------------------ evaluation pieces
    @torch.no_grad()
    def validate(self) -> dict:
        """Mean of every scalar term over fixed validation batches (eval mode, RNG untouched; a view's
        noise is the same at every validation, drawn under the same fixed seed as the model's)."""
        if self.val_indices is None or len(self.val_indices) == 0:
            return {}
        bs = self.cfg.train.batch_size * self.model.batches_per_step
        idx = self.val_indices
        if len(idx) < bs:
            raise VaelabError(f"the validation split has {len(idx)} images, fewer than one batch of {bs}")
        n_batches = min(self.cfg.train.val_batches, len(idx) // bs)
        sums: dict[str, float] = {}
        self.model.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(0)
            for b in range(n_batches):
                sel = idx[b * bs:(b + 1) * bs].to(self.sampler.images.device)
                x = show(self.sampler.images[sel], self.sampler.view).to(self.device).float().div_(255.0)
                terms = _scalar_terms(self.model.loss(x, self.step))
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
        self.model.train()
        return {f"val.{k}": v / n_batches for k, v in sums.items()}

    def validation_step(self):
        """When the run has validation images: :meth:`validate`, logged, and the ``plateau`` schedules
        stepped with its loss (under torchrun, rank 0's)."""
        if self.val_indices is None:
            return
        val = self.validate() if self.main else {}
        self.logger.log(self.step, val)
        self.plateau_update(self.dist.broadcast_float(val.get("val.loss", math.inf), self.device))

    def save_images(self):
        """The training pictures (the ``pictures`` function) to images/ and TensorBoard (RNG untouched)."""
        if not self.main or self.pictures is None:
            return
        if self._picture_idx is None:  # the same images at every step: a fixed random pick
            pool = self.train_indices if self.val_indices is None else self.val_indices
            pick = np.random.default_rng(0).choice(len(pool), size=min(IMAGE_ROWS, len(pool)), replace=False)
            self._picture_idx = pool[torch.from_numpy(np.sort(pick))]  # (numpy: the torch RNG is untouched)
        idx = self._picture_idx
        images = self.sampler.images
        x_u8 = show(images[idx.to(images.device)], self.sampler.view, torch_generator(0, images.device))
        for name, picture in self.pictures(self.model, x_u8, self.device).items():
            self.logger.picture(name, self.step, picture)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> "Path":
        """Train to ``train.steps``; returns the run folder. The folder's lock, held since the trainer
        was made, is released when fit returns or raises (taken again by another call to fit)."""
        if self.main and self._lock is None:
            self._lock = claim_folder(self.run_dir, "the run", RUN_DIR)
        try:
            return self._fit()
        finally:
            self.release()

    def _fit(self) -> "Path":
        from tqdm.auto import tqdm

        from ..data.prepare import quiet as bars_off  # VAELAB_QUIET, or stderr not a terminal

        tc = self.cfg.train
        self.schedule = schedule = LoopSchedule(tc)  # what is due after each step
        if self.step >= tc.steps and not self.quiet:  # a resumed run already there: say so, change nothing
            print(f"{self.run_dir}: already at step {self.step} (>= train.steps {tc.steps}); nothing to train "
                  f"(--steps N continues it to N)")
        try:
            self.logger = (RunLogger(self.run_dir, tensorboard=tc.tensorboard, upto=self.step) if self.main
                           else _NoLogger())
        except OSError as e:
            raise self._io_error(e) from None
        if self.step_fn is None:  # built after _restore: a captured graph holds the optimiser state's tensors
            from .fast import make_step

            fast = tc.fast
            if self.dist.active and fast != "off":  # collectives inside the step: eager only (untested captured)
                if fast != "auto" and not self.quiet:
                    print(f"fast path: {fast} is not used under torchrun ({self.dist.world} processes); running off")
                fast = "off"
            self.step_fn = make_step(self.model, self.optimizers, self.sampler, fast, self.device, bf16=tc.bf16)
            self.sampler = self.step_fn.sampler  # cuda-graph: the on-device sampler (same checkpoint format)
            if self.step_fn.note and not self.quiet:
                print(self.step_fn.note)
        step_t = self.step_fn.step_t
        bar = tqdm(total=tc.steps, initial=self.step, disable=self.quiet or bars_off(), unit="it",
                   dynamic_ncols=True, desc=self.run_dir.name)
        t_last, s_last = time.perf_counter(), self.step
        last_terms = None
        stopped = None  # the signal that asked for a stop (acted on between two iterations)
        self.model.train()
        try:
            with deferred_interrupts() as stop:
                while self.step < tc.steps:
                    if self._stop_requested(stop):
                        stopped = stop.name or "SIGINT"
                        break
                    self.set_lrs()
                    step_t.fill_(self.step)
                    terms = self.step_fn(step_t)  # one whole iteration (eager, compiled or a graph replay)
                    self._track_finite(terms, step_t)
                    last_terms = terms
                    self.step += 1
                    bar.update(1)

                    due = schedule.due(self.step)
                    if due.log:
                        now = time.perf_counter()
                        self.elapsed += now - t_last
                        rate = (self.step - s_last) / max(now - t_last, 1e-9)
                        self.log(terms, rate)
                        t_last, s_last = time.perf_counter(), self.step
                        bar.set_postfix(loss=f"{float(terms['loss']):.4g}", refresh=False)
                    if due.validate:
                        self.validation_step()
                    if due.pictures:
                        self.save_images()
                    if due.checkpoint:
                        self.save_checkpoint()
                if stopped is not None:  # between two iterations: step, weights, moments, sampler, RNG agree
                    bar.close()
                    ck = self.save_checkpoint() if self.step > 0 else None
                    if not self.quiet:
                        print(f"interrupted ({stopped}) at step {self.step}: "
                              f"{f'checkpoint {ck}' if ck else 'no checkpoint'}; continue with --resume")
                elif last_terms is None:  # nothing left to do (resumed a finished run)
                    self.save_checkpoint()
        except KeyboardInterrupt:  # the same signal twice: stopped at once, mid-iteration: nothing saved now
            bar.close()
            self._close_logger()
            if not self.quiet and self.main:
                print(f"stopped at once: {self._newest_checkpoint_text()}; continue with --resume")
            raise
        except VaelabError:
            bar.close()
            self._close_logger()
            raise
        except OSError as e:  # a full disk or a file-size limit: one line, the checkpoints on disk intact
            bar.close()
            self._close_logger()
            raise self._io_error(e) from None
        bar.close()
        try:
            self.logger.close()
        except OSError as e:
            raise self._io_error(e) from None
        if stopped is not None:
            raise Interrupted
        self.dist.barrier()  # the other ranks return once rank 0's last checkpoint is written
        return self.run_dir

    def _stop_requested(self, stop: StopRequest) -> bool:
        """Whether to stop before this iteration. Under torchrun the ranks agree at log steps (one
        all-reduce there), so all of them stop after the same iteration."""
        if not self.dist.active:
            return stop.requested
        if not self.schedule.is_log_step(self.step):
            return False
        return self.dist.any_rank(stop.requested, self.device)

    def close(self):
        """Release the run folder's lock; leave the process group this trainer joined (torchrun)."""
        self.release()
        distributed.teardown(self._own_group)
        self._own_group = False

    def log(self, terms: dict, rate: float):
        """One metrics.jsonl record of this step: the terms, learning rates, speed, epoch and time
        (under torchrun: terms averaged over the ranks, weights checked to agree). Reads the values:
        non-finite terms are reported here."""
        if self.dist.active:  # the same steps on every rank: mean terms, first NaN anywhere, weights in sync
            if self._bad_steps is not None:
                self._bad_steps = self.dist.first_bad_steps(self._bad_steps)
            terms = self.dist.mean_terms(terms)
            self.dist.check_in_sync(self.model, self.step)
        self._check_finite()
        if not self.main:
            return
        record = {}
        for k, v in terms.items():
            if not isinstance(v, torch.Tensor):
                continue
            record[k] = float(v) if v.ndim == 0 else [float(x) for x in v.flatten().tolist()]
        for g, opt in self.optimizers.items():
            record[f"lr.{g}"] = opt.param_groups[0]["lr"]
        record["it_per_s"] = rate
        record["images_per_s"] = rate * self.cfg.train.batch_size * self.model.batches_per_step
        record["epoch"] = self.sampler.epoch
        record["time"] = self.elapsed
        self.logger.log(self.step, record)


# ---------------------------------------------------------------------- entry points
def _saved_config(run_dir: Path, step: int | None) -> dict:
    """The config a resumed run continues with: its config.toml, or, when that is missing, empty or
    damaged, the config saved in the checkpoint it resumes from (every checkpoint holds one)."""
    from ..config import read_toml

    path = run_dir / "config.toml"
    problem = f"{path} is missing"
    if path.is_file():
        try:
            saved = read_toml(path)
            if isinstance(saved.get("model"), dict) and isinstance(saved.get("train"), dict):
                resolve(saved)
                return saved
            problem = f"{path} is empty or not a vaelab config"
        except VaelabError as e:
            problem = f"{path} is damaged ({str(e)[:160]})"
    if not checkpoint.list_checkpoints(run_dir):
        if not path.is_file():
            raise naming("nothing to resume in {run}: no config.toml (start the run without {resume})",
                         run=str(run_dir), resume=RESUME)
        raise VaelabError(f"cannot resume {run_dir}: {problem}, and there is no checkpoint to take the config from")
    ck = checkpoint.find(run_dir, step)
    _, state = checkpoint.load(ck)
    cfg = state.get("config")
    if not isinstance(cfg, dict):
        raise VaelabError(f"cannot resume {run_dir}: {problem}, and checkpoint {ck} holds no config")
    warnings.warn(f"{problem}: resuming with the config saved in {ck} (config.toml is written again)", RunWarning)
    return cfg


def train(preset_or_config=None, *, overrides=None, resume: bool = False, quiet: bool = False,
          run_dir=None, resume_step: int | None = None, **kwargs):
    """Train a model; returns the :class:`~vaelab.training.run.Run` (or a fold summary).

    ``preset_or_config``: a preset name, a TOML path, a dict or a Config (default: ``quickstart``;
    with ``resume``, the run's own config, and a name given must be the run's). ``overrides``: dotted
    ``{"model.beta": 4}`` or ``["model.beta=4"]``; keyword arguments are shorthand for train.*
    keys (``steps=100, seed=1, device="cpu"``). ``resume_step``: with ``resume``, continue from the
    checkpoint at that step rather than the newest (the newer checkpoints are set aside, not deleted)."""
    from .run import load_run

    if resume_step is not None and not resume:
        raise naming("{step} picks the checkpoint to resume from: it needs {resume}",
                     step=("resume_step", "--step"), resume=RESUME)

    over = {}
    if overrides:
        from ..config import parse_override

        items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
        for k, v in items:
            over[".".join(k) if isinstance(k, list) else k] = v
    for k, v in kwargs.items():
        if v is not None:
            over[k if "." in k else f"train.{k}"] = v
    if run_dir is not None:
        over["train.out"] = str(run_dir)
    if "train.steps" in over and "train.epochs" not in over:
        over["train.epochs"] = 0.0  # an explicit length wins over a preset's epoch count
    if resume:  # continue from the run's own config; only explicit overrides change it
        base_dir = (Path(run_dir) if run_dir is not None
                    else default_run_dir(resolve(preset_or_config or "quickstart")))
        saved = _saved_config(base_dir, resume_step)
        asked = resolve(preset_or_config).name if isinstance(preset_or_config, str) else None
        if asked is not None and asked != saved.get("name"):
            raise naming("{run} holds a {saved!r} run, not {asked!r}: resume it with {how}", run=str(base_dir),
                         saved=saved.get("name"), asked=asked,
                         how=(f"vaelab.train({saved.get('name')!r}, resume=True, run_dir={str(base_dir)!r})",
                              f"`vaelab train {saved.get('name')} --resume --out {base_dir}`"))
        preset_or_config = saved
        over["train.out"] = str(base_dir)
        over.pop("train.epochs", None)
    cfg = resolve(preset_or_config or "quickstart", over)
    ctx = distributed.from_env()
    if resume and not quiet and ctx.main:  # say what the resumed run now does differently
        from ..config import flatten

        before, after = flatten(resolve(saved).to_dict()), flatten(cfg.to_dict())
        changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in after.items()
                   if k not in ("train.steps", "train.epochs", "train.out") and before.get(k) != v]
        if changed:
            print(f"resume: changed from the saved config: {'; '.join(changed)}")
    if cfg.train.folds:
        if resume_step is not None:
            raise naming("{step} is for one run; a k-fold run resumes each fold from its newest checkpoint",
                         step=("resume_step", "--step"))
        if ctx.active:
            raise VaelabError("k-fold cross-validation (train.folds) does not run under torchrun; "
                              "run it in one process")
        from .folds import run_folds

        return run_folds(cfg, quiet=quiet, resume=resume)
    trainer = Trainer(cfg, resume=resume, quiet=quiet, dist=ctx, resume_step=resume_step)
    try:
        path = trainer.fit()
    finally:
        trainer.close()
    return load_run(path)
