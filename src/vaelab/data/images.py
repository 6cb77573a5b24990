"""Image sets: CelebA, 3D Chairs, Cars3D, faces, and any image folder (with an optional CSV of factors).

Every loader here decodes its images once into a memory-mapped uint8 cache
(:func:`vaelab.data.prepare.prepare_images`) and reuses it afterwards; ``root`` may be a folder
(searched recursively, names sorted -- never directory-listing order), a zip or a tar.
Resizing uses Pillow's antialiased BILINEAR filter (what torchvision's ``Resize`` did on PIL
images in 1Konny/Beta-VAE and ipeis/UG-VAE); Cars3D uses LANCZOS (dlib's ``PIL.Image.ANTIALIAS``).
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from .. import paths
from ..errors import VaelabError, closest
from .base import FactorDataset
from .prepare import (FULL, IMAGE_EXTENSIONS, Crops, ImageSource, StackRule, build_entry, cache_entry, check_size,
                      open_entry, prepare_images, progress, read_manifest, sha256_names, transform_image, warn_once)
from .registry import DatasetSpec, missing_data, register

DEFAULT_SIZE = 64  # 64 x 64: 1Konny/Beta-VAE, ipeis/UG-VAE, dlib (docs/datasets.md)


def _whole_set(name: str, split: str) -> None:
    if split not in ("train", "all"):
        raise VaelabError(f"{name} has no {split!r} split (all images form one set); use split='train' and "
                          f"vaelab.data.splits.train_val_split for held-out images")


def _tensor(images: np.ndarray, idx: np.ndarray | None = None) -> torch.Tensor:
    """Select rows of a memory-mapped array: a slice stays a zero-copy view, anything else is copied."""
    if idx is None or (len(idx) == len(images) and np.array_equal(idx, np.arange(len(images)))):
        return torch.from_numpy(images)
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return torch.from_numpy(images[int(idx[0]):int(idx[0]) + len(idx)])
    return torch.from_numpy(np.ascontiguousarray(images[idx]))  # uint8 copy of the selected rows


def _has_images(folder: Path) -> bool:
    from .prepare import IMAGE_EXTENSIONS

    try:
        for e in folder.iterdir():
            if e.is_file() and e.suffix.lower() in IMAGE_EXTENSIONS:
                return True
    except OSError:
        return False
    return False


# ============================================================================================ CelebA
CELEBA_ATTRIBUTES = (  # list_attr_celeba.txt, line 2 (index 20 = Male, docs/datasets.md#celeba)
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")
CELEBA_SIZES = (32, 64, 128)
CELEBA_SPLITS = {"train": 0, "val": 1, "test": 2}  # list_eval_partition.txt (162,770 / 19,867 / 19,962)


def _celeba_layout(root: Path | None) -> tuple[Path, Path | None, Path | None]:
    """(images folder or zip, attribute file or None, partition file or None)."""
    base = paths.data_dir() / "celeba" if root is None else Path(root)
    if not base.exists():
        raise missing_data("celeba", base)
    if base.is_file():
        images, search = base, [base.parent, base.parent.parent]
    else:
        images = None
        for cand in ("img_align_celeba", "img_align_celeba.zip", "Img/img_align_celeba",
                     "Img/img_align_celeba.zip"):
            if (base / cand).exists():
                images = base / cand
                break
        if images is None:
            if _has_images(base):
                images = base
            else:
                raise missing_data("celeba", base / "img_align_celeba")
        search = [base, images.parent] if images != base else [base, base.parent]
    attr = part = None
    for d in search:
        for sub in ("", "Anno", "Eval"):
            dd = d / sub if sub else d
            if attr is None and (dd / "list_attr_celeba.txt").is_file():
                attr = dd / "list_attr_celeba.txt"
            if part is None and (dd / "list_eval_partition.txt").is_file():
                part = dd / "list_eval_partition.txt"
    return images, attr, part


def celeba_locate(data_dir: Path) -> Path | None:
    d = Path(data_dir) / "celeba"
    for cand in ("img_align_celeba", "img_align_celeba.zip", "Img/img_align_celeba", "Img/img_align_celeba.zip"):
        if (d / cand).exists():
            return d / cand
    return None


def read_celeba_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, file names, values N x 40 in {-1, 1}) from ``list_attr_celeba.txt``.

    A file cut short (header count larger than the rows present) is used as far as it goes, with a
    warning; a cut-off last row is dropped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise VaelabError(f"cannot read {path}: {e}") from None
    lines = text.splitlines()
    if len(lines) < 2:
        raise VaelabError(f"{path}: expected a count line and a line of attribute names")
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise VaelabError(f"{path}: first line should be the number of images, got {lines[0][:40]!r}") from None
    names = lines[1].split()
    k = len(names)
    if k == 0:
        raise VaelabError(f"{path}: line 2 should list the attribute names")
    rows = [ln.strip().partition(" ")[::2] for ln in lines[2:] if ln.strip()]  # (file, values text)
    if rows and len(rows[-1][1].split()) < k:  # the copy was cut mid-line
        warn_once(f"{path}: last row ({rows[-1][0]}) is cut short; dropped it")
        rows.pop()
    files = [r[0] for r in rows]
    # one vectorised parse; a row of the wrong length shows up as a total mismatch, then is located
    try:
        flat = np.fromstring(" ".join(r[1] for r in rows), dtype=np.int8, sep=" ") \
            if rows else np.zeros(0, np.int8)
    except ValueError:  # a token that is not a number
        flat = None
    if flat is None or flat.size != len(rows) * k:
        for i, r in enumerate(rows):
            vals = r[1].split()
            if len(vals) != k or not all(v.lstrip("+-").isdigit() for v in vals):
                raise VaelabError(f"{path}, line {i + 3}: expected a file name and {k} values -1/1, "
                                  f"got {r[1][:60]!r}")
        raise VaelabError(f"{path}: cannot parse the attribute values")
    values = flat.reshape(len(rows), k)
    if values.size and not np.isin(values, (-1, 1)).all():
        r = int(np.flatnonzero(~np.isin(values, (-1, 1)).all(axis=1))[0])
        raise VaelabError(f"{path}, line {r + 3}: attribute values must be -1 or 1")
    if len(set(files)) != len(files):
        raise VaelabError(f"{path}: some file names are listed twice")
    if declared != len(files):
        warn_once(f"{path}: header says {declared:,} images but the file holds {len(files):,} rows "
                  f"(cut short?); using the rows present")
    return names, files, values


def read_celeba_partition(path: Path) -> dict[str, int]:
    out = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise VaelabError(f"cannot read {path}: {e}") from None
    for i, ln in enumerate(lines):
        t = ln.split()
        if not t:
            continue
        if len(t) != 2 or t[1] not in ("0", "1", "2"):
            raise VaelabError(f"{path}, line {i + 1}: expected 'file 0|1|2', got {ln[:60]!r}")
        out[t[0]] = int(t[1])
    return out


def load_celeba(root: Path | None = None, split: str = "train", size: int | None = None, *,
                preprocess: str = "resize", force: bool = False) -> FactorDataset:
    """Aligned CelebA (folder ``img_align_celeba`` or ``img_align_celeba.zip``), 40 binary attributes.

    split: "train" / "val" / "test" from ``list_eval_partition.txt`` when present (without it,
    "train" means every image present, with a warning); "all" = every image.
    preprocess: "resize" (squash 178x218 to size x size: 1Konny, UG-VAE, Keras) or
    "center_crop_148" then resize (AntixK/PyTorch-VAE, as scarletteshu/Pytorch-bcvae uses it)."""
    size = check_size(size, DEFAULT_SIZE, CELEBA_SIZES, "celeba")
    if split not in ("train", "val", "test", "all"):
        raise VaelabError(f"celeba splits are 'train', 'val', 'test' and 'all', not {split!r}")
    images_path, attr_path, part_path = _celeba_layout(root)
    src = ImageSource.open(images_path, ignore={"list_attr_celeba.txt", "list_eval_partition.txt",
                                                "identity_CelebA.txt", "list_bbox_celeba.txt",
                                                "list_landmarks_align_celeba.txt", "list_landmarks_celeba.txt"})
    names = src.names  # the cache holds every image of the source, in this (sorted) order
    base = [n.rsplit("/", 1)[-1] for n in names]
    keep = np.ones(len(names), dtype=bool)
    factors = None
    attr_names = list(CELEBA_ATTRIBUTES)
    if attr_path is not None:
        attr_names, files, values = read_celeba_attributes(attr_path)
        row_of = {f: i for i, f in enumerate(files)}
        rows = np.array([row_of.get(b, -1) for b in base], dtype=np.int64)
        keep &= rows >= 0
        if (~keep).any():
            warn_once(f"celeba: {int((~keep).sum()):,} of {len(names):,} images in {images_path} have no row in "
                      f"{attr_path}; left out")
        if len(files) > int(keep.sum()):
            warn_once(f"celeba: {attr_path} lists {len(files):,} images, {int(keep.sum()):,} of them are in "
                      f"{images_path}; using those")
        factors_all = ((values[np.maximum(rows, 0)].astype(np.int64) + 1) // 2)
    else:
        warn_once(f"celeba: no list_attr_celeba.txt next to {images_path}: images without attribute factors")
    record = None
    if attr_path is not None:  # the attribute table in the manifest (-1: image without a row)
        record = {"names": attr_names, "sizes": [2] * len(attr_names), "values": [[-1.0, 1.0]] * len(attr_names),
                  "source": str(attr_path), "table": np.where(keep[:, None], factors_all, -1)}
    prepared = prepare_images(src, size=size, preprocess=preprocess, label=f"celeba-{images_path.stem}",
                              factors=record, force=force)
    if split != "all":
        if part_path is not None:
            part = read_celeba_partition(part_path)
            pid = np.array([part.get(b, -1) for b in base])
            if (pid < 0).any():
                warn_once(f"celeba: {int((pid < 0).sum()):,} images are not in {part_path}; left out")
            keep &= pid == CELEBA_SPLITS[split]
        elif split == "train":
            warn_once(f"celeba: no list_eval_partition.txt next to {images_path}: split 'train' uses all "
                      f"{int(keep.sum()):,} images")
        else:
            raise VaelabError(f"celeba: split {split!r} needs list_eval_partition.txt (looked next to "
                              f"{images_path}); use split='train' or 'all' and vaelab.data.splits")
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise VaelabError(f"celeba: no images left for split {split!r} in {images_path}")
    meta = {"cache": str(prepared.entry), "files": [names[i] for i in idx], "preprocess": preprocess,
            "split": split}
    kw = {}
    if attr_path is not None:
        factors = factors_all[idx]
        kw = dict(factors=torch.from_numpy(np.ascontiguousarray(factors)), factor_names=attr_names,
                  factor_sizes=[2] * len(attr_names),
                  factor_values=[np.array([-1.0, 1.0]) for _ in attr_names])
        meta["attributes_file"] = str(attr_path)
    return FactorDataset(images=_tensor(prepared.images, idx), is_grid=False, name="celeba",
                         source=str(images_path), meta=meta, **kw)


# ============================================================================================ 3D Chairs
_CHAIR_RE = re.compile(r"image_(\d+)_p(-?\d+)_t(-?\d+)_r(\d+)\.\w+$")


def _chairs_layout(root: Path | None) -> Path:
    base = paths.data_dir() / "chairs" if root is None else Path(root)
    if not base.exists():
        raise missing_data("chairs", base)
    if base.is_dir():
        for cand in ("rendered_chairs", "rendered_chairs.tar", "images"):
            if (base / cand).exists():
                return base / cand
    return base


def chairs_locate(data_dir: Path) -> Path | None:
    d = Path(data_dir) / "chairs"
    for cand in ("rendered_chairs", "rendered_chairs.tar", "images"):
        if (d / cand).exists():
            return d / cand
    return None


def parse_chair_names(names: list[str]):
    """(order, factors dict or None) for 3D Chairs file names.

    ``<model>/renders/image_<view>_p<pitch>_t<theta>_r<radius>.png`` (or the same names in one flat
    folder, optionally prefixed ``<model>_``): model id, elevation (pitch) and azimuth (theta).
    Images are ordered by (model, elevation, azimuth, name) so a complete set is a canonical grid."""
    parsed = []
    for n in names:
        parts = n.split("/")  # string ops: this runs once per render (86k)
        m = _CHAIR_RE.search(parts[-1])
        if m is None:
            return list(names), None
        if len(parts) >= 3 and parts[-2] == "renders":
            model = parts[-3]
        elif len(parts) >= 2 and parts[-2] != "renders":
            model = parts[-2]
        else:
            model = parts[-1][:m.start()].rstrip("_-") or ""
        parsed.append((model, int(m.group(2)), int(m.group(3)), n))
    models = sorted({p[0] for p in parsed})
    pitches = sorted({p[1] for p in parsed})
    thetas = sorted({p[2] for p in parsed})
    mi = {m: i for i, m in enumerate(models)}
    pi = {p: i for i, p in enumerate(pitches)}
    ti = {t: i for i, t in enumerate(thetas)}
    table = sorted((mi[p[0]], pi[p[1]], ti[p[2]], p[3]) for p in parsed)
    order = [t[3] for t in table]
    f = np.array([t[:3] for t in table], dtype=np.int64).reshape(-1, 3)
    fac_names = ["model", "elevation", "azimuth"]
    sizes = [len(models), len(pitches), len(thetas)]
    values = [np.arange(len(models), dtype=np.float64), np.array(pitches, dtype=np.float64),
              np.array(thetas, dtype=np.float64)]
    combos = len(np.unique(f, axis=0)) if len(f) else 0
    total = int(np.prod(sizes))
    return order, {"names": fac_names, "sizes": sizes, "values": [v.tolist() for v in values],
                   "table": f, "model_names": models, "is_grid": bool(combos == total == len(f)),
                   "coverage": f"{combos:,} of {total:,} (model, elevation, azimuth) combinations, "
                               f"{len(f):,} images"}


def load_chairs(root: Path | None = None, split: str = "train", size: int | None = None, *,
                channels: int = 3, preprocess: str = "resize", force: bool = False) -> FactorDataset:
    """Rendered 3D Chairs (Aubry et al.): ``rendered_chairs/`` folder or ``rendered_chairs.tar``, or a
    flat folder of renders. Factors model / elevation / azimuth parsed from the names (RGB 64x64 as
    1Konny/Beta-VAE; ``channels=1`` for disvae's grey)."""
    _whole_set("chairs", split)
    size = check_size(size, DEFAULT_SIZE)
    path = _chairs_layout(root)
    src = ImageSource.open(path, ignore={"all_chair_names.mat"})
    order, fac = parse_chair_names(src.names)
    if fac is None:
        warn_once(f"chairs: file names in {path} do not all follow image_<view>_p<pitch>_t<theta>_r<radius>: "
                  f"loading the images without factors")
    elif not fac["is_grid"]:
        warn_once(f"chairs: {fac['coverage']}: a labelled set, not a full grid")
    prepared = prepare_images(src, size=size, channels=channels, preprocess=preprocess, order=order,
                              order_tag="chairs-factors" if fac else "sorted", label=f"chairs-{path.stem}",
                              factors=fac, force=force)
    meta = {"cache": str(prepared.entry), "files": prepared.names}
    kw = {}
    if fac is not None:
        f = np.asarray(fac["table"], dtype=np.int64).reshape(-1, 3)
        keep = [j for j, s in enumerate(fac["sizes"]) if s > 1]  # a flat folder has no model id
        kw = dict(factors=torch.from_numpy(np.ascontiguousarray(f[:, keep])),
                  factor_names=[fac["names"][j] for j in keep], factor_sizes=[fac["sizes"][j] for j in keep],
                  factor_values=[np.asarray(fac["values"][j]) for j in keep], is_grid=fac["is_grid"])
        meta.update(model_names=fac["model_names"], coverage=fac["coverage"])
    return FactorDataset(images=torch.from_numpy(prepared.images), name="chairs", source=str(path), meta=meta,
                         **kw)


# ============================================================================================ Cars3D
_CARS_GLOB = "car_*_mesh.mat"


def _cars_mats(folder: Path) -> list[Path]:
    for d in (folder, folder / "data" / "cars", folder / "cars"):
        if d.is_dir():
            mats = sorted(d.glob(_CARS_GLOB))  # object index = position in the sorted list (docs/datasets.md#cars3d)
            if mats:
                return mats
    return []


def cars_locate(data_dir: Path) -> Path | None:
    d = Path(data_dir) / "cars"
    if _cars_mats(d):
        return d
    return d if d.is_dir() and _has_images(d) else None


def _loadmat(path: Path) -> np.ndarray:
    try:
        import scipy.io as sio
    except ImportError:
        raise VaelabError("Cars3D's .mat files need scipy: pip install scipy (or give a folder of images)") from None
    try:
        m = sio.loadmat(str(path))
    except Exception as e:  # scipy raises ValueError / OSError / MatReadError on bad files
        raise VaelabError(f"{path}: cannot read MATLAB file ({e}); it may be truncated") from None
    if "im" not in m:
        raise VaelabError(f"{path}: no 'im' array (not a Cars3D mesh file?)")
    return np.asarray(m["im"])


def _cars_views(im: np.ndarray, path: Path) -> np.ndarray:
    """``im`` (H x W x 3 x 24 x 4 in the original files) -> elevation x azimuth x H x W x 3."""
    if im.ndim != 5 or im.shape[2] != 3:
        raise VaelabError(f"{path}: 'im' has shape {im.shape}, expected H x W x 3 x azimuths x elevations")
    if im.shape[3] == 4 and im.shape[4] == 24:  # transposed layout: elevation first
        return np.transpose(im, (3, 4, 0, 1, 2))
    return np.transpose(im, (4, 3, 0, 1, 2))  # azimuth axis 3, elevation axis 4 (dlib: azimuth outer)


def _load_cars3d(folder: Path, mats: list[Path], size: int, channels: int, force: bool) -> FactorDataset:
    from PIL import Image

    stats = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in mats]
    key = {"kind": "cars3d", "v": 1, "source": str(folder.resolve()), "size": size, "channels": channels,
           "files_sha256": sha256_names(stats)}
    entry = cache_entry(f"cars3d-{folder.name}", key)
    manifest = None if force else read_manifest(entry)
    images = open_entry(entry, manifest) if manifest is not None and manifest.get("key") == key else None
    if images is None:
        first = _cars_views(_loadmat(mats[0]), mats[0])
        n_e, n_a = first.shape[:2]
        n_o = len(mats)

        def fill(out):
            with progress(total=n_o, desc="preparing Cars3D", unit="car") as bar:
                for o, p in enumerate(mats):
                    views = first if o == 0 else _cars_views(_loadmat(p), p)
                    if views.shape[:2] != (n_e, n_a):
                        raise VaelabError(f"{p}: {views.shape[0]} x {views.shape[1]} views, the first file has "
                                          f"{n_e} x {n_a}")
                    v = views if views.dtype == np.uint8 else np.clip(np.rint(views * (255.0 if views.max() <= 1
                                                                                       else 1.0)), 0, 255).astype(np.uint8)
                    for e in range(n_e):
                        for a in range(n_a):
                            img = Image.fromarray(np.ascontiguousarray(v[e, a]), "RGB")
                            if channels == 1:
                                img = img.convert("L")
                            out[(e * n_a + a) * n_o + o] = transform_image(img, size=size, resample="lanczos")
                    bar.update(1)
            return {"factor_sizes": [n_e, n_a, n_o]}

        images, manifest = build_entry(entry, (n_e * n_a * n_o, channels, size, size), fill,
                                       {"key": key, "source": str(folder.resolve()), "count": n_e * n_a * n_o,
                                        "files": [p.name for p in mats],
                                        "factor_names": ["elevation", "azimuth", "object"]})
    n_e, n_a, n_o = manifest["factor_sizes"]
    grid = np.stack(np.meshgrid(np.arange(n_e), np.arange(n_a), np.arange(n_o), indexing="ij"), -1).reshape(-1, 3)
    return FactorDataset(images=torch.from_numpy(images), factors=torch.from_numpy(grid.astype(np.int64)),
                         factor_names=["elevation", "azimuth", "object"], factor_sizes=[n_e, n_a, n_o],
                         factor_values=[np.arange(n_e, dtype=np.float64), np.arange(n_a) * (360.0 / n_a),
                                        np.arange(n_o, dtype=np.float64)],
                         is_grid=True, name="cars", source=str(folder),
                         meta={"cache": str(entry), "object_files": manifest["files"]})


def load_cars(root: Path | None = None, split: str = "train", size: int | None = None, *,
              channels: int = 3, preprocess: str = "resize", force: bool = False) -> FactorDataset:
    """Cars3D (``car_*_mesh.mat`` files, read with scipy: factors elevation 4, azimuth 24, object 183,
    a full grid as dlib orders it) or, failing that, any folder/zip/tar of car images (no factors)."""
    _whole_set("cars", split)
    size = check_size(size, DEFAULT_SIZE)
    base = paths.data_dir() / "cars" if root is None else Path(root)
    if not base.exists():
        raise missing_data("cars", base)
    if base.is_dir():
        mats = _cars_mats(base)
        if mats:
            return _load_cars3d(base, mats, size, channels, force)
    src = ImageSource.open(base)
    return _plain(src, "cars", size, channels, preprocess, force)


# ============================================================================================ folders
def _plain(src: ImageSource, name: str, size: int, channels: int, preprocess: str, force: bool,
           crops: Crops | None = None) -> FactorDataset:
    prepared = prepare_images(src, size=size, channels=channels, preprocess=preprocess,
                              label=f"{name}-{src.path.stem}", force=force, crops=crops)
    meta = {"cache": str(prepared.entry), "files": prepared.names}
    if crops is not None:
        meta.update(stack=str(crops.rule), box_scale=float(crops.scale))
    return FactorDataset(images=torch.from_numpy(prepared.images), name=name, source=str(src.path), meta=meta)


def faces_locate(data_dir: Path) -> Path | None:
    d = Path(data_dir) / "faces"
    return d if d.exists() else None


def load_faces(root: Path | None = None, split: str = "train", size: int | None = None, *,
               channels: int = 3, preprocess: str = "resize", force: bool = False) -> FactorDataset:
    """Any folder, zip or tar of face images (e.g. 3D FACES Basel renders for UG-VAE); no factors."""
    _whole_set("faces", split)
    size = check_size(size, DEFAULT_SIZE)
    base = paths.data_dir() / "faces" if root is None else Path(root)
    if not base.exists():
        raise missing_data("faces", base)
    return _plain(ImageSource.open(base), "faces", size, channels, preprocess, force)


_CSV_NAMES = ("factors.csv", "labels.csv", "annotations.csv")
N_BINS = 20  # continuous factors -> 20 equal-width bins (dlib's discretisation for MIG/SAP/DCI, docs/metrics.md#shared-machinery)
MAX_DISCRETE = 20  # numeric columns with more distinct values than this are binned


def _find_csv(base: Path, csv_opt) -> Path | None:
    if csv_opt is False:
        return None
    if csv_opt not in (None, True):
        p = Path(csv_opt)
        if not p.is_absolute() and not p.exists() and base.is_dir():
            p = base / p
        if not p.is_file():
            raise VaelabError(f"image-folder: no CSV file at {p}")
        return p
    folder = base if base.is_dir() else base.parent
    for n in _CSV_NAMES:
        if (folder / n).is_file():
            return folder / n
    found = sorted(folder.glob("*.csv"))
    return found[0] if len(found) == 1 else None


def read_factor_csv(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(file column, {factor name: raw values}) from a CSV with a ``file`` column."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise VaelabError(f"cannot read {path}: {e}") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise VaelabError(f"{path}: empty CSV") from None
    key = next((h for h in ("file", "filename", "path") if h in header), None)
    if key is None:
        raise VaelabError(f"{path}: needs a 'file' column (then one column per factor), got {header}")
    ki = header.index(key)
    cols = [h for h in header if h != key]
    files, values = [], {c: [] for c in cols}
    for line, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise VaelabError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
        files.append(row[ki].strip())
        for j, h in enumerate(header):
            if h == key:
                continue
            v = row[j].strip()
            if v == "":
                raise VaelabError(f"{path}, line {line}: empty value for {h!r}")
            values[h].append(v)
    if len(set(files)) != len(files):
        raise VaelabError(f"{path}: some files are listed twice")
    return files, values


def _require_finite(csv_path: Path, col: str, vals: list[str], files: list[str], rows) -> None:
    """A numeric column (every value reads as a number) must hold finite numbers: a ``nan`` or ``inf``
    would otherwise turn it into text categories, one per distinct value."""
    try:
        num = [float(vals[i]) for i in rows]
    except ValueError:
        return  # a text column
    for i, v in zip(rows, num):
        if not np.isfinite(v):
            raise VaelabError(f"{csv_path}: factor {col!r} of {files[i]} is {vals[i]!r}, not a finite number; a "
                              f"numeric factor needs a number on every row (fill it in, or drop the row)")


def encode_factor(raw: list[str]):
    """Raw column -> (class indices, values per class, kind, extra). Discrete columns: classes from
    sorted unique values; numeric columns with > 20 distinct values: 20 equal-width bins."""
    try:
        num = np.array([float(v) for v in raw], dtype=np.float64)
    except ValueError:
        num = None
    if num is not None and np.isfinite(num).all():
        uniq = np.unique(num)
        if len(uniq) <= MAX_DISCRETE:
            return np.searchsorted(uniq, num).astype(np.int64), uniq, "discrete", None
        lo, hi = float(num.min()), float(num.max())
        edges = np.linspace(lo, hi, N_BINS + 1)
        cls = np.clip(np.floor((num - lo) / (hi - lo) * N_BINS), 0, N_BINS - 1).astype(np.int64)
        centres = (edges[:-1] + edges[1:]) / 2
        return cls, centres, "binned", num
    labels = sorted(set(raw))
    index = {v: i for i, v in enumerate(labels)}
    return np.array([index[v] for v in raw], dtype=np.int64), np.arange(len(labels), dtype=np.float64), \
        "categorical", labels


BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")  # VOC bndbox names, as in Near32/PYTORCH_VAE's XYS annotations
_BOX_COLUMN = re.compile(r"^(.+)_(xmin|ymin|xmax|ymax)$")


def split_box_columns(columns) -> tuple[dict[str, dict[str, str]], list[str]]:
    """({box name: {field: column}}, the other columns). ``NAME_xmin``, ``NAME_ymin``, ``NAME_xmax``,
    ``NAME_ymax`` are the corners of box NAME; such columns are never factors."""
    boxes: dict[str, dict[str, str]] = {}
    rest = []
    for c in columns:
        m = _BOX_COLUMN.match(c)
        if m:
            boxes.setdefault(m.group(1), {})[m.group(2)] = c
        else:
            rest.append(c)
    return boxes, rest


def read_boxes(csv_path: Path, raw: dict[str, list[str]], boxes: dict[str, dict[str, str]], names: list[str],
               rows: np.ndarray, files: list[str]) -> np.ndarray:
    """``len(rows) x len(names) x 4`` float64 (xmin, ymin, xmax, ymax) of the named boxes, CSV rows ``rows``."""
    out = np.zeros((len(rows), len(names), 4), dtype=np.float64)
    for j, name in enumerate(names):
        if name not in boxes:
            have = ", ".join(sorted(boxes)) or "none"
            raise VaelabError(f"stack uses box {name!r}{closest(name, list(boxes) + [FULL])} but {csv_path} has "
                              f"no {name}_xmin/_ymin/_xmax/_ymax columns (its boxes: {have}; '{FULL}' = whole image)")
        missing = [f"{name}_{f}" for f in BOX_FIELDS if f not in boxes[name]]
        if missing:
            raise VaelabError(f"{csv_path}: box {name!r} needs columns {', '.join(f'{name}_{f}' for f in BOX_FIELDS)}; "
                              f"missing {', '.join(missing)}")
        for k, f in enumerate(BOX_FIELDS):
            col = raw[boxes[name][f]]
            for i, r in enumerate(rows):
                try:
                    v = float(col[r])
                except ValueError:
                    v = float("nan")
                if not np.isfinite(v):
                    raise VaelabError(f"{csv_path}: {name}_{f} of {files[r]} is {col[r]!r}, not a finite number")
                out[i, j, k] = v
        bad = (out[:, j, 2] <= out[:, j, 0]) | (out[:, j, 3] <= out[:, j, 1])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            x0, y0, x1, y1 = out[i, j]
            raise VaelabError(f"{csv_path}: box {name!r} of {files[rows[i]]} is empty (xmin {x0:g}, ymin {y0:g}, "
                              f"xmax {x1:g}, ymax {y1:g}); xmax must exceed xmin and ymax exceed ymin")
    return out


def _stack_rule(stack, channels, box_scale, preprocess) -> tuple[StackRule | None, int, float]:
    """(rule or None, channels, box scale), checked."""
    if isinstance(box_scale, bool) or not isinstance(box_scale, (int, float)) or not (
            box_scale > 0 and np.isfinite(box_scale)):
        raise VaelabError(f"box_scale must be a positive number, got {box_scale!r}")
    if stack is None or stack == "" or stack == []:
        if box_scale != 1:
            raise VaelabError("box_scale applies only to a stack rule; give stack too (e.g. stack='full,reye,leye')")
        return None, 3 if channels is None else int(channels), 1.0
    rule = StackRule.parse(stack)
    if channels is not None and int(channels) != rule.channels:
        raise VaelabError(f"stack {str(rule)!r} gives {rule.channels} channel(s) but channels = {channels}; "
                          f"leave channels out (the stack sets it)")
    if preprocess != "resize":
        raise VaelabError(f"a stack rule crops its own boxes: use preprocess 'resize', not {preprocess!r}")
    return rule, rule.channels, float(box_scale)


def load_image_folder(root: Path | None = None, split: str = "train", size: int | None = None, *,
                      csv: str | Path | bool | None = None, channels: int | None = None, preprocess: str = "resize",
                      stack: str | list[str] | None = None, box_scale: float = 1.0,
                      force: bool = False) -> FactorDataset:
    """Any folder, zip or tar of images, with factors from an optional CSV (column ``file`` with the path
    relative to the folder, then one column per factor; found automatically as factors.csv,
    labels.csv, annotations.csv or the folder's only .csv; ``csv=False`` ignores it).

    Each factor is discrete (class indices from sorted unique values; ``factor_values`` holds the
    values, or 0..k-1 with the labels in ``meta["factor_labels"]`` for text) or, numeric with more than
    20 distinct values, binned into 20 equal-width bins (``factor_values`` = bin centres, the raw
    values per image in ``meta["continuous_values"]``). Not a grid. A file name without an image
    extension (Near32/PYTORCH_VAE's XYS annotations) matches the one image with that name plus an extension.

    Crop boxes and stacked channels (docs/datasets.md#image-folders; Near32/PYTORCH_VAE's XYS): CSV columns ``NAME_xmin, NAME_ymin,
    NAME_xmax, NAME_ymax`` give box NAME of each image (never factors), in pixels times ``box_scale``
    (XYS: 2, boxes at twice the image resolution). ``stack`` builds the channels from the whole image
    (``full``) and named boxes, each ``grey`` (default, 1 channel) or ``rgb`` (3), resized to
    ``size x size`` and concatenated: XYS is ``stack="full,reye,leye"``, ``box_scale=2`` (3 channels:
    grey image, right eye, left eye). The stack sets ``channels`` (1 or 3 in all). The rule, scale and
    boxes are part of the cache key; ``meta["boxes"]`` holds the boxes used (box units)."""
    _whole_set("image-folder", split)
    if root is None:
        raise VaelabError("image-folder needs the folder: pass root=PATH (--root PATH)")
    base = Path(root)
    if not base.exists():
        raise VaelabError(f"image-folder: {base} does not exist")
    size = check_size(size, DEFAULT_SIZE)
    rule, channels, box_scale = _stack_rule(stack, channels, box_scale, preprocess)
    csv_path = _find_csv(base, csv)
    src = ImageSource.open(base, ignore={csv_path.name} if csv_path else ())
    if csv_path is None:
        crops = None
        if rule is not None:
            if rule.box_names:
                raise VaelabError(f"stack {str(rule)!r} needs boxes ({', '.join(rule.box_names)}) but no CSV is used "
                                  f"for {base} (none found, or csv=False): give one with a 'file' column and "
                                  f"NAME_xmin, NAME_ymin, NAME_xmax, NAME_ymax columns per box (csv=PATH, --csv PATH)")
            crops = Crops(rule, np.zeros((len(src.names), 0, 4)), box_scale)
        return _plain(src, "image-folder", size, channels, preprocess, force, crops)
    files, raw = read_factor_csv(csv_path)
    box_columns, factor_columns = split_box_columns(raw)
    present = set(src.names)
    by_base: dict[str, list[str]] = {}
    by_stem: dict[str, list[str]] = {}  # path without its extension; base name without its extension
    by_base_stem: dict[str, list[str]] = {}
    for n in src.names:
        by_base.setdefault(PurePosixPath(n).name, []).append(n)
        stem = n[:n.rfind(".")]
        by_stem.setdefault(stem, []).append(n)
        by_base_stem.setdefault(stem.rsplit("/", 1)[-1], []).append(n)

    def match(f):
        f = f.replace("\\", "/").lstrip("./") if f.startswith("./") else f.replace("\\", "/")
        if f in present:
            return f
        if PurePosixPath(f).suffix.lower() not in IMAGE_EXTENSIONS:  # XYS: names without ".png"
            cands = by_stem.get(f) or by_base_stem.get(PurePosixPath(f).name, [])
            if len(cands) == 1:
                return cands[0]
        cands = by_base.get(PurePosixPath(f).name, [])
        return cands[0] if len(cands) == 1 else None

    matched = [match(f) for f in files]
    rows = [i for i, m in enumerate(matched) if m is not None]
    if not rows:
        raise VaelabError(f"image-folder: none of the {len(files):,} files in {csv_path} is among the images "
                          f"in {base}")
    if len(rows) < len(files):
        ex = next(files[i] for i, m in enumerate(matched) if m is None)
        warn_once(f"image-folder: {len(files) - len(rows):,} file(s) in {csv_path} not found (e.g. {ex}); skipped")
    order = sorted((matched[i], i) for i in rows)
    if len(order) < len(src.names):
        warn_once(f"image-folder: {len(src.names) - len(order):,} image(s) in {base} have no row in "
                  f"{csv_path}; left out")
    names_order = [o[0] for o in order]
    dup = next((a for a, b in zip(names_order, names_order[1:]) if a == b), None)
    if dup is not None:
        raise VaelabError(f"image-folder: two rows of {csv_path} name the same image {dup}; keep one")
    row_idx = np.array([o[1] for o in order], dtype=np.int64)
    fnames, fsizes, fvalues, columns = [], [], [], []
    labels, continuous, kinds, dropped = {}, {}, {}, []
    crops = None
    if rule is not None:
        boxes = read_boxes(csv_path, raw, box_columns, rule.box_names, row_idx, files)
        crops = Crops(rule, boxes, box_scale)
    for col in factor_columns:
        vals = raw[col]
        _require_finite(csv_path, col, vals, files, row_idx)
        cls, values, kind, extra = encode_factor([vals[i] for i in row_idx])
        if len(values) < 2:
            dropped.append(col)
            continue
        fnames.append(col)
        fsizes.append(int(len(values)))
        fvalues.append(values)
        columns.append(cls)
        kinds[col] = kind
        if kind == "categorical":
            labels[col] = extra
        elif kind == "binned":
            continuous[col] = extra
    table = np.stack(columns, axis=1) if columns else None
    fac = {"names": fnames, "sizes": fsizes, "values": [v.tolist() for v in fvalues], "kinds": kinds,
           "csv": str(csv_path), "table": table}
    prepared = prepare_images(src, size=size, channels=channels, preprocess=preprocess, order=names_order,
                              order_tag=f"csv:{csv_path.resolve()}", label=f"folder-{base.stem}", factors=fac,
                              force=force, crops=crops)
    meta = {"cache": str(prepared.entry), "files": names_order, "csv": str(csv_path), "factor_kinds": kinds,
            "factor_labels": labels, "continuous_values": continuous}
    if dropped:
        meta["constant_columns"] = dropped
    if box_columns:
        meta["box_columns"] = sorted(c for cols in box_columns.values() for c in cols.values())
    if crops is not None:
        meta.update(stack=str(rule), box_scale=box_scale,
                    boxes={n: crops.boxes[:, j].copy() for j, n in enumerate(rule.box_names)})
    kw = {}
    if table is not None:
        kw = dict(factors=torch.from_numpy(np.ascontiguousarray(table)), factor_names=fnames, factor_sizes=fsizes,
                  factor_values=fvalues)
    return FactorDataset(images=torch.from_numpy(prepared.images), is_grid=False, name="image-folder",
                         source=str(base), meta=meta, **kw)


register(DatasetSpec(
    name="celeba",
    loader=load_celeba,
    description="CelebA aligned faces, 40 binary attributes as factors (splits train/val/test/all; 32/64/128)",
    factors=[(a, 2) for a in CELEBA_ATTRIBUTES],
    count=202_599,
    image_shape=(3, 64, 64),
    files=["celeba/img_align_celeba", "celeba/list_attr_celeba.txt"],
    fetch_command="download img_align_celeba.zip, list_attr_celeba.txt and list_eval_partition.txt from "
                  "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into DATA_DIR/celeba",
    source="Liu et al. 2015, CelebA (non-commercial research use)",
    locate=celeba_locate,
))
register(DatasetSpec(
    name="chairs",
    loader=load_chairs,
    description="3D Chairs renders; factors model, elevation, azimuth from the file names",
    factors=[("model", 1393), ("elevation", 2), ("azimuth", 31)],
    count=86_366,  # 1,393 models x 62 views (docs/datasets.md#3d-chairs: unverified)
    image_shape=(3, 64, 64),
    files=["chairs/rendered_chairs"],
    fetch_command="vaelab data fetch chairs",
    source="Aubry et al. 2014, Seeing 3D chairs",
    locate=chairs_locate,
))
register(DatasetSpec(
    name="cars",
    loader=load_cars,
    description="Cars3D (car_*_mesh.mat, needs scipy): elevation, azimuth, object grid; or a folder of car images",
    factors=[("elevation", 4), ("azimuth", 24), ("object", 183)],
    count=17_568,
    image_shape=(3, 64, 64),
    files=["cars"],
    fetch_command="vaelab data fetch cars",
    source="Reed et al. 2015 (nips2015-analogy-data), as in dlib",
    locate=cars_locate,
))
register(DatasetSpec(
    name="faces",
    loader=load_faces,
    description="any folder/zip/tar of face images (e.g. 3D FACES renders for UG-VAE); no factors",
    image_shape=(3, 64, 64),
    files=["faces"],
    fetch_command="put face images (a folder, zip or tar) in DATA_DIR/faces",
    source="user-supplied (3D FACES Basel renders are not redistributable)",
    locate=faces_locate,
))
register(DatasetSpec(
    name="image-folder",
    loader=load_image_folder,
    description="any folder/zip/tar of images, factors from an optional CSV (file + one column per factor); "
                "optional crop boxes and a stack rule (XYS)",
    image_shape=(3, 64, 64),
    fetch_command="pass --root PATH",
    source="user-supplied",
    needs_root=True,
))
