"""Two-domain mixtures for UG-VAE (ipeis/UG-VAE ``datasets.py``: celeba_faces, cars_chairs).

A mixture concatenates the images of two datasets (domain 0 first, then domain 1) and has one
factor, ``domain`` (0/1). ``meta["domains"]`` names the domains, ``meta["domain_index"]`` holds
each image's domain and ``meta["batch_mode"]`` says how the reference draws batches:
"mixed" (each image's domain with p 1/2) or "single" (one domain per batch, the ``*_batch``
variants). :func:`domain_batch_indices` draws such batches.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError
from .base import FactorDataset
from .registry import DatasetSpec, register

BATCH_MODES = ("mixed", "single")


def mixture(a: FactorDataset, b: FactorDataset, name: str = "mixture",
            domain_names: tuple[str, str] | None = None) -> FactorDataset:
    """Images of ``a`` then ``b`` (grey is repeated to RGB when the other is RGB; sizes must match),
    with the single factor ``domain`` (0 = a, 1 = b). The images are copied into one tensor."""
    if a.view is not None or b.view is not None:
        raise VaelabError(f"{name}: cannot mix a dataset with an image view ({a.name if a.view is not None else b.name}: "
                          f"noise drawn per gather); mix datasets of stored images")
    ia, ib = a.images, b.images
    if ia.shape[2:] != ib.shape[2:]:
        raise VaelabError(f"{name}: {a.name} images are {ia.shape[2]} x {ia.shape[3]} but {b.name} images are "
                          f"{ib.shape[2]} x {ib.shape[3]}; load both at the same size")
    ca, cb = ia.shape[1], ib.shape[1]
    if ca != cb:
        if ca == 1 and cb == 3:
            ia = ia.expand(-1, 3, -1, -1)
        elif ca == 3 and cb == 1:
            ib = ib.expand(-1, 3, -1, -1)
        else:
            raise VaelabError(f"{name}: cannot mix {ca}-channel {a.name} with {cb}-channel {b.name}")
    na, nb = len(a), len(b)
    if na == 0 or nb == 0:
        raise VaelabError(f"{name}: both domains need images ({a.name}: {na}, {b.name}: {nb})")
    images = torch.cat([ia, ib], dim=0)
    domain = np.concatenate([np.zeros(na, np.int64), np.ones(nb, np.int64)])
    names = list(domain_names) if domain_names else [a.name, b.name]
    return FactorDataset(images=images, factors=torch.from_numpy(domain[:, None].copy()), factor_names=["domain"],
                         factor_sizes=[2], factor_values=[np.array([0.0, 1.0])], is_grid=False, name=name,
                         source=f"{a.source} + {b.source}",
                         meta={"domains": names, "domain_index": domain, "domain_offsets": [0, na, na + nb],
                               "batch_mode": "mixed"})


def _domain_ranges(dataset: FactorDataset) -> tuple[np.ndarray, np.ndarray]:
    """(start, count) of each domain's block of indices."""
    meta = dataset.meta or {}
    if "domain_offsets" in meta:
        off = np.asarray(meta["domain_offsets"], dtype=np.int64)
        return off[:-1], np.diff(off)
    dom = meta.get("domain_index")
    if dom is None:
        raise VaelabError(f"dataset {dataset.name!r} is not a domain mixture (no meta['domain_index'])")
    dom = np.asarray(dom)
    k = int(dom.max()) + 1
    starts = np.array([np.flatnonzero(dom == d)[0] if (dom == d).any() else 0 for d in range(k)])
    counts = np.bincount(dom, minlength=k)
    if not all(np.array_equal(np.flatnonzero(dom == d), np.arange(starts[d], starts[d] + counts[d]))
               for d in range(k)):
        raise VaelabError(f"dataset {dataset.name!r}: each domain's images must be contiguous")
    return starts, counts


def domain_batch_indices(dataset: FactorDataset, batch_size: int, rng: np.random.Generator,
                         mode: str = "mixed") -> np.ndarray:
    """Indices (int64, ``batch_size``) of one batch from a domain mixture.

    mixed: each image's domain uniform over the domains (p 1/2 for two), then an image uniform
    within its domain; single: one domain for the whole batch (uniform), images uniform within it."""
    if mode not in BATCH_MODES:
        raise VaelabError(f"batch mode must be one of {', '.join(BATCH_MODES)}, got {mode!r}")
    starts, counts = _domain_ranges(dataset)
    k = len(starts)
    if mode == "mixed":
        dom = rng.integers(0, k, size=batch_size)
    else:
        dom = np.full(batch_size, rng.integers(0, k))
    within = np.floor(rng.random(batch_size) * counts[dom]).astype(np.int64)
    return (starts[dom] + within).astype(np.int64)


# --------------------------------------------------------------------------------------- loaders
def _roots(root, root_a, root_b, sub_a: str, sub_b: str):
    if root is not None:
        root = Path(root)
        if not root.is_dir():
            raise VaelabError(f"{root} is not a folder: give a folder holding {sub_a}/ and {sub_b}/, or "
                              f"root_a= and root_b=")
    ra = Path(root_a) if root_a is not None else (root / sub_a if root is not None else None)
    rb = Path(root_b) if root_b is not None else (root / sub_b if root is not None else None)
    return ra, rb


def _with_mode(ds: FactorDataset, batch_mode: str) -> FactorDataset:
    ds.meta["batch_mode"] = batch_mode
    return ds


def load_celeba_faces(root: Path | None = None, split: str = "train", size: int | None = None, *,
                      root_a=None, root_b=None, preprocess: str = "resize", force: bool = False,
                      batch_mode: str = "mixed") -> FactorDataset:
    """CelebA (domain 0) + faces (domain 1): root_a / root_b, or root with celeba/ and faces/."""
    from .images import load_celeba, load_faces

    ra, rb = _roots(root, root_a, root_b, "celeba", "faces")
    a = load_celeba(ra, split, size, preprocess=preprocess, force=force)
    b = load_faces(rb, split, size, preprocess=preprocess, force=force)
    return _with_mode(mixture(a, b, "celeba_faces"), batch_mode)


def load_cars_chairs(root: Path | None = None, split: str = "train", size: int | None = None, *,
                     root_a=None, root_b=None, channels: int = 3, force: bool = False,
                     batch_mode: str = "mixed") -> FactorDataset:
    """Cars (domain 0) + 3D Chairs (domain 1): root_a / root_b, or root with cars/ and chairs/."""
    from .images import load_cars, load_chairs

    ra, rb = _roots(root, root_a, root_b, "cars", "chairs")
    a = load_cars(ra, split, size, channels=channels, force=force)
    b = load_chairs(rb, split, size, channels=channels, force=force)
    return _with_mode(mixture(a, b, "cars_chairs"), batch_mode)


def load_mnist_inverted_mix(root: Path | None = None, split: str = "train", size: int | None = None, *,
                            force: bool = False, batch_mode: str = "mixed") -> FactorDataset:
    """MNIST (domain 0) + 255 - MNIST (domain 1): a two-domain set needing only MNIST's files."""
    from .mnist import load_mnist

    a = load_mnist(root, split, size)
    b = FactorDataset(images=255 - a.images, name="mnist_inverted", source=a.source)
    return _with_mode(mixture(a, b, "mnist_inverted_mix", ("mnist", "mnist_inverted")), batch_mode)


def _both(loc_a, loc_b):
    def locate(data_dir: Path):
        return Path(data_dir) if loc_a(data_dir) is not None and loc_b(data_dir) is not None else None

    return locate


def _register():
    from .images import cars_locate, celeba_locate, chairs_locate, faces_locate
    from .mnist import locate as mnist_locate

    variants = [
        ("celeba_faces", load_celeba_faces, "CelebA + faces folder, factor domain (UG-VAE)", None, (3, 64, 64),
         _both(celeba_locate, faces_locate), ["celeba", "faces"],
         "put CelebA in DATA_DIR/celeba and face images in DATA_DIR/faces (or pass root_a / root_b)"),
        ("cars_chairs", load_cars_chairs, "Cars + 3D Chairs, factor domain (UG-VAE)", None, (3, 64, 64),
         _both(cars_locate, chairs_locate), ["cars", "chairs"], "vaelab data fetch cars_chairs"),
        ("mnist_inverted_mix", load_mnist_inverted_mix, "MNIST + inverted MNIST (255 - x), factor domain",
         140_000, (1, 28, 28), mnist_locate, ["mnist"], "vaelab data fetch mnist"),
    ]
    for name, loader, desc, count, shape, loc, files, how in variants:
        for suffix, mode in (("", "mixed"), ("_batch", "single")):
            def bound(root=None, split="train", size=None, *, _loader=loader, _mode=mode, **options):
                return _loader(root, split, size, batch_mode=_mode, **options)

            register(DatasetSpec(
                name=name + suffix, loader=bound,
                description=desc + ("; one domain per batch" if mode == "single" else "; mixed batches"),
                factors=[("domain", 2)], count=count, image_shape=shape, files=files, fetch_command=how,
                source="ipeis/UG-VAE (Peis, Olmos & Artes-Rodriguez 2020) datasets", locate=loc))


_register()
