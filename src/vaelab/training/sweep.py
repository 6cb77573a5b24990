"""Sweeps: seeds × hyperparameter grids, each run in its own folder as if trained alone.

``sweep("betavae-dsprites-higgins", grid={"model.beta": [1, 2, 4]}, seeds=[0, 1, 2])`` expands to
M = 9 configs, one run folder each (``DIR/<name>-<k>/``: config.toml, metrics.jsonl, checkpoints/,
images/, the same files and checkpoint format as ``vaelab train``, so :func:`vaelab.load_run` opens
each run as if it had been trained alone, and ``vaelab train --resume`` continues it alone).

How a group of runs is trained (``mode``):

* ``vmap``: all M models in one vmapped step (:mod:`vaelab.training.vmap`);
* ``sequential``: one trainer after another (any objective and any difference between runs).

Where the groups run (``backend``): in this process (under ``torchrun``, every N-th run on each
rank), or as tasks on a Ray cluster.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import torch

from ..config import Config, parse_override, resolve
from ..errors import VaelabError
from ..paths import require_folder
from .vmap import VmapSweep, vmap_problem

__all__ = ["MODES", "BACKENDS", "expand", "sweep", "train_group", "parse_grid", "run_state"]

MODES = ("auto", "vmap", "sequential")


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
            parts, v = parse_override(f"{key}={part.strip()}")
            values.append(v)
        key = ".".join(parts)
        if key in grid:
            raise VaelabError(f"--grid {key} is given twice: give all its values in one --grid {key}=v1,v2,...")
        grid[key] = values
    return grid


def _same(a, b) -> bool:
    """Parsed values that would configure the same run (1 and 1.0 alike; True is not 1)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _repeated(values):
    """The first value of ``values`` that repeats an earlier one, else None."""
    for i, v in enumerate(values):
        if any(_same(v, w) for w in values[:i]):
            return v
    return None


def expand(preset_or_config, grid: dict | None = None, seeds=None, overrides=None, out=None, names=None
           ) -> tuple[list[Config], list[dict], Path]:
    """The sweep's configs (grid product, seeds innermost), their distinguishing values, and DIR.

    ``names``: a function of a run's values (its label) giving its folder name inside DIR (default:
    ``<preset name>-<k>``, k the run's place in the product; a study names its runs by their values so
    that a run keeps its folder whatever else is selected)."""
    base = resolve(preset_or_config, overrides)
    grid = dict(grid or {})
    for key, values in grid.items():
        if key in ("train.seed", "train.out"):
            raise VaelabError(f"--grid {key}: use --seeds for seeds (the sweep names its run folders)")
        if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
            raise VaelabError(f"--grid {key}: expected a list of values, got {values!r}")
        values = grid[key] = list(values)
        if not values:
            raise VaelabError(f"--grid {key} has no values: give at least one, e.g. --grid {key}=1,2")
        twice = _repeated(values)
        if twice is not None:
            raise VaelabError(f"--grid {key}={','.join(str(v) for v in values)} gives {twice} twice: the "
                              f"repeat would train the same run again")
    if seeds is None:
        seeds = [base.train.seed]
    else:
        seeds = list(seeds)
        if not seeds:
            raise VaelabError("--seeds is empty: give at least one seed, e.g. 0,1,2 (or leave it out for the "
                              "preset's seed)")
        twice = _repeated(seeds)
        if twice is not None:
            raise VaelabError(f"--seeds {','.join(str(v) for v in seeds)} gives {twice} twice: the repeat would "
                              f"train the same run again")
    out_dir = Path(out) if out else Path("runs") / f"{base.name}-sweep"
    keys = list(grid)
    cfgs, labels = [], []
    for k, (combo, seed) in enumerate(itertools.product(itertools.product(*[grid[x] for x in keys]), seeds)):
        over = {key: v for key, v in zip(keys, combo)}
        label = {**over, "train.seed": seed}
        folder = f"{base.name}-{k}" if names is None else str(names(label))
        if not folder or folder in (".", "..") or Path(folder).name != folder:
            raise VaelabError(f"bad run folder name {folder!r} for {label}: expected one folder name")
        over.update({"train.seed": seed, "train.out": str(out_dir / folder)})
        cfg = resolve(base.to_dict(), over)
        cfgs.append(cfg)
        labels.append(label)
    folders = [Path(c.train.out).name for c in cfgs]
    if len(set(folders)) != len(folders):
        twice = next(f for f in folders if folders.count(f) > 1)
        raise VaelabError(f"two runs of the sweep would share the folder {twice!r}: give each run its own name")
    return cfgs, labels, out_dir



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
          runs_per_task: int | None = None, gpus_per_task: float | None = None, names=None) -> SweepResult:
    """Train every config of a sweep; returns the run folders (``.mode`` says how they were trained).

    ``resume``: continue a sweep that stopped (Ctrl-C, SIGKILL, a lost machine) by running the same
    command again with ``resume=True`` (``--resume``): runs already trained to their steps are kept
    as they are, a run with a checkpoint continues from its newest one, and runs that never saved a
    checkpoint (or never started) start from the beginning. Each run folder must hold the run the
    sweep puts there (same preset, grid values and seed), else it is an error. Without ``resume`` a
    sweep folder whose runs hold checkpoints is an error (nothing is overwritten).
    ``names``: a function of a run's values giving its folder name (see :func:`expand`).

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
    share a GPU). The run folders must be on a file system every Ray node sees. ``ray_address``,
    ``runs_per_task`` and ``gpus_per_task`` are errors with any other backend, and so are an empty or
    repeated seed or grid value and a grid key that ``overrides``, ``steps`` or ``device`` also sets."""
    if mode not in MODES:
        raise VaelabError(f"unknown sweep mode {mode!r}; valid: {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise VaelabError(f"unknown sweep backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend != "ray":  # Ray's options, even bad values, would be ignored here: say so instead
        for option, value in (("--ray-address", ray_address), ("--runs-per-task", runs_per_task),
                              ("--gpus-per-task", gpus_per_task)):
            if value is not None:
                raise VaelabError(f"{option} only applies with --backend ray (this sweep runs with --backend "
                                  f"{backend})")
    if runs_per_task is not None and runs_per_task < 1:
        raise VaelabError(f"--runs-per-task must be at least 1, got {runs_per_task}")
    if gpus_per_task is not None and not gpus_per_task >= 0:
        raise VaelabError(f"--gpus-per-task must be 0 or more (a fraction shares a GPU), got {gpus_per_task}")
    if isinstance(grid, (list, tuple)):
        grid = parse_grid(grid)
    over, given = {}, {}  # the dotted overrides, and the option each came from
    if overrides:
        items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
        for k, v in items:
            key = ".".join(k) if isinstance(k, list) else k
            over[key], given[key] = v, f"--set {key}"
    if steps is not None:
        over["train.steps"], given["train.steps"] = steps, "--steps"
    if "train.steps" in over and "train.epochs" not in over:
        over["train.epochs"] = 0.0  # an explicit length wins over a preset's epoch count (as `train`)
    if device is not None:
        over["train.device"], given["train.device"] = device, "--device"
    for key in grid or {}:
        if key in given:
            raise VaelabError(f"{key} is both in --grid and in {given[key]}: give its values in one place "
                              f"(the --grid values, or a single value with {given[key]})")
    cfgs, labels, out_dir = expand(preset_or_config, grid, seeds, over, out, names=names)
    require_folder(out_dir, "--out", "the sweep's runs")
    if resume:  # each run continues from its own saved config; only explicit overrides change it
        from ..config import read_toml

        resumed = []
        for cfg, label in zip(cfgs, labels):
            saved = Path(cfg.train.out) / "config.toml"
            if not saved.is_file():  # never started, or stopped before it wrote its config: starts afresh
                resumed.append(cfg)
                continue
            saved_cfg = read_toml(saved)
            _check_same_run(saved_cfg, cfg, label)
            extra = {**over, "train.out": cfg.train.out}
            resumed.append(resolve(saved_cfg, extra))
        cfgs = resumed
    else:
        from . import checkpoint

        started = [Path(c.train.out).name for c in cfgs if checkpoint.list_checkpoints(c.train.out)]
        if started:
            raise VaelabError(f"{out_dir} already holds {len(started)} of this sweep's {len(cfgs)} runs with "
                              f"checkpoints ({started[0]}{', ...' if len(started) > 1 else ''}): pass --resume to "
                              f"continue the sweep (trained runs kept, stopped ones resumed from their checkpoints, "
                              f"the rest started), or choose another --out")
    if any(c.train.folds for c in cfgs):
        raise VaelabError("a sweep does not run k-fold configs (train.folds); run them with `vaelab train`")
    from . import distributed

    ctx = distributed.from_env()
    if ctx.active and backend == "ray":
        raise VaelabError("--backend ray is not run under torchrun; start it as one process")
    result = SweepResult()
    result.out = out_dir
    if ctx.main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VaelabError(f"cannot create the sweep folder --out {out_dir}: {e.strerror or e}") from None
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


def _check_same_run(saved: dict, cfg: Config, label: dict):
    """A resumed sweep's run folder must hold the run the sweep puts there (preset, grid values, seed)."""
    where = Path(cfg.train.out)
    if saved.get("name") != cfg.name:
        raise VaelabError(f"{where} holds a {saved.get('name')!r} run, not a {cfg.name!r} one: this is another "
                          f"sweep's folder; choose another --out")
    for key, value in label.items():
        node = saved
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not _same(node, value):
            raise VaelabError(f"{where} holds the run with {key}={node!r}, but this sweep puts {key}="
                              f"{value!r} there: the sweep's --grid or --seeds changed since it started; "
                              f"continue it with the same ones, or choose another --out")


def run_state(cfg: Config) -> int | None:
    """The step of a run's newest checkpoint (None: no checkpoint)."""
    from . import checkpoint

    cks = checkpoint.list_checkpoints(cfg.train.out)
    return int(cks[-1].name[len(checkpoint.PREFIX):]) if cks else None


def train_group(cfgs: list[Config], mode: str = "auto", *, resume: bool = False, quiet: bool = False,
                dataset=None) -> tuple[str, str | None]:
    """Train ``cfgs`` in this process: one vmapped step for all (``vmap``) or one after another.
    Returns (the mode used, a note when vmap fell back to sequential).

    ``resume``: runs whose newest checkpoint is at their ``train.steps`` are kept untouched, runs
    with a checkpoint continue from it, the others start (see :func:`sweep`); vmapped runs are
    grouped by the step they continue from."""
    from .trainer import Trainer, pick_device

    if mode == "auto":
        mode = "vmap" if pick_device(cfgs[0].train.device).type == "cuda" else "sequential"
    starts = [run_state(c) if resume else None for c in cfgs]
    kept = [c for c, s in zip(cfgs, starts) if s is not None and s >= c.train.steps]
    todo = [(c, s) for c, s in zip(cfgs, starts) if s is None or s < c.train.steps]
    if resume and not quiet:
        n_resumed = sum(s is not None for _, s in todo)
        print(f"sweep: {len(kept)} run(s) already trained (kept), {n_resumed} resumed from a checkpoint, "
              f"{len(todo) - n_resumed} started")
    note = None
    if not todo:
        return mode, note
    if mode == "vmap":
        problem = vmap_problem([c for c, _ in todo])
        if problem:
            mode = "sequential"
            note = f"sweep: {problem}; training the runs one after another (--mode sequential)"
            if not quiet:
                print(note)
    if mode == "sequential":
        datasets: dict[str, object] = {}  # one copy per distinct [data] table (and device)
        for cfg, start in todo:
            key = json.dumps([dataclasses.asdict(cfg.data), cfg.train.device], sort_keys=True, default=str)
            if key not in datasets:
                datasets[key] = _shared_dataset([cfg], dataset, None)
            tr = Trainer(cfg, run_dir=Path(cfg.train.out), resume=start is not None, quiet=quiet,
                         dataset=datasets[key])
            tr.fit()
        return mode, note

    ds = _shared_dataset([c for c, _ in todo], dataset, None)
    buckets: dict[int, list] = {}  # the runs continuing from one step share one vmapped step
    for cfg, start in todo:
        buckets.setdefault(-1 if start is None else start, []).append(cfg)
    for start in sorted(buckets, reverse=True):  # the furthest along first
        trainers = []
        for cfg in buckets[start]:
            tr = Trainer(cfg, run_dir=Path(cfg.train.out), resume=start >= 0, quiet=True, dataset=ds)
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
