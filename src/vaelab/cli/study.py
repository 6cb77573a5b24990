"""`vaelab study PROTOCOL`: a published study's runs trained, scored and reported (a thin layer over
:func:`vaelab.studies.run_study`)."""
from __future__ import annotations


def register(sub):
    from . import seed

    p = sub.add_parser(
        "study", help="run a published study (e.g. unsupervised_study_v1): train, score, report; restartable",
        description="Run a study protocol: each objective at each regularisation strength and seed, trained "
                    "as one sweep per objective (vmapped on a GPU; torchrun ranks or Ray), scored with the "
                    "protocol's metrics, summarised in STUDY/study.json and STUDY/report.html. Run the same "
                    "command again to continue a stopped study: trained runs are kept, a stopped run resumes "
                    "from its newest checkpoint, scored runs are not scored again. Without PROTOCOL: list "
                    "the packaged protocols.")
    p.add_argument("protocol", nargs="?", metavar="PROTOCOL|FILE.toml",
                   help="a packaged protocol (unsupervised_study_v1) or a TOML file of the same shape")
    p.add_argument("--models", metavar="A,B", help="the protocol's models to run (default: all), e.g. betavae,factorvae")
    p.add_argument("--values", action="append", default=[], metavar="MODEL=V1,V2",
                   help="some of a model's values, e.g. --values betavae=1,16 (repeatable; default: all)")
    p.add_argument("--seeds", help="some of the protocol's seeds, e.g. 0,1 (default: all)")
    p.add_argument("--steps", type=int, metavar="N", help="training iterations per run (default: the protocol's)")
    p.add_argument("--scale", type=float, metavar="F", help="train F x the protocol's steps (e.g. 0.01)")
    p.add_argument("--out", metavar="DIR", help="study folder (default: runs/<protocol name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value for every run, e.g. data.root=PATH (repeatable)")
    p.add_argument("--metrics", help="comma-separated metrics to score (default: the protocol's)")
    p.add_argument("--profile", choices=("default", "fast"), default="default",
                   help="metric counts: default (the reference's) or fast (10x fewer points)")
    p.add_argument("--eval-seed", type=seed, default=0, help="seed of the metrics' random draws (default 0)")
    p.add_argument("--jobs", type=int, metavar="N", help="processes for DCI's per-factor fits (default: all cores)")
    p.add_argument("--device", help="training device: auto | cpu | cuda | cuda:N")
    p.add_argument("--eval-device", default="auto", help="device for encoding while scoring (default auto)")
    p.add_argument("--mode", choices=("auto", "vmap", "sequential"), default="auto",
                   help="auto (default): each model's runs vmapped together on a GPU, one after another on the CPU")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local (default): this process (or its share under torchrun); ray: tasks on a Ray cluster")
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (default: start a local Ray)")
    p.add_argument("--runs-per-task", type=int, metavar="K", help="Ray: runs per training task")
    p.add_argument("--gpus-per-task", type=float, metavar="G", help="Ray: GPUs each training task holds")
    p.add_argument("--estimate", action="store_true",
                   help="print how long the study would take on this device (a timed burst per model and one "
                        "timed scoring) and stop; trains nothing in the study folder")
    p.add_argument("--estimate-steps", type=int, default=200, metavar="N",
                   help="steps of each timed burst for --estimate (default 200)")
    p.add_argument("--no-report", action="store_true", help="do not write the study report at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    p.set_defaults(func=run_study_cmd)


def run_study_cmd(args):
    from ..errors import VaelabError
    from ..protocols import load_protocol, protocol_names
    from .sweep import _seeds

    if args.protocol is None:
        for name in protocol_names():
            proto = load_protocol(name)
            runs = sum(len(m.values) for m in proto.models.values()) * len(proto.seeds)
            print(f"{name:<28} {proto.description}")
            print(f"{'':<28} models: {', '.join(proto.models)}; {runs:,} runs of {proto.steps:,} steps; "
                  f"source: {proto.source}")
        return 0
    if args.backend != "ray":
        for option, value in (("--ray-address", args.ray_address), ("--runs-per-task", args.runs_per_task),
                              ("--gpus-per-task", args.gpus_per_task)):
            if value is not None:
                raise VaelabError(f"{option} only applies with --backend ray")
    if args.estimate_steps != 200 and not args.estimate:
        raise VaelabError("--estimate-steps only applies with --estimate")
    common = dict(models=args.models, values=args.values, seeds=_seeds(args.seeds), steps=args.steps,
                  scale=args.scale, out=args.out, overrides=args.overrides, metrics=args.metrics,
                  device=args.device, mode=args.mode, eval_device=args.eval_device, profile=args.profile,
                  eval_seed=args.eval_seed, jobs=args.jobs)
    if args.estimate:
        from ..studies import estimate_study

        if args.backend != "local":
            raise VaelabError("--estimate measures this machine: run it without --backend ray")
        estimate_study(args.protocol, burst=args.estimate_steps, say=None if args.quiet else print, **common)
        return 0
    from ..studies import run_study

    run_study(args.protocol, backend=args.backend, ray_address=args.ray_address, runs_per_task=args.runs_per_task,
              gpus_per_task=args.gpus_per_task, report=not args.no_report, quiet=args.quiet, **common)
    return 0
