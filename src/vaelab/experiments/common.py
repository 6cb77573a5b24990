"""Shared machinery of the UG-VAE experiments (docs/experiments.md#product-rules).

* :func:`load_ugvae_run` opens any UG-VAE run folder: dims come from its checkpoint, the model is in
  eval mode; a run of another objective is a :class:`VaelabError` (one line, exit 2 from the CLI).
* :func:`encode_batches` computes, without gradients, μ_z of every image and the pooled global
  posterior mean μ_β of every batch (π from μ_z, as the experiments of the reference feed it).
* :func:`embed_2d`, :func:`holdout_svm`, :func:`cv_accuracy` are the 2-D maps and the classifiers.
* :class:`Results` collects numbers and notes and writes ``RUN/experiments/<name>/<name>.json``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..data.base import FactorDataset
from ..errors import VaelabError

EXPERIMENTS_DIR = "experiments"
DEFAULT_FORMATS = ("png", "pdf")  # docs/experiments.md#product-rules: PNG + PDF figures


# ---------------------------------------------------------------------------------------------- runs

def ugvae_run(run):
    """``run`` if it is already a loaded run, else :func:`load_ugvae_run` of the path; model in eval mode."""
    if not hasattr(run, "model"):
        run = load_ugvae_run(run)
    run.model.eval()
    return run


def load_ugvae_run(path, step: int | None = None, device: str = "auto"):
    """A UG-VAE :class:`~vaelab.training.Run` (model in eval mode); anything else is a VaelabError."""
    from ..config import read_toml
    from ..training.run import is_run_dir, load_run

    from ..models import OBJECTIVES

    p = Path(path)
    if p.is_dir() and is_run_dir(p):  # before the checkpoint is read: a quick, clear refusal
        try:
            objective = read_toml(p / "config.toml").get("model", {}).get("objective")
        except Exception:  # a broken config.toml: let load_run report it in its own words
            objective = None
        cls = OBJECTIVES.get(objective)  # (a plugin's objective is known once load_run has loaded it)
        if cls is not None and not cls.global_latent:
            raise VaelabError(f"{p} is a {objective!r} run; the UG-VAE experiments need a run of objective "
                              f"'ugvae' (e.g. `vaelab train ugvae-mnist`)")
    run = load_run(p, step=step, device=device)
    if not run.model.global_latent:
        raise VaelabError(f"{p} holds a {type(run.model).__name__} model; the UG-VAE experiments need a "
                          f"run of objective 'ugvae'")
    return run


def run_dataset(run, split: str | None = None):
    """The run's dataset (its configured split unless ``split`` names another)."""
    return run.dataset(split or run.cfg.data.split)


def experiment_dir(run, name: str) -> Path:
    out = Path(run.path) / EXPERIMENTS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    return out


def model_dims(model) -> dict:
    return {"dim_z": int(model.latent_dim), "dim_beta": int(model.dim_beta), "K": int(model.K),
            "net": model.net_name, "image_shape": list(model.image_shape)}


def check_images_fit(model, images, what: str) -> None:
    """``images``: a uint8 tensor N x C x H x W or a FactorDataset (its shown shape)."""
    shape = tuple(int(s) for s in (images.image_shape if isinstance(images, FactorDataset) else images.shape[1:]))
    if shape != tuple(model.image_shape):
        raise VaelabError(f"{what} has images of shape {shape} but the model takes {tuple(model.image_shape)}")


# ---------------------------------------------------------------------------------------------- encoding

def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_batches(model, images, batches, chunk_images: int = 8192, generator=None) -> dict:
    """Encode batches of a uint8 image tensor, or of a FactorDataset's shown images (``gather``, a
    view's noise from ``generator``).

    ``batches``: int array n×B of indices into ``images`` (each row one batch, the unit of global
    inference). Returns ``mu_beta`` (n×dβ) and ``logvar_beta`` (n×dβ) of q(β|X) for each batch (π from
    μ_z), and ``mu_z`` (n×B×dz). Eval mode, no gradients; images move to the model's device by chunk."""
    from ..models.ugvae import pool_gaussians

    batches = np.asarray(batches, dtype=np.int64)
    if batches.ndim != 2:
        raise ValueError("batches must be an n x B index array")
    n, b = batches.shape
    dev = _device_of(model)
    per_chunk = max(1, chunk_images // max(b, 1))
    mu_beta, lv_beta, mu_z = [], [], []
    for s in range(0, n, per_chunk):
        idx = torch.from_numpy(batches[s:s + per_chunk].reshape(-1))
        x = (images.gather(idx, generator) if isinstance(images, FactorDataset) else images[idx])
        x = x.to(dev).float().div_(255.0)
        mu, m, logs2 = model.image_contributions(x)  # per image (BatchNorm in eval mode)
        c = len(idx) // b
        mb, lb = pool_gaussians(m.reshape(c, b, -1), logs2.reshape(c, b, -1), dim=1)
        mu_beta.append(mb.float().cpu())
        lv_beta.append(lb.float().cpu())
        mu_z.append(mu.reshape(c, b, -1).float().cpu())
    if not mu_beta:
        db, dz = int(model.dim_beta), int(model.latent_dim)
        return {"mu_beta": np.zeros((0, db), np.float32), "logvar_beta": np.zeros((0, db), np.float32),
                "mu_z": np.zeros((0, b, dz), np.float32)}
    return {"mu_beta": torch.cat(mu_beta).numpy(), "logvar_beta": torch.cat(lv_beta).numpy(),
            "mu_z": torch.cat(mu_z).numpy()}


def random_batches(pool, n: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` batches (n×B) of indices from ``pool``: without replacement inside a batch when the pool
    is large enough, with replacement otherwise."""
    pool = np.asarray(pool, dtype=np.int64)
    if len(pool) == 0:
        raise VaelabError("no images to draw batches from")
    out = np.empty((int(n), int(batch_size)), dtype=np.int64)
    replace = len(pool) < batch_size
    for i in range(int(n)):
        out[i] = pool[rng.choice(len(pool), size=batch_size, replace=replace)]
    return out


@torch.no_grad()
def decode_means(model, z: torch.Tensor, beta: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Mean images (float in [0, 1], on the CPU) for codes z (n×dz) and β (n×dβ or dβ)."""
    dev = _device_of(model)
    out = []
    for s in range(0, len(z), chunk):
        zb = z[s:s + chunk].to(dev)
        bb = beta.to(dev) if beta.dim() == 1 else beta[s:s + chunk].to(dev)
        out.append(model.mean_image(model.decode(zb, bb)).clamp(0, 1).float().cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------- maps

def embed_2d(x: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """2-D embedding of the rows of ``x``: t-SNE (sklearn defaults, perplexity capped for small
    sets; docs/experiments.md#product-rules) or PCA."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return np.zeros((0, 2))
    if n < 3:
        return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1]))))
    if method == "pca":
        from sklearn.decomposition import PCA

        k = min(2, x.shape[1], n)
        y = PCA(n_components=k, random_state=seed).fit_transform(x)
        return np.pad(y, ((0, 0), (0, 2 - k)))
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, max(1.0, (n - 1) / 3.0))
        return TSNE(n_components=2, perplexity=perplexity, random_state=seed).fit_transform(x)
    raise VaelabError(f"unknown embedding {method!r}; choose tsne or pca")


# ---------------------------------------------------------------------------------------------- classifiers

def chance_rate(y) -> float:
    """Accuracy of always answering the most frequent class."""
    y = np.asarray(y)
    if len(y) == 0:
        return float("nan")
    _, counts = np.unique(y, return_counts=True)
    return float(counts.max() / len(y))


def holdout_svm(x: np.ndarray, y, seed: int = 42) -> dict:
    """docs/experiments.md#classifier-protocol (reference ``celeba_attributes.py``): StandardScaler + SVC, linear and RBF
    (gamma = 1/n_features), ``train_test_split(test_size=0.2, random_state=42)``.
    Returns train/test accuracies of both and the chance rate of the test labels."""
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    y = np.asarray(y)
    if len(np.unique(y)) < 2 or len(y) < 5:
        return {"error": "needs at least two classes and five points"}
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed)
    out = {"n_train": int(len(ytr)), "n_test": int(len(yte)), "chance_test": chance_rate(yte)}
    if len(np.unique(ytr)) < 2:
        out["error"] = "the training part holds one class only"
        return out
    for kernel in ("linear", "rbf"):
        clf = make_pipeline(StandardScaler(), SVC(kernel=kernel, gamma="auto"))  # auto = 1/n_features
        clf.fit(xtr, ytr)
        out[f"{kernel}_train"] = float(clf.score(xtr, ytr))
        out[f"{kernel}_test"] = float(clf.score(xte, yte))
    return out


def cv_accuracy(x: np.ndarray, y, folds: int = 5, seed: int = 0, permutations: int = 5) -> dict:
    """Cross-validated accuracy of a linear classifier (StandardScaler + logistic regression, stratified
    k-fold), and the same with the labels randomly permuted (mean over ``permutations`` draws): the
    accuracy that chance structure alone reaches."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        return {"error": "needs at least two classes"}
    k = int(min(folds, counts.min()))
    if k < 2:
        return {"error": "a class has fewer than two points"}
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)

    def score(labels):
        clf = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky", max_iter=200))
        return float(np.mean(cross_val_score(clf, x, labels, cv=cv)))

    rng = np.random.default_rng(seed)
    acc = score(y)
    rand = [score(rng.permutation(y)) for _ in range(int(permutations))]
    return {"accuracy": acc, "random_labels": float(np.mean(rand)) if rand else float("nan"),
            "random_labels_std": float(np.std(rand)) if rand else float("nan"),
            "chance": chance_rate(y), "folds": k, "n": int(len(y)),
            "classifier": "StandardScaler + LogisticRegression, stratified k-fold"}


# ---------------------------------------------------------------------------------------------- figures

def tile(images: torch.Tensor, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Images R×C×ch×H×W (float in [0, 1]) -> one H'×W' (grey) or H'×W'×3 array with ``pad`` pixels
    between cells."""
    imgs = torch.as_tensor(images).float()
    r, c, ch, h, w = imgs.shape
    canvas = torch.full((ch, r * (h + pad) + pad, c * (w + pad) + pad), float(pad_value))
    for i in range(r):
        for j in range(c):
            y0, x0 = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, y0:y0 + h, x0:x0 + w] = imgs[i, j]
    arr = canvas.clamp(0, 1).numpy()
    return arr[0] if ch == 1 else arr.transpose(1, 2, 0)


def show(ax, array: np.ndarray, title: str | None = None):
    ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def new_figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, out_dir: Path, stem: str, formats=DEFAULT_FORMATS) -> list[str]:
    """Write ``fig`` as ``stem.<fmt>`` for each format; returns the file names; closes the figure."""
    import matplotlib.pyplot as plt

    names = []
    for fmt in formats:
        name = f"{stem}.{fmt}"
        fig.savefig(Path(out_dir) / name, dpi=150 if fmt == "png" else None, bbox_inches="tight")
        names.append(name)
    plt.close(fig)
    return names


def save_array_png(array: np.ndarray, path: Path) -> str:
    """A tiled image array as a PNG at its own resolution."""
    from PIL import Image

    a = np.clip(np.asarray(array) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(a).save(path)
    return Path(path).name


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f"]


def scatter_by_label(ax, points: np.ndarray, labels, names=None, colors=None, size: float = 12,
                     alpha: float = 0.8, order=None):
    """Scatter 2-D points coloured by label, with a legend."""
    labels = np.asarray(labels)
    keys = list(order) if order is not None else sorted(np.unique(labels).tolist(), key=str)
    for i, key in enumerate(keys):
        sel = labels == key
        if not sel.any():
            continue
        color = (colors or {}).get(key, PALETTE[i % len(PALETTE)]) if isinstance(colors, dict) else PALETTE[i % len(PALETTE)]
        name = names.get(key, str(key)) if isinstance(names, dict) else str(key)
        ax.scatter(points[sel, 0], points[sel, 1], s=size, alpha=alpha, color=color, label=f"{name} ({int(sel.sum())})",
                   edgecolors="none")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.5, loc="best", framealpha=0.7)


# ---------------------------------------------------------------------------------------------- results

def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, Path):
        return str(v)
    return v


class Results:
    """Numbers, notes and figure names of one experiment, written as ``<name>.json``. Opening one clears
    the previous PNG / PDF / JSON files of that experiment's folder (a re-run replaces them)."""

    def __init__(self, run, name: str, params: dict):
        self.run = run
        self.name = name
        self.dir = experiment_dir(run, name)
        for old in self.dir.iterdir():  # a re-run replaces the previous figures and numbers
            if old.is_file() and old.suffix.lower() in (".png", ".pdf", ".json"):
                old.unlink()
        self.started = time.perf_counter()
        self.data: dict = {
            "experiment": name,
            "run": str(Path(run.path).resolve()),
            "checkpoint_step": int(run.step),
            "model": model_dims(run.model),
            "params": dict(params),
            "summary": {},
            "notes": [],
            "figures": [],
        }

    @property
    def summary(self) -> dict:
        return self.data["summary"]

    def note(self, text: str):
        self.data["notes"].append(text)

    def figures(self, names):
        self.data["figures"].extend(names)

    def __setitem__(self, key, value):
        self.data[key] = value

    def write(self) -> Path:
        self.data["seconds"] = round(time.perf_counter() - self.started, 2)
        path = self.dir / f"{self.name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_jsonable(self.data), indent=2) + "\n")
        tmp.replace(path)
        return path
