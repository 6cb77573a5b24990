"""Time every metric at the default (reference) profile on a dSprites-shaped grid.

    python benchmarks/metrics_speed.py                    # linear encoder, 64x64 synthetic grid
    python benchmarks/metrics_speed.py --encoder conv     # dlib's conv encoder shape (random weights)
    python benchmarks/metrics_speed.py --profile fast --image-size 32
    python benchmarks/metrics_speed.py --run runs/quickstart  # a trained run: its encoder and its dataset

The grid has dSprites' factor sizes (shape 3, scale 6, orientation 40, posX 32, posY 32 = 737,280
images). It uses ``vaelab.data.load("dsprites-procedural")`` when that loader exists (``--data
procedural``), otherwise renders a cheap synthetic grid: a rectangle whose size, position and grey level
follow the factors, filled with a stripe pattern that turns with orientation. The encoder is deterministic with 10
latents: ``linear`` (a fixed random projection of the pixels plus a little nonlinearity) or ``conv``
(dlib's conv_encoder layer shapes: 4 stride-2 4x4 convolutions 32-32-64-64, dense 256, 10 means).

Prints the seconds per metric, the encoding share, the total, and the budget check (<= 180 s on 2 CPU
cores for the full suite, encoding included).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

SIZES = (3, 6, 40, 32, 32)
NAMES = ("shape", "scale", "orientation", "posX", "posY")


def synthetic_grid(image_size: int = 64):
    """A rectangle whose side follows scale and whose centre follows posX / posY, filled with a stripe
    pattern that turns with orientation, at a grey level set by shape (row-major, posY fastest)."""
    from vaelab.data import FactorDataset

    n = int(np.prod(SIZES))
    f = np.stack(np.unravel_index(np.arange(n), SIZES), axis=1).astype(np.int64)
    r = torch.arange(image_size, dtype=torch.float32) - (image_size - 1) / 2
    angle = torch.arange(SIZES[2], dtype=torch.float32) / SIZES[2] * np.pi
    proj = r[None, :, None] * torch.cos(angle)[:, None, None] + r[None, None, :] * torch.sin(angle)[:, None, None]
    stripe = torch.where((proj / (image_size / 8)).floor().remainder(2) == 0, 1.0, 0.6)        # 40 x H x W
    level = torch.tensor([255.0, 195.0, 135.0])[:, None, None, None]                           # shape
    patterns = (level * stripe[None]).to(torch.uint8)                                         # 3 x 40 x H x W
    images = torch.empty((n, 1, image_size, image_size), dtype=torch.uint8)
    pix = torch.arange(image_size, dtype=torch.float32)
    ft = torch.from_numpy(f)
    chunk = 65536
    for i in range(0, n, chunk):
        ff = ft[i:i + chunk]
        half = image_size * (0.08 + 0.03 * ff[:, 1].float())                                   # scale
        cx = image_size * (0.2 + 0.6 * ff[:, 3].float() / 31)                                 # posX
        cy = image_size * (0.2 + 0.6 * ff[:, 4].float() / 31)                                 # posY
        rows = (pix[None, :] - cy[:, None]).abs() <= half[:, None]
        cols = (pix[None, :] - cx[:, None]).abs() <= half[:, None]
        box = rows[:, :, None] & cols[:, None, :]
        images[i:i + chunk, 0] = torch.where(box, patterns[ff[:, 0], ff[:, 2]], torch.zeros((), dtype=torch.uint8))
    return FactorDataset(images=images, factors=ft, factor_names=list(NAMES), factor_sizes=list(SIZES),
                         is_grid=True, name="dsprites-shaped-synthetic")


def load_grid(kind: str, image_size: int):
    if kind == "procedural":
        from vaelab.data import load

        return load("dsprites-procedural")
    if kind == "auto":
        try:
            from vaelab.data import load

            ds = load("dsprites-procedural")
            if ds.is_grid and tuple(ds.factor_sizes) == SIZES:
                return ds
        except Exception as e:  # the renderer unavailable here: fall back
            print(f"(dsprites-procedural unavailable: {str(e).splitlines()[0]}; using the synthetic grid)")
    return synthetic_grid(image_size)


def make_encoder(kind: str, image_shape, latents: int = 10):
    torch.manual_seed(0)
    c, h, w = image_shape
    if kind == "linear":
        proj = torch.randn(c * h * w, latents) / np.sqrt(c * h * w)
        bias = torch.randn(latents) * 0.1

        @torch.no_grad()
        def encode(images):
            x = images.reshape(len(images), -1).float().div_(255.0)
            z = x @ proj + bias
            return torch.tanh(z * 4).numpy()
        return encode
    if kind == "conv":
        layers, ch, side = [], c, h
        for out in (32, 32, 64, 64):  # dlib architectures.conv_encoder
            layers += [torch.nn.Conv2d(ch, out, 4, 2, 1), torch.nn.ReLU()]
            ch, side = out, side // 2
        layers += [torch.nn.Flatten(), torch.nn.Linear(ch * side * side, 256), torch.nn.ReLU(),
                   torch.nn.Linear(256, 2 * latents)]
        net = torch.nn.Sequential(*layers).eval()

        @torch.no_grad()
        def encode(images):
            out = []
            for i in range(0, len(images), 512):
                out.append(net(images[i:i + 512].float().div_(255.0))[:, :latents])
            return torch.cat(out).numpy()
        return encode
    raise SystemExit(f"unknown encoder {kind!r}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a run folder: time the suite on its model (Run.encode) and its dataset")
    ap.add_argument("--encoder", choices=("linear", "conv"), default="linear")
    ap.add_argument("--data", choices=("auto", "synthetic", "procedural"), default="synthetic")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--profile", choices=("default", "fast"), default="default")
    ap.add_argument("--metrics", default="all")
    ap.add_argument("--jobs", type=int, default=None, help="DCI processes (default: all available cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from vaelab.metrics.evaluate import evaluate, format_table

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    t0 = time.perf_counter()
    run = None
    if args.run:
        from vaelab.training import load_run

        run = load_run(args.run)
        ds = run.dataset()
        encode, args.encoder = run.encode, f"{run.config['model']['net']} from {args.run}"
    else:
        ds = load_grid(args.data, args.image_size)
        encode = make_encoder(args.encoder, ds.image_shape)
    t_data = time.perf_counter() - t0
    probe = ds.gather(slice(0, 4096))
    t1 = time.perf_counter()
    encode(probe)
    rate = len(probe) / (time.perf_counter() - t1)
    print(f"dataset {ds.name}: {len(ds):,} images {ds.image_shape}, built in {t_data:.1f} s; "
          f"encoder {args.encoder}: {rate:,.0f} images/s; {cores} CPU cores, torch threads {torch.get_num_threads()}")
    res = evaluate(run if args.run else encode, None if args.run else ds, metrics=args.metrics, seed=args.seed, profile=args.profile,
                   n_jobs=args.jobs, progress=True, save=False)
    print(format_table(res))
    cpu = res["cpu_seconds"]
    print("CPU seconds in this process per metric (wall above is inflated when other jobs share the cores; "
          "DCI's worker processes are not counted here, run with --jobs 1 to include them):")
    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()) + f"; sum {sum(cpu.values()):.1f}")
    print(f"images encoded: {res['images_encoded']:,} (distinct rows; draws: BetaVAE "
          f"{2 * 64 * 15000:,}, FactorVAE {64 * 15000 + 10000:,} at the default profile)")
    total = res["seconds"]["total"]
    print(f"TOTAL {total:.1f} s for the full suite at profile {args.profile!r} "
          f"({'within' if total <= 180 else 'OVER'} the 180 s budget)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
