"""disentanglement_lib's dSprites variants: ``dsprites-color``, ``dsprites-noisy``, ``dsprites-scream``.

dlib ``disentanglement_lib/data/ground_truth/dsprites.py`` (ColorDSprites, NoisyDSprites,
ScreamDSprites; docs/datasets.md#dsprites-variants): the dSprites grid and factors, shown in 3 channels with noise that is not
a factor, drawn anew for every image drawn:

* colour: the sprite times one colour U(0.5, 1)^3 per image, background black;
* noisy: min(sprite + U(0, 1)^3 per pixel, 1): a noise background, the sprite white;
* scream: a random 64 x 64 patch of *The Scream* (resized as dlib does, ``thumbnail((350, 274))``:
  within 350 wide x 274 high) averaged with a U(0, 1)^3 colour, the sprite's pixels inverted
  (1 - (patch + colour) / 2).

The pixels stay the 1-channel dSprites masks; a view (:mod:`vaelab.data.views`) makes the shown
images per gather. ``base``: ``"npz"`` (default: the official file, read as ``dsprites`` reads it,
with the same ``root``) or ``"procedural"`` (the renderer, no file). Scream needs the painting:
``painting=PATH``, else ``scream/scream.jpg`` in ``root`` (a folder) or in the data directory —
where dlib keeps it (``$DISENTANGLEMENT_LIB_DATA/scream/scream.jpg``, downloaded by its
``dlib_download_data`` from Wikimedia; ``vaelab data fetch dsprites-scream`` does the same).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import VaelabError
from . import dsprites as _dsprites
from .base import FactorDataset
from .registry import DatasetSpec, register
from .views import ColorView, NoisyView, ScreamView

BASES = ("npz", "procedural")
SCREAM_FILE = "scream/scream.jpg"  # dlib: os.path.join(DISENTANGLEMENT_LIB_DATA, "scream", "scream.jpg")
# dlib bin/dlib_download_data: wget -O scream/scream.jpg <this>
SCREAM_URL = "https://upload.wikimedia.org/wikipedia/commons/f/f4/The_Scream.jpg"
THUMBNAIL = (350, 274)  # dlib: scream.thumbnail((350, 274, 3)) -- at most 350 wide and 274 high


def load_painting(path) -> np.ndarray:
    """The painting as dlib prepares it: RGB, shrunk with PIL's ``thumbnail`` to fit 350 x 274
    (bicubic and no JPEG draft reduction, as the Pillow of dlib's time did); ``H x W x 3`` uint8."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail(THUMBNAIL, resample=Image.Resampling.BICUBIC, reducing_gap=None)
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise VaelabError(f"{path}: cannot read the scream painting ({e}); fetch it again "
                          f"(`vaelab data fetch dsprites-scream --file scream.jpg --force`)") from None


def painting_path(root: Path | None, painting) -> Path:
    """Where the scream painting is: ``painting``, else ``root/scream/scream.jpg`` (root a folder),
    else ``scream/scream.jpg`` in the data directory. Absent: one line saying how to get it."""
    from .. import paths

    if painting is not None:
        p = Path(painting).expanduser()
    elif root is not None and Path(root).is_dir() and (Path(root) / SCREAM_FILE).is_file():
        p = Path(root) / SCREAM_FILE
    else:
        p = paths.data_dir() / SCREAM_FILE
    if not p.is_file():
        raise VaelabError(f"dsprites-scream: no painting at {p}; get it with `vaelab data fetch dsprites-scream "
                          f"--file scream.jpg` (dlib downloads {SCREAM_URL}) or pass painting=PATH (--painting)")
    return p


def _base(name: str, root: Path | None, split: str, size, base: str, force: bool, quiet: bool) -> FactorDataset:
    if base not in BASES:
        raise VaelabError(f"{name}: unknown base {base!r}; choose npz (the official file) or procedural (no file)")
    if base == "procedural":
        from . import procedural

        return procedural.load(root, split, size, quiet=quiet, force=force)
    try:
        _dsprites.resolve(root)
    except VaelabError as e:
        raise VaelabError(f"{name} builds on {e}; or use base = \"procedural\" (--base procedural), which "
                          f"needs no file") from None
    return _dsprites.load_dsprites(root, split, size, force=force)


def _variant(kind: str, view, root, split, size, base, force, quiet, painting=None) -> FactorDataset:
    name = f"dsprites-{kind}"
    ds = _base(name, root, split, size, base, force, quiet)
    meta = {**ds.meta, "base": ds.name, "view": kind}
    if painting is not None:
        meta["painting"] = str(painting)
    return dataclasses.replace(ds, name=name, view=view, meta=meta,
                               source=f"{ds.source} + dlib {kind} variant (disentanglement_lib dsprites.py)")


def load_color(root: Path | None = None, split: str = "train", size: int | None = None, *,
               base: str = "npz", force: bool = False, quiet: bool = False) -> FactorDataset:
    """``dsprites-color`` (dlib ColorDSprites); see the module docstring."""
    return _variant("color", ColorView(), root, split, size, base, force, quiet)


def load_noisy(root: Path | None = None, split: str = "train", size: int | None = None, *,
               base: str = "npz", force: bool = False, quiet: bool = False) -> FactorDataset:
    """``dsprites-noisy`` (dlib NoisyDSprites); see the module docstring."""
    return _variant("noisy", NoisyView(), root, split, size, base, force, quiet)


def load_scream(root: Path | None = None, split: str = "train", size: int | None = None, *,
                base: str = "npz", painting: str | None = None, force: bool = False,
                quiet: bool = False) -> FactorDataset:
    """``dsprites-scream`` (dlib ScreamDSprites); ``painting``: the image file (see the module docstring)."""
    path = painting_path(root, painting)
    view = ScreamView(load_painting(path), source=str(path))
    return _variant("scream", view, root, split, size, base, force, quiet, painting=path)


_FACTORS = [(n, s) for n, s in zip(_dsprites.FACTOR_NAMES[1:], _dsprites.FACTOR_SIZES[1:])]
_SOURCE = "google-research/disentanglement_lib data/ground_truth/dsprites.py over deepmind/dsprites-dataset"
for _kind, _loader, _what in (
        ("color", load_color, "sprite in a random colour U(0.5, 1)^3 per image"),
        ("noisy", load_noisy, "white sprite on U(0, 1)^3 noise per pixel"),
        ("scream", load_scream, "sprite inverted on a random patch of The Scream + random colour")):
    register(DatasetSpec(
        name=f"dsprites-{_kind}", loader=_loader,
        description=(f"dSprites, disentanglement_lib's {_kind} variant: {_what}, drawn anew per image "
                     f"(3 channels; options base = npz | procedural"
                     + (", painting = PATH)" if _kind == "scream" else ")")),
        factors=list(_FACTORS), count=737_280, image_shape=(3, 64, 64),
        files=[_dsprites.DEFAULT_PATH] + ([SCREAM_FILE] if _kind == "scream" else []),
        fetch_command=f"vaelab data fetch dsprites-{_kind}", source=_SOURCE,
        without_files=None if _kind == "scream" else 'base = "procedural"'))
