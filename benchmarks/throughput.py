"""Training throughput: eager vs the fast path, vs a plain per-item DataLoader loop, and sweeps of M models.

One command, one table. For every objective and batch size it trains the same model three ways:

* ``dataloader``: the loop a hand-written script would use: a ``torch.utils.data.Dataset`` returning one
  float image per ``__getitem__``, ``DataLoader(batch_size, shuffle=True, num_workers=0)``, the batch
  copied to the device, ``model.update``;
* ``eager``: vaelab's step with the fast path off (uint8 data on the device, one gather per batch);
* ``fast``: ``make_step(mode="auto")``: a whole-step CUDA graph on a GPU (``off`` on the CPU, where the
  fast path is off by design; ``--compile`` adds a torch.compile column);

and prints it/s, images/s and the ratios. Then for a sweep of M models (vmapped, one step trains all M)
it prints model-iterations/s against M sequential runs (M × one run's time).

    python benchmarks/throughput.py            # GPU sizes: batch 64 and 256, Burgess net, 737,280 images
    python benchmarks/throughput.py --small    # CPU-sized (a minute or two)
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from vaelab.config import resolve
from vaelab.data import FactorDataset
from vaelab.models import build_model
from vaelab.training.fast import make_step
from vaelab.training.sampler import BatchSampler

OBJECTIVES = ("betavae", "annealedvae", "factorvae", "btcvae", "dipvae")
DSPRITES_N = 737_280  # dSprites size


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def random_images(n: int, device, seed: int = 0) -> torch.Tensor:
    """n × 1 × 64 × 64 uint8 in {0, 255} (about 10% on, like dSprites), made on ``device`` in chunks."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty((n, 1, 64, 64), dtype=torch.uint8, device=device)
    step = 65536
    for i in range(0, n, step):
        j = min(n, i + step)
        out[i:j] = (torch.randint(0, 10, (j - i, 1, 64, 64), generator=g, device=device, dtype=torch.uint8) == 0
                    ).to(torch.uint8) * 255
    return out


def model_config(objective: str, net: str, batch_size: int, n_train: int) -> dict:
    optim = {"vae": {"lr": 1e-4}}
    if objective == "factorvae":
        optim["disc"] = {"lr": 1e-4, "betas": [0.5, 0.9]}
    return {"name": f"bench-{objective}", "model": {"objective": objective, "net": net}, "optim": optim,
            "train": {"batch_size": batch_size, "log_every": 10**9, "checkpoint_every": 0, "image_every": 0,
                      "tensorboard": False}}


def _build(objective, net, n_train, dev, seed=0):
    torch.manual_seed(seed)
    model = build_model({"objective": objective, "net": net}, (1, 64, 64), num_train=n_train).to(dev)
    lr = {"vae": 1e-4, "disc": 1e-4}
    opts = {g: torch.optim.Adam(p, lr=lr[g]) for g, p in model.param_groups().items()}
    return model, opts


def _time(fn, steps: int, warmup: int, dev) -> float:
    for _ in range(warmup):
        fn()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(dev)
    return steps / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------- the loops
class PerItemImages(torch.utils.data.Dataset):
    """What a plain script does: one float image per __getitem__."""

    def __init__(self, images_u8_cpu: torch.Tensor):
        self.images = images_u8_cpu

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float() / 255.0


def dataloader_loop(objective, net, images_cpu, batch, dev):
    model, opts = _build(objective, net, len(images_cpu), dev)
    per_step = batch * model.batches_per_step
    loader = torch.utils.data.DataLoader(PerItemImages(images_cpu), batch_size=per_step, shuffle=True,
                                         num_workers=0, drop_last=True)
    it = iter(loader)
    step_t = torch.zeros((), dtype=torch.int64, device=dev)
    state = {"it": it, "i": 0}

    def one():
        try:
            x = next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            x = next(state["it"])
        step_t.fill_(state["i"])
        state["i"] += 1
        model.update(x.to(dev, non_blocking=True), step_t, opts)

    return one


def step_loop(objective, net, images_dev, batch, dev, mode, **kw):
    model, opts = _build(objective, net, len(images_dev), dev)
    sampler = BatchSampler(images_dev, torch.arange(len(images_dev)), batch, seed=0, device=dev)
    fn = make_step(model, opts, sampler, mode, dev, **kw)
    state = {"i": 0}

    def one():
        fn.step_t.fill_(state["i"])
        state["i"] += 1
        fn(fn.step_t)

    return one, fn.mode


def best_rates(loops: dict, steps: int, warmup: int, repeats: int, dev) -> dict:
    """Best it/s of each loop over ``repeats`` interleaved timings (machine-load drifts hit all alike)."""
    best = {k: 0.0 for k in loops}
    for r in range(repeats):
        for k, fn in loops.items():
            best[k] = max(best[k], _time(fn, steps, warmup if r == 0 else 0, dev))
    return best


def sweep_loop(objective, net, images_dev, batch, dev, m: int, tmp: str):
    """One vmapped iteration of M models (each iteration trains all M)."""
    from vaelab.training.vmap import VmapSweep
    from vaelab.training.trainer import Trainer

    ds = FactorDataset.from_arrays(images_dev[:1].cpu())
    ds.images = images_dev
    trainers = []
    for k in range(m):
        cfg = resolve(model_config(objective, net, batch, len(images_dev)),
                      {"train.seed": k, "train.device": str(dev), "train.out": str(Path(tmp) / f"M{m}-r{k}")})
        tr = Trainer(cfg, quiet=True, dataset=ds)
        tr._sweep_cpu_rng = torch.get_rng_state()
        tr._sweep_dev_rng = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else torch.get_rng_state()
        trainers.append(tr)
    engine = VmapSweep(trainers, quiet=True)
    step_t = torch.zeros((), dtype=torch.int64, device=dev)

    def one():
        engine.step_all(step_t)

    return one


# ---------------------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="CPU-sized: batch 16, 4,096 images, few steps")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--objectives", default=",".join(OBJECTIVES))
    ap.add_argument("--batch-sizes", help="comma-separated (default 64,256; --small 16)")
    ap.add_argument("--net", default="burgess64")
    ap.add_argument("--n-images", type=int, help=f"training images (default {DSPRITES_N:,}; --small 4,096)")
    ap.add_argument("--steps", type=int, help="timed iterations (default 200; --small 8)")
    ap.add_argument("--warmup", type=int, help="untimed iterations first (default 20; --small 2)")
    ap.add_argument("--sweep-sizes", help="M values (default 1,4,16; --small 1,4)")
    ap.add_argument("--sweep-objective", default="betavae")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (inductor)")
    ap.add_argument("--bf16", action="store_true", help="fast path under bf16 autocast")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timings per figure; the best counts")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                       else ("cpu" if args.device == "auto" else args.device))
    small = args.small
    batches = [int(b) for b in (args.batch_sizes or ("16" if small else "64,256")).split(",")]
    n = args.n_images or (4096 if small else DSPRITES_N)
    steps = args.steps or (8 if small else 200)
    warmup = args.warmup if args.warmup is not None else (2 if small else 20)
    sizes = [int(m) for m in (args.sweep_sizes or ("1,4" if small else "1,4,16")).split(",")]
    objectives = [o for o in args.objectives.split(",") if o]
    repeats = max(1, args.repeats)

    images_dev = random_images(n, dev)
    images_cpu = images_dev.cpu() if dev.type == "cuda" else images_dev
    desc = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device {desc}; net {args.net}; {n:,} images 1x64x64 uint8; best of {repeats} x {steps} timed "
          f"iterations after {warmup} warm-up; bf16 {args.bf16}")

    rows = []
    head = (f"{'objective':<12} {'batch':>5} {'dataloader':>11} {'eager':>9} {'fast':>9} {'fast mode':<10} "
            f"{'fast img/s':>11} {'eager/DL':>9} {'fast/DL':>8} {'fast/eager':>10}")
    if args.compile:
        head += f" {'compile':>9} {'comp/eager':>10}"
    print(head)
    print("-" * len(head))
    for obj in objectives:
        for b in batches:
            loops = {"dataloader": dataloader_loop(obj, args.net, images_cpu, b, dev)}
            loops["eager"], _ = step_loop(obj, args.net, images_dev, b, dev, "off")
            loops["fast"], fmode = step_loop(obj, args.net, images_dev, b, dev, "auto", bf16=args.bf16)
            if args.compile:
                loops["compile"], _ = step_loop(obj, args.net, images_dev, b, dev, "compile")
                loops["compile"]()  # compiles outside the timing
            r = best_rates(loops, steps, warmup, repeats, dev)
            dl, eager, fast = r["dataloader"], r["eager"], r["fast"]
            per = b * (2 if obj == "factorvae" else 1)
            line = (f"{obj:<12} {b:>5} {dl:>9.1f}/s {eager:>7.1f}/s {fast:>7.1f}/s {fmode:<10} "
                    f"{fast * per:>11.0f} {eager / dl:>9.2f} {fast / dl:>8.2f} {fast / eager:>10.2f}")
            row = {"objective": obj, "batch": b, "dataloader": dl, "eager": eager, "fast": fast, "fast_mode": fmode}
            if args.compile:
                line += f" {r['compile']:>7.1f}/s {r['compile'] / eager:>10.2f}"
                row["compile"] = r["compile"]
            print(line, flush=True)
            rows.append(row)
            del loops

    b = batches[0]
    obj = args.sweep_objective
    print()
    print(f"sweep of M {obj} models, batch {b}: one vmapped step trains all M; M sequential runs take M x "
          f"one run's time, eager and with the fast path `vaelab train` uses (timed alongside each M)")
    head = (f"{'M':>3} {'vmapped it/s':>13} {'model-it/s':>11} {'seq. eager':>11} {'seq. fast':>10} "
            f"{'vs eager':>9} {'vs fast':>8} {'peak GPU GB':>12}")
    print(head)
    print("-" * len(head))
    sweep_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in sizes:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            loops = {"eager": step_loop(obj, args.net, images_dev, b, dev, "off")[0],
                     "fast": step_loop(obj, args.net, images_dev, b, dev, "auto", bf16=args.bf16)[0],
                     "vmapped": sweep_loop(obj, args.net, images_dev, b, dev, m, tmp)}
            r = best_rates(loops, max(2, steps // 2), max(1, warmup // 2), repeats, dev)
            eager, fast, vm = r["eager"], r["fast"], r["vmapped"]
            # peak device memory of this M: the resident images, the M models and their Adam states
            peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
            print(f"{m:>3} {vm:>13.2f} {vm * m:>11.1f} {eager:>11.1f} {fast:>10.1f} {vm * m / eager:>9.2f} "
                  f"{vm * m / fast:>8.2f} {peak:>12.2f}", flush=True)
            sweep_rows.append({"M": m, "vmapped": vm, "sequential": eager, "sequential_fast": fast,
                               "ratio": vm * m / eager, "ratio_fast": vm * m / fast, "peak_gb": peak})
            del loops
    return {"rows": rows, "sweep": sweep_rows}


if __name__ == "__main__":
    main()
