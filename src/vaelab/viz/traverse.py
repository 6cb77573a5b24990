"""Latent traversals: one row per latent, one column per value, rows ordered by the latent's KL.

An *origin* is the code the rows start from (1Konny/FactorVAE and Knight13/beta-VAE-disentanglement): a real image's posterior mean
(``--image I``), a random image (``--random``), the zero vector (``--zero``) or a draw from the prior
(``--prior-sample``). Row r sets latent ``dims[r]`` to each of ``values`` and keeps every other
coordinate at the origin; each cell is the decoder's mean image at that code.

UG-VAE codes have a global part β as well: image origins use the posterior mean of β over the
reference batch (the images that give the per-latent KL), ``--zero`` uses β = 0, and
``--prior-sample`` draws β ~ N(0, I), a component d and z ~ p(z | d, β) (docs/objectives.md#ug-vae).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.views import torch_generator
from ..errors import VaelabError
from . import common
from .common import PAD, add_margins, fmt, has_global_latent, to_uint8

KL_BATCH = 512  # images whose mean per-latent KL orders the rows
DEFAULT_RANGE = (-3.0, 3.0)  # 1Konny/FactorVAE (1Konny limit 3) and Knight13/beta-VAE-disentanglement (--start_range -3 --end_range 3)
DEFAULT_STEPS = 10  # 1Konny/FactorVAE (1Konny inter 2/3 over [-3, 3]: 10 values)


# ---------------------------------------------------------------------- reference batch and KL
@dataclass
class Reference:
    """A fixed random batch of the run's data: per-latent KL (nats, mean over the batch) and, for
    UG-VAE, the posterior mean of the global latent β over the batch."""

    indices: np.ndarray
    kl: np.ndarray
    beta: np.ndarray | None = None


@torch.no_grad()
def kl_per_latent(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor):
    """(per-latent KL over the batch ``x`` (``D`` tensor, nats), UG-VAE posterior-mean β or None).

    VAEs: KL(q(z_j|x) ‖ N(0, 1)) (docs/conventions.md#posterior-and-kl), batch mean. UG-VAE: the kl_z term of docs/objectives.md#ug-vae per latent,
    KL to each mixture component weighted by q(d|μ_z), with the batch's posterior-mean β."""
    if not has_global_latent(model):
        return (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)).mean(0), None
    from ..models.ugvae import kl_gaussians

    mu_b, _ = model.global_posterior(x, use_mean=True)
    pi = model.component_probs(mu)  # B×K
    means, variances = model.prior_components(mu_b)  # K×dz
    kl_ikj = kl_gaussians(mu[:, None], logvar[:, None], means[None], variances.log()[None])
    return (pi[:, :, None] * kl_ikj).sum(1).mean(0), mu_b


@torch.no_grad()
def reference(run, n: int = KL_BATCH, seed: int = 0) -> Reference:
    ds = common.dataset_of(run)
    rng = np.random.default_rng(seed)
    n = min(n, len(ds))
    idx = np.sort(rng.choice(len(ds), size=n, replace=False))
    x = ds.gather(torch.from_numpy(idx), torch_generator(seed)).to(run.device).float().div_(255.0)
    mu, logvar = run.model.encode(x)
    kl, beta = kl_per_latent(run.model, x, mu, logvar)
    return Reference(idx, kl.double().cpu().numpy(), None if beta is None else beta.float().cpu().numpy())


def latent_kl(run, n: int = KL_BATCH, seed: int = 0) -> np.ndarray:
    """Per-latent KL (nats, mean over ``n`` random images of the run's data)."""
    return reference(run, n, seed).kl


# ---------------------------------------------------------------------- origins
@dataclass
class Origin:
    name: str  # file key: "square", "image12", "random", "zero", "prior"
    label: str  # caption
    z: np.ndarray  # (D,)
    beta: np.ndarray | None = None  # UG-VAE global latent
    index: int | None = None  # dataset index of an image origin
    image: np.ndarray | None = None  # that image, uint8 C×H×W


def _image_origins(run, indices, ref: Reference, names=None, labels=None) -> list[Origin]:
    ds = common.dataset_of(run)
    for i in indices:
        common.check_index(i, len(ds))
    idx = np.asarray([int(i) for i in indices], dtype=np.int64)
    images = ds.gather(torch.from_numpy(idx), torch_generator(0))  # a view's noise: fixed per picture
    mu, _ = run.encode_params(images)
    out = []
    for k, i in enumerate(idx):
        name = names[k] if names else f"image{i}"
        label = labels[k] if labels else f"image {i}"
        out.append(Origin(name, label, mu[k].astype(np.float32), ref.beta, int(i), images[k].numpy()))
    return out


def _shape_factor(ds):
    """(column, names) of a dSprites-style 3-valued ``shape`` factor, or None."""
    if not ds.has_factors:
        return None
    for col, (name, size) in enumerate(zip(ds.factor_names, ds.factor_sizes)):
        if name.lower() == "shape" and size == 3:
            names = list(ds.meta.get("shape_names") or ("square", "ellipse", "heart"))  # dSprites order
            return col, names
    return None


def shape_indices(ds) -> list[tuple[str, int]]:
    """One centred image per dSprites shape: ``[(shape name, dataset index), ...]``.

    Target factors: the shape, orientation 0, every other factor at its middle class; the image whose
    factors are nearest (L1 over class indices scaled by factor size) is taken, so any subset works."""
    found = _shape_factor(ds)
    if found is None:
        return []
    col, names = found
    f = ds.factors.numpy()
    sizes = np.asarray(ds.factor_sizes, dtype=np.float64)
    target = np.asarray([s // 2 for s in ds.factor_sizes], dtype=np.float64)
    for c, name in enumerate(ds.factor_names):
        if "orient" in name.lower():
            target[c] = 0
    out = []
    for k in range(3):
        rows = np.flatnonzero(f[:, col] == k)
        if len(rows) == 0:
            continue
        t = target.copy()
        t[col] = k
        dist = (np.abs(f[rows] - t) / sizes).sum(1)
        out.append((names[k], int(rows[np.argmin(dist)])))
    return out


@torch.no_grad()
def prior_origin(run, seed: int = 0) -> Origin:
    g = torch.Generator().manual_seed(seed)
    model = run.model
    if not has_global_latent(model):
        z = torch.randn(run.latent_dim, generator=g)
        return Origin("prior", "draw from N(0, I)", z.numpy())
    beta = torch.randn(model.dim_beta, generator=g)
    d = int(torch.randint(model.K, (1,), generator=g))
    means, variances = model.prior_components(beta.to(run.device))
    eps = torch.randn(run.latent_dim, generator=g)
    z = means[d].cpu() + variances[d].sqrt().cpu() * eps
    return Origin("prior", f"prior draw (component {d})", z.numpy(), beta.numpy())


def zero_origin(run) -> Origin:
    beta = np.zeros(run.model.dim_beta, np.float32) if has_global_latent(run.model) else None
    return Origin("zero", "zero vector", np.zeros(run.latent_dim, np.float32), beta)


def make_origins(run, images=(), random: bool = False, zero: bool = False, prior: bool = False,
                 seed: int = 0, ref: Reference | None = None) -> list[Origin]:
    """The requested origins; with none requested, the defaults: for dSprites one square, one ellipse
    and one heart (1Konny/FactorVAE's "fixed" traversals), else one random image."""
    ref = ref if ref is not None else reference(run, seed=seed)
    out: list[Origin] = []
    if images:
        out += _image_origins(run, list(images), ref)
    if random:
        n = len(common.dataset_of(run))
        i = int(np.random.default_rng(seed + 1).integers(n))
        out += _image_origins(run, [i], ref, names=["random"], labels=[f"random image ({i})"])
    if zero:
        out.append(zero_origin(run))
    if prior:
        out.append(prior_origin(run, seed))
    if out:
        return out
    shapes = shape_indices(common.dataset_of(run))
    if shapes:
        return _image_origins(run, [i for _, i in shapes], ref, names=[s for s, _ in shapes],
                              labels=[f"{s} (image {i})" for s, i in shapes])
    return make_origins(run, random=True, seed=seed, ref=ref)


# ---------------------------------------------------------------------- the traversal
@dataclass
class Traversal:
    """Cells ``R x S x C x H x W`` (uint8): row r = latent ``dims[r]``, column s = ``values[s]``.
    ``image`` is the labelled grid; cell (r, s) sits at :meth:`cell_box`."""

    origin: Origin
    dims: list[int]
    values: np.ndarray
    kl: np.ndarray  # per-latent KL of every latent (not only the shown ones)
    cells: np.ndarray
    image: np.ndarray = field(repr=False, default=None)
    left: int = 0  # label margin (pixels)
    top: int = 0  # value header (pixels)

    def codes(self) -> np.ndarray:
        """The ``R·S x D`` latent codes of the cells, row-major."""
        return traversal_codes(self.origin.z, self.dims, self.values)

    def cell_box(self, r: int, s: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of cell (r, s) in ``image``."""
        h, w = self.cells.shape[-2:]
        y, x = common.cell_origin(r, s, h, w)
        return self.top + y, self.left + x, self.top + y + h, self.left + x + w

    def latent_frames(self, r: int) -> list[np.ndarray]:
        """``H x W x C`` frames of row r, forth and back (Knight13/beta-VAE-disentanglement's one GIF per latent)."""
        return common.forth_and_back([c.transpose(1, 2, 0) for c in self.cells[r]])

    def all_frames(self, per_row: int = 10) -> list[np.ndarray]:
        """One frame per value, forth and back: every latent's cell at that value side by side
        (1Konny/FactorVAE's fixed-shape GIFs), latent names above, the value below."""
        frames = []
        for s, v in enumerate(self.values):
            frames.append(_labelled_strip(self.cells[:, s], self.dims, per_row, f"value {fmt(float(v))}"))
        return common.forth_and_back(frames)


def traversal_codes(z0, dims, values) -> np.ndarray:
    z0 = np.asarray(z0, dtype=np.float32)
    values = np.asarray(values, dtype=np.float32)
    z = np.repeat(z0[None], len(dims) * len(values), axis=0)
    for r, j in enumerate(dims):
        z[r * len(values):(r + 1) * len(values), j] = values
    return z


def check_dims(dims, d: int) -> list[int]:
    out = []
    for j in dims:
        if isinstance(j, bool) or not isinstance(j, (int, np.integer)):
            raise VaelabError(f"latent index must be an integer, got {j!r}")
        if not 0 <= int(j) < d:
            raise VaelabError(f"latent index {j} is out of range: the model has {d} latents (0..{d - 1})")
        if int(j) not in out:
            out.append(int(j))
    return out


def traversal_values(lo: float = DEFAULT_RANGE[0], hi: float = DEFAULT_RANGE[1],
                     steps: int = DEFAULT_STEPS) -> np.ndarray:
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
        raise VaelabError(f"traversal range must be two finite numbers LO < HI, got {lo} {hi}")
    if steps < 2:
        raise VaelabError(f"traversal steps must be at least 2, got {steps}")
    return np.linspace(lo, hi, int(steps))


@torch.no_grad()
def decode_codes(run, z: np.ndarray, beta=None, batch_size: int = 512) -> np.ndarray:
    """uint8 ``N x C x H x W`` mean images of codes ``z`` (UG-VAE: with the shared ``beta``)."""
    kw = {}
    if beta is not None:
        kw["beta"] = torch.as_tensor(np.asarray(beta, dtype=np.float32), device=run.device)
    out = [to_uint8(run.decode(z[i:i + batch_size], **kw)) for i in range(0, len(z), batch_size)]
    return np.concatenate(out)


def traversal(run, origin: Origin, values=None, dims=None, kl=None, ref: Reference | None = None) -> Traversal:
    """The traversal of ``origin`` over ``values`` (default -3..3 in 10 steps) for latents ``dims``
    (default all), rows sorted by per-latent KL (descending)."""
    if kl is None:
        kl = (ref if ref is not None else reference(run)).kl
    return build_traversal(lambda z: decode_codes(run, z, origin.beta), run.latent_dim, origin, values, dims, kl)


def build_traversal(decode, d: int, origin: Origin, values, dims, kl) -> Traversal:
    """A :class:`Traversal` from a ``decode(codes N x D) -> uint8 N x C x H x W`` function."""
    values = traversal_values() if values is None else np.asarray(values, dtype=np.float64)
    kl = np.asarray(kl, dtype=np.float64)
    dims = check_dims(range(d) if dims is None else dims, d)
    if not dims:
        raise VaelabError("no latents to traverse")
    dims = sorted(dims, key=lambda j: (-kl[j], j))
    cells = decode(traversal_codes(origin.z, dims, values))
    cells = cells.reshape(len(dims), len(values), *cells.shape[1:])
    t = Traversal(origin, dims, values, kl, cells)
    t.image, t.left, t.top = _label_traversal(t)
    return t


def _label_traversal(t: Traversal) -> tuple[np.ndarray, int, int]:
    r, s, _, h, w = t.cells.shape
    body = common.grid(t.cells.reshape(r * s, *t.cells.shape[2:]), nrow=s)
    two_lines = h + PAD >= 24
    rows = [(f"z{j}", f"KL {t.kl[j]:.2f}") for j in t.dims]
    texts = [a for a, _ in rows] + [b for _, b in rows]
    left = max(common.text_width(x) for x in (texts if two_lines else [f"{a} {b}" for a, b in rows])) + 8
    vals = [fmt(float(v)) for v in t.values]
    if max(common.text_width(v) for v in vals) > w - 2:
        vals = [f"{float(v):.2g}" for v in t.values]
    fits = max(common.text_width(v) for v in vals) <= w - 2
    top = 14
    items = []
    for i, (a, b) in enumerate(rows):
        y0, _ = common.cell_origin(i, 0, h, w)
        yc = top + y0 + h // 2
        if two_lines:
            items += [(4, yc - 11, a), (4, yc + 1, b)]
        else:
            items.append((4, yc - 5, f"{a} {b}"))
    for k, v in enumerate(vals):
        if not fits and k not in (0, len(vals) - 1):
            continue
        _, x0 = common.cell_origin(0, k, h, w)
        xc = left + x0 + w // 2 - common.text_width(v) // 2
        items.append((xc, 1, v))
    return add_margins(body, left=left, top=top, texts=items), left, top


def _labelled_strip(cells: np.ndarray, dims, per_row: int, caption: str) -> np.ndarray:
    """Cells side by side (``per_row`` per line), ``z{j}`` above each, ``caption`` below."""
    n, _, h, w = cells.shape
    lines = []
    for a in range(0, n, per_row):
        chunk = cells[a:a + per_row]
        g = common.grid(chunk, nrow=per_row if n > per_row else n)
        items = []
        for k, j in enumerate(dims[a:a + per_row]):
            _, x0 = common.cell_origin(0, k, h, w)
            items.append((x0 + w // 2 - common.text_width(f"z{j}") // 2, 1, f"z{j}"))
        lines.append(add_margins(g, top=12, texts=items))
    width = max(x.shape[1] for x in lines)
    lines = [np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0)), constant_values=255) for x in lines]
    body = np.concatenate(lines, axis=0)
    return add_margins(body, bottom=13, texts=[(4, body.shape[0], caption)])


# ---------------------------------------------------------------------- files
def save_traversal(t: Traversal, out_dir, step: int, gif: bool = False) -> list[Path]:
    """``traverse_<origin>_step<S>.png``; with ``gif``, a folder of the same name holding one GIF per
    latent (``z<j>.gif``) and ``all.gif`` (every latent at once)."""
    out_dir = Path(out_dir)
    stem = f"traverse_{t.origin.name}_{common.step_tag(step)}"
    paths = [common.save_png(t.image, out_dir / f"{stem}.png")]
    if gif:
        folder = out_dir / stem
        paths.append(common.save_gif(t.all_frames(), folder / "all.gif"))
        for r, j in enumerate(t.dims):
            paths.append(common.save_gif(t.latent_frames(r), folder / f"z{j:02d}.gif"))
    return paths


def write_traversals(run, out=None, images=(), random=False, zero=False, prior=False, lo=DEFAULT_RANGE[0],
                     hi=DEFAULT_RANGE[1], steps=DEFAULT_STEPS, dims=None, gif=False, seed=0) -> list[Path]:
    """The ``vaelab traverse`` command as a function: one PNG (and GIFs) per origin."""
    values = traversal_values(lo, hi, steps)
    if dims is not None:
        dims = check_dims(dims, run.latent_dim)
    ds = common.dataset_of(run)
    for i in images:
        common.check_index(i, len(ds))
    ref = reference(run, seed=seed)
    origins = make_origins(run, images=images, random=random, zero=zero, prior=prior, seed=seed, ref=ref)
    d = common.out_dir(run, out)
    paths = []
    for o in origins:
        paths += save_traversal(traversal(run, o, values, dims, ref=ref), d, run.step, gif=gif)
    return paths
