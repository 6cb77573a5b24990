"""Hooks: what one part of vaelab calls without importing the part that provides it.

Training pictures. The trainer draws pictures of the model every ``train.image_every`` steps and at the
last step, but ``vaelab.training`` does not import ``vaelab.viz``: it calls :func:`training_pictures`,
which calls every function registered with :func:`register_training_pictures`. A picture function is
``fn(model, images_uint8, device) -> {name: H x W x 3 uint8 array}`` (``images_uint8``: a few fixed
images, N x C x H x W, on the images' device); it must leave the global RNG untouched and the model in
the mode it found it. Each picture goes to ``RUN/images/<name>_step<8 digits>.png`` and TensorBoard.
The package itself (``vaelab/__init__.py``) registers ``live``: a reconstruction and a traversal
(:func:`vaelab.viz.live.training_images`). A plugin may add its own (:func:`vaelab.plugins.register_training_pictures`);
a :class:`~vaelab.training.trainer.Trainer` given ``pictures=`` uses that function instead (None: none).

This module imports nothing heavy: ``import vaelab`` stays cheap.
"""
from __future__ import annotations

from typing import Callable

__all__ = ["TRAINING_PICTURES", "register_training_pictures", "training_pictures"]

#: name -> picture function (see the module docstring), in registration order
TRAINING_PICTURES: dict[str, Callable] = {}


def register_training_pictures(name: str, fn: Callable | None = None):
    """Add picture function ``fn`` as ``name`` (also as a decorator: ``@register_training_pictures("name")``).

    Parameters
    ----------
    name : str
        What the function is known by (its pictures carry their own names).
    fn : callable
        ``fn(model, images_uint8, device) -> {picture name: H x W x 3 uint8 array}``.
    """
    if fn is None:
        return lambda f: register_training_pictures(name, f)
    from .plugins import _origin, claim

    claim(TRAINING_PICTURES, "training pictures", name, fn, origin=_origin)
    return fn


def training_pictures(model, images_uint8, device) -> dict:
    """The pictures of every registered function, by picture name (a later function's picture of the
    same name wins)."""
    out: dict = {}
    for fn in TRAINING_PICTURES.values():
        out.update(fn(model, images_uint8, device))
    return out
