"""`vaelab evaluate`: score a run with the disentanglement metrics (a thin layer over
:func:`vaelab.metrics.evaluate.evaluate`)."""
from __future__ import annotations


def register(sub):
    from ..metrics.evaluate import METRICS, PROFILES

    p = sub.add_parser(
        "evaluate", help="score a run or a sweep: BetaVAE, FactorVAE, MIG, SAP, DCI, modularity, IRS, ...",
        description="Score a trained run with the disentanglement metrics (disentanglement_lib's definitions "
                    "and study counts) and write RUN/eval.json. Several runs, or a sweep folder (made by "
                    "`vaelab sweep`), are scored one by one (an eval.json with the same settings at the same "
                    "step is reused unless --force) and summarised in one table: per setting, each score's "
                    "mean ± std over seeds, written to SWEEP/study.json.")
    p.add_argument("run", nargs="*", metavar="RUN|SWEEP",
                   help="run folder(s) made by `vaelab train` or `vaelab import`, or a sweep folder")
    p.add_argument("--encoder", metavar="MODULE:FUNCTION",
                   help="score any encoder instead of a run: MODULE:NAME or FILE.py:NAME, a function of uint8 images "
                        "N x C x H x W returning codes N x D (array or tensor), or a torch nn.Module (called on "
                        "images / 255); needs --data")
    p.add_argument("--force", action="store_true", help="score again even where an eval.json with these settings exists")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="several runs: score them here one by one (default) or as tasks on a Ray cluster")
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (default: start a local Ray)")
    p.add_argument("--metrics", default="all",
                   help="comma-separated metric names or 'all' (default): " + ", ".join(METRICS))
    p.add_argument("--dataset", "--data", dest="dataset", metavar="NAME",
                   help="evaluate on this dataset instead of the run's own (with --encoder: the dataset to score on)")
    p.add_argument("--root", metavar="PATH", help="where the dataset's files are (with --dataset)")
    p.add_argument("--seed", type=int, default=0, help="seed of every metric's random draws (default 0)")
    p.add_argument("--profile", choices=PROFILES, default="default",
                   help="default: the reference counts; fast: 10x fewer points (quick checks)")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="processes for DCI's per-factor fits (default: all available cores)")
    p.add_argument("--dci-trees", choices=("vectorised", "sklearn"), default="vectorised",
                   help="DCI's gradient-boosted trees: vaelab's vectorised grower (default, same model, ~3x "
                        "faster) or scikit-learn's GradientBoostingClassifier itself")
    p.add_argument("--device", default="cpu", help="device for encoding: cpu (default), cuda, cuda:N, auto")
    p.add_argument("--out", metavar="PATH", help="where to write eval.json (default: RUN/eval.json; with --encoder: "
                                                 "not written unless given)")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    p.add_argument("--quiet", action="store_true", help="print nothing (the scores still go to eval.json; --json prints them)")
    p.set_defaults(func=run_evaluate)  # SIGTERM / SIGINT: cli.main ends it through its clean-up


def run_evaluate(args):
    import json
    import sys

    from ..errors import VaelabError
    from ..metrics.evaluate import resolve_metrics
    from ..metrics.study import format_study, runs_of

    resolve_metrics(args.metrics)  # fail on a bad name before loading anything
    if args.root and not args.dataset:
        raise VaelabError("--root needs --dataset NAME (the run's own dataset uses its configured root)")
    if args.jobs is not None and args.jobs < 1:
        raise VaelabError(f"--jobs must be a positive number of processes, got {args.jobs}")
    if args.ray_address is not None and args.backend != "ray":
        raise VaelabError("--ray-address only applies with --backend ray (scoring the runs of a sweep on Ray)")
    if args.encoder:
        return _evaluate_encoder(args)
    if not args.run:
        raise VaelabError("give a run folder (or a sweep), or --encoder MODULE:FUNCTION with --data NAME")
    paths, _, summary = runs_of(args.run)
    talk = not args.quiet and not args.json
    if summary is not None:  # several runs: score each, one study table
        from ..metrics.study import evaluate_runs

        why = {"--out": "each writes its own RUN/eval.json (and the table goes to study.json)",
               "--dataset": "each is scored on its own dataset"}
        given = [opt for opt, value in (("--out", args.out), ("--dataset", args.dataset)) if value]
        if given:
            raise VaelabError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to one run: with "
                              f"several runs {' and '.join(why[g] for g in given)}")
        study, where = evaluate_runs(args.run, metrics=args.metrics, seed=args.seed, profile=args.profile,
                                     dci_trees=args.dci_trees, device=args.device, n_jobs=args.jobs,
                                     force=args.force, backend=args.backend, ray_address=args.ray_address,
                                     say=print if talk else None, progress=talk)
        if args.json:
            json.dump(study, sys.stdout, indent=1)
            sys.stdout.write("\n")
        elif not args.quiet:
            print(format_study(study["settings"]))
            print(f"wrote {where}")
        return 0

    if args.backend != "local":
        raise VaelabError("--backend ray scores several runs (a sweep folder); one run is scored here")
    from ..training import load_run

    run = load_run(paths[0], device=args.device)
    dataset = None
    if args.dataset:
        from ..data import load

        dataset = load(args.dataset, root=args.root)
    return _score_one(run, dataset, args, talk)


def _score_one(target, dataset, args, talk) -> int:
    """Score one run or encode function on ``dataset`` and print the table (or the JSON)."""
    import json
    import sys

    from ..metrics.evaluate import evaluate, format_table

    result = evaluate(target, dataset=dataset, metrics=args.metrics, seed=args.seed, profile=args.profile,
                      out=args.out, n_jobs=args.jobs, progress=talk, options={"dci": {"trees": args.dci_trees}})
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif not args.quiet:
        print(format_table(result))
        print(f"wrote {result['path']}" if result.get("path") else "not saved (--out FILE.json keeps the scores)")
    return 0


def _evaluate_encoder(args):
    """``--encoder MODULE:FUNCTION --data NAME``: any encoder, scored on a dataset."""
    from ..data import load
    from ..errors import VaelabError
    from ..metrics.evaluate import as_encode, load_encoder

    if args.run:
        raise VaelabError("give run folders or --encoder, not both")
    if not args.dataset:
        raise VaelabError("--encoder needs --data NAME: the dataset to score it on (`vaelab data list`)")
    if args.backend != "local" or args.ray_address is not None:
        raise VaelabError("--backend ray scores the runs of a sweep; an --encoder is scored here")
    if args.force:
        raise VaelabError("--force re-scores runs whose eval.json exists; it does not apply to --encoder")
    from ..training.trainer import pick_device

    encode = as_encode(load_encoder(args.encoder), device=pick_device(args.device))
    dataset = load(args.dataset, root=args.root)
    talk = not args.quiet and not args.json
    return _score_one(encode, dataset, args, talk)
