"""Image views: stored uint8 images -> the images a model is shown, drawn anew on every gather.

Datasets keep their pixels as one uint8 tensor and a batch is one indexed gather (DESIGN.md). A
dataset whose images carry noise that is not a factor (disentanglement_lib's colour, noisy and
scream dSprites: docs/datasets.md#dsprites-variants) stores the noise-free images and has a *view*: a callable mapping the
stored gather of any leading shape (``N x 1 x 64 x 64``, or ``M x B x 1 x 64 x 64`` in a vmapped
sweep) to the shown uint8 images (``N x 3 x 64 x 64``), drawing its noise with torch ops from the
given ``torch.Generator`` (or the default generator of the batch's device). Only tensor ops, no host
syncs, fixed shapes: a view runs inside a captured CUDA graph on the device where the batch lives.

Every gather goes through one function, :func:`show` (``FactorDataset.gather(idx, generator)`` is
``show(images[idx], view, generator)``); without a view it returns the stored gather itself, so
datasets without one behave exactly as before.

Where the noise comes from: training draws it from the torch RNG the trainer checkpoints (the
default generator of the device holding the images), so a resumed run is bit-identical; the metrics
derive a generator from their own numpy generator (:func:`torch_generator`); pictures use a
generator seeded from the command's seed.

The shown images are quantised to uint8 (dlib feeds the float values to the network: a difference
of at most 1/510 per pixel).
"""
from __future__ import annotations

import abc

import numpy as np
import torch

from ..errors import VaelabError

__all__ = ["ImageView", "ColorView", "NoisyView", "ScreamView", "show", "torch_generator", "VIEWS"]


def show(stored: torch.Tensor, view=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The shown uint8 images of a stored gather (``stored`` itself when there is no view)."""
    return stored if view is None else view(stored, generator=generator)


def torch_generator(rng: np.random.Generator | int | None, device="cpu") -> torch.Generator | None:
    """A torch.Generator on ``device`` seeded from a numpy generator (one draw from it) or an int;
    None for None (then the default generator is used)."""
    if rng is None:
        return None
    seed = int(rng) if isinstance(rng, (int, np.integer)) else int(rng.integers(0, 2 ** 63 - 1))
    return torch.Generator(device=device).manual_seed(seed)


def _to_uint8(v: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] -> uint8 0..255, rounded (docs/conventions.md#tensors)."""
    return v.mul_(255.0).round_().to(torch.uint8)


class ImageView(abc.ABC):
    """Base class: ``view(stored_uint8, generator=None) -> shown_uint8`` (see the module docstring).

    ``shown_shape(stored C x H x W) -> C' x H x W``; ``to(device)`` returns the view with its tensors
    (a painting) on ``device`` (itself when it holds none)."""

    name = "view"
    channels = 3
    summary = ""

    def shown_shape(self, stored_shape) -> tuple[int, int, int]:
        c, h, w = (int(s) for s in stored_shape)
        if c != 1:
            raise VaelabError(f"the {self.name} view takes 1-channel images (a sprite mask), got {c} channels")
        return (self.channels, h, w)

    def to(self, device) -> "ImageView":
        return self

    def describe(self) -> str:
        return f"{self.name}: {self.summary}" if self.summary else self.name

    @abc.abstractmethod
    def __call__(self, stored: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The shown uint8 images ``... x channels x H x W`` of a stored gather."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @staticmethod
    def _sprite(stored: torch.Tensor) -> torch.Tensor:
        """The stored mask as float in [0, 1] (dSprites: 0/255 -> 0/1), ``... x 1 x H x W``."""
        if stored.dtype != torch.uint8 or stored.ndim < 3:
            raise VaelabError(f"a view maps uint8 images ... x C x H x W, got {stored.dtype} of shape "
                              f"{tuple(stored.shape)}")
        return stored.float().div_(255.0)


class ColorView(ImageView):
    """dlib ``ColorDSprites``: the sprite times one colour U(0.5, 1)^3 per image; background 0."""

    name = "color"
    summary = "sprite x U(0.5, 1)^3, one colour per image (dlib ColorDSprites)"

    def __call__(self, stored, generator=None):
        s = self._sprite(stored)
        lead = tuple(s.shape[:-3])
        colour = torch.rand(lead + (3, 1, 1), generator=generator, device=s.device)
        colour.mul_(0.5).add_(0.5)  # dlib: random_state.uniform(0.5, 1, [N, 1, 1, 3])
        return _to_uint8(s * colour)


class NoisyView(ImageView):
    """dlib ``NoisyDSprites``: min(sprite + U(0, 1)^3 per pixel, 1): noise background, white sprite."""

    name = "noisy"
    summary = "min(sprite + U(0, 1)^3 per pixel, 1) (dlib NoisyDSprites)"

    def __call__(self, stored, generator=None):
        s = self._sprite(stored)
        h, w = s.shape[-2:]
        noise = torch.rand(tuple(s.shape[:-3]) + (3, h, w), generator=generator, device=s.device)
        return _to_uint8(noise.add_(s).clamp_(max=1.0))  # dlib: np.minimum(observations + color, 1.)


class ScreamView(ImageView):
    """dlib ``ScreamDSprites``: per image a random patch of *The Scream* (the thumbnail as dlib makes it)
    averaged with a colour U(0, 1)^3, the sprite's pixels inverted: 1 - (patch + colour) / 2.

    ``painting``: uint8 ``3 x Hp x Wp`` (or ``Hp x Wp x 3``), larger than the sprite images on both
    sides. Patch corners are drawn as dlib draws them, ``randint(0, Hp - 64)`` (the last corner row and
    column are never used); dlib inverts where the sprite equals 1 (stored 255)."""

    name = "scream"
    summary = "random patch of The Scream averaged with U(0, 1)^3, sprite inverted (dlib ScreamDSprites)"

    def __init__(self, painting, source: str = ""):
        p = torch.as_tensor(np.asarray(painting) if not isinstance(painting, torch.Tensor) else painting)
        if p.ndim == 3 and p.shape[-1] == 3 and p.shape[0] != 3:
            p = p.permute(2, 0, 1)
        if p.ndim != 3 or p.shape[0] != 3 or p.dtype != torch.uint8:
            raise VaelabError(f"the scream painting must be uint8 RGB (3 x H x W or H x W x 3), got "
                              f"{p.dtype} of shape {tuple(p.shape)}")
        self.source = source
        self.height, self.width = int(p.shape[1]), int(p.shape[2])
        # 3 x (Hp * Wp) in [0, 1]: a patch is one gather of flat pixel indices
        self.flat = p.reshape(3, -1).float().div_(255.0).contiguous()

    def __repr__(self):
        return f"ScreamView({self.height}x{self.width}, device={self.flat.device})"

    def to(self, device) -> "ScreamView":
        device = torch.device(device)
        if self.flat.device == device:
            return self
        out = object.__new__(ScreamView)
        out.__dict__.update(self.__dict__)
        out.flat = self.flat.to(device)
        return out

    def shown_shape(self, stored_shape):
        shape = super().shown_shape(stored_shape)
        if self.height <= shape[1] or self.width <= shape[2]:
            raise VaelabError(f"the scream painting is {self.height} x {self.width}: it must be larger than "
                              f"the {shape[1]} x {shape[2]} images on both sides")
        return shape

    def __call__(self, stored, generator=None):
        s = self._sprite(stored)
        lead = tuple(s.shape[:-3])
        h, w = int(s.shape[-2]), int(s.shape[-1])
        n = int(np.prod(lead)) if lead else 1
        dev = s.device
        if self.flat.device != dev:
            raise VaelabError(f"the scream painting is on {self.flat.device} but the images on {dev}: "
                              f"move the view with view.to(device)")
        # dlib: x_crop = randint(0, H - 64), y_crop = randint(0, W - 64), colour uniform(0, 1, 3) per image
        oy = torch.randint(0, self.height - h, (n, 1, 1), generator=generator, device=dev)
        ox = torch.randint(0, self.width - w, (n, 1, 1), generator=generator, device=dev)
        colour = torch.rand((n, 3, 1, 1), generator=generator, device=dev)
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        where = (oy + rows) * self.width + (ox + cols)  # n x h x w flat pixel indices
        patch = self.flat[:, where].transpose(0, 1)  # n x 3 x h x w
        background = patch.add_(colour).mul_(0.5)
        mask = stored.reshape((n,) + tuple(stored.shape[-3:])) == 255  # dlib: observations == 1
        out = torch.where(mask, 1.0 - background, background)
        return _to_uint8(out).reshape(lead + (3, h, w))


#: name -> view class (the painting-free ones; scream needs its painting)
VIEWS = {"color": ColorView, "noisy": NoisyView, "scream": ScreamView}
