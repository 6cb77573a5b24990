"""Models trained with other PyTorch libraries, imported as ordinary vaelab run folders.

``vaelab import FORMAT PATH`` (:func:`import_run`) reads another library's files, maps its weights onto
the vaelab net with the same layers (checked key by key and shape by shape), and writes a run folder:
``config.toml`` (the net, latent size, likelihood, objective and hyperparameters the files give, with
vaelab's names), ``checkpoints/step-N/`` (safetensors + JSON, vaelab's own checkpoint format) and
``import.json`` (where it came from, its sha256, the upstream settings and every conversion made).
Every command that takes a run then works on it (evaluate, traverse, reconstruct, sample, report).

Formats:

* ``disentangling-vae`` — YannDubs/disentangling-vae's experiment folder: ``model.pt`` (the state
  dict of ``disvae.models.vae.VAE`` with EncoderBurgess / DecoderBurgess) and ``specs.json`` (the
  settings of ``main.py``, saved by ``disvae/utils/modelIO.py`` ``save_model``).
* ``1konny-factorvae`` — a checkpoint of 1Konny/FactorVAE ``solver.py`` ``save_checkpoint``:
  ``{'iter', 'model_states': {'VAE', 'D'}, 'optim_states': {'optim_VAE', 'optim_D'}}`` (older
  versions also ``'win_states'``), VAE = ``model.py`` FactorVAE1 / FactorVAE2 / FactorVAE3.
* ``1konny-betavae`` — a checkpoint of 1Konny/Beta-VAE ``solver.py`` ``save_checkpoint``:
  ``{'iter', 'win_states', 'model_states': {'net'}, 'optim_states': {'optim'}}``, net =
  ``model.py`` BetaVAE_H or BetaVAE_B.

Files are read with ``torch.load(..., weights_only=True)`` only, and the result must hold nothing but
tensors and plain containers (dicts, lists, numbers, strings): a pickle that would run code, a
truncated file, keys or shapes that do not match the named architecture are one-line
:class:`~vaelab.errors.VaelabError` s, raised before anything is written. Optimiser states are read
(and checked) but not imported: an imported run is for scoring and pictures, not for resuming.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import VaelabError, closest

__all__ = ["FORMATS", "import_run", "import_disvae", "import_1konny_factorvae", "import_1konny_betavae",
           "safe_torch_load"]

FORMATS = ("disentangling-vae", "1konny-factorvae", "1konny-betavae")


# ----------------------------------------------------------------------------- reading files safely
def _short(text: str, n: int = 160) -> str:
    line = " ".join(str(text).split())
    return line[:n] + ("..." if len(line) > n else "")


def safe_torch_load(path, what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)`` on the CPU, then a check that the object holds only tensors
    and plain containers; every failure is one VaelabError saying what is wrong with the file."""
    path = Path(path)
    if path.is_dir():
        raise VaelabError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise VaelabError(f"{what} {path} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: not the user's business
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "weights only" in msg.lower() or "weights_only" in msg:
            m = re.search(r"GLOBAL ([\w.]+)", msg) or re.search(r"global:? ?([\w.]+)", msg, re.I)
            what_ = f"it pickles {m.group(1)}" if m else "it holds pickled objects other than tensors"
            raise VaelabError(f"{path} needs more than tensors to load ({what_}); vaelab reads weights only and runs "
                              f"no code from a file: re-save it with torch.save(model.state_dict(), ...)") from None
        raise VaelabError(f"{path} is not a readable PyTorch file ({_short(msg)})") from None
    except (RuntimeError, EOFError, ValueError, KeyError, OSError, AttributeError, IndexError, TypeError) as e:
        msg = _short(str(e)) or type(e).__name__
        raise VaelabError(f"{path} is truncated or not a PyTorch checkpoint ({type(e).__name__}: {msg})") from None
    _check_plain(obj, path, "")
    return obj


_SCALARS = (str, int, float, bool, type(None))


def _check_plain(obj, path: Path, where: str, depth: int = 0) -> None:
    if depth > 32:
        raise VaelabError(f"{path}: nested too deeply at {where or 'the top level'}")
    if type(obj) in (torch.Tensor, nn.Parameter) or isinstance(obj, _SCALARS):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise VaelabError(f"{path}: a key of type {type(k).__name__} at {where or 'the top level'}; "
                                  f"vaelab reads tensors and plain containers only")
            _check_plain(v, path, f"{where}[{k!r}]", depth + 1)
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, path, f"{where}[{i}]", depth + 1)
        return
    raise VaelabError(f"{path}: {where or 'the file'} holds a {type(obj).__name__}; vaelab reads tensors and plain "
                      f"containers (dicts, lists, numbers, strings) only")


def _sha256(path: Path) -> str:
    from .data.prepare import sha256_file

    return sha256_file(path)


def _get(d, key, path, where, kind=dict):
    if not isinstance(d, dict) or key not in d:
        have = ", ".join(repr(k) for k in d) if isinstance(d, dict) else type(d).__name__
        raise VaelabError(f"{path} is not a {where}: no {key!r} entry (it holds {have or 'nothing'})")
    v = d[key]
    if kind is not None and not isinstance(v, kind):
        raise VaelabError(f"{path}: {key!r} should be a {kind.__name__}, got {type(v).__name__}")
    return v


def _state_dict(sd, path: Path, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(sd, dict) or not sd:
        raise VaelabError(f"{path}: {where} is not a state dict (a dict of tensors)")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or type(v) not in (torch.Tensor, nn.Parameter)]
    if bad:
        raise VaelabError(f"{path}: {where} is not a state dict: entry {bad[0]!r} is not a tensor")
    notfloat = [k for k, v in sd.items() if not v.is_floating_point()]
    if notfloat:
        raise VaelabError(f"{path}: {where} entry {notfloat[0]!r} holds {sd[notfloat[0]].dtype} values, not weights")
    return {k: v.detach() for k, v in sd.items()}


# ----------------------------------------------------------------------------- mapping weights
def _layers(module: nn.Module) -> list[str]:
    """Names of the weighted layers of a vaelab net, in forward order (its Sequential order)."""
    return [n for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]


def _fmt_keys(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _map_weights(sd: dict, pairs: list[tuple[str, str]], target: dict, path: Path, arch: str) -> dict:
    """``sd`` (upstream names) -> vaelab names through ``pairs`` (upstream layer, vaelab layer); every key
    and every shape checked against ``target`` (the vaelab model's state dict)."""
    expected = {f"{u}.{p}": f"{v}.{p}" for u, v in pairs for p in ("weight", "bias")}
    missing, unexpected = set(expected) - set(sd), set(sd) - set(expected)
    if missing or unexpected:
        parts = ([f"missing {_fmt_keys(missing)}"] if missing else []) + \
                ([f"unexpected {_fmt_keys(unexpected)}"] if unexpected else [])
        raise VaelabError(f"{path} does not hold {arch}: {'; '.join(parts)}")
    out = {}
    for uk, vk in expected.items():
        t = sd[uk]
        want = tuple(target[vk].shape)
        if tuple(t.shape) != want:
            raise VaelabError(f"{path} does not hold {arch}: {uk} has shape {list(t.shape)}, expected {list(want)}")
        if not bool(torch.isfinite(t).all()):
            raise VaelabError(f"{path}: {uk} holds NaN or infinite values (the model diverged before it was saved)")
        out[vk] = t.to(torch.float32)
    return out


def _pairs(upstream: list[str], module: nn.Module, prefix: str) -> list[tuple[str, str]]:
    names = _layers(module)
    if len(names) != len(upstream):  # pragma: no cover - a vaelab net changed under the importer
        raise RuntimeError(f"vaelab net has {len(names)} weighted layers, the upstream one {len(upstream)}")
    return [(u, f"{prefix}.{n}") for u, n in zip(upstream, names)]


# ----------------------------------------------------------------------------- writing the run
def _default_out(name: str) -> Path:
    return Path("runs") / name


def _check_out(out: Path) -> Path:
    from .paths import require_folder

    out = require_folder(out, "--out", "the imported run")
    if out.exists() and any(out.iterdir()):
        raise VaelabError(f"{out} already exists and is not empty; choose another --out")
    return out


def _build(cfg_dict: dict, image_shape, num_train: int):
    from .config import Config
    from .models import build_model

    cfg = Config.from_dict(cfg_dict).validate()
    with torch.random.fork_rng(devices=[]):  # the caller's RNG untouched
        torch.manual_seed(cfg.train.seed)  # parts the file does not hold (disvae's discriminator): vaelab's init
        model = build_model(cfg.model, tuple(image_shape), num_train=num_train)
    return cfg, model


def _write_run(out: Path, cfg, model: nn.Module, step: int, image_shape, num_train: int, info: dict):
    """Write the run folder next to ``out`` under a temporary name, then rename it into place."""
    from .data.prepare import atomic_write_bytes, atomic_write_json
    from .training import checkpoint

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-import-{out.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        state = {"step": int(step), "config": cfg.to_dict(), "format": 1, "image_shape": [int(s) for s in image_shape],
                 "num_train": int(num_train), "imported": {"format": info["format"], "source": info["source"],
                                                           "sha256": info["sha256"]}}
        checkpoint.save(tmp, int(step), tensors, state, keep=1)
        atomic_write_bytes(tmp / "config.toml", cfg.to_toml().encode())
        atomic_write_json(tmp / "import.json", info)
        if out.exists():
            out.rmdir()  # empty (checked before): the rename replaces it
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _data_table(name: str, root, size: int = 0, options: dict | None = None) -> dict:
    from .data import registry

    canon = {"3dchairs": "chairs", "3d_chairs": "chairs", "2dshapes": "dsprites"}.get(name.lower(), name)
    registry.get(canon)  # unknown name: one line with the closest names
    if root and not Path(root).expanduser().exists():
        raise VaelabError(f"data root {root} does not exist: point it at the dataset's file or folder")
    root = str(Path(root).expanduser().resolve()) if root else ""  # the run folder works from any directory
    return {"name": canon, "root": root, "size": int(size), "options": dict(options or {})}


def _check_data_shape(data: dict, image_shape, what: str) -> None:
    """The dataset must give the images the net takes (where the registry knows its shape)."""
    from .data import registry

    spec = registry.get(data["name"])
    if spec.image_shape is None:
        return
    c, h, w = spec.image_shape
    c = int(data["options"].get("channels", c))
    if data["size"]:
        h = w = int(data["size"])
    if (c, h, w) != tuple(image_shape):
        want = "×".join(map(str, image_shape))
        raise VaelabError(f"{what} takes {want} images but dataset {data['name']!r} gives {c}×{h}×{w}: name the "
                          f"dataset it was trained on (--dataset)")


def _finish(out, cfg_dict, model_sd_fn, image_shape, num_train, step, info):
    """Check the dataset, build the vaelab model, load the mapped weights, write the run, open it."""
    _check_data_shape(cfg_dict["data"], image_shape, info["architecture"])
    cfg, model = _build(cfg_dict, image_shape, num_train)
    weights = model_sd_fn(model)
    full = model.state_dict()
    full.update(weights)
    model.load_state_dict(full)
    _write_run(out, cfg, model, step, image_shape, num_train, info)
    from .training import load_run

    return load_run(out)


def _number(d: dict, key: str, path: Path, what: str, integer: bool = False):
    if key not in d:
        raise VaelabError(f"{path} has no {key!r} ({what})")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise VaelabError(f"{path}: {key!r} must be a number ({what}), got {v!r}")
    if integer:
        if float(v) != int(v):
            raise VaelabError(f"{path}: {key!r} must be a whole number ({what}), got {v!r}")
        return int(v)
    return float(v)


# ----------------------------------------------------------------------------- disentangling-vae
#: disvae ``utils/datasets.py``: image size per dataset (its ``get_img_size``) and the training-set size
#: (``len(train_loader.dataset)``, for the iteration count and β-TCVAE's N)
_DISVAE_DATA = {
    "mnist": ((1, 32, 32), 60_000),  # MNIST train split resized to 32×32
    "fashion": ((1, 32, 32), 60_000),  # Fashion-MNIST train split resized to 32×32
    "dsprites": ((1, 64, 64), 737_280),
    "celeba": ((3, 64, 64), 202_599),
    "chairs": ((1, 64, 64), 86_366),  # rendered 3D chairs in grey
}
_DISVAE_LOSSES = ("VAE", "betaH", "betaB", "factor", "btcvae")  # disvae/models/losses.py LOSSES
_DISVAE_DISTS = ("bernoulli", "laplace", "gaussian")  # disvae/models/losses.py RECON_DIST
#: disvae hyperparam.ini [Custom]: the values main.py falls back to
_DISVAE_DEFAULTS = {"batch_size": 64, "lr": 5e-4, "epochs": 100, "seed": 1234, "reg_anneal": 10000, "lr_disc": 5e-5}


def _disvae_data(name: str, root, path: Path) -> tuple[dict, list[str]]:
    notes = []
    if name == "dsprites":
        return _data_table("dsprites", root), notes
    if name == "celeba":
        return _data_table("celeba", root), notes
    if name == "chairs":
        notes.append("data: disvae's chairs are grey (torchvision Grayscale): data options channels = 1")
        return _data_table("chairs", root, options={"channels": 1}), notes
    if name == "mnist":
        notes.append("data: disvae resizes MNIST to 32×32: data size = 32")
        return _data_table("mnist", root, size=32), notes
    if name == "fashion":
        notes.append("data: vaelab has no Fashion-MNIST entry; its IDX files have MNIST's names and format, so the run "
                     "reads them with the mnist loader at 32×32 (factor 'digit' = the clothing class): point "
                     "data.root at the Fashion-MNIST folder (--data-root)")
        return _data_table("mnist", root, size=32), notes
    raise VaelabError(f"{path}: unknown dataset {name!r}{closest(str(name), _DISVAE_DATA)}; disentangling-vae's are "
                      f"{', '.join(_DISVAE_DATA)}")


def import_disvae(folder, out=None, *, dataset: str | None = None, data_root=None):
    """Import a YannDubs/disentangling-vae experiment folder (``model.pt`` + ``specs.json``) as a run.

    ``dataset`` replaces the vaelab dataset the specs name (e.g. to score on another copy); ``data_root``
    is where its files are (``data.root``). Returns the :class:`~vaelab.training.Run`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VaelabError(f"{folder} is not a folder: give disentangling-vae's experiment folder "
                          f"(results/NAME, holding model.pt and specs.json)")
    specs_path, model_path = folder / "specs.json", folder / "model.pt"
    if not specs_path.is_file():
        raise VaelabError(f"{folder} has no specs.json: disentangling-vae writes it beside model.pt (the settings "
                          f"the model was trained with); without it the net, latent size and loss are unknown")
    if not model_path.is_file():
        raise VaelabError(f"{folder} has no model.pt (disentangling-vae's saved state dict)")
    try:
        specs = json.loads(specs_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VaelabError(f"{specs_path} is not valid JSON ({_short(str(e))})") from None
    if not isinstance(specs, dict):
        raise VaelabError(f"{specs_path} should hold a JSON object of settings, got {type(specs).__name__}")

    # ---- the settings
    model_type = str(specs.get("model_type", "")).lower().capitalize()
    if model_type != "Burgess":
        raise VaelabError(f"{specs_path}: model_type {specs.get('model_type')!r}; vaelab imports disentangling-vae's "
                          f"'Burgess' net (its only model)")
    ds_name = specs.get("dataset")
    if ds_name not in _DISVAE_DATA:
        raise VaelabError(f"{specs_path}: dataset {ds_name!r}{closest(str(ds_name), _DISVAE_DATA)}; "
                          f"disentangling-vae's are {', '.join(_DISVAE_DATA)}")
    latent_dim = _number(specs, "latent_dim", specs_path, "latent size", integer=True)
    if latent_dim < 1:
        raise VaelabError(f"{specs_path}: latent_dim must be at least 1, got {latent_dim}")
    img_size = specs.get("img_size", list(_DISVAE_DATA[ds_name][0]))
    if (not isinstance(img_size, list) or len(img_size) != 3 or not all(isinstance(s, int) for s in img_size)
            or img_size[0] not in (1, 3) or img_size[1:] not in ([32, 32], [64, 64])):
        raise VaelabError(f"{specs_path}: img_size {img_size!r}; disentangling-vae's Burgess net takes C×32×32 or "
                          f"C×64×64 images (C 1 or 3)")
    image_shape = tuple(img_size)
    loss = specs.get("loss")
    if loss not in _DISVAE_LOSSES:
        raise VaelabError(f"{specs_path}: loss {loss!r}{closest(str(loss), _DISVAE_LOSSES)}; disentangling-vae's are "
                          f"{', '.join(_DISVAE_LOSSES)}")
    rec_dist = specs.get("rec_dist")
    if rec_dist not in _DISVAE_DISTS:
        raise VaelabError(f"{specs_path}: rec_dist {rec_dist!r}; disentangling-vae's are {', '.join(_DISVAE_DISTS)}")
    opt = {k: specs.get(k, v) for k, v in _DISVAE_DEFAULTS.items()}
    for k in opt:
        _number(opt, k, specs_path, "training setting", integer=k in ("batch_size", "epochs", "seed", "reg_anneal"))
    notes: list[str] = []

    # ---- likelihood (disvae/models/losses.py _reconstruction_loss, summed over pixels, batch mean)
    model: dict = {"net": "burgess64" if image_shape[1] == 64 else "burgess32", "latent_dim": latent_dim}
    if rec_dist == "bernoulli":
        model["likelihood"] = "bernoulli"  # F.binary_cross_entropy(sigmoid output) = vaelab's BCE on logits
    elif rec_dist == "gaussian":
        # disvae: F.mse_loss(recon·255, x·255, sum) / 255 = 255·Σ(x − m)² = Σ(x − m)²/(2σ²) with σ² = 1/510
        model.update(likelihood="gaussian", variance=1.0 / 510.0)
        notes.append("likelihood: disvae's gaussian loss 255·Σ(x − m)² = gaussian with variance 1/510 (+ a constant)")
    else:
        # disvae: 3·Σ|x − m| ("empirical value to give similar values than bernoulli") = Laplace with scale b = 1/3,
        # whose variance 2b² is 2/9
        model.update(likelihood="laplace", variance=2.0 / 9.0)
        notes.append("likelihood: disvae's laplace loss 3·Σ|x − m| = laplace with scale 1/3, variance 2/9 "
                     "(+ a constant)")

    # ---- objective (disvae/models/losses.py get_loss_f); KL summed over latents, batch mean, as in vaelab
    reg_anneal = opt["reg_anneal"]
    batch = int(opt["batch_size"])
    optim: dict = {"vae": {"lr": float(opt["lr"]), "betas": [0.9, 0.999]}}  # main.py: optim.Adam(lr=args.lr)
    if loss == "VAE":
        model["objective"] = "vae"
    elif loss == "betaH":
        model.update(objective="betavae", beta=_number(specs, "betaH_B", specs_path, "the betaH loss's β"))
    elif loss == "betaB":
        # C annealed over reg_anneal iterations (older disvae versions: over betaB_stepsC)
        c_key = "betaB_stepsC" if "betaB_stepsC" in specs else "reg_anneal"
        model.update(objective="annealedvae", gamma=_number(specs, "betaB_G", specs_path, "the betaB loss's γ"),
                     c_start=_number(specs, "betaB_initC", specs_path, "the betaB loss's initial C"),
                     c_max=_number(specs, "betaB_finC", specs_path, "the betaB loss's final C"),
                     c_steps=_number({**opt, **specs}, c_key, specs_path, "iterations of C's annealing", integer=True))
    elif loss == "factor":
        # disvae main.py doubles batch_size (and epochs) for factor before saving specs.json, and
        # FactorKLoss splits each batch in halves: the VAE's and the discriminator's (permuted) codes
        model.update(objective="factorvae", gamma=_number(specs, "factor_G", specs_path, "the factor loss's γ"),
                     disc_layers=5, permute_source="second_batch")  # disvae Discriminator: 5 × 1000 hidden, 2 logits
        batch = max(1, batch // 2)
        optim["disc"] = {"lr": float(opt["lr_disc"]), "betas": [0.5, 0.9]}  # losses.py FactorKLoss optim_kwargs
        notes.append("factor: disvae does not save its discriminator (it lives in the loss): the run's discriminator "
                     "is freshly initialised; the scores, pictures and reconstructions use the VAE only")
        notes.append(f"factor: specs batch_size {int(opt['batch_size'])} is disvae's doubled batch: train.batch_size = "
                     f"{batch} (vaelab's second_batch draws the other half)")
    else:  # btcvae: disvae BtcvaeLoss with is_mss=True
        model.update(objective="btcvae", form="chen", estimator="mss",
                     alpha=_number(specs, "btcvae_A", specs_path, "the btcvae loss's α"),
                     beta=_number(specs, "btcvae_B", specs_path, "the btcvae loss's β"),
                     gamma=_number(specs, "btcvae_G", specs_path, "the btcvae loss's γ"))
        notes.append("btcvae: estimator mss with vaelab's stratified weights (disvae's importance-weight matrix "
                     "differs in its off-diagonal layout); training only, the imported weights are unchanged")
    annealed = {"VAE": "the KL", "betaH": "β·KL", "factor": "γ·TC", "btcvae": "γ·dwKL"}  # losses.py linear_annealing
    if loss in annealed and reg_anneal > 0:
        notes.append(f"disvae ramps {annealed[loss]} up from 0 over reg_anneal = {reg_anneal} iterations; vaelab's "
                     f"{model['objective']} has no such warm-up (matters for training only)")

    n_train = _DISVAE_DATA[ds_name][1]
    # one optimiser step per loader batch, no drop_last (disvae utils/datasets.py get_dataloaders)
    steps = int(opt["epochs"]) * math.ceil(n_train / max(1, int(opt["batch_size"])))
    notes.append(f"step {steps}: iterations estimated as epochs {int(opt['epochs'])} × ceil({n_train:,} images / "
                 f"batch {int(opt['batch_size'])})")
    if dataset:
        data = _data_table(dataset, data_root)
    else:
        data, dnotes = _disvae_data(ds_name, data_root, specs_path)
        notes += dnotes
    seed = int(opt["seed"]) if int(opt["seed"]) >= 0 else 0
    name = f"disvae-{folder.resolve().name}"
    cfg_dict = {
        "name": name,
        "description": f"imported from disentangling-vae {folder.resolve().name} ({loss}, {ds_name}, "
                       f"latent_dim {latent_dim})",
        "source": f"YannDubs/disentangling-vae {folder} (model.pt, specs.json); vaelab import",
        "data": data,
        "model": model,
        "optim": optim,
        "train": {"steps": max(1, steps), "batch_size": batch, "seed": seed},
    }
    out = _check_out(Path(out) if out else _default_out(name))

    # ---- the weights (only now: everything above is plain JSON)
    sd = _state_dict(safe_torch_load(model_path, "model file"), model_path, "model.pt")
    big = image_shape[1] == 64
    enc_up = ["encoder.conv1", "encoder.conv2", "encoder.conv3"] + (["encoder.conv_64"] if big else []) + \
             ["encoder.lin1", "encoder.lin2", "encoder.mu_logvar_gen"]
    dec_up = ["decoder.lin1", "decoder.lin2", "decoder.lin3"] + (["decoder.convT_64"] if big else []) + \
             ["decoder.convT1", "decoder.convT2", "decoder.convT3"]
    arch = (f"disentangling-vae's Burgess net for specs.json's img_size {'×'.join(map(str, image_shape))}, "
            f"latent_dim {latent_dim}")

    def weights(m):
        pairs = _pairs(enc_up, m.encoder, "encoder") + _pairs(dec_up, m.decoder, "decoder")
        w = _map_weights(sd, pairs, m.state_dict(), model_path, arch)
        head = pairs[len(enc_up) - 1][1]  # μ and ln σ² interleaved upstream (view(-1, D, 2)): μ rows first here
        for p in ("weight", "bias"):
            t = w[f"{head}.{p}"]
            w[f"{head}.{p}"] = torch.cat([t[0::2], t[1::2]], 0)
        return w

    notes.insert(0, "weights: encoder.mu_logvar_gen rows reordered (disvae interleaves μ and ln σ²; vaelab puts μ "
                    "first), the decoder's final sigmoid is the likelihood's mean: the same functions")
    info = {"format": "disentangling-vae", "source": str(folder.resolve()), "files": ["model.pt", "specs.json"],
            "sha256": _sha256(model_path), "architecture": arch, "step": max(1, steps), "upstream": specs,
            "notes": notes}
    return _finish(out, cfg_dict, weights, image_shape, n_train, max(1, steps), info)


# ----------------------------------------------------------------------------- 1Konny
def _iteration(ck: dict, path: Path) -> int:
    it = ck.get("iter", 0)
    if isinstance(it, torch.Tensor) and it.numel() == 1:
        it = it.item()
    if isinstance(it, bool) or not isinstance(it, (int, float)) or it < 0 or float(it) != int(it):
        raise VaelabError(f"{path}: 'iter' should be the iteration count, got {it!r}")
    return int(it)


def _latent_from(sd: dict, key: str, latent_dim, path: Path, what: str) -> int:
    t = sd.get(key)
    if t is None or t.ndim < 1 or t.shape[0] % 2:
        found = "missing" if t is None else f"has shape {list(t.shape)}"
        raise VaelabError(f"{path} does not hold {what}: {key} {found}")
    d = int(t.shape[0]) // 2
    if latent_dim is not None and int(latent_dim) != d:
        raise VaelabError(f"{path} holds a {d}-dimensional latent ({key} has {2 * d} outputs) but --latent-dim is "
                          f"{latent_dim}")
    return d


def _channels_from(sd: dict, key: str, path: Path, what: str) -> int:
    t = sd.get(key)
    if t is None or t.ndim != 4 or t.shape[1] not in (1, 3):
        raise VaelabError(f"{path} does not hold {what}: {key} "
                          f"{'missing' if t is None else f'has shape {list(t.shape)}'} (expected [32, 1 or 3, 4, 4])")
    return int(t.shape[1])


def _1konny_data(dataset, channels: int, data_root, path: Path, repo: str) -> dict:
    if not dataset:
        if channels != 1:
            raise VaelabError(f"{path} does not say which data the model was trained on: give --dataset "
                              f"(celeba, chairs, ...; {repo} trains its 3-channel nets on CelebA and 3D Chairs)")
        dataset = "dsprites"  # 1Konny trains its one-channel nets on dSprites only
    return _data_table(dataset, data_root)


def _common_1konny(ckpt, name_prefix: str):
    path = Path(ckpt)
    if path.is_dir():  # the run's checkpoint folder: 'last' (Beta-VAE) or the highest iteration (both solvers)
        files = [p for p in path.iterdir() if p.is_file() and (p.name == "last" or p.name.isdigit())]
        if not files:
            raise VaelabError(f"{path} holds no {name_prefix} checkpoint (files named 'last' or by iteration)")
        path = next((p for p in files if p.name == "last"), None) or max(files, key=lambda p: int(p.name))
    ck = safe_torch_load(path)
    if not isinstance(ck, dict):
        raise VaelabError(f"{path} is not a {name_prefix} checkpoint (a dict with 'iter', 'model_states', "
                          f"'optim_states'), it holds a {type(ck).__name__}")
    return path, ck


def import_1konny_factorvae(ckpt, out=None, *, dataset: str | None = None, data_root=None,
                            latent_dim: int | None = None, gamma: float | None = None):
    """Import a 1Konny/FactorVAE checkpoint (VAE and discriminator) as a run.

    The net (FactorVAE1 / 2 / 3), image channels and latent size come from the weights' shapes;
    ``dataset`` defaults to dSprites for one-channel nets (the repository's only one-channel data) and
    must be given otherwise; ``gamma`` is the TC weight it was trained with (default 6.4, main.py)."""
    path, ck = _common_1konny(ckpt, "1Konny/FactorVAE")
    where = "1Konny/FactorVAE checkpoint"
    states = _get(ck, "model_states", path, where)
    _get(ck, "optim_states", path, where)  # read and checked (plain containers), not imported
    vae = _state_dict(_get(states, "VAE", path, where + " (model_states)", None), path, "model_states['VAE']")
    disc = _state_dict(_get(states, "D", path, where + " (model_states)", None), path, "model_states['D']")
    step = _iteration(ck, path)
    what = "1Konny/FactorVAE's FactorVAE1/2/3 net"
    c = _channels_from(vae, "encode.0.weight", path, what)
    d = _latent_from(vae, "encode.10.weight", latent_dim, path, what)
    f_t = vae.get("encode.8.weight")
    default_f = 128 if c == 1 else 256  # model.py FactorVAE1 (one channel) / FactorVAE2 (three)
    f = int(f_t.shape[0]) if f_t is not None and f_t.ndim == 4 else default_f
    data = _1konny_data(dataset, c, data_root, path, "1Konny/FactorVAE")
    model = {"objective": "factorvae", "net": "fvae64", "latent_dim": d,
             "likelihood": "bernoulli",  # ops.py recon_loss: BCE with logits, summed, batch mean
             "gamma": 6.4 if gamma is None else float(gamma),  # main.py --gamma default 6.4
             "disc_layers": 5, "disc_init": "normal02", "permute_source": "second_batch"}  # model.py Discriminator
    if f != default_f:
        model["net_options"] = {"features": f}  # FactorVAE3: one channel, F 256
    name = f"1konny-factorvae-{path.stem}"
    cfg_dict = {
        "name": name,
        "description": f"imported from 1Konny/FactorVAE checkpoint {path.name} (iteration {step})",
        "source": f"1Konny/FactorVAE model.py, solver.py; {path}; vaelab import",
        "data": data, "model": model,
        # main.py: Adam (0.9, 0.999) lr 1e-4 for the VAE, (0.5, 0.9) for D (lr 1e-4 in its run scripts)
        "optim": {"vae": {"lr": 1e-4, "betas": [0.9, 0.999]}, "disc": {"lr": 1e-4, "betas": [0.5, 0.9]}},
        "train": {"steps": max(1, step), "batch_size": 64, "seed": 1},  # main.py --batch_size 64, seed 1
    }
    out = _check_out(Path(out) if out else _default_out(name))
    image_shape = (c, 64, 64)
    arch = f"1Konny/FactorVAE's FactorVAE net ({c} channel(s), F {f}, latent_dim {d}) and Discriminator"

    def weights(m):
        enc = _pairs([f"encode.{i}" for i in (0, 2, 4, 6, 8, 10)], m.encoder, "encoder")
        dec = _pairs([f"decode.{i}" for i in (0, 2, 4, 6, 8, 10)], m.decoder, "decoder")
        w = _map_weights(vae, enc + dec, m.state_dict(), path, arch)
        dp = _pairs([f"net.{i}" for i in (0, 2, 4, 6, 8, 10)], m.disc, "disc")
        w.update(_map_weights(disc, dp, m.state_dict(), path, arch + " (model_states['D'])"))
        return w

    notes = ["weights: encode.* -> encoder, decode.* -> decoder, D net.* -> disc (same layers and order)",
             "optimiser states read but not imported (the run is for scoring and pictures)"]
    if gamma is None:
        notes.append("gamma 6.4: main.py's default (the checkpoint does not record it; --gamma sets it)")
    info = {"format": "1konny-factorvae", "source": str(path.resolve()), "sha256": _sha256(path),
            "architecture": arch, "step": step, "notes": notes}
    return _finish(out, cfg_dict, weights, image_shape, _n_train(data), step, info)


def _n_train(data: dict) -> int:
    from .data import registry

    spec = registry.get(data["name"])
    return int(spec.count) if spec.count else 1


def import_1konny_betavae(ckpt, out=None, *, dataset: str | None = None, data_root=None,
                          latent_dim: int | None = None, objective: str | None = None, beta: float | None = None,
                          gamma: float | None = None, c_max: float | None = None, c_stop_iter: int | None = None):
    """Import a 1Konny/Beta-VAE checkpoint as a run.

    The net (BetaVAE_H or BetaVAE_B), channels and latent size come from the weights; ``objective`` is
    ``"H"`` (β-VAE: ``beta``, default 4) or ``"B"`` (capacity: ``gamma`` 1000, ``c_max`` 25,
    ``c_stop_iter`` 1e5), default the net's letter; defaults are main.py's. The likelihood follows
    solver.py: bernoulli on dSprites, gaussian (sum of squared errors) otherwise."""
    path, ck = _common_1konny(ckpt, "1Konny/Beta-VAE")
    where = "1Konny/Beta-VAE checkpoint"
    states = _get(ck, "model_states", path, where)
    _get(ck, "optim_states", path, where)  # read and checked, not imported
    net = _state_dict(_get(states, "net", path, where + " (model_states)", None), path, "model_states['net']")
    step = _iteration(ck, path)
    what = "1Konny/Beta-VAE's BetaVAE_H or BetaVAE_B net"
    if "encoder.13.weight" in net:
        letter, vnet = "B", "burgess64"
        enc_up, dec_up, head = [0, 2, 4, 6, 9, 11, 13], [0, 2, 4, 7, 9, 11, 13], "encoder.13.weight"
    else:
        letter, vnet = "H", "betavae_h"
        enc_up, dec_up, head = [0, 2, 4, 6, 8, 11], [0, 3, 5, 7, 9, 11], "encoder.11.weight"
    c = _channels_from(net, "encoder.0.weight", path, what)
    d = _latent_from(net, head, latent_dim, path, what)
    data = _1konny_data(dataset, c, data_root, path, "1Konny/Beta-VAE")
    obj = (objective or letter).strip()
    obj = {"h": "H", "betavae": "H", "b": "B", "annealedvae": "B"}.get(obj.lower(), obj)
    if obj not in ("H", "B"):
        raise VaelabError(f"--objective must be H (β-VAE) or B (controlled capacity), got {objective!r}")
    if obj == "H" and any(v is not None for v in (gamma, c_max, c_stop_iter)):
        raise VaelabError("--gamma, --c-max and --c-stop-iter belong to objective B; objective H takes --beta")
    if obj == "B" and beta is not None:
        raise VaelabError("--beta belongs to objective H; objective B takes --gamma, --c-max, --c-stop-iter")
    model: dict = {"net": vnet, "latent_dim": d}
    if data["name"].startswith("dsprites"):
        model["likelihood"] = "bernoulli"  # solver.py decoder_dist 'bernoulli' for dsprites
    else:  # solver.py: 'gaussian' for 3dchairs and celeba: Σ(sigmoid(o) − x)², batch mean = σ² ½
        model.update(likelihood="gaussian", variance=0.5)
    if obj == "H":
        model.update(objective="betavae", beta=4.0 if beta is None else float(beta))  # main.py --beta 4
    else:  # C = clamp(C_max / C_stop_iter · iter, 0, C_max)
        model.update(objective="annealedvae", gamma=1000.0 if gamma is None else float(gamma),  # main.py --gamma 1000
                     c_max=25.0 if c_max is None else float(c_max), c_start=0.0,  # main.py --C_max 25
                     c_steps=100000 if c_stop_iter is None else int(c_stop_iter))  # main.py --C_stop_iter 1e5
    name = f"1konny-betavae-{path.stem}"
    cfg_dict = {
        "name": name,
        "description": f"imported from 1Konny/Beta-VAE checkpoint {path.name} (BetaVAE_{letter}, iteration {step})",
        "source": f"1Konny/Beta-VAE model.py, solver.py; {path}; vaelab import",
        "data": data, "model": model,
        "optim": {"vae": {"lr": 1e-4, "betas": [0.9, 0.999]}},  # main.py --lr 1e-4, --beta1 0.9, --beta2 0.999
        "train": {"steps": max(1, step), "batch_size": 64, "seed": 1},  # main.py --batch_size 64, --seed 1
    }
    out = _check_out(Path(out) if out else _default_out(name))
    image_shape = (c, 64, 64)
    arch = f"1Konny/Beta-VAE's BetaVAE_{letter} net ({c} channel(s), latent_dim {d})"

    def weights(m):
        pairs = _pairs([f"encoder.{i}" for i in enc_up], m.encoder, "encoder") + \
                _pairs([f"decoder.{i}" for i in dec_up], m.decoder, "decoder")
        return _map_weights(net, pairs, m.state_dict(), path, arch)

    notes = [f"weights: BetaVAE_{letter} = vaelab's {vnet} (same layer names, order and forward)",
             "optimiser states read but not imported (the run is for scoring and pictures)"]
    if objective is None:
        notes.append(f"objective {obj}: the net's letter (the checkpoint does not record --objective)")
    info = {"format": "1konny-betavae", "source": str(path.resolve()), "sha256": _sha256(path),
            "architecture": arch, "step": step, "notes": notes}
    return _finish(out, cfg_dict, weights, image_shape, _n_train(data), step, info)


# ----------------------------------------------------------------------------- dispatch
def import_run(fmt: str, path, out=None, **options):
    """Import ``path`` in format ``fmt`` (one of :data:`FORMATS`) as a run folder; returns the Run."""
    fns = {"disentangling-vae": import_disvae, "1konny-factorvae": import_1konny_factorvae,
           "1konny-betavae": import_1konny_betavae}
    if fmt not in fns:
        raise VaelabError(f"unknown import format {fmt!r}{closest(str(fmt), fns)}; valid: {', '.join(fns)}")
    return fns[fmt](path, out, **options)
