"""`vaelab sweep`: many runs of one preset (hyperparameter grid × seeds) in one process."""
from __future__ import annotations


def register(sub):
    p = sub.add_parser(
        "sweep", help="train a grid of hyperparameters x seeds (vmapped on a GPU; torchrun ranks or Ray)",
        description="Train M runs of one preset: the product of every --grid and --seeds, one run folder "
                    "each (DIR/<name>-<k>/, opened by load_run like any run) and DIR/sweep.json. "
                    "--mode vmap trains all models in one vmapped step (the default on a GPU); runs that "
                    "differ in structure (net, latent size, ...) fall back to --mode sequential, saying so. "
                    "Under torchrun (torchrun --nproc_per_node=N -m vaelab sweep ...) each process trains "
                    "every N-th run on its own GPU; --backend ray sends the runs to a Ray cluster.")
    p.add_argument("preset", metavar="PRESET|FILE.toml")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="values of one config key, e.g. --grid model.beta=1,2,4 (repeatable: product)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the preset's seed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value for every run (repeatable)")
    p.add_argument("--steps", type=int, help="training iterations")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", metavar="DIR", help="sweep folder (default: runs/<preset name>-sweep)")
    p.add_argument("--mode", choices=("auto", "vmap", "sequential"), default="auto",
                   help="auto (default): vmap on a GPU, sequential on the CPU (where vmap is slower)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local (default): this process (or its share under torchrun); ray: tasks on a Ray cluster")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to join (e.g. auto or ray://host:10001; default: start a local Ray)")
    p.add_argument("--runs-per-task", type=int, metavar="K",
                   help="Ray: runs per task (default 1 for sequential, 16 for vmap on a GPU)")
    p.add_argument("--gpus-per-task", type=float, metavar="G",
                   help="Ray: GPUs each task holds (default 1 where the cluster has GPUs, else 0; 0.25 shares one)")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped sweep (run the same command with --resume): trained runs are kept, "
                        "a stopped run continues from its newest checkpoint, the rest start")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.set_defaults(func=run_sweep)


def _seeds(text):
    from ..errors import VaelabError

    if text is None:
        return None  # the preset's seed
    parts = [s.strip() for s in text.split(",")]
    if not any(parts):
        raise VaelabError(f"--seeds {text!r} gives no seed: give comma-separated integers, e.g. 0,1,2 (or leave "
                          f"--seeds out for the preset's seed)")
    try:
        if not all(parts):
            raise ValueError
        return [int(s) for s in parts]
    except ValueError:
        raise VaelabError(f"--seeds must be comma-separated integers, e.g. 0,1,2; got {text!r}") from None


def run_sweep(args):
    import json

    from ..training.distributed import from_env
    from ..training.logger import read_metrics
    from ..training.sweep import sweep

    result = sweep(args.preset, args.grid, _seeds(args.seeds), overrides=args.overrides, steps=args.steps,
                   out=args.out, device=args.device, mode=args.mode, quiet=args.quiet, resume=args.resume,
                   backend=args.backend, ray_address=args.ray_address, runs_per_task=args.runs_per_task,
                   gpus_per_task=args.gpus_per_task)
    if not args.quiet and from_env().main:
        manifest = json.loads((result.out / "sweep.json").read_text())
        print(f"sweep of {len(result)} runs ({result.mode}) in {result.out}")
        for run in manifest["runs"]:
            rows = [r for r in read_metrics(result.out / run["name"]) if "loss" in r]
            loss = f"{rows[-1]['loss']:.6g}" if rows else "-"
            values = " ".join(f"{k}={v}" for k, v in run["values"].items())
            print(f"  {run['name']:<24} {values:<40} loss {loss}")
    return 0
