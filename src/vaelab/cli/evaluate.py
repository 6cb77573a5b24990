"""`vaelab evaluate`: score a run with the disentanglement metrics (a thin layer over
:func:`vaelab.metrics.evaluate.evaluate`)."""
from __future__ import annotations


def register(sub):
    from ..metrics.evaluate import METRICS, PROFILES

    p = sub.add_parser(
        "evaluate", help="score a run: BetaVAE, FactorVAE, MIG, SAP, DCI, modularity, IRS, unsupervised",
        description="Score a trained run with the disentanglement metrics (disentanglement_lib's definitions "
                    "and study counts) and write RUN/eval.json. Several runs, or a sweep folder (made by "
                    "`vaelab sweep`), are scored one by one (an eval.json with the same settings at the same "
                    "step is reused unless --force) and summarised in one table: per setting, each score's "
                    "mean ± std over seeds, written to SWEEP/study.json.")
    p.add_argument("run", nargs="+", metavar="RUN|SWEEP", help="run folder(s) made by `vaelab train`, or a sweep folder")
    p.add_argument("--force", action="store_true", help="score again even where an eval.json with these settings exists")
    p.add_argument("--metrics", default="all",
                   help="comma-separated metric names or 'all' (default): " + ", ".join(METRICS))
    p.add_argument("--dataset", metavar="NAME", help="evaluate on this dataset instead of the run's own")
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
    p.add_argument("--out", metavar="PATH", help="where to write eval.json (default: RUN/eval.json)")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run_evaluate)


def _targets(items):
    """(run folders, their labels, where the study summary goes or None) from RUN or SWEEP arguments."""
    import json
    from pathlib import Path

    from ..errors import VaelabError

    paths, labels, summary = [], [], None
    for item in items:
        path = Path(item)
        if not path.is_dir():
            raise VaelabError(f"{path} is not a folder: expected a run folder made by `vaelab train` or a sweep "
                              f"folder made by `vaelab sweep`")
        manifest = path / "sweep.json"
        if manifest.is_file() and not (path / "config.toml").is_file():
            try:
                runs = json.loads(manifest.read_text())["runs"]
            except (ValueError, KeyError, TypeError):
                raise VaelabError(f"{manifest} is not a sweep manifest written by `vaelab sweep`") from None
            for r in runs:
                run_dir = Path(r["path"])
                if not run_dir.is_absolute() and not run_dir.is_dir():
                    run_dir = path / run_dir.name  # a sweep folder moved since it was written
                paths.append(run_dir)
                labels.append(dict(r.get("values", {})))
            summary = path / "study.json" if len(items) == 1 else None
        else:
            paths.append(path)
            labels.append({"run": path.name})
    if len(paths) > 1 and summary is None:
        import os

        summary = Path(os.path.commonpath([str(p.resolve().parent) for p in paths])) / "study.json"
    return paths, labels, summary if len(paths) > 1 else None


def _reusable(path, run, names, args):
    """The run's eval.json when it already holds these metrics with these settings at this step."""
    from ..viz.report import read_json

    data = read_json(path / "eval.json")
    if args.force or args.dataset or not isinstance(data, dict):
        return None
    same = (data.get("seed") == args.seed and data.get("profile") == args.profile
            and data.get("step") == getattr(run, "step", None) and set(names) <= set(data.get("metrics") or [])
            and ("dci" not in names or (data.get("settings") or {}).get("dci", {}).get("trees") == args.dci_trees))
    return data if same else None


def run_evaluate(args):
    import json
    import sys

    from ..errors import VaelabError
    from ..metrics.evaluate import evaluate, format_table, resolve_metrics

    names, _ = resolve_metrics(args.metrics)  # fail on a bad name before loading anything
    if args.root and not args.dataset:
        raise VaelabError("--root needs --dataset NAME (the run's own dataset uses its configured root)")
    if args.jobs is not None and args.jobs < 1:
        raise VaelabError(f"--jobs must be a positive number of processes, got {args.jobs}")
    paths, labels, summary = _targets(args.run)
    if summary is not None and args.out:
        raise VaelabError("--out names one eval.json: with several runs each writes RUN/eval.json")
    try:
        from ..training import load_run
    except ImportError as e:
        raise VaelabError(f"cannot open run folders: the trainer is not available ({e})") from None
    dataset = None
    if args.dataset:
        from ..data import load

        dataset = load(args.dataset, root=args.root)
    results = []
    for k, path in enumerate(paths):
        if not path.is_dir():
            raise VaelabError(f"{path} is not a folder: the sweep lists a run that is not there")
        run = load_run(path, device=args.device)
        result = _reusable(path, run, names, args) if summary is not None else None
        if result is not None:
            if not args.quiet and not args.json:
                print(f"[{k + 1}/{len(paths)}] {path.name}: eval.json reused (step {run.step}; --force scores again)")
        else:
            if summary is not None and not args.quiet and not args.json:
                print(f"[{k + 1}/{len(paths)}] {path.name}")
            result = evaluate(run, dataset=dataset, metrics=args.metrics, seed=args.seed, profile=args.profile,
                              out=args.out, n_jobs=args.jobs, progress=not args.quiet and not args.json,
                              options={"dci": {"trees": args.dci_trees}})
        results.append(result)
    if summary is None:
        result = results[0]
        if args.json:
            json.dump(result, sys.stdout, indent=1)
            sys.stdout.write("\n")
        elif not args.quiet:
            print(format_table(result))
            print(f"wrote {result.get('path')}")
        return 0

    from ..metrics.study import format_study, summarize
    from ..data.prepare import atomic_write_json

    rows = summarize(results, labels)
    study = {"runs": [{"path": str(p), "values": lab} for p, lab in zip(paths, labels)],
             "seed": args.seed, "profile": args.profile, "settings": rows}
    atomic_write_json(summary, study)
    if args.json:
        json.dump(study, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif not args.quiet:
        print(format_study(rows))
        print(f"wrote {summary}")
    return 0
