"""FactorDataset: images plus (optionally) the ground-truth factors that made them.

Every loader returns one; metrics, the trainer and the UG-VAE experiments need nothing else.

* ``images``: uint8 tensor ``N x C x H x W`` (memory-mapped for large sets).
* ``factors``: int64 tensor ``N x K`` of class indices of the *visible* factors, or ``None``.
  Size-1 factors (dSprites' colour) are hidden: they carry no information.
* ``factor_names``, ``factor_sizes``, ``factor_values`` (per factor, the real value of each class).
* A *grid* dataset holds every combination of factor values exactly once, in canonical row-major
  order (last factor fastest; docs/datasets.md#grids-and-factors), so ``index_of`` is arithmetic.
  Other labelled sets (MNIST, CelebA attributes) are not grids: ``index_of`` refuses and
  ``images_for`` draws a random image among those carrying the requested factors.
* A grid may have *hidden* factors with several values (SmallNORB's ``instance``, as dlib treats it):
  every visible combination then has ``hidden_size`` images, stored consecutively, so image
  ``visible_index * hidden_size + h`` shows hidden value ``h`` and ``len == prod(factor_sizes) *
  hidden_size``. ``factors`` holds the visible factors only; ``meta["hidden_factors"]`` names the
  hidden ones (size-1 ones too, as dSprites' colour). ``index_of``, ``images_for`` and ``sample``
  draw the hidden value uniformly with the caller's ``rng`` (docs/metrics.md#shared-machinery: "hidden factors filled at
  random"); without an ``rng`` (or an explicit ``hidden=``) ``index_of`` refuses rather than
  silently picking one instance.
* A *view* (``view``, :mod:`vaelab.data.views`) maps the stored gather to the shown images, drawing
  noise that is not a factor anew on every gather (dlib's colour / noisy / scream dSprites: 1-channel
  masks stored, 3 channels shown). ``gather(idx, generator)`` is the one way to get the images a
  model sees; ``image_shape`` is the shown shape (nets are built for it), ``stored_shape`` that of
  ``images``. Without a view ``gather(idx)`` is ``images[idx]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..errors import VaelabError


def _as_uint8_nchw(images) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise VaelabError(f"images must be uint8, got {images.dtype}")
        if not images.flags.writeable:
            # np.memmap in mode "r": keep zero-copy without torch's warning by viewing it writable
            # through a copy-on-write map is the loader's job; here fall back to a copy for small arrays.
            images = np.array(images)
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise VaelabError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise VaelabError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:  # N x H x W grey
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise VaelabError(f"images must be N x C x H x W (or N x H x W), got shape {tuple(images.shape)}")
    return images


@dataclass
class FactorDataset:
    """Images with ground-truth factors (see module docstring)."""

    images: torch.Tensor
    factors: torch.Tensor | None = None
    factor_names: list[str] = field(default_factory=list)
    factor_sizes: list[int] = field(default_factory=list)
    factor_values: list[np.ndarray] = field(default_factory=list)
    is_grid: bool = False
    name: str = "custom"
    source: str = ""
    meta: dict = field(default_factory=dict)
    hidden_size: int = 1  # grid only: images per visible combination (hidden values), stored consecutively
    view: object = None  # stored gather -> shown images (vaelab.data.views), or None: shown = stored

    def __post_init__(self):
        self.images = _as_uint8_nchw(self.images)
        n = self.images.shape[0]
        if isinstance(self.hidden_size, bool) or int(self.hidden_size) != self.hidden_size or self.hidden_size < 1:
            raise VaelabError(f"hidden_size must be a positive integer, got {self.hidden_size!r}")
        self.hidden_size = int(self.hidden_size)
        if self.factors is not None:
            if isinstance(self.factors, np.ndarray):
                self.factors = torch.from_numpy(np.ascontiguousarray(self.factors, dtype=np.int64))
            self.factors = self.factors.to(torch.int64)
            if self.factors.ndim != 2 or self.factors.shape[0] != n:
                raise VaelabError(
                    f"factors must be N x K with N = {n} images, got shape {tuple(self.factors.shape)}")
            k = self.factors.shape[1]
            if not self.factor_names:
                self.factor_names = [f"factor_{i}" for i in range(k)]
            if not self.factor_sizes:
                self.factor_sizes = [int(self.factors[:, i].max()) + 1 if n else 0 for i in range(k)]
            if not self.factor_values:
                self.factor_values = [np.arange(s, dtype=np.float64) for s in self.factor_sizes]
            if not (len(self.factor_names) == len(self.factor_sizes) == len(self.factor_values) == k):
                raise VaelabError("factor_names, factor_sizes and factor_values must each have one entry per factor")
        if self.hidden_size > 1:
            if not (self.is_grid and self.has_factors):
                raise VaelabError("hidden_size > 1 needs a factor grid (is_grid=True with factors)")
            want = int(np.prod(self.factor_sizes)) * self.hidden_size
            if n != want:
                raise VaelabError(f"a grid of sizes {list(self.factor_sizes)} with {self.hidden_size} hidden values "
                                  f"per combination holds {want:,} images, got {n:,}")
        if self.view is not None:
            if not callable(self.view) or not hasattr(self.view, "shown_shape"):
                raise VaelabError("view must be an image view (vaelab.data.views.ImageView), got "
                                  f"{type(self.view).__name__}")
            self.view.shown_shape(self.stored_shape)  # refuses images it cannot show
        self._lookup = None

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        """``C x H x W`` of ``images`` as stored."""
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``C x H x W`` of the images a model sees (``gather``): the stored shape unless a view changes it."""
        if self.view is None:
            return self.stored_shape
        return tuple(int(s) for s in self.view.shown_shape(self.stored_shape))

    def gather(self, idx, generator: torch.Generator | None = None) -> torch.Tensor:
        """The shown uint8 images at ``idx`` (tensor, numpy array, list, range, slice or int): ``images[idx]``
        through the view, whose noise comes from ``generator`` (default: the default generator of the
        images' device). Without a view: ``images[idx]`` exactly."""
        from .views import show

        if isinstance(idx, np.ndarray):
            idx = torch.from_numpy(idx)
        elif isinstance(idx, (list, tuple, range)):
            idx = torch.as_tensor(idx, dtype=torch.int64)
        return show(self.images[idx], self.view, generator)

    def to(self, device) -> "FactorDataset":
        """A shallow copy with the images (and the view's tensors) on ``device``."""
        import copy

        out = copy.copy(self)
        out.images = self.images.to(device)
        if self.view is not None:
            out.view = self.view.to(out.images.device)
        return out

    @property
    def has_factors(self) -> bool:
        return self.factors is not None and self.factors.shape[1] > 0

    @property
    def num_factors(self) -> int:
        return 0 if self.factors is None else int(self.factors.shape[1])

    def describe(self) -> str:
        c, h, w = self.image_shape
        lines = [f"{self.name}: {len(self):,} images, {c} x {h} x {w} uint8"]
        if self.has_factors:
            kind = "full grid" if self.is_grid else "labelled set"
            lines.append(f"factors ({kind}): " + ", ".join(
                f"{n} {s}" for n, s in zip(self.factor_names, self.factor_sizes)))
            if self.hidden_size > 1:
                names = ", ".join(self.meta.get("hidden_factors") or []) or "hidden"
                lines.append(f"hidden: {names} ({self.hidden_size} images per combination, drawn at random)")
        else:
            lines.append("factors: none")
        if self.view is not None:
            sc, sh, sw = self.stored_shape
            lines.append(f"view {self.view.describe()}; stored {sc} x {sh} x {sw}, noise drawn anew per gather")
        if self.source:
            lines.append(f"source: {self.source}")
        return "\n".join(lines)

    def subset(self, indices) -> "FactorDataset":
        """A labelled (non-grid) dataset holding ``images[indices]`` (copied); hidden factors become
        ordinary repeats (``images_for`` draws among the images of a combination)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return FactorDataset(
            images=self.images[idx].clone(),
            factors=None if self.factors is None else self.factors[idx].clone(),
            factor_names=list(self.factor_names), factor_sizes=list(self.factor_sizes),
            factor_values=list(self.factor_values), is_grid=False, name=self.name,
            source=self.source, meta=dict(self.meta), view=self.view)

    # ------------------------------------------------------------------ factors
    def _require_factors(self, what: str):
        if not self.has_factors:
            raise VaelabError(f"dataset {self.name!r} has no ground-truth factors: {what} needs them")

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n x K`` int64 factor rows: each factor uniform and independent on a grid,
        rows of the labelled set drawn with replacement otherwise."""
        self._require_factors("sample_factors")
        if self.is_grid:
            return np.stack([rng.integers(0, s, size=n) for s in self.factor_sizes], axis=1).astype(np.int64)
        rows = rng.integers(0, len(self), size=n)
        return self.factors[torch.from_numpy(rows)].numpy().copy()

    def index_of(self, factors, rng: np.random.Generator | None = None, hidden=None) -> np.ndarray:
        """Dataset indices of factor rows (grid datasets only; canonical row-major order).

        With hidden factors (``hidden_size > 1``) the hidden value of each row is ``hidden`` (an int or
        one per row) if given, else drawn uniformly with ``rng`` (one ``rng.integers(hidden_size, size=rows)``
        call); with neither it is an error. Without hidden factors ``rng`` is not touched."""
        self._require_factors("index_of")
        if not self.is_grid:
            raise VaelabError(f"dataset {self.name!r} is not a full factor grid: index_of is undefined")
        f = np.asarray(factors, dtype=np.int64)
        if f.ndim == 1:
            f = f[None]
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        if f.ndim != 2 or f.shape[1] != len(sizes) or (f < 0).any() or (f >= sizes).any():
            raise VaelabError(f"factor rows out of range for sizes {self.factor_sizes}")
        bases = np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]])
        visible = f @ bases
        if self.hidden_size == 1:
            return visible
        if hidden is not None:
            try:
                h = np.broadcast_to(np.asarray(hidden, dtype=np.int64), visible.shape)
            except ValueError:
                raise VaelabError(f"hidden= must be one value or one per factor row ({len(visible)})") from None
            if (h < 0).any() or (h >= self.hidden_size).any():
                raise VaelabError(f"hidden values must lie in [0, {self.hidden_size})")
        elif rng is not None:
            h = rng.integers(0, self.hidden_size, size=len(visible))
        else:
            names = ", ".join(self.meta.get("hidden_factors") or []) or "a hidden factor"
            raise VaelabError(f"dataset {self.name!r} has {self.hidden_size} images per factor combination "
                              f"({names}): pass rng= to draw one at random, or hidden= to choose it")
        return visible * self.hidden_size + h

    def images_for(self, factors, rng: np.random.Generator | None = None) -> torch.Tensor:
        """uint8 images ``B x C x H x W`` showing the given factor rows (shown through the view).

        Grid: the unique image, or with hidden factors one drawn with ``rng`` (required then).
        Labelled set: a random image among those with exactly these factors (``rng``; seed 0 when
        omitted); a combination never seen is an error. With a view, its noise comes from a torch
        generator seeded by one more draw from ``rng`` (the default generator without ``rng``)."""
        self._require_factors("images_for")
        if self.is_grid:
            return self._shown(torch.from_numpy(self.index_of(factors, rng)), rng)
        if rng is None:
            rng = np.random.default_rng(0)
        lookup = self._combination_lookup()
        f = np.asarray(factors, dtype=np.int64)
        out = np.empty(len(f), dtype=np.int64)
        for i, row in enumerate(f):
            candidates = lookup.get(row.tobytes())
            if candidates is None:
                raise VaelabError(f"no image in {self.name!r} has factors {row.tolist()}")
            out[i] = candidates[rng.integers(len(candidates))]
        return self._shown(torch.from_numpy(out), rng)

    def _shown(self, idx: torch.Tensor, rng: np.random.Generator | None) -> torch.Tensor:
        """``gather(idx)`` with the view's noise from ``rng`` (which is not touched without a view)."""
        if self.view is None:
            return self.images[idx]
        from .views import torch_generator

        return self.gather(idx, torch_generator(rng, self.images.device))

    def _combination_lookup(self) -> dict:
        if self._lookup is None:
            f = self.factors.numpy()
            _, inverse = np.unique(f, axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            order = np.argsort(inverse, kind="stable")
            bounds = np.flatnonzero(np.diff(inverse[order])) + 1
            self._lookup = {f[g[0]].tobytes(): g for g in np.split(order, bounds)}
        return self._lookup

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, torch.Tensor]:
        """``n`` i.i.d. (factors, images) pairs, as the i.i.d. metrics draw them (hidden values
        drawn after the visible factors)."""
        self._require_factors("sample")
        if self.is_grid:
            f = self.sample_factors(n, rng)
            return f, self.images_for(f, rng)
        rows = torch.from_numpy(rng.integers(0, len(self), size=n))
        return self.factors[rows].numpy().copy(), self._shown(rows, rng)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, images, factors=None, factor_names: Sequence[str] | None = None,
                    factor_sizes: Sequence[int] | None = None, factor_values=None,
                    name: str = "custom", view=None) -> "FactorDataset":
        """Wrap a user's arrays. A full grid (every combination once) is detected and put in
        canonical order; anything else is a labelled set. Size-1 factors are dropped. ``view``: an
        optional image view (:mod:`vaelab.data.views`)."""
        images = _as_uint8_nchw(images)
        if factors is None:
            return cls(images=images, name=name, view=view)
        f = np.asarray(factors)
        if f.ndim != 2 or f.shape[0] != images.shape[0]:
            raise VaelabError(f"factors must be N x K with N = {images.shape[0]}, got shape {f.shape}")
        if not np.issubdtype(f.dtype, np.integer):
            raise VaelabError("factors must be integer class indices (N x K)")
        f = f.astype(np.int64)
        k = f.shape[1]
        names = list(factor_names) if factor_names is not None else [f"factor_{i}" for i in range(k)]
        sizes = list(factor_sizes) if factor_sizes is not None else [int(f[:, i].max()) + 1 for i in range(k)]
        values = list(factor_values) if factor_values is not None else [np.arange(s, dtype=np.float64) for s in sizes]
        if len(names) != k or len(sizes) != k or len(values) != k:
            raise VaelabError(f"got {k} factor columns but {len(names)} names / {len(sizes)} sizes")
        if (f < 0).any() or (f >= np.asarray(sizes)).any():
            raise VaelabError("factor values must be class indices in [0, size)")
        keep = [i for i, s in enumerate(sizes) if s > 1]
        f = f[:, keep]
        names = [names[i] for i in keep]
        sizes = [int(sizes[i]) for i in keep]
        values = [np.asarray(values[i]) for i in keep]
        is_grid = False
        total = int(np.prod(sizes)) if sizes else 1
        if sizes and total == len(f):
            bases = np.concatenate([np.cumprod(np.asarray(sizes)[::-1])[::-1][1:], [1]]).astype(np.int64)
            flat = f @ bases
            if np.array_equal(np.sort(flat), np.arange(total)):
                is_grid = True
                if not np.array_equal(flat, np.arange(total)):
                    order = np.argsort(flat)
                    images = images[torch.from_numpy(order)]
                    f = f[order]
        return cls(images=images, factors=torch.from_numpy(np.ascontiguousarray(f)), factor_names=names,
                   factor_sizes=sizes, factor_values=values, is_grid=is_grid, name=name, view=view)
