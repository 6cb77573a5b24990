"""Trainer overhead on the CPU: vaelab's loop vs a bare PyTorch loop of the same model.

Both loops train the same model (same objective, net, batch size, data in memory as uint8) for the
same number of iterations; the bare loop is the least a hand-written script can do (random indices,
gather, float, forward, backward, Adam). Prints it/s of each and the ratio (target >= 0.95).

    python benchmarks/loop_overhead.py [--preset dlib-betavae-dsprites] [--net burgess64] [--steps 300]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from vaelab.config import resolve
from vaelab.data import FactorDataset
from vaelab.models import build_model
from vaelab.training.trainer import Trainer


def synthetic_dsprites(n=4096, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.random((n, 1, 64, 64)) < 0.1).astype(np.uint8) * 255
    return FactorDataset.from_arrays(images)


def bare_loop(cfg, dataset, steps):
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, dataset.image_shape, num_train=len(dataset))
    opts = {g: torch.optim.Adam(p, lr=cfg.optim[g].lr, betas=tuple(cfg.optim[g].betas))
            for g, p in model.param_groups().items()}
    images = dataset.images
    gen = torch.Generator().manual_seed(0)
    bs = cfg.train.batch_size * model.batches_per_step
    step = torch.zeros((), dtype=torch.int64)
    t0 = None
    for i in range(steps + 10):
        if i == 10:  # warm-up excluded
            t0 = time.perf_counter()
        idx = torch.randint(len(images), (bs,), generator=gen)
        x = images[idx].float().div_(255.0)
        step.fill_(i)
        model.update(x, step, opts)
    return steps / (time.perf_counter() - t0)


def trainer_loop(cfg, dataset, steps):
    with tempfile.TemporaryDirectory() as tmp:
        cfg.train.out = tmp
        cfg.train.steps = 10
        tr = Trainer(cfg, quiet=True, dataset=dataset)
        tr.fit()  # warm-up, also exercises logging and the checkpoint
        tr.cfg.train.steps = 10 + steps
        t0 = time.perf_counter()
        tr.fit()
        return steps / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="dlib-betavae-dsprites")
    ap.add_argument("--net", default="burgess64")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    over = {"model.net": args.net, "train.batch_size": args.batch_size, "train.device": "cpu",
            "train.log_every": 100, "train.checkpoint_every": 0, "train.image_every": 0, "train.tensorboard": False}
    dataset = synthetic_dsprites()
    bare, ours = [], []
    for _ in range(args.repeats):  # interleaved so drifts in machine load hit both
        bare.append(bare_loop(resolve(args.preset, over), dataset, args.steps))
        ours.append(trainer_loop(resolve(args.preset, over), dataset, args.steps))
    b, o = max(bare), max(ours)
    print(f"preset {args.preset}, net {args.net}, batch {args.batch_size}, {args.steps} iterations, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"{'bare PyTorch loop':<22} {b:8.2f} it/s")
    print(f"{'vaelab trainer':<22} {o:8.2f} it/s")
    print(f"{'ratio':<22} {o / b:8.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
