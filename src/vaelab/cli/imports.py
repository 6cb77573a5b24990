"""`vaelab import FORMAT PATH`: a model trained with another library as a vaelab run folder (a thin layer
over :mod:`vaelab.importers`)."""
from __future__ import annotations


def register(sub):
    p = sub.add_parser(
        "import", help="a model trained with disentangling-vae or 1Konny's FactorVAE / Beta-VAE, as a run folder",
        description="Read another PyTorch library's saved model (weights only: torch.load(weights_only=True), "
                    "nothing in the file is run), check its keys and shapes against the named architecture, and "
                    "write a vaelab run folder (config.toml, checkpoints/, import.json) that every command takes: "
                    "evaluate, traverse, reconstruct, sample, report.")
    fmt = p.add_subparsers(dest="format", metavar="FORMAT", parser_class=type(p))
    fmt.required = True

    def common(q, what):
        q.add_argument("path", metavar=what, help="the experiment folder" if what == "DIR" else
                       "the checkpoint file, or its folder (then 'last', else the highest iteration)")
        q.add_argument("--out", metavar="RUN", help="run folder to write (default: runs/<format>-<name>); must not "
                                                    "exist or be empty")
        q.add_argument("--dataset", metavar="NAME", help="the vaelab dataset the model was trained on"
                       + (" (default: the one specs.json names)" if what == "DIR" else
                          " (default: dsprites for one-channel nets; required for three-channel ones)"))
        q.add_argument("--data-root", metavar="PATH", help="where the dataset's files are (the run's data.root)")
        q.add_argument("--quiet", action="store_true", help="print nothing")

    q = fmt.add_parser("disentangling-vae", help="YannDubs/disentangling-vae experiment folder (model.pt, specs.json)",
                       description="Import YannDubs/disentangling-vae's experiment folder (results/NAME: model.pt "
                                   "and specs.json). The net, latent size, likelihood, loss, its hyperparameters "
                                   "and the dataset come from specs.json.")
    common(q, "DIR")
    q.set_defaults(func=run_import)

    q = fmt.add_parser("1konny-factorvae", help="1Konny/FactorVAE checkpoint (VAE and discriminator)",
                       description="Import a 1Konny/FactorVAE checkpoint file (checkpoints/NAME/ITER). The net "
                                   "(FactorVAE1/2/3), channels and latent size come from the weights.")
    common(q, "CKPT")
    q.add_argument("--latent-dim", type=int, metavar="D", help="check the latent size (read from the weights)")
    q.add_argument("--gamma", type=float, help="the TC weight it was trained with (default 6.4, its main.py's)")
    q.set_defaults(func=run_import)

    q = fmt.add_parser("1konny-betavae", help="1Konny/Beta-VAE checkpoint (BetaVAE_H or BetaVAE_B)",
                       description="Import a 1Konny/Beta-VAE checkpoint file (checkpoints/NAME/last or ITER). The "
                                   "net (BetaVAE_H / BetaVAE_B), channels and latent size come from the weights; "
                                   "the objective and its hyperparameters, which the file does not hold, from the "
                                   "options (defaults: its main.py's).")
    common(q, "CKPT")
    q.add_argument("--latent-dim", type=int, metavar="D", help="check the latent size (read from the weights)")
    q.add_argument("--objective", choices=("H", "B"),
                   help="H: β-VAE, B: controlled capacity (default: the net's letter)")
    q.add_argument("--beta", type=float, help="objective H: β (default 4)")
    q.add_argument("--gamma", type=float, help="objective B: γ (default 1000)")
    q.add_argument("--c-max", type=float, help="objective B: final capacity C in nats (default 25)")
    q.add_argument("--c-stop-iter", type=int, help="objective B: iterations until C reaches c-max (default 100000)")
    q.set_defaults(func=run_import)


def run_import(args):
    import json
    import os

    from ..importers import import_run

    if args.quiet:
        os.environ["VAELAB_QUIET"] = "1"  # no progress bar (the sha256 of a large file) either

    opts = {"dataset": args.dataset, "data_root": args.data_root}
    for key in ("latent_dim", "gamma", "objective", "beta", "c_max", "c_stop_iter"):
        if hasattr(args, key):
            opts[key] = getattr(args, key)
    run = import_run(args.format, args.path, args.out, **opts)
    if not args.quiet:
        info = json.loads((run.path / "import.json").read_text())
        m = run.config["model"]
        print(f"imported {info['architecture']}")
        print(f"  objective {m['objective']}, likelihood {m['likelihood']}, data {run.config['data']['name']}, "
              f"step {run.step}")
        for note in info.get("notes", []):
            print(f"  note: {note}")
        print(f"run folder: {run.path}")
    return 0
