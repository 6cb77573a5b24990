"""What the explorer page asks of a run, without any HTTP: the latents in KL order with their slider
ranges and factor labels, an image's code and reconstruction, the decode of any code, images picked by
factor values, and (UG-VAE) the global latent and the mixture components.

Every method takes plain Python values, checks them and raises :class:`ValueError` with a message
meant for the page (the server answers 400 with it); the HTTP layer in :mod:`.server` adds nothing but
parsing. Decodes go through one lock: the server answers requests in threads, the model runs one at a
time.
"""
from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.views import torch_generator
from ..viz import common
from ..viz.common import has_global_latent, to_uint8
from ..viz.traverse import DEFAULT_RANGE, KL_BATCH, kl_per_latent, shape_indices

# A latent whose mean KL (nats per image, over the reference batch) is at most this carries next to nothing
# and is folded away on the page: vaelab's own cut, the one the report's KL bars use (the quick-start run's
# switched-off latents sit below it; README), not from a paper.
DEAD_KL = 0.02
# Codes the server decodes: every coordinate finite and within this bound (the sliders span a few units;
# a prior N(0, 1) value past 100 is not a code anyone means).
VALUE_LIMIT = 100.0
# torch threads for the server's one-image decodes: a second thread gains nothing at batch 1 and costs
# much when the cores are busy (fvae64 decoder on 2 loaded cores: 5.5 ms on 1 thread, 150 ms on 2).
# Set once for the process when the Explorer is made (in the thread that makes it), never per request:
# resizing torch's thread pool from the server's short-lived request threads could abort the process
# at exit ("terminate called without an active exception", seen in the Ctrl-C test).
THREADS = 1


class Explorer:
    """A run opened for exploring: ``Explorer(run)`` (a :class:`~vaelab.training.run.Run`)."""

    def __init__(self, run, seed: int = 0, threads: int | None = THREADS):
        self.run = run
        self.model = run._inference_model()  # on the CPU a channels-last copy: decodes 1.4x faster at batch 1
        if threads:
            torch.set_num_threads(threads)
        self.ds = common.dataset_of(run)
        self.n = len(self.ds)
        self.d = run.latent_dim
        self.global_latent = has_global_latent(self.model)
        self.lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._factors = None  # N x K numpy copy of the factor classes, made on the first pick by factors
        self._reference(seed)
        self.labels, self.eval_note = factor_labels(Path(run.path) / "eval.json", self.d, run.step)
        self._info = self._make_info()
        self.decode(np.zeros(self.d, np.float32))  # warm-up: the page's first decode is as fast as the rest

    # ------------------------------------------------------------------ set-up
    @torch.no_grad()
    def _reference(self, seed: int):
        """Per-latent KL, slider ranges and (UG-VAE) β from the batch the traversals use (same images,
        same KL), so the page's order and numbers match `vaelab traverse` and the report."""
        rng = np.random.default_rng(seed)
        k = min(KL_BATCH, self.n)
        idx = np.sort(rng.choice(self.n, size=k, replace=False))
        x = self.ds.gather(torch.from_numpy(idx), torch_generator(seed)).to(self.run.device).float().div_(255.0)
        mu, logvar = self.model.encode(x)
        kl, beta = kl_per_latent(self.model, x, mu, logvar)
        self.kl = kl.double().cpu().numpy()
        self.order = sorted(range(self.d), key=lambda j: (-self.kl[j], j))
        self.ranges = _ranges(mu.double().cpu().numpy())
        self.beta_ref = None
        if self.global_latent:
            mu_b, lv_b = self.model.global_posterior(x, use_mean=True)
            self.beta_ref = mu_b.float().cpu().numpy()
            mb, lb = mu_b.double().cpu().numpy(), lv_b.double().cpu().numpy()
            self.beta_kl = 0.5 * (mb ** 2 + np.exp(lb) - lb - 1.0)  # KL(q(β|X) ‖ N(0, 1)) per coordinate
            self.beta_order = sorted(range(len(mb)), key=lambda j: (-self.beta_kl[j], j))
            self.beta_ranges = _ranges(mb[None])

    def _make_info(self) -> dict:
        ds, run = self.ds, self.run
        latents = [{"index": j, "kl": _r(self.kl[j]), "range": self.ranges[j], "dead": bool(self.kl[j] <= DEAD_KL),
                    "label": self.labels.get(j, "")} for j in self.order]
        factors = []
        if ds.has_factors:
            names = _class_names(ds)
            for k, (name, size) in enumerate(zip(ds.factor_names, ds.factor_sizes)):
                vals = np.asarray(ds.factor_values[k], dtype=np.float64)
                shown = names.get(k) or [common.fmt(float(v)) for v in vals[:size]]
                factors.append({"name": str(name), "size": int(size), "values": shown})
        info = {
            "run": Path(run.path).name, "path": str(Path(run.path).resolve()), "step": int(run.step),
            "objective": run.config["model"]["objective"], "net": run.config["model"].get("net", ""),
            "dataset": run.config["data"]["name"], "images": self.n, "image_shape": list(ds.image_shape),
            "latent_dim": self.d, "latents": latents, "dead_kl": DEAD_KL, "kl_batch": min(KL_BATCH, self.n),
            "factors": factors, "eval": self.eval_note, "limit": VALUE_LIMIT, "global_latent": None,
            "start": self._start_index(),
        }
        if self.global_latent:
            info["global_latent"] = {
                "dim_beta": int(self.model.dim_beta), "components": int(self.model.K),
                "beta": [{"index": j, "kl": _r(self.beta_kl[j]), "range": self.beta_ranges[j]} for j in self.beta_order],
                "beta_ref": _round(self.beta_ref)}
        return info

    def __enter__(self):  # ``with self:`` holds the lock and runs torch without grad
        self.lock.acquire()
        self._grad = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        return self

    def __exit__(self, *exc):
        torch.set_grad_enabled(self._grad)
        self.lock.release()

    def _start_index(self) -> int:
        """The image the page opens on: dSprites' centred square (as the traversals), else image 0."""
        shapes = shape_indices(self.ds)
        return int(shapes[0][1]) if shapes else 0

    def info(self) -> dict:
        return self._info

    # ------------------------------------------------------------------ requests
    def image(self, index) -> dict:
        """Data image ``index``: its code (posterior mean; UG-VAE: with the reference batch's β), its factors,
        the image and its reconstruction as PNG data URLs."""
        i = _index(index, self.n)
        img = self.ds.gather(torch.tensor([i]), torch_generator(i))  # a view's noise: fixed per image
        with self:
            x = img.to(self.run.device).float().div_(255.0)
            mu, _ = self.model.encode(x)
            beta = None if self.beta_ref is None else torch.as_tensor(self.beta_ref, device=self.run.device)
            rec, comps = self._decode(mu, beta)
        out = {"index": i, "z": _round(mu[0].float().cpu().numpy()), "beta": _round(self.beta_ref),
               "original": png_data_url(img[0].numpy()), "reconstruction": png_data_url(rec),
               "components": comps, "factors": None}
        if self.ds.has_factors:
            out["factors"] = [int(c) for c in self.ds.factors[i].tolist()]
        return out

    def decode(self, z, beta=None) -> dict:
        """The decoder's mean image of code ``z`` (``D`` numbers; UG-VAE: and global latent ``beta``) as a
        PNG data URL, with (UG-VAE) q(d|z), and the milliseconds the model took."""
        t0 = time.perf_counter()
        zt = torch.as_tensor(_code(z, self.d, "z"), device=self.run.device)[None]
        bt = None
        if self.global_latent:
            bt = torch.as_tensor(_code(self.beta_ref if beta is None else beta, self.model.dim_beta, "beta"),
                                 device=self.run.device)
        elif beta is not None:
            raise ValueError("beta is for UG-VAE runs (their global latent); this run has none")
        with self:
            image, comps = self._decode(zt, bt)
        url = png_data_url(image)
        return {"image": url, "components": comps, "ms": round(1000 * (time.perf_counter() - t0), 2)}

    def _decode(self, z: torch.Tensor, beta):
        kw = {} if beta is None else {"beta": beta}
        image = to_uint8(self.model.mean_image(self.model.decode(z, **kw)).clamp(0, 1))[0]
        comps = None
        if self.global_latent:
            comps = _round(self.model.component_probs(z)[0].float().cpu().numpy(), 4)
        return image, comps

    def component(self, k, beta=None) -> dict:
        """UG-VAE: the mean of mixture component ``k`` of p(z | d=k, β) (the code the page jumps to)."""
        if not self.global_latent:
            raise ValueError("mixture components are for UG-VAE runs; this run has none")
        k = _index(k, int(self.model.K), "component")
        bt = torch.as_tensor(_code(self.beta_ref if beta is None else beta, self.model.dim_beta, "beta"),
                             device=self.run.device)
        with self:
            means, _ = self.model.prior_components(bt)
        return {"component": k, "z": _round(means[k].float().cpu().numpy())}

    def find(self, wanted: dict) -> dict:
        """The index of an image with the given factor classes (``{name: class index}``; factors left out are
        free). The nearest image when no image has them all (L1 over classes scaled by each factor's size);
        ties are broken at random, so asking again shows another image with the same factors."""
        ds = self.ds
        if not ds.has_factors:
            raise ValueError("this dataset has no factors to pick images by")
        names = [str(x) for x in ds.factor_names]
        cols, target = [], []
        for name, value in wanted.items():
            if name not in names:
                raise ValueError(f"unknown factor {name!r}; the factors are {', '.join(names)}")
            k = names.index(name)
            cols.append(k)
            target.append(_index(value, int(ds.factor_sizes[k]), f"class of factor {name!r}"))
        with self.lock:  # the cached factor table and the generator are shared by the server's threads
            if self._factors is None:
                self._factors = ds.factors.cpu().numpy()
            f = self._factors
            if not cols:
                i = int(self._rng.integers(self.n))
            else:
                sizes = np.asarray([ds.factor_sizes[k] for k in cols], dtype=np.float64)
                dist = (np.abs(f[:, cols] - np.asarray(target)) / sizes).sum(1)
                best = np.flatnonzero(dist == dist.min())
                i = int(best[self._rng.integers(len(best))])
        return {"index": i, "exact": bool(all(f[i, k] == t for k, t in zip(cols, target)))}


# ---------------------------------------------------------------------- helpers
def factor_labels(path: Path, d: int, step: int) -> tuple[dict[int, str], str]:
    """``{latent: "posY 0.85, ..."}`` from RUN/eval.json, as `vaelab evaluate` reports which latent carries
    each factor: MIG's mutual information over the factor's entropy, the factor going to its best latent.
    Also a note for the page (where the labels come from, or why there are none)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, "no eval.json: run `vaelab evaluate RUN` to label the latents with the factors they carry"
    except (OSError, ValueError) as e:
        return {}, f"eval.json unreadable ({type(e).__name__}); latents are not labelled"
    mi, ent = (data.get("mig.mutual_info"), data.get("mig.entropy")) if isinstance(data, dict) else (None, None)
    try:
        m = np.asarray(mi, dtype=np.float64)
        ok = isinstance(ent, dict) and m.ndim == 2 and m.shape == (d, len(ent))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        return {}, "eval.json has no MIG breakdown for this model's latents: run `vaelab evaluate RUN --metrics mig`"
    found: dict[int, list[tuple[float, str]]] = {}
    for k, (name, h) in enumerate(ent.items()):
        if not isinstance(h, (int, float)) or not h > 0:
            continue
        norm = m[:, k] / float(h)
        j = int(np.argmax(norm))
        found.setdefault(j, []).append((float(norm[j]), str(name)))
    labels = {j: ", ".join(f"{name} {v:.2f}" for v, name in sorted(items, reverse=True)) for j, items in found.items()}
    scored = data.get("step")
    note = "factor labels: MIG's mutual information / factor entropy, from eval.json"
    if isinstance(scored, int) and scored != step:
        note += f" (scored at step {scored:,}, not this checkpoint's {step:,})"
    return labels, note


def png_data_url(image_u8: np.ndarray) -> str:
    """``C x H x W`` uint8 -> ``data:image/png;base64,...`` (fast zlib level: these are tiny)."""
    a = np.asarray(image_u8)
    a = a[0] if a.shape[0] == 1 else np.ascontiguousarray(a.transpose(1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _ranges(mu: np.ndarray) -> list[list[float]]:
    """Slider range per coordinate: the traversals' -3..3, widened to hold the reference codes (+10%)."""
    lo, hi = mu.min(0), mu.max(0)
    pad = 0.1 * (hi - lo)
    return [[round(min(DEFAULT_RANGE[0], float(a - p)), 2), round(max(DEFAULT_RANGE[1], float(b + p)), 2)]
            for a, b, p in zip(lo, hi, pad)]


def _class_names(ds) -> dict[int, list[str]]:
    from ..viz.traverse import _shape_factor

    found = _shape_factor(ds)
    return {found[0]: list(found[1])} if found else {}


def _index(value, n: int, what: str = "image") -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} index must be an integer, got {value!r}")
    try:
        i = int(value)
        if isinstance(value, float) and i != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{what} index must be an integer, got {str(value)[:40]!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"{what} index {i} is out of range 0..{n - 1}")
    return i


def _code(values, n: int, what: str) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be {n} numbers") from None
    if a.shape != (n,):
        raise ValueError(f"{what} must be {n} numbers, got {a.size}")
    if not np.all(np.isfinite(a)) or np.abs(a).max(initial=0.0) > VALUE_LIMIT:
        raise ValueError(f"{what} values must be finite numbers within ±{VALUE_LIMIT:g}")
    return a


def _r(v: float, digits: int = 4) -> float:
    v = float(v)
    return round(v, digits) if math.isfinite(v) else 0.0


def _round(a, digits: int = 4):
    return None if a is None else [_r(v, digits) for v in np.asarray(a).ravel()]
