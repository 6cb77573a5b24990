"""How closely dsprites-procedural matches real dSprites images: mean IoU per shape and overall.

    python scripts/dsprites_iou.py [--npz PATH] [--n N] [--seed S]

PATH: a dSprites npz with ``imgs`` and either ``original_dataset_indices`` (a subset such as
dsprites_downsampled.npz) or the full 737,280 images in official order (the deepmind file).
Default: ../shared/data/dsprites/dsprites_downsampled.npz relative to the repository root.
The renderer must also agree on the factor values of each index (checked against
``latents_values`` when present). The ``metadata`` key is never read.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", type=Path, default=ROOT.parent / "shared" / "data" / "dsprites" / "dsprites_downsampled.npz")
    ap.add_argument("--n", type=int, default=0, help="score a random subset of this many images (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from vaelab.data import procedural as P

    if not args.npz.is_file():
        print(f"error: no file {args.npz}", file=sys.stderr)
        return 2
    with np.load(args.npz, allow_pickle=False) as z:
        keys = set(z.files)
        imgs = z["imgs"]
        if "original_dataset_indices" in keys:
            index = z["original_dataset_indices"].astype(np.int64)
        elif len(imgs) == P.COUNT:
            index = np.arange(P.COUNT, dtype=np.int64)
        else:
            print("error: the npz has neither original_dataset_indices nor all 737,280 images", file=sys.stderr)
            return 2
        values = z["latents_values"] if "latents_values" in keys else None
    if values is not None and values.shape[1] == 6:
        values = values[:, 1:]  # drop the constant colour factor
    rows = np.arange(len(imgs))
    if args.n and args.n < len(rows):
        rows = np.sort(np.random.default_rng(args.seed).choice(len(rows), args.n, replace=False))

    f = P.factors_of(index[rows])
    if values is not None:
        mine = np.stack([v[f[:, k]] for k, v in enumerate(P.factor_values())], axis=1)
        bad = ~np.isclose(mine, values[rows], atol=1e-6).all(axis=1)
        if bad.any():
            print(f"error: factor values disagree for {int(bad.sum())} indices", file=sys.stderr)
            return 1

    t0 = time.perf_counter()
    ious, shapes = [], []
    for start in range(0, len(rows), 8192):
        r = rows[start:start + 8192]
        pred = P.render(index[r]) > 0
        real = imgs[r] > 0
        inter = (pred & real).sum((1, 2))
        union = (pred | real).sum((1, 2))
        ious.append(np.where(union > 0, inter / np.maximum(union, 1), 1.0))
        shapes.append(P.factors_of(index[r])[:, 0])
    iou, shape = np.concatenate(ious), np.concatenate(shapes)
    dt = time.perf_counter() - t0

    print(f"{args.npz.name}: {len(rows):,} images, rendered in {dt:.1f} s")
    print(f"{'shape':<8} {'images':>7} {'mean IoU':>9} {'min IoU':>8} {'exact':>7}")
    for k, name in enumerate(P.SHAPE_NAMES):
        m = shape == k
        if m.any():
            print(f"{name:<8} {int(m.sum()):>7} {iou[m].mean():>9.5f} {iou[m].min():>8.4f} {(iou[m] == 1).mean():>7.1%}")
    print(f"{'overall':<8} {len(iou):>7} {iou.mean():>9.5f} {iou.min():>8.4f} {(iou == 1).mean():>7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
