"""`vaelab experiment interpolation | domain-alignment | global-structure RUN` (UG-VAE, docs/experiments.md)."""
from __future__ import annotations

from ..errors import VaelabError
from . import seed


def _common(p, default_batches: bool = False):
    p.add_argument("run", metavar="RUN", help="a UG-VAE run folder (made by `vaelab train ugvae-...`)")
    p.add_argument("--step", type=int, help="use the checkpoint of this iteration (default: the newest)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--seed", type=seed, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--split", help="dataset split to draw images from (default: the run's own)")
    p.add_argument("--batch-size", type=int, metavar="B",
                   help="images per batch, the unit of global inference (default: the run's batch size)")
    p.add_argument("--no-pdf", action="store_true", help="write PNG figures only (default: PNG and PDF)")
    p.add_argument("--quiet", action="store_true", help="print nothing")


def _embed(p):
    p.add_argument("--embed", choices=("tsne", "pca"), default="tsne",
                   help="2-D map of the latent means (default tsne, as the reference)")


def register(sub):
    p = sub.add_parser("experiment", help="UG-VAE experiments: interpolation, domain alignment, global structure",
                       description="Experiments of the UG-VAE paper on a trained UG-VAE run. Figures and a JSON "
                                   "of the numbers go to RUN/experiments/<name>/.")
    s = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    q = s.add_parser("interpolation", help="grids moving the global and local latents (paper §4.1)",
                     description="Encoding grid (rows: global β between two batches, columns: local z between "
                                 "two images) and sampling grids (per component: β from +1.5 to −1.5, z around "
                                 "the component mean).")
    _common(q)
    q.add_argument("--variant", choices=("encoding", "sampling", "both"), default="both")
    q.add_argument("--steps", type=int, default=7, help="rows and columns of each grid (default 7)")
    q.add_argument("--components", help="sampling: comma-separated components (default: all K)")
    q.add_argument("--raw-grids", action="store_true",
                   help="also write every grid as a PNG at the images' own resolution")
    q.set_defaults(func=run_interpolation_cmd)

    q = s.add_parser("domain-alignment", help="global latents of one-domain and mixed batches (paper §4.2)",
                     description="Encode one-domain and mixed batches of a two-domain dataset, map their global "
                                 "means in 2-D with the interpolation path between two batches, and score how "
                                 "well a linear classifier tells the domains apart from the global latent "
                                 "(cross-validated) against the same with random labels.")
    _common(q)
    _embed(q)
    q.add_argument("--domains", metavar="A,B",
                   help="the two domains: dataset names (e.g. mnist,mnist-inverted or dsprites,mnist); "
                        "default: the run's own dataset when it has a 'domain' factor, MNIST vs inverted "
                        "MNIST for an MNIST run")
    q.add_argument("--batches", type=int, default=100, help="one-domain map batches, half per domain (default 100)")
    q.add_argument("--mixed-batches", type=int, default=50,
                   help="mixed batches (each image's domain with p 1/2) on the map (default 50)")
    q.add_argument("--mode", choices=("single_domain", "reference"), default="single_domain",
                   help="reference: mixed map batches labelled by their first image (ipeis/UG-VAE)")
    q.add_argument("--steps", type=int, default=7, help="interpolation steps (default 7)")
    q.set_defaults(func=run_domain_cmd)

    q = s.add_parser("global-structure", help="what the global latent captures: CelebA attributes or MNIST series "
                                              "(paper §4.3)",
                     description="(a) attributes: batches filtered by an attribute vs random batches; (b) MNIST "
                                 "series: batches of digit streams (even, odd, Fibonacci, primes) vs random "
                                 "batches. 2-D maps and SVM accuracies of the global means.")
    _common(q)
    _embed(q)
    q.add_argument("--kind", choices=("auto", "attributes", "series"), default="auto",
                   help="auto: series for MNIST digits, attributes for attribute factors")
    q.add_argument("--attribute", default="Male", help="attributes: the factor to filter by (default Male)")
    q.add_argument("--attribute-batches", type=int, default=100,
                   help="attributes: batches with the attribute, and as many without (default 100)")
    q.add_argument("--series-batches", type=int, default=200, help="series: series batches (default 200)")
    q.add_argument("--random-batches", type=int,
                   help="random batches (default 300 for attributes, 400 for series, as the reference)")
    q.add_argument("--local-points", type=int, default=1000,
                   help="series: local means on the digit map (default 1000)")
    q.set_defaults(func=run_global_cmd)


def _formats(args):
    return ("png",) if args.no_pdf else ("png", "pdf")


def _positive(name, value):
    if value is not None and value < 1:
        raise VaelabError(f"{name} must be at least 1, got {value}")


def _load(args):
    from ..experiments.common import load_ugvae_run

    _positive("--batch-size", args.batch_size)
    return load_ugvae_run(args.run, step=args.step, device=args.device)


def _report(args, res, lines):
    if args.quiet:
        return
    print(f"{res.name}: {res.dir}")
    for line in lines:
        print(f"  {line}")
    for note in getattr(res, "data", {}).get("notes", []):  # caveats belong beside the numbers, not only in the JSON
        print(f"  note: {note}")


def _fmt(v):
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def run_interpolation_cmd(args):
    from ..experiments.interpolation import run_interpolation

    comps = None
    if args.components:
        try:
            comps = [int(c) for c in args.components.split(",") if c.strip()]
        except ValueError:
            raise VaelabError(f"--components takes comma-separated integers, got {args.components!r}") from None
    run = _load(args)
    res = run_interpolation(run, variant=args.variant, steps=args.steps, batch_size=args.batch_size,
                            seed=args.seed, split=args.split, components=comps, formats=_formats(args),
                            raw_grids=args.raw_grids)
    _report(args, res, [f"{k} = {_fmt(v)}" for k, v in res.summary.items()])
    return 0


def run_domain_cmd(args):
    from ..experiments.domain_alignment import run_domain_alignment

    _positive("--batches", args.batches)
    run = _load(args)
    doms = None
    if args.domains:
        doms = [d.strip() for d in args.domains.split(",") if d.strip()]
        if len(doms) != 2:
            raise VaelabError(f"--domains takes two names separated by a comma, got {args.domains!r}")
    res = run_domain_alignment(run, domains=doms, n_batches=args.batches, mixed_batches=args.mixed_batches,
                               batch_size=args.batch_size, steps=args.steps, embed=args.embed, mode=args.mode,
                               seed=args.seed, split=args.split, formats=_formats(args))
    _report(args, res, [f"{k} = {_fmt(v)}" for k, v in res.summary.items()])
    return 0


def run_global_cmd(args):
    from ..experiments.global_structure import run_global_structure

    for name in ("attribute_batches", "series_batches", "random_batches", "local_points"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    run = _load(args)
    res = run_global_structure(run, kind=args.kind, attribute=args.attribute,
                               attribute_batches=args.attribute_batches, series_batches=args.series_batches,
                               random_batches=args.random_batches, local_points=args.local_points,
                               batch_size=args.batch_size, embed=args.embed, seed=args.seed, split=args.split,
                               formats=_formats(args))
    _report(args, res, [f"{k} = {_fmt(v)}" for k, v in res.summary.items()])
    return 0
