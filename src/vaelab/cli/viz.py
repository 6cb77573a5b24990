"""`vaelab reconstruct | traverse | sample | plot | report`: pictures of what a model learned."""
from __future__ import annotations

from . import seed


def _common(p, out_help: str = "output folder (default: RUN/images)"):
    p.add_argument("run", metavar="RUN", help="run folder made by `vaelab train`")
    p.add_argument("--step", type=int, help="use the checkpoint of this step (default: the newest)")
    p.add_argument("--out", help=out_help)
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N | auto")
    p.add_argument("--seed", type=seed, default=0, help="seed of the image picks and prior draws (default 0)")


def register(sub):
    p = sub.add_parser("reconstruct", help="data images over their reconstructions (PNG)",
                       description="Write a grid of data images, each row above its reconstructions.")
    _common(p)
    p.add_argument("--n", type=int, help="images to show (default 32)")
    p.add_argument("--images", type=int, nargs="+", action="extend", metavar="I", help="dataset indices to show instead")
    p.set_defaults(func=run_reconstruct)

    p = sub.add_parser("traverse", help="latent traversals (PNG grid, GIFs)",
                       description="One row per latent (sorted by KL, written beside the row), one column per "
                                   "value. Origins: --image I (posterior mean of image I), --random, --zero, "
                                   "--prior-sample; default: one square, ellipse and heart on dSprites, else a "
                                   "random image.")
    _common(p)
    p.add_argument("--image", type=int, nargs="+", action="extend", default=[], metavar="I",
                   help="dataset indices of origins (repeatable)")
    p.add_argument("--random", action="store_true", help="a random image as origin")
    p.add_argument("--zero", action="store_true", help="the zero vector as origin")
    p.add_argument("--prior-sample", action="store_true", help="a draw from the prior as origin")
    p.add_argument("--range", type=float, nargs=2, default=[-3.0, 3.0], metavar=("LO", "HI"),
                   help="latent values (default -3 3)")
    p.add_argument("--steps", type=int, default=10, help="values per latent (default 10)")
    p.add_argument("--dims", type=int, nargs="+", action="extend", metavar="J", help="latents to show (default all)")
    p.add_argument("--gif", action="store_true", help="also one GIF per latent and one of all latents together")
    p.set_defaults(func=run_traverse)

    p = sub.add_parser("sample", help="decoded draws from the prior (PNG)",
                       description="Decode draws from the prior. UG-VAE: one row per mixture component, one "
                                   "shared global draw.")
    _common(p)
    p.add_argument("--n", type=int, help="samples (default 64; UG-VAE: see --per-component)")
    p.add_argument("--per-component", type=int, help="UG-VAE: samples per component (default 8)")
    p.set_defaults(func=run_sample)

    p = sub.add_parser("plot", help="training curves from metrics.jsonl (PNG)",
                       description="Plot every logged term, validation values, C against the KL (capacity runs) "
                                   "and the per-latent KL over time.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--step", type=int, help="plot up to this step (default: everything logged)")
    p.add_argument("--out", help="output folder (default: RUN/images)")
    p.set_defaults(func=run_plot)

    p = sub.add_parser("report", help="one HTML page per run, or a comparison of several (or of a sweep)",
                       description="Write RUN/report.html (curves, reconstructions, traversals, samples, KL, scores, "
                                   "experiments), rendering missing pictures. Several runs: also one comparison "
                                   "page (default: their common parent/comparison.html). A sweep folder: its runs, and "
                                   "SWEEP/comparison.html with the study table of `vaelab evaluate SWEEP` on top. A "
                                   "study folder (`vaelab study`): STUDY/report.html and STUDY/figures/*.png.")
    p.add_argument("runs", metavar="RUN|SWEEP|STUDY", nargs="+", help="run folder(s), a sweep or a study folder")
    p.add_argument("--out", help="HTML file to write (one run: instead of RUN/report.html; several: the "
                                 "comparison page)")
    p.add_argument("--step", type=int, help="use the checkpoint of this step (default: the newest)")
    p.add_argument("--force", action="store_true", help="render the pictures again even if present")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_report)


def _open(args):
    from ..viz.common import open_run

    return open_run(args.run, step=args.step, device=args.device)


def _done(paths):
    for p in paths:
        print(p)
    return 0


def run_reconstruct(args):
    from ..errors import VaelabError
    from ..viz.recon import DEFAULT_N, write_reconstruction

    if args.images and args.n is not None:
        raise VaelabError("give --n (images drawn at random) or --images (these indices), not both")
    run = _open(args)
    return _done([write_reconstruction(run, args.out, n=DEFAULT_N if args.n is None else args.n,
                                       indices=args.images, seed=args.seed)])


def run_traverse(args):
    from ..viz.traverse import write_traversals

    run = _open(args)
    paths = write_traversals(run, args.out, images=args.image, random=args.random, zero=args.zero,
                             prior=args.prior_sample, lo=args.range[0], hi=args.range[1], steps=args.steps,
                             dims=args.dims, gif=args.gif, seed=args.seed)
    if args.gif:  # the PNGs and the GIF folders, not every GIF
        shown = [p for p in paths if p.suffix == ".png"] + sorted({p.parent for p in paths if p.suffix == ".gif"})
        return _done(shown)
    return _done(paths)


def run_sample(args):
    from ..errors import VaelabError
    from ..viz.sample import DEFAULT_N, PER_COMPONENT, write_samples

    run = _open(args)
    objective = run.config["model"]["objective"]
    if args.n is not None and run.model.mixture_prior:
        raise VaelabError(f"a {objective} run samples one row per mixture component: give --per-component N, "
                          f"not --n")
    if args.per_component is not None and not run.model.mixture_prior:
        raise VaelabError(f"--per-component is for UG-VAE runs and others with a mixture prior (one row per "
                          f"component); {run.path} is a {objective} run: use --n")
    return _done([write_samples(run, args.out, n=DEFAULT_N if args.n is None else args.n, seed=args.seed,
                                per_component=PER_COMPONENT if args.per_component is None else args.per_component)])


def run_plot(args):
    from ..viz.plots import write_plots

    return _done(write_plots(args.run, args.out, step=args.step))


def run_report(args):
    from ..viz.report import report

    path = report(args.runs, out=args.out, step=args.step, force=args.force, quiet=args.quiet)
    if not args.quiet:
        print(path)
    return 0
