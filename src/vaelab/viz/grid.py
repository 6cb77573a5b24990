"""Image grids (numpy only) and PNG output (Pillow)."""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from ..errors import VaelabError


def make_grid(images, nrow: int = 8, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """``N x C x H x W`` uint8 (numpy or torch; C = 1 or 3) -> one ``H' x W' x C`` uint8 image.

    ``nrow`` images per row (torchvision's convention), ``pad`` pixels of ``pad_value`` between
    images and around the border; a short last row is filled with ``pad_value``."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise VaelabError(f"make_grid needs N x C x H x W images, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise VaelabError(f"make_grid needs uint8 images, got {a.dtype}")
    n, c, h, w = a.shape
    if n == 0:
        raise VaelabError("make_grid needs at least one image")
    nrow = max(1, min(int(nrow), n))
    rows = math.ceil(n / nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y:y + h, x:x + w] = a[i].transpose(1, 2, 0)
    return out


def save_png(array, path: str | os.PathLike) -> Path:
    """Write an ``H x W`` / ``H x W x 1`` / ``H x W x 3`` uint8 array as a PNG (atomically)."""
    from PIL import Image

    from ..data.prepare import atomic_write_bytes

    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise VaelabError(f"save_png needs uint8 pixels, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise VaelabError(f"save_png needs H x W (x 1, 3 or 4) pixels, got shape {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    path = Path(path)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        raise VaelabError(f"cannot write {path}: {e}") from None
    return path
