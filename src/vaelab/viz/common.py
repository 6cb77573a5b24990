"""Shared pieces of the pictures: opening a run, uint8 conversion, labelled margins, output paths."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import VaelabError

PAD = 2  # pixels between grid cells (make_grid's default)
BG = 255  # white margins and padding


def open_run(run, step: int | None = None, device: str = "cpu"):
    """A :class:`~vaelab.training.run.Run` from a Run (returned as is) or a run folder."""
    from ..training.run import Run, load_run

    if isinstance(run, Run):
        if step is not None and step != run.step:
            return load_run(run.path, step=step, device=str(run.device))
        return run
    return load_run(run, step=step, device=device)


def has_global_latent(model) -> bool:
    """Models with a global latent β besides the per-image codes, as UG-VAE (the objective declares it,
    ``VAE.global_latent``: decode(z, beta), prior_components, global_posterior)."""
    return bool(getattr(model, "global_latent", False))


def to_uint8(images) -> np.ndarray:
    """Float images in [0, 1] (tensor or array, ``N x C x H x W``) -> uint8 array, rounded."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    return (np.clip(images, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def as_rgb(array: np.ndarray) -> np.ndarray:
    """``H x W x C`` uint8 with C = 1 or 3 -> ``H x W x 3``."""
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


def grid(images_u8, nrow: int) -> np.ndarray:
    """An RGB ``H x W x 3`` grid of uint8 ``N x C x H x W`` images (cells ``PAD`` apart)."""
    from .grid import make_grid

    images_u8 = np.ascontiguousarray(np.asarray(images_u8))
    return as_rgb(make_grid(images_u8, nrow=nrow, pad=PAD, pad_value=BG))


def cell_origin(i: int, j: int, h: int, w: int) -> tuple[int, int]:
    """Top-left pixel (y, x) of cell (row i, column j) in a :func:`grid` of ``h x w`` images."""
    return PAD + i * (h + PAD), PAD + j * (w + PAD)


@lru_cache(maxsize=8)
def font(size: int = 10):
    return ImageFont.load_default(size=size)


def text_width(text: str, size: int = 10) -> int:
    return int(np.ceil(font(size).getlength(text)))


def add_margins(array: np.ndarray, *, left: int = 0, top: int = 0, bottom: int = 0,
                texts=()) -> np.ndarray:
    """Put an RGB image on a white canvas with the given margins and draw ``texts``:
    ``(x, y, text)`` in canvas coordinates, black, PIL's default font (size 10)."""
    array = as_rgb(array)
    h, w = array.shape[:2]
    canvas = Image.new("RGB", (w + left, h + top + bottom), (BG, BG, BG))
    canvas.paste(Image.fromarray(array), (left, top))
    draw = ImageDraw.Draw(canvas)
    f = font()
    for x, y, text in texts:
        draw.text((x, y), text, fill=(0, 0, 0), font=f)
    return np.asarray(canvas)


def fmt(v: float) -> str:
    """Short number for labels: 3 significant digits."""
    if v == 0:
        return "0"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.1e}"


def out_dir(run, out=None) -> Path:
    """Where pictures go: ``out`` or ``RUN/images`` (created)."""
    d = Path(out) if out else Path(run.path) / "images"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VaelabError(f"cannot write pictures into {d}: {e.strerror or e}; choose another folder with --out") from None
    return d


def dataset_of(run):
    return run.dataset()


def check_index(i: int, n: int, what: str = "image"):
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise VaelabError(f"{what} index must be an integer, got {i!r}")
    if not 0 <= int(i) < n:
        raise VaelabError(f"{what} index {i} is out of range: the dataset has {n:,} images (0..{n - 1})")


def save_png(array: np.ndarray, path) -> Path:
    from .grid import save_png as _save

    return _save(np.ascontiguousarray(array), Path(path))


def save_gif(frames, path, duration_ms: int = 120) -> Path:
    """An animated GIF that loops forever (Pillow's GIF writer)."""
    path = Path(path)
    ims = [Image.fromarray(as_rgb(f)) for f in frames]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ims[0].save(path, save_all=True, append_images=ims[1:], duration=duration_ms, loop=0)
    except OSError as e:
        raise VaelabError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def forth_and_back(seq: list) -> list:
    """[a, b, c, d] -> [a, b, c, d, c, b] (a looping GIF returns to a)."""
    return list(seq) + list(seq[-2:0:-1])


def step_tag(step: int) -> str:
    return f"step{int(step):08d}"
