"""`vaelab encode`: a run's posterior over a dataset split, with the ground truth, as one .npz."""
from __future__ import annotations

from pathlib import Path

from . import seed


def register(sub):
    p = sub.add_parser("encode", help="posterior means and log-variances of a split, with its factors (.npz)",
                       description="Encode every image of a split (or --n drawn at random) and write one .npz: "
                                   "mu and logvar (N x D), index (the images' dataset indices), factors (N x K "
                                   "class indices), factor_names, factor_sizes and factor_values (K x max "
                                   "size, the real value of each class, NaN-padded) where the data has "
                                   "factors, step. Read it with numpy.load (no pickle).")
    p.add_argument("run", metavar="RUN", help="run folder made by `vaelab train`")
    p.add_argument("--split", help="dataset split (default: the one the run was trained on)")
    p.add_argument("--n", type=int, help="encode this many images, drawn without replacement (default: all)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the draw and of any image noise (default 0)")
    p.add_argument("--step", type=int, help="use the checkpoint of this step (default: the newest)")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N | auto")
    p.add_argument("--batch-size", type=int, default=512, help="images per forward pass (default 512)")
    p.add_argument("--out", help="file to write (default: RUN/codes_step<S>_<split>.npz)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_encode)


def save_npz(arrays: dict, path: Path) -> Path:
    """Write ``arrays`` to ``path`` atomically (built in memory, then the one atomic writer)."""
    import io

    import numpy as np

    from ..data.prepare import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def run_encode(args):
    from ..errors import VaelabError
    from ..viz.common import open_run

    if args.batch_size < 1:
        raise VaelabError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.out is not None and not args.out.endswith(".npz"):
        raise VaelabError(f"--out {args.out}: the file must end in .npz")
    run = open_run(args.run, step=args.step, device=args.device)
    split = args.split or run.cfg.data.split or "train"
    codes = run.encode_dataset(split, n=args.n, seed=args.seed, batch_size=args.batch_size,
                               progress=not args.quiet)
    out = Path(args.out) if args.out else run.path / f"codes_step{run.step:08d}_{split}.npz"
    save_npz(codes, out)
    n, d = codes["mu"].shape
    k = codes["factors"].shape[1] if "factors" in codes else 0
    print(f"{out}: {n:,} images x {d} latents, " + (f"{k} factor{'s' * (k != 1)}" if k else "no factors"))
    return 0
