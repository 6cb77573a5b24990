"""``vaelab data list | info | show | prepare | fetch | import-voc``: looking at, preparing and getting datasets."""
from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import os
import time
import warnings

from ..errors import VaelabError
from . import seed


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="list, inspect, show, prepare and fetch datasets",
                              description="Datasets: what is registered, what is here, what it looks like.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: _usage(p))

    q = sub.add_parser("list", help="every registered dataset, its factors, and whether its files are here")
    _quiet(q)
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("info", help="count, image shape, factors and location of one dataset")
    q.add_argument("name")
    _load_args(q)
    q.set_defaults(func=cmd_info)

    q = sub.add_parser("show", help="save a grid of random images as a PNG")
    q.add_argument("name")
    q.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    q.add_argument("--out", default="grid.png", help="PNG to write (default grid.png)")
    q.add_argument("--seed", type=seed, default=0, help="random draw seed (default 0)")
    q.add_argument("--nrow", type=int, default=None, help="images per row (default: square grid)")
    _load_args(q)
    q.set_defaults(func=cmd_show)

    q = sub.add_parser("prepare", help="decode a dataset once into a cached, memory-mapped uint8 array")
    q.add_argument("name")
    q.add_argument("--source", "--root", dest="source", help="file or folder holding the data (zip, tar or folder of images; "
                                    "default: the data directory)")
    q.add_argument("--force", action="store_true", help="rebuild the cache even if it is up to date")
    _load_args(q, root=False)
    q.set_defaults(func=cmd_prepare)

    q = sub.add_parser("fetch", help="download a dataset into the data directory (checksummed, resumable)")
    q.add_argument("name")
    q.add_argument("--force", action="store_true", help="download again even if the files are present")
    q.add_argument("--base-url", help="mirror to download from (BASE/<file name>); also $VAELAB_FETCH_BASE_URL")
    q.add_argument("--file", action="append", dest="files", metavar="NAME",
                   help="only this file (repeatable), e.g. t10k-images-idx3-ubyte.gz")
    _quiet(q)
    q.set_defaults(func=cmd_fetch)

    q = sub.add_parser("import-voc", help="per-image VOC-style XML annotations -> the CSV image-folder reads",
                       description="Walk DIR (recursively) for per-image VOC-style .xml files and write the "
                                   "image-folder CSV: file (from <filename>), one column per factor, and "
                                   "NAME_xmin/_ymin/_xmax/_ymax per <object> box. Near32/PYTORCH_VAE's XYS: "
                                   "vaelab data import-voc dataset-XYS-latent/annotations "
                                   "--images dataset-XYS-latent/images --preset xys")
    q.add_argument("annotations", metavar="DIR", help="folder of per-image .xml files (searched recursively)")
    q.add_argument("--images", metavar="IMAGES", default=None,
                   help="the image folder the CSV is for (default: DIR); the CSV goes there")
    q.add_argument("--out", metavar="FILE.csv", default=None,
                   help="CSV to write (default: factors.csv in the image folder, where image-folder finds it)")
    q.add_argument("--factor", action=_Column, dest="columns", metavar="NAME=PATH",
                   help="factor NAME from the element at PATH below the root, e.g. head_camera_distance="
                        "data/head/head_camera_distance (text kept as written; repeatable)")
    q.add_argument("--sum", action=_Column, dest="columns", metavar="NAME=PATH+PATH",
                   help="factor NAME = the sum of numeric elements, e.g. gaze_x=data/gaze_position/x+"
                        "data/camera_screen_center_offset/x (repeatable)")
    q.add_argument("--preset", choices=("xys",), default=None,
                   help="xys: Near32/PYTORCH_VAE's gaze_x, gaze_y (gaze + camera-screen-centre offset) and "
                        "head_camera_distance; --factor/--sum of the same name replace one")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--boxes", metavar="NAMES", default=None,
                   help="import only these <object> boxes, e.g. reye,leye (default: every object name; each "
                        "must be in every file)")
    g.add_argument("--no-boxes", action="store_true", help="no box columns")
    q.add_argument("--force", action="store_true", help="overwrite the CSV if it exists")
    _quiet(q)
    q.set_defaults(func=cmd_import_voc)


class _Column(argparse.Action):
    """--factor / --sum into one list, in command-line order: [(option, "NAME=..."), ...]."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((option_string, values))
        setattr(namespace, self.dest, items)


def _usage(p) -> int:
    p.print_help()
    return 2


def _quiet(p) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _load_args(p, root: bool = True) -> None:
    if root:
        p.add_argument("--root", help="file or folder holding the data (default: the data directory)")
    p.add_argument("--split", default="train", help="train, val, test or all (default train)")
    p.add_argument("--size", type=int, default=None, help="image side to resize to, where allowed")
    p.add_argument("--preprocess", choices=("resize", "center_crop_148"), default=None,
                   help="image sets: squash-resize (default) or CelebA's centre 148 crop then resize")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="image sets: 1 grey or 3 RGB")
    p.add_argument("--csv", default=None, help="image-folder: CSV of factors (file + one column per factor)")
    p.add_argument("--stack", default=None, metavar="RULE",
                   help="image-folder: channels from crops, e.g. full,reye,leye (entries NAME[:grey|rgb]; "
                        "NAME = full or a box with CSV columns NAME_xmin, NAME_ymin, NAME_xmax, NAME_ymax)")
    p.add_argument("--box-scale", type=float, default=None, metavar="S",
                   help="image-folder: box values are pixels times S (XYS: 2; default 1)")
    p.add_argument("--variant", default=None, help="mpi3d: toy, realistic, real or real_complex")
    p.add_argument("--base", choices=("npz", "procedural"), default=None,
                   help="dsprites-color/-noisy/-scream: build on the official npz (default) or the renderer (no file)")
    p.add_argument("--painting", default=None, metavar="PATH",
                   help="dsprites-scream: the image of The Scream (default: scream/scream.jpg in the data directory)")
    p.add_argument("--root-a", default=None, help="mixtures: data of the first domain")
    p.add_argument("--root-b", default=None, help="mixtures: data of the second domain")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="any option of the dataset's loader, as data.options in a config (repeatable; value in "
                        "TOML, strings may be bare); the flags above are shorthands for some")
    _quiet(p)


@contextlib.contextmanager
def _session(args):
    """Every data warning shown (one line each: cli.main formats them); --quiet turns progress bars off."""
    from ..data.prepare import DataWarning

    if getattr(args, "quiet", False):
        os.environ["VAELAB_QUIET"] = "1"
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        yield


def _options(args, loader) -> dict:
    """The loader options the user gave (refusing those this dataset does not take)."""
    given = {k: getattr(args, a) for k, a in (("preprocess", "preprocess"), ("channels", "channels"),
                                               ("csv", "csv"), ("stack", "stack"), ("box_scale", "box_scale"), ("variant", "variant"),
                                               ("base", "base"), ("painting", "painting"),
                                               ("root_a", "root_a"), ("root_b", "root_b"))
             if getattr(args, a, None) is not None}
    if getattr(args, "force", False):
        given["force"] = True
    params = inspect.signature(loader).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        inner = getattr(loader, "__kwdefaults__", None) or {}
        target = inner.get("_loader")
        if target is not None:
            params = inspect.signature(target).parameters
    for k in given:
        if k not in params:
            raise VaelabError(f"dataset {args.name!r} does not take --{k.replace('_', '-')}")
    generic = _generic_options(args, loader)
    for k, v in generic.items():
        if k in given and given[k] != v:
            raise VaelabError(f"--option {k}={v!r} and --{k.replace('_', '-')} {given[k]!r} disagree; give one")
    return {**given, **generic}


def _generic_options(args, loader) -> dict:
    """``--option KEY=VALUE`` items, checked against the options the loader takes."""
    from ..config import parse_override
    from ..data import loader_options
    from ..errors import closest

    out = {}
    valid = loader_options(loader)
    for item in getattr(args, "options", None) or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise VaelabError(f"--option {item!r}: expected KEY=VALUE, e.g. --option preprocess=center_crop_148")
        (key, *rest), value = parse_override(item)
        if rest:
            raise VaelabError(f"--option {item!r}: KEY is one option name, without dots")
        if valid is not None and key not in valid:
            raise VaelabError(f"dataset {args.name!r} does not take option {key!r}{closest(key, valid)}; "
                              f"valid: {', '.join(valid) if valid else '(none)'}")
        out[key] = value
    return out


def _load(args, root):
    from ..data import get, load

    spec = get(args.name)
    return load(args.name, root=root, split=args.split, size=args.size, **_options(args, spec.loader))


def _factor_text(pairs) -> str:
    pairs = list(pairs)
    if not pairs:
        return "none"
    if len(pairs) > 6 and len({s for _, s in pairs}) == 1:
        return f"{len(pairs)} factors of size {pairs[0][1]} ({', '.join(n for n, _ in pairs[:3])}, ...)"
    return ", ".join(f"{n} {s}" for n, s in pairs)


def cmd_list(args) -> int:
    from .. import paths
    from ..data import get, names

    with _session(args):
        root = paths.data_dir()
        rows, notes = [], {}
        for name in names():
            spec = get(name)
            if spec.needs_root:
                here = "--root"
            elif not spec.needs_files:
                here = "generated"
            elif spec.present(root):
                here = "yes"
            elif spec.without_files:
                here = "no" + notes.setdefault(spec.without_files, "*" * (len(notes) + 1))
            else:
                here = "no"
            count = f"{spec.count:,}" if spec.count else "-"
            shape = "x".join(str(s) for s in spec.image_shape) if spec.image_shape else "-"
            rows.append((name, here, count, shape, _factor_text(spec.factors)))
        head = ("NAME", "HERE", "IMAGES", "SHAPE", "FACTORS")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
        print(fmt.format(*head))
        for r in rows:
            print(fmt.format(*r))
        for option, mark in notes.items():
            print(f"{mark} needs no file with the data option {option}")
        print(f"data directory: {root}")
    return 0


def cmd_info(args) -> int:
    from .. import paths
    from ..data import get

    with _session(args):
        spec = get(args.name)
        _options(args, spec.loader)  # refuse options this dataset does not take, even when nothing loads
        generated = not spec.needs_files or (getattr(args, "base", None) == "procedural" and args.painting is None)
        static = (args.root is None and generated and not spec.needs_root and spec.count
                  and spec.image_shape and args.size is None and args.split in ("train", "all"))
        if static:  # generated data (procedural dSprites): report the spec, render nothing
            c, h, w = spec.image_shape
            print(f"{spec.name}: {spec.count:,} images, {c} x {h} x {w} uint8 (generated on demand)")
            print(f"factors: {_factor_text(spec.factors)}")
            print("factor sizes: " + " ".join(str(s) for _, s in spec.factors))
            if spec.source:
                print(f"source: {spec.source}")
            return 0
        t0 = time.perf_counter()
        ds = _load(args, args.root)
        dt = time.perf_counter() - t0
        print(ds.describe())
        if ds.has_factors:
            print("factor sizes: " + " ".join(str(s) for s in ds.factor_sizes))
        if ds.meta.get("domains"):
            counts = [int((ds.meta["domain_index"] == i).sum()) for i in range(len(ds.meta["domains"]))]
            print("domains: " + ", ".join(f"{d} ({n:,})" for d, n in zip(ds.meta["domains"], counts)) +
                  f"; batches: {ds.meta.get('batch_mode', 'mixed')}")
        if ds.meta.get("cache"):
            print(f"cache: {ds.meta['cache']}")
        if args.root is None:
            print(f"data directory: {paths.data_dir()}")
        print(f"split: {args.split}; loaded in {dt:.2f} s")
    return 0


def cmd_show(args) -> int:
    import numpy as np

    from ..viz.grid import make_grid, save_png

    if args.n < 1:
        raise VaelabError(f"--n must be at least 1, got {args.n}")
    if args.nrow is not None and args.nrow < 1:
        raise VaelabError(f"--nrow must be at least 1, got {args.nrow}")
    if not str(args.out).lower().endswith(".png"):
        raise VaelabError(f"--out {args.out}: the grid is written as a PNG; give a file name ending in .png")
    with _session(args):
        ds = _load(args, args.root)
        n = min(args.n, len(ds))
        rng = np.random.default_rng(args.seed)
        idx = np.sort(rng.choice(len(ds), size=n, replace=False))
        import torch

        from ..data.views import torch_generator

        images = ds.gather(torch.from_numpy(idx), torch_generator(args.seed))
        nrow = args.nrow or max(1, math.ceil(math.sqrt(n)))
        path = save_png(make_grid(images, nrow=nrow), args.out)
        print(f"wrote {path} ({n} images of {ds.name}, seed {args.seed})")
    return 0


def cmd_prepare(args) -> int:
    from ..data.prepare import prepare

    with _session(args):
        from ..data import get

        spec = get(args.name)
        opts = _options(args, spec.loader)
        t0 = time.perf_counter()
        ds = prepare(args.name, args.source, size=args.size, split=args.split, **opts)
        dt = time.perf_counter() - t0
        c, h, w = ds.image_shape
        print(f"prepared {ds.name}: {len(ds):,} images, {c} x {h} x {w} uint8 from {ds.source} in {dt:.1f} s")
        if ds.meta.get("stack"):
            print(f"channels: {ds.meta['stack']} (box_scale {ds.meta['box_scale']:g})")
        if ds.meta.get("cache"):
            print(f"cache: {ds.meta['cache']} (images.npy + manifest.json)")
        else:
            print(f"{ds.name} needs no cache: it loads straight from its files")
    return 0


def cmd_fetch(args) -> int:
    from ..data.fetch import fetch

    with _session(args):
        paths_ = fetch(args.name, base_url=args.base_url, force=args.force, files=args.files,
                       quiet=args.quiet)
        print(f"{args.name}: {len(paths_)} file(s) ready")
    return 0


def _columns(items) -> dict:
    """--factor NAME=PATH / --sum NAME=PATH+PATH -> {name: path | [paths]}, in command-line order."""
    out: dict = {}
    for opt, text in items or []:
        name, eq, path = text.partition("=")
        name, path = name.strip(), path.strip()
        if not eq or not name or not path:
            example = "gaze_x=data/gaze_position/x+data/camera_screen_center_offset/x" if opt == "--sum" \
                else "head_camera_distance=data/head/head_camera_distance"
            raise VaelabError(f"{opt} {text!r}: expected NAME={'PATH+PATH' if opt == '--sum' else 'PATH'}, "
                              f"e.g. {opt} {example}")
        if name in out:
            raise VaelabError(f"factor {name!r} is given twice ({opt} {text!r})")
        if opt == "--sum":
            parts = [p.strip() for p in path.split("+")]
            if any(not p for p in parts):
                raise VaelabError(f"--sum {text!r}: an empty path between '+' signs")
            out[name] = parts
        else:
            out[name] = path
    return out


def cmd_import_voc(args) -> int:
    from pathlib import Path

    from ..data.voc import default_csv, read_voc

    with _session(args):
        if args.images is not None and not Path(args.images).is_dir():
            raise VaelabError(f"no image folder at {args.images}")
        boxes = [] if args.no_boxes else args.boxes
        t0 = time.perf_counter()
        table = read_voc(args.annotations, factors=_columns(args.columns), boxes=boxes, preset=args.preset)
        out = default_csv(args.annotations, args.images) if args.out is None else Path(args.out)
        path = table.write(out, force=args.force)
        dt = time.perf_counter() - t0
        print(f"wrote {path}: {len(table.files):,} images from {len(table.xml_files):,} XML files in {dt:.1f} s")
        print(f"factors: {', '.join(table.factor_names) or 'none'}; boxes: {', '.join(table.box_names) or 'none'}")
        root = Path(args.images if args.images is not None else args.annotations)
        csv_opt = "" if path.resolve() == (root / path.name).resolve() and path.name == "factors.csv" \
            else f" --csv {path}"
        stack, names = "", table.box_names
        if args.preset == "xys" and {"reye", "leye"} <= set(names):
            stack = " --stack full,reye,leye --box-scale 2"  # Near32/PYTORCH_VAE: boxes at twice the image resolution
        elif len(names) >= 2:
            stack = f" --stack full,{names[0]},{names[1]}"
        elif names:
            stack = f" --stack {names[0]}:rgb"
        print(f"next: vaelab data info image-folder --root {root}{csv_opt}{stack}")
    return 0
