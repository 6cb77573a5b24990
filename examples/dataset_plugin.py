"""A dataset as a vaelab plugin: one bar on a 64×64 canvas, drawn on demand (one file, nothing in vaelab).

Three factors on a full grid (orientation 2 × position 16 × thickness 3 = 96 images), so every metric
applies, BetaVAE and FactorVAE included. Train on it with ``--set data.name=bars`` and
``--plugin examples/dataset_plugin.py``; ``vaelab data info bars --plugin ... --option gap=2`` shows it.
A dataset whose files are downloaded declares them here too: ``remote=[RemoteFile(url, dest, sha256=...)]``
(``vaelab.data.fetch.RemoteFile``) makes ``vaelab data fetch NAME`` fetch and verify them.
"""
from __future__ import annotations

import numpy as np

from vaelab.data import DatasetSpec, FactorDataset
from vaelab.errors import VaelabError
from vaelab.plugins import register_dataset

POSITIONS, THICKNESS = 16, (2, 4, 6)


def load_bars(root=None, split="train", size=None, *, gap: int = 3) -> FactorDataset:
    """Options are the loader's keyword-only parameters (here ``gap``: pixels between positions)."""
    if split not in ("train", "all"):
        raise VaelabError(f"bars has one split (train), not {split!r}")
    if size not in (None, 64):
        raise VaelabError("bars is drawn at 64×64 only")
    if not 1 <= gap <= 3:
        raise VaelabError(f"bars: gap must be 1 to 3 pixels, got {gap}")
    images, factors = [], []
    for o in range(2):
        for p in range(POSITIONS):
            for t, width in enumerate(THICKNESS):
                img = np.zeros((64, 64), np.uint8)
                lo = 4 + p * gap
                if o == 0:
                    img[lo:lo + width, 8:56] = 255
                else:
                    img[8:56, lo:lo + width] = 255
                images.append(img[None])
                factors.append((o, p, t))
    return FactorDataset.from_arrays(np.stack(images), np.array(factors), ["orientation", "position", "thickness"],
                                     [2, POSITIONS, len(THICKNESS)], name="bars")


register_dataset(DatasetSpec(
    name="bars", loader=load_bars, description="one bar on a 64×64 canvas (a plugin's dataset, drawn on demand)",
    factors=[("orientation", 2), ("position", POSITIONS), ("thickness", len(THICKNESS))], count=96,
    image_shape=(1, 64, 64), source="examples/dataset_plugin.py"))
