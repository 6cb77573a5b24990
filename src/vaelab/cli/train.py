"""`vaelab train` and `vaelab presets`."""
from __future__ import annotations

from . import seed


def register(sub):
    p = sub.add_parser("train", help="train a model from a preset or a TOML config",
                       description="Train a model. PRESET is a name from `vaelab presets` or a .toml file. "
                                   "Under torchrun (torchrun --nproc_per_node=N -m vaelab train ...) the N "
                                   "processes share each batch of train.batch_size images and average "
                                   "their gradients; rank 0 writes the run folder.")
    p.add_argument("preset", metavar="PRESET|FILE.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.beta=4 (repeatable)")
    p.add_argument("--steps", type=int, help="training iterations")
    p.add_argument("--seed", type=seed)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", help="run folder (default: runs/<preset name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run folder")
    p.add_argument("--step", type=int, metavar="S",
                   help="with --resume: continue from the checkpoint at step S instead of the newest (e.g. the "
                        "last finite one after a divergence); newer checkpoints are set aside, not deleted")
    p.add_argument("--checkpoint-every", type=int, metavar="N")
    p.add_argument("--folds", type=int, metavar="K", help="k-fold cross-validation: K models")
    p.add_argument("--fast", choices=["off", "compile", "cuda-graph", "auto"],
                   help="fast path: the whole step compiled or captured in one CUDA graph (default auto; off on CPU)")
    p.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast around the forward pass")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.set_defaults(func=run_train)

    q = sub.add_parser("presets", help="list the presets with their sources, or show one",
                       description="Without NAME: one line per preset (objective/net, dataset, source). With NAME: "
                                   "the preset file (its comments name the source of each value and any "
                                   "conversion), then the whole config it resolves to, every default filled in.")
    q.add_argument("name", nargs="?", metavar="NAME", help="a preset to show")
    q.set_defaults(func=run_presets)


def run_train(args):
    from ..training import train

    kwargs = {"steps": args.steps, "seed": args.seed, "device": args.device,
              "checkpoint_every": args.checkpoint_every, "folds": args.folds, "fast": args.fast,
              "bf16": args.bf16}
    result = train(args.preset, overrides=args.overrides, resume=args.resume, quiet=args.quiet,
                   run_dir=args.out, resume_step=args.step, **kwargs)
    from ..training.distributed import from_env

    if not args.quiet and not isinstance(result, dict) and from_env().main:
        print(f"run folder: {result.path} (step {result.step})")
    return 0


def run_presets(args):
    from ..config import PRESET_DIR, load_preset, preset_names, resolve

    if args.name:
        from ..config import tomllib  # tomllib, or tomli on Python 3.10

        cfg = resolve(args.name)  # an unknown name: one line with the closest names
        chain, name = [], args.name
        while name:  # the preset and the presets it extends
            path = PRESET_DIR / f"{name}.toml"
            chain.append(path)
            name = tomllib.loads(path.read_text()).get("extends")  # as written (read_toml merges it)
        for path in chain:
            print(f"# ---- {path.name}")
            print(path.read_text().rstrip())
            print()
        print("# ---- resolved (every default filled in; `vaelab train` saves this as RUN/config.toml)")
        print(cfg.to_toml().rstrip())
        return 0
    rows = []
    for name in preset_names():
        d = load_preset(name)
        m = d.get("model", {})
        rows.append((name, f"{m.get('objective', '?')}/{m.get('net', '?')}", d.get("data", {}).get("name", "?"),
                     d.get("source", "")))
    rows.insert(0, ("preset", "objective/net", "dataset", "source"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}")
    return 0
