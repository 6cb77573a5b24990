"""Drawing points from a :class:`~vaelab.data.FactorDataset` and encoding them (docs/metrics.md#shared-machinery).

``encode(uint8 images B x C x H x W) -> B x D`` posterior means is deterministic, so codes are cached
per dataset row: BetaVAE's 1.92 M draws and FactorVAE's 0.97 M draws on dSprites touch at most its
737,280 distinct images, and each is encoded once, in large batches, however many metrics use it.
Gathers are vectorised (``dataset.index_of`` on whole index arrays). Hidden factors (SmallNORB's
instance, ``dataset.hidden_size > 1``) are drawn per image with the metric's generator inside
``index_of``, so each drawn row is still one dataset row and the cache holds. A dataset whose
``images_for`` or ``sample`` is overridden (e.g. random colours per draw) is encoded draw by draw instead
(the same draws for a grid without hidden factors; with them, hidden values drawn batch by batch).

So is a dataset with an image view (dlib's colour / noisy / scream dSprites, :mod:`vaelab.data.views`):
as in dlib, every drawn image gets fresh noise, even when the same row is drawn twice (caching codes
per row would fix the noise per row for the whole evaluation). The noise comes from a torch generator
seeded by one draw from the metric's generator per batch, so scores stay reproducible from
``eval.seed``; the price is encoding every draw (BetaVAE and FactorVAE on dSprites: about 2.9 M images
instead of the at most 737,280 distinct ones).
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import VaelabError

DEFAULT_BATCH = 2048
#: with at least this many draws per dataset row, :meth:`CodeSampler.plan` encodes every row up front:
#: uniform draws then touch 1 - e^-2 = 86 % of the rows or more, so encoding them all costs at most 16 %
#: more (dSprites under the default counts: 2.3 %) and the encoding is one pass of known length
ENCODE_ALL_DRAWS_PER_ROW = 2.0


def _to_numpy(z) -> np.ndarray:
    import torch

    if isinstance(z, torch.Tensor):
        z = z.detach().to("cpu", torch.float64).numpy()
    return np.asarray(z, dtype=np.float64)


class CodeSampler:
    """Encodes dataset rows through ``encode`` (cached per row) and draws metric samples."""

    def __init__(self, encode, dataset, batch_size: int = DEFAULT_BATCH, progress: bool = False):
        from ..data.base import FactorDataset

        if not callable(encode):
            raise VaelabError("encode must be a callable mapping uint8 images (B x C x H x W) to codes (B x D)")
        if not isinstance(dataset, FactorDataset):
            raise VaelabError(f"dataset must be a vaelab FactorDataset, got {type(dataset).__name__}")
        if len(dataset) == 0:
            raise VaelabError(f"dataset {dataset.name!r} holds no images")
        self.encode = encode
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.progress = progress
        cls = type(dataset)
        # rows are a pure function of the draw only when the base class's sampling is in use and no
        # view adds noise per gather (see the module docstring)
        self.cached = (cls.images_for is FactorDataset.images_for and cls.sample is FactorDataset.sample
                       and dataset.view is None)
        self._codes: np.ndarray | None = None
        self._have = np.zeros(len(dataset), dtype=bool)
        self.num_latents: int | None = None
        self.images_encoded = 0
        self.encode_seconds = 0.0
        self._bar = None
        self._counting = None  # what the bar counts: "draws" (codes served) or "rows" (rows encoded)

    # ------------------------------------------------------------------ encoding
    def encode_images(self, images) -> np.ndarray:
        t0 = time.perf_counter()
        outs = []
        for i in range(0, len(images), self.batch_size):
            outs.append(self._encode_batch(images[i:i + self.batch_size]))
            if self._counting == "draws":  # a dataset without the per-row cache: every draw is encoded
                self._advance(len(outs[-1]))
        self.encode_seconds += time.perf_counter() - t0
        if not outs:
            return np.zeros((0, self.num_latents or 0))
        return np.concatenate(outs)

    def _encode_batch(self, images) -> np.ndarray:
        z = _to_numpy(self.encode(images))
        if z.ndim == 1:
            z = z[:, None]
        if z.ndim != 2 or z.shape[0] != len(images):
            raise VaelabError(f"encode returned shape {tuple(z.shape)} for {len(images)} images; "
                              f"expected {len(images)} x D posterior means")
        if self.num_latents is None:
            self.num_latents = int(z.shape[1])
        elif z.shape[1] != self.num_latents:
            raise VaelabError(f"encode returned {z.shape[1]} dimensions, earlier {self.num_latents}")
        if not np.isfinite(z).all():
            raise VaelabError("the encoder returned NaN or infinite codes; the model diverged "
                              "(check its training curves) or the images do not match it")
        self.images_encoded += len(images)
        return z

    def plan(self, draws: int) -> None:
        """Prepare the encoding for ``draws`` codes to come (the sum of what the metrics will draw, known
        from their counts before any runs), so its progress bar has its real total from the start.

        With the per-row cache and at least :data:`ENCODE_ALL_DRAWS_PER_ROW` draws per row, every row
        not yet encoded is encoded now, in one pass whose bar counts rows (its rate is the encoder's,
        so its ETA holds); the metrics then read the cache. Otherwise the bar counts the codes served,
        up to ``draws``: each one is encoded on first use (or, without the cache, every time)."""
        self.close()
        n = len(self.dataset)
        if self.cached and draws >= ENCODE_ALL_DRAWS_PER_ROW * n:
            todo = n - int(self._have.sum())
            if todo:
                self._open_bar(todo, "rows", f"encoding all {n:,} images")
                self._ensure(np.arange(n, dtype=np.int64))
                self.close()
            return
        if draws > 0:
            self._open_bar(int(draws), "draws", "encoding the metrics' draws")

    def _open_bar(self, total: int, counting: str, desc: str):
        self._counting = counting
        if self.progress:
            from ..data.prepare import progress

            self._bar = progress(total=total, unit="img", unit_scale=True, desc=desc, mininterval=0.5)

    def _advance(self, k: int):
        """Count ``k`` more units of the planned total (never past it: a plan is an upper bound)."""
        bar = self._bar
        if bar is not None and k > 0:
            bar.update(min(k, max(0, bar.total - bar.n)))

    def close(self):
        """Close the progress bar (if any)."""
        self._counting = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def codes_at(self, rows) -> np.ndarray:
        """Codes of dataset rows (any shape of int array; result ``rows.shape + (D,)``), each row encoded
        once (with a view: its noise drawn once, from the default generator, and kept; the samplers
        below do not use this cache for such datasets)."""
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        self._ensure(flat)
        return self._codes[flat].reshape(rows.shape + (self._codes.shape[1],))

    def _ensure(self, flat: np.ndarray) -> None:
        """Encode the rows of ``flat`` not yet in the cache (each once), counting progress."""
        need = flat if self._codes is None else flat[~self._have[flat]]
        served = 0  # draws counted so far ("draws" progress: spread over the batches encoded for them)
        if need.size:
            need = np.unique(need)
            t0 = time.perf_counter()
            import torch

            ds = self.dataset
            for i in range(0, len(need), self.batch_size):
                part = need[i:i + self.batch_size]
                z = self._encode_batch(ds.gather(torch.from_numpy(part)))
                if self._codes is None:
                    self._codes = np.zeros((len(self.dataset), z.shape[1]), dtype=np.float64)
                self._codes[part] = z
                self._have[part] = True
                if self._counting == "rows":
                    self._advance(len(part))
                elif self._counting == "draws":
                    upto = len(flat) * (i + len(part)) // len(need)
                    self._advance(upto - served)
                    served = upto
            self.encode_seconds += time.perf_counter() - t0
        if self._counting == "draws":
            self._advance(len(flat) - served)

    def codes_for_factors(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Codes of images showing the factor rows ``M x K`` (hidden factors filled at random)."""
        ds = self.dataset
        if self.cached and ds.is_grid:
            return self.codes_at(ds.index_of(factors, rng))
        outs = []
        for i in range(0, len(factors), self.batch_size):
            outs.append(self.encode_images(ds.images_for(factors[i:i + self.batch_size], rng)))
        return np.concatenate(outs)

    # ------------------------------------------------------------------ draws
    def require_factors(self, metric: str):
        ds = self.dataset
        if not ds.has_factors:
            raise VaelabError(f"{metric} needs ground-truth factors, but dataset {ds.name!r} has none; "
                              f"only the unsupervised scores apply to it")

    def require_grid(self, metric: str):
        self.require_factors(metric)
        ds = self.dataset
        if not ds.is_grid:
            raise VaelabError(f"{metric} needs a full factor grid (it fixes one factor and varies the others), "
                              f"but dataset {ds.name!r} is a labelled set; use the i.i.d. metrics "
                              f"(mig, sap, dci, modularity, irs) for it")

    def sample(self, n: int, rng: np.random.Generator, metric: str = "this metric") -> tuple[np.ndarray, np.ndarray]:
        """``n`` i.i.d. (factors ``n x K``, codes ``n x D``) pairs, as ``dataset.sample`` draws them."""
        import torch

        self.require_factors(metric)
        n = _count(n, "number of points")
        ds = self.dataset
        if not self.cached:
            f, images = ds.sample(n, rng)
            return np.asarray(f, dtype=np.int64), self.encode_images(images)
        if ds.is_grid:
            f = ds.sample_factors(n, rng)
            return f, self.codes_at(ds.index_of(f, rng))
        rows = rng.integers(0, len(ds), size=n)
        return ds.factors[torch.from_numpy(rows)].numpy().copy(), self.codes_at(rows)

    def sample_unlabelled(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Codes of ``n`` images drawn uniformly (i.i.d. factors on a labelled dataset)."""
        import torch

        ds = self.dataset
        if ds.has_factors:
            return self.sample(n, rng)[1]
        n = _count(n, "number of points")
        rows = rng.integers(0, len(ds), size=n)
        if self.cached:
            return self.codes_at(rows)
        from ..data.views import torch_generator

        return self.encode_images(ds.gather(torch.from_numpy(rows),
                                            torch_generator(rng) if ds.view is not None else None))


def _count(n, what: str) -> int:
    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise VaelabError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


def get_sampler(encode, dataset, sampler: CodeSampler | None = None) -> CodeSampler:
    """The given sampler (shared across metrics by ``evaluate``) or a fresh one."""
    if sampler is not None:
        return sampler
    return CodeSampler(encode, dataset)


def iid_rows(dataset, seed: int, n: int) -> np.ndarray:
    """``n`` dataset rows drawn i.i.d. with ``seed``, ascending: the images the ``latent`` metric's KL and
    the ``elbo`` metric read (the same rows for both)."""
    return np.sort(np.random.default_rng(seed).integers(0, len(dataset), size=n))


def train_test_draws(encode, dataset, sampler, seed: int, num_train: int, num_test: int, metric: str):
    """``(factors, codes, factors_test, codes_test, estimator_seed)``: i.i.d. train then test draws from
    ``dataset`` with a generator seeded by ``seed``, and the seed for the metric's estimator drawn after
    them (the protocol of SAP, DCI and modularity / explicitness)."""
    from .info import estimator_seed

    s = get_sampler(encode, dataset, sampler)
    rng = np.random.default_rng(seed)
    f, z = s.sample(num_train, rng, metric)
    ft, zt = s.sample(num_test, rng, metric)
    return f, z, ft, zt, estimator_seed(rng)
