"""Turning image sources into cached, memory-mapped uint8 arrays.

Decoding 200k JPEGs on every run is too slow, so every loader of an image set (CelebA, 3D Chairs,
Cars3D, faces, generic folders) and the dSprites / 3D Shapes importers store their pixels once as
``images.npy`` (``N x C x H x W`` uint8) plus ``manifest.json`` in a folder under
:func:`vaelab.paths.cache_dir`, and open it later with ``np.load(mmap_mode="c")`` (copy-on-write:
zero-copy, writable for torch, never written back). ``vaelab data prepare`` does it explicitly;
``vaelab.data.load`` prepares on first use (with a progress bar) and reuses the cache afterwards.

A cache entry is keyed by the source path, its preprocessing (size, crop, channels, resampling
filter, order; a stack rule with its box scale and boxes) and, for a single-file source (zip, tar,
npz, h5), the file's size and mtime. For a folder the sorted file list is compared with the
manifest's on every open (one directory walk).
Everything is written atomically (temporary file + fsync + ``os.replace``); the manifest is written
last, so a half-written entry is never used.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import time
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .. import paths
from ..errors import VaelabError

MANIFEST_FORMAT = "vaelab-prepared/1"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm"})
PREPROCESS = ("resize", "center_crop_148")
# CelebA's 178 x 218 aligned faces: centre 148 x 148 crop (AntixK/PyTorch-VAE, as scarletteshu/Pytorch-bcvae uses it; docs/datasets.md#celeba)
CENTER_CROP = 148


# ---------------------------------------------------------------------------------------- messages
class DataWarning(UserWarning):
    """Something about the data the user should know (cut-short files, skipped files...)."""


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """Warn (category :class:`DataWarning`) once per process per message."""
    if message in _WARNED:
        return
    _WARNED.add(message)
    warnings.warn(message, DataWarning, stacklevel=3)


def quiet() -> bool:
    """Progress bars off: ``VAELAB_QUIET`` set (``vaelab data ... --quiet``) or stderr not a terminal."""
    return os.environ.get("VAELAB_QUIET", "") not in ("", "0") or not sys.stderr.isatty()


def progress(iterable=None, *, total=None, desc=None, unit="img", unit_scale=False, disable=False, **kw):
    """A tqdm bar (rate + ETA) on stderr, silent in quiet mode."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=disable or quiet(),
                dynamic_ncols=True, leave=False, file=sys.stderr, **kw)


# ---------------------------------------------------------------------------------------- atomic IO
def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=_json_default).encode())


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_npy(path: str | os.PathLike, shape, dtype=np.uint8):
    """Yield a writable ``np.memmap`` of a temporary .npy; on success flush, fsync, rename to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(int(s) for s in shape))
    try:
        yield arr
        arr.flush()
        del arr
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def open_npy(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a cached .npy copy-on-write (zero-copy for torch, never written back)."""
    return np.load(path, mmap_mode="c", allow_pickle=False)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20, desc: str | None = None) -> str:
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f, progress(total=size, desc=desc or f"sha256 {Path(path).name}", unit="B",
                                          unit_scale=True) as bar:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
            bar.update(len(b))
    return h.hexdigest()


def sha256_names(names: Iterable[str]) -> str:
    h = hashlib.sha256()
    for n in names:
        h.update(n.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def file_stat(path: Path) -> dict:
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


# ---------------------------------------------------------------------------------------- cache
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:40] or "data"


def cache_entry(label: str, key: dict, cache_root: str | os.PathLike | None = None) -> Path:
    """The cache folder for ``key`` (a JSON-able dict naming everything the pixels depend on)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=_json_default).encode()).hexdigest()
    root = Path(cache_root) if cache_root is not None else paths.cache_dir()
    return root / f"{_slug(label)}-{digest[:16]}"


def read_manifest(entry: Path) -> dict | None:
    """The manifest of a complete cache entry, or None (missing, unreadable, or pixels missing)."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != MANIFEST_FORMAT or not (entry / "images.npy").exists():
        return None
    return manifest


def open_entry(entry: Path, manifest: dict) -> np.ndarray | None:
    """The entry's images (memory-mapped), or None when they do not match the manifest."""
    try:
        images = open_npy(entry / "images.npy")
    except (OSError, ValueError):
        return None
    if list(images.shape) != list(manifest.get("shape", [])) or images.dtype != np.uint8:
        return None
    return images


def build_entry(entry: Path, shape, fill: Callable[[np.ndarray], dict | None], manifest: dict,
                arrays: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
    """Write ``images.npy`` (``fill(out)`` fills the memmap and may return extra manifest fields,
    including ``"arrays"``: name -> array saved beside it), then the manifest. Returns (images, manifest).

    Processes that need the same entry at once (torchrun ranks, a sweep's workers) take turns on a
    lock file beside it: the first builds; one that waited finds the entry another process finished
    meanwhile (same manifest fields) and opens it. An entry that was already there is rebuilt, as the
    caller asked (stale, or forced)."""
    entry.mkdir(parents=True, exist_ok=True)
    before = _manifest_stamp(entry)
    with _entry_lock(entry):
        after = _manifest_stamp(entry)
        if after is not None and after != before:  # finished by another process while we waited
            done = read_manifest(entry)
            wanted = json.loads(json.dumps(manifest, default=_json_default))
            if done is not None and all(done.get(k) == v for k, v in wanted.items()):
                images = open_entry(entry, done)
                if images is not None:
                    return images, done
        return _build_entry_locked(entry, shape, fill, manifest, arrays)


def _manifest_stamp(entry: Path):
    try:
        st = (entry / "manifest.json").stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


@contextlib.contextmanager
def _entry_lock(entry: Path):
    """An exclusive lock on ``<entry>.lock`` (POSIX flock; no lock where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(entry.parent / f"{entry.name}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _build_entry_locked(entry: Path, shape, fill, manifest: dict, arrays) -> tuple[np.ndarray, dict]:
    for stale in entry.glob(".*.tmp-*"):  # leftovers of an interrupted run
        with contextlib.suppress(OSError):
            stale.unlink()
    t0 = time.perf_counter()
    with contextlib.suppress(FileNotFoundError):
        (entry / "manifest.json").unlink()  # the entry is incomplete until the manifest is back
    with atomic_npy(entry / "images.npy", shape) as out:
        extra = fill(out) or {}
    arrays = dict(arrays or {})
    arrays.update(extra.pop("arrays", {}))
    for name, arr in arrays.items():
        save_npy_atomic(entry / f"{name}.npy", arr)
    manifest = dict(manifest)
    manifest.update(extra)
    manifest.update({"format": MANIFEST_FORMAT, "shape": [int(s) for s in shape],
                     "arrays": sorted(arrays), "seconds": round(time.perf_counter() - t0, 3),
                     "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    atomic_write_json(entry / "manifest.json", manifest)
    images = open_npy(entry / "images.npy")
    return images, manifest


def member_chunks(fp, n: int, per: int, chunk: int, path: Path, member: str):
    """Yield ``(start, bytes)`` of ``n`` records of ``per`` bytes from an open npz member, ``chunk``
    records at a time; a corrupt or truncated member is one VaelabError line naming ``path``."""
    import zlib

    for i0 in range(0, n, chunk):
        r = min(chunk, n - i0)
        try:
            buf = fp.read(r * per)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
            raise VaelabError(f"{path}: {member!r} is corrupt ({e}); download it again") from None
        if len(buf) != r * per:
            raise VaelabError(f"{path}: {member!r} is truncated (ends after {i0 + len(buf) // per:,} "
                              f"of {n:,} images); download it again")
        yield i0, buf


def load_array(entry: Path, name: str) -> np.ndarray:
    return np.load(entry / f"{name}.npy", allow_pickle=False)


# ---------------------------------------------------------------------------------------- sources
def _is_image(name: str) -> bool:  # string ops only: this runs once per file of 200k-image folders
    dot = name.rfind(".")
    return dot > name.rfind("/") + 1 and name[dot:].lower() in IMAGE_EXTENSIONS


def _hidden(name: str) -> bool:
    return name.startswith(".") or "/." in name or name.startswith("__MACOSX/") or "/__MACOSX/" in name


@dataclass
class ImageSource:
    """A folder (searched recursively), zip or tar of images; ``names`` are sorted relative paths."""

    path: Path
    kind: str  # "folder" | "zip" | "tar"
    names: list[str]
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | os.PathLike, ignore: Iterable[str] = (), what: str = "images") -> "ImageSource":
        path = Path(path)
        if not path.exists():
            raise VaelabError(f"no {what} at {path}")
        ignore = set(ignore)
        if path.is_dir():
            kind, all_names = "folder", _walk(path)
        elif zipfile.is_zipfile(path):
            kind = "zip"
            try:
                with zipfile.ZipFile(path) as z:
                    all_names = [i.filename for i in z.infolist() if not i.is_dir()]
            except (zipfile.BadZipFile, OSError) as e:
                raise VaelabError(f"{path}: not a readable zip file ({e})") from None
        elif _looks_like_tar(path):
            kind = "tar"
            try:
                with tarfile.open(path, "r:*") as t:
                    all_names = [m.name for m in t.getmembers() if m.isfile()]
            except (tarfile.TarError, OSError, EOFError) as e:
                raise VaelabError(f"{path}: not a readable tar file ({e}); it may be truncated — "
                                  f"download it again") from None
        elif path.suffix.lower() == ".zip":
            raise VaelabError(f"{path}: not a readable zip file (truncated or corrupt); download it again")
        elif _is_image(path.name):
            raise VaelabError(f"{path} is a single image: give the folder, zip or tar that holds the images")
        else:
            raise VaelabError(f"{path} is neither a folder nor a zip or tar of images")
        names, skipped = [], []
        for n in all_names:
            if ignore and (n in ignore or n.rsplit("/", 1)[-1] in ignore):
                continue
            if _is_image(n) and not _hidden(n):
                names.append(n)
            else:
                skipped.append(n)
        names.sort()
        if not names:
            extra = f" ({len(skipped)} other files skipped)" if skipped else ""
            raise VaelabError(f"no images found in {path}{extra}; expected files ending in "
                              f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
        src = cls(path=path, kind=kind, names=names, skipped=len(skipped), skipped_examples=sorted(skipped)[:3])
        return src

    def warn_skipped(self) -> None:
        if self.skipped:
            ex = ", ".join(self.skipped_examples)
            warn_once(f"{self.path}: skipped {self.skipped} non-image file(s) (e.g. {ex})")

    def stat_key(self) -> dict:
        """What identifies this source's contents cheaply (file sources: size + mtime)."""
        if self.kind == "folder":
            return {}
        return file_stat(self.path)

    def content_sha256(self) -> tuple[str, str]:
        if self.kind == "folder":
            return sha256_names(self.names), "sorted file list"
        return sha256_file(self.path), "file"

    def iter_bytes(self, wanted: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """(name, bytes) for each wanted name, in the order cheapest for the container."""
        wanted = set(wanted)
        try:
            if self.kind == "folder":
                for n in sorted(wanted):
                    p = self.path / n
                    try:
                        yield n, p.read_bytes()
                    except OSError as e:
                        raise VaelabError(f"cannot read image {p}: {e}") from None
            elif self.kind == "zip":
                with zipfile.ZipFile(self.path) as z:
                    for info in sorted(z.infolist(), key=lambda i: i.header_offset):
                        if info.filename in wanted:
                            yield info.filename, z.read(info)
            else:
                with tarfile.open(self.path, "r:*") as t:
                    for m in t:  # archive order: a compressed tar cannot seek cheaply
                        if m.isfile() and m.name in wanted:
                            f = t.extractfile(m)
                            yield m.name, f.read()
        except VaelabError:
            raise
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
            raise VaelabError(f"{self.path}: cannot read ({e}); the file may be truncated or corrupt") from None

    def describe(self, name: str) -> str:
        return str(self.path / name) if self.kind == "folder" else f"{self.path}:{name}"


def _walk(root: Path) -> list[str]:
    out = []
    stack = [(root, "")]
    while stack:
        d, rel = stack.pop()
        try:
            it = os.scandir(d)
        except OSError as e:
            raise VaelabError(f"cannot list {d}: {e}") from None
        with it:
            for e in it:
                r = f"{rel}{e.name}"
                if e.is_dir():
                    stack.append((Path(e.path), r + "/"))
                elif e.is_file():
                    out.append(r)
    return out


def _looks_like_tar(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return True
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------- decoding
RESAMPLE = {
    # Pillow's resize filters are antialiased when shrinking (the kernel is stretched by the scale).
    # "bilinear" is what torchvision.transforms.Resize does on PIL images, i.e. what 1Konny/Beta-VAE,
    # 1Konny/FactorVAE and ipeis/UG-VAE fed their nets; "lanczos" is dlib's Cars3D
    # (PIL.Image.ANTIALIAS in thumbnail).
    "bilinear": "BILINEAR",
    "lanczos": "LANCZOS",
    "box": "BOX",
    "bicubic": "BICUBIC",
}


def decode_image(data: bytes, *, size: int, channels: int = 3, preprocess: str = "resize",
                 resample: str = "bilinear", where: str = "image") -> np.ndarray:
    """JPEG/PNG/... bytes -> ``C x size x size`` uint8 (alpha composited onto white)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            img = _to_mode(im, channels)
    except VaelabError:
        raise
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise VaelabError(f"cannot read image {where}: {e}") from None
    return transform_image(img, size=size, preprocess=preprocess, resample=resample)


def _to_mode(im, channels: int):
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    if im.mode.startswith("I") or im.mode == "F":  # 16-bit / 32-bit grey: scale to 0..255
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 1.0)
        im = Image.fromarray(np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    return im.convert("L" if channels == 1 else "RGB")


def transform_image(img, *, size: int, preprocess: str = "resize", resample: str = "bilinear") -> np.ndarray:
    """PIL image (already L or RGB) -> ``C x size x size`` uint8."""
    from PIL import Image

    if preprocess == "center_crop_148":
        w, h = img.size
        c = min(CENTER_CROP, w, h)
        left, top = int(round((w - c) / 2.0)), int(round((h - c) / 2.0))  # torchvision CenterCrop rounding
        img = img.crop((left, top, left + c, top + c))
    elif preprocess != "resize":
        raise VaelabError(f"unknown preprocessing {preprocess!r}; choose one of {', '.join(PREPROCESS)}")
    if img.size != (size, size):
        img = img.resize((size, size), getattr(Image.Resampling, RESAMPLE[resample]))
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        return a[None]
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def decode_workers() -> int:
    env = os.environ.get("VAELAB_DECODE_WORKERS")
    if env:
        return max(1, int(env))
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def decode_into(source: ImageSource, order: list[str], out: np.ndarray, *, size: int, channels: int,
                preprocess: str, resample: str, desc: str, crops: Crops | None = None) -> int:
    """Decode ``order`` (names) from ``source`` into ``out[i]`` (Pillow releases the GIL while
    decoding and resizing, so a thread pool uses every core). With ``crops``, each image is built by
    its stack rule from its own boxes; returns the number of boxes clipped to their image."""
    pos = {n: i for i, n in enumerate(order)}
    workers = decode_workers()
    window = 64 * workers
    kw = dict(size=size, channels=channels, preprocess=preprocess, resample=resample)
    clipped = []

    def job(name, data):
        if crops is not None:
            img, n = decode_stacked(data, rule=crops.rule, boxes=crops.boxes[pos[name]], scale=crops.scale,
                                    size=size, resample=resample, where=source.describe(name))
            if n:
                clipped.append(n)
            return img
        return decode_image(data, where=source.describe(name), **kw)

    done = 0
    with progress(total=len(order), desc=desc) as bar, ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()

        def drain(limit):
            nonlocal done
            while len(pending) > limit:
                i, fut = pending.popleft()
                out[i] = fut.result()
                done += 1
                bar.update(1)

        try:
            for name, data in source.iter_bytes(order):
                pending.append((pos[name], pool.submit(job, name, data)))
                drain(window)
            drain(0)
        except BaseException:
            for _, fut in pending:
                fut.cancel()
            raise
    if done != len(order):
        missing = len(order) - done
        raise VaelabError(f"{source.path}: {missing} image(s) listed but not readable; the source may be "
                          f"truncated")
    return sum(clipped)


# ---------------------------------------------------------------------------------------- stacked crops
FULL = "full"  # the stack entry for the whole image (not a box name)
STACK_MODES = {"grey": 1, "gray": 1, "rgb": 3}


@dataclass(frozen=True)
class StackRule:
    """Channels built from named crops (docs/datasets.md#image-folders, Near32/PYTORCH_VAE's XYS stacking): each entry is the whole image
    (``full``) or a named box, in ``grey`` (1 channel) or ``rgb`` (3), cropped, resized to the target
    size, and the channels concatenated in entry order. XYS: ``full,reye,leye`` (three grey channels)."""

    entries: tuple[tuple[str, str], ...]  # (name, "grey" | "rgb")

    @classmethod
    def parse(cls, rule) -> "StackRule":
        """``"full,reye,leye"``, ``"full:grey, face:rgb"`` or a list of such entries (mode default grey)."""
        if isinstance(rule, StackRule):
            return rule
        if isinstance(rule, str):
            parts = rule.split(",")
        elif isinstance(rule, (list, tuple)) and all(isinstance(p, str) for p in rule):
            parts = list(rule)
        else:
            raise VaelabError(f"stack must be a string like 'full,reye,leye' or a list of entries, got {rule!r}")
        entries = []
        for part in parts:
            name, _, mode = part.strip().partition(":")
            name, mode = name.strip(), (mode.strip().lower() or "grey")
            if not name:
                raise VaelabError(f"stack {rule!r}: empty entry; write entries as NAME or NAME:grey|rgb, "
                                  f"separated by commas (e.g. 'full,reye,leye')")
            if mode not in STACK_MODES:
                raise VaelabError(f"stack entry {part.strip()!r}: mode must be grey or rgb, got {mode!r}")
            entries.append((name, "rgb" if mode == "rgb" else "grey"))
        out = cls(tuple(entries))
        if out.channels not in (1, 3):
            raise VaelabError(f"stack {str(out)!r} gives {out.channels} channels; it must give 1 or 3 "
                              f"(e.g. three grey entries, or one rgb entry) so images can be shown and saved")
        return out

    @property
    def channels(self) -> int:
        return sum(STACK_MODES[m] for _, m in self.entries)

    @property
    def box_names(self) -> list[str]:
        """Box names the rule uses, first-use order, without ``full``."""
        out: list[str] = []
        for n, _ in self.entries:
            if n != FULL and n not in out:
                out.append(n)
        return out

    def __str__(self) -> str:  # canonical text (cache keys, manifests, meta)
        return ",".join(f"{n}:{m}" for n, m in self.entries)


@dataclass
class Crops:
    """A stack rule with its boxes: ``boxes[i, j]`` = (xmin, ymin, xmax, ymax) of ``rule.box_names[j]`` for
    the i-th image of the prepared order, in box units; pixel = value / ``scale`` (XYS: 2, its boxes are
    given at twice the image resolution)."""

    rule: StackRule
    boxes: np.ndarray  # N x B x 4 float64 (B = len(rule.box_names), may be 0)
    scale: float = 1.0

    def key(self) -> dict:
        b = np.ascontiguousarray(self.boxes, dtype=np.float64)
        return {"stack": str(self.rule), "box_scale": float(self.scale), "box_names": self.rule.box_names,
                "boxes_sha256": hashlib.sha256(b.tobytes()).hexdigest()}


def decode_stacked(data: bytes, *, rule: StackRule, boxes: np.ndarray, scale: float = 1.0, size: int,
                   resample: str = "bilinear", where: str = "image") -> tuple[np.ndarray, int]:
    """Image bytes -> (``C x size x size`` uint8 built by ``rule``, number of boxes clipped to the image).

    A box (in box units, divided by ``scale``) covers pixels ``floor(xmin/scale) .. floor(xmax/scale) - 1``
    (Near32/PYTORCH_VAE's ``int(v / scalar)`` slicing); a box reaching past the border is clipped to the image (as
    Near32/PYTORCH_VAE's datasetXYS.py does); a box with nothing inside the image is an error. Each crop is resized
    straight to ``size`` (Near32/PYTORCH_VAE resized crops to the image size, then the stack: two bilinear steps)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            modes = {m for _, m in rule.entries}
            base = {m: _to_mode(im, STACK_MODES[m]) for m in modes}
    except VaelabError:
        raise
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise VaelabError(f"cannot read image {where}: {e}") from None
    w, h = next(iter(base.values())).size
    names = rule.box_names
    chans, clipped, done = [], 0, {}
    for name, mode in rule.entries:
        img = base[mode]
        if name != FULL:
            if name not in done:
                x0, y0, x1, y1 = (float(v) / scale for v in boxes[names.index(name)])
                c = (int(min(max(0.0, x0), w)), int(min(max(0.0, y0), h)),
                     int(min(max(0.0, x1), w)), int(min(max(0.0, y1), h)))
                if c[2] <= c[0] or c[3] <= c[1]:
                    raise VaelabError(
                        f"box {name!r} of {where} is outside the {w}x{h} image: pixels ({x0:g}, {y0:g}) to "
                        f"({x1:g}, {y1:g}) = box values / box_scale {scale:g}; fix the box or box_scale")
                clipped += int(x0 < 0 or y0 < 0 or x1 > w or y1 > h)
                done[name] = c
            img = img.crop(done[name])
        chans.append(transform_image(img, size=size, resample=resample))
    return np.concatenate(chans, axis=0), clipped


# ---------------------------------------------------------------------------------------- prepare
@dataclass
class Prepared:
    """A prepared image set: memory-mapped ``images`` (N x C x S x S uint8) and its manifest."""

    images: np.ndarray
    manifest: dict
    entry: Path

    @property
    def names(self) -> list[str]:
        return list(self.manifest["files"])


def check_size(size, default: int = 64, allowed: Iterable[int] | None = None, what: str = "images") -> int:
    size = default if size is None else size
    try:
        size = int(size)
    except (TypeError, ValueError):
        raise VaelabError(f"image size must be an integer, got {size!r}") from None
    if allowed is not None and size not in set(allowed):
        raise VaelabError(f"{what}: size {size} not supported; choose one of {sorted(set(allowed))}")
    if not 4 <= size <= 1024:
        raise VaelabError(f"image size must be between 4 and 1024 pixels, got {size}")
    return size


def _factor_record(factors: dict | None, n: int) -> tuple[dict | None, np.ndarray | None]:
    """(JSON-normalised factor record for the manifest, table to save as factors.npy)."""
    if factors is None:
        return None, None
    record = {k: v for k, v in factors.items() if k != "table"}
    table = factors.get("table")
    if table is not None:
        table = np.ascontiguousarray(np.asarray(table, dtype=np.int64).reshape(n, -1))
        record.update(table="factors.npy", table_shape=list(table.shape),
                      table_sha256=hashlib.sha256(table.tobytes()).hexdigest())
    return json.loads(json.dumps(record, default=_json_default)), table


def prepare_images(source: str | os.PathLike | ImageSource, *, size: int = 64, channels: int = 3,
                   preprocess: str = "resize", resample: str = "bilinear", order: list[str] | None = None,
                   order_tag: str = "sorted", label: str | None = None, factors: dict | None = None,
                   force: bool = False, cache_root: str | os.PathLike | None = None,
                   ignore: Iterable[str] = (), crops: Crops | None = None) -> Prepared:
    """Decode (once) the images of a folder, zip or tar into a cached, memory-mapped uint8 array.

    order: which names, in which order (default: every image, sorted by relative path); callers
    that reorder (e.g. 3D Chairs into canonical factor order) pass a distinct ``order_tag``.
    factors: an optional factor description for the manifest (``names``, ``sizes``, ``values``, ...);
    its ``table`` (N x K class indices, one row per image in ``order``) is saved as ``factors.npy``.
    crops: build each image from named crops by a stack rule (:class:`Crops`, one row of boxes per
    name in ``order``); ``channels`` must then be the rule's. The rule, the box scale and the boxes
    themselves are part of the cache key (editing a box rebuilds the pixels).
    Reuses a complete cache entry with the same key (updating the factor record if it changed);
    ``force`` rebuilds it.
    """
    src = source if isinstance(source, ImageSource) else ImageSource.open(source, ignore=ignore)
    src.warn_skipped()
    if channels not in (1, 3):
        raise VaelabError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if preprocess not in PREPROCESS:
        raise VaelabError(f"unknown preprocessing {preprocess!r}; choose one of {', '.join(PREPROCESS)}")
    if resample not in RESAMPLE:
        raise VaelabError(f"unknown resampling filter {resample!r}; choose one of {', '.join(RESAMPLE)}")
    size = check_size(size)
    order = list(src.names if order is None else order)
    key = {"kind": "images", "source": str(src.path.resolve()), "size": size, "channels": channels,
           "preprocess": preprocess, "resample": resample, "order": order_tag, **src.stat_key()}
    if crops is not None:
        if channels != crops.rule.channels:
            raise VaelabError(f"stack {str(crops.rule)!r} gives {crops.rule.channels} channel(s), not {channels}")
        if preprocess != "resize":
            raise VaelabError(f"a stack rule crops its own boxes: use preprocess 'resize', not {preprocess!r}")
        if crops.boxes.shape != (len(order), len(crops.rule.box_names), 4):
            raise VaelabError(f"stack boxes: expected {len(order)} x {len(crops.rule.box_names)} x 4 values, "
                              f"got shape {tuple(crops.boxes.shape)}")
        if not (isinstance(crops.scale, (int, float)) and crops.scale > 0 and np.isfinite(crops.scale)):
            raise VaelabError(f"box_scale must be a positive number, got {crops.scale!r}")
        key.update(crops.key())
    entry = cache_entry(label or src.path.stem, key, cache_root)
    names_sha = sha256_names(order)
    record, table = _factor_record(factors, len(order))
    if not force:
        manifest = read_manifest(entry)
        if manifest is not None and manifest.get("key") == key and manifest.get("files_sha256") == names_sha:
            images = open_entry(entry, manifest)
            if images is not None:
                if record is not None and manifest.get("factors") != record:  # e.g. the CSV was edited
                    if table is not None:
                        save_npy_atomic(entry / "factors.npy", table)
                    manifest = dict(manifest, factors=record)
                    atomic_write_json(entry / "manifest.json", manifest)
                return Prepared(images, manifest, entry)
    shape = (len(order), channels, size, size)
    content_sha, sha_of = src.content_sha256()
    manifest = {"key": key, "source": str(src.path.resolve()), "source_kind": src.kind,
                "sha256": content_sha, "sha256_of": sha_of, "count": len(order), "size": size,
                "channels": channels, "preprocess": preprocess, "resample": resample, "order": order_tag,
                "skipped_files": src.skipped, "files_sha256": names_sha, "files": order}
    if record is not None:
        manifest["factors"] = record
    if crops is not None:
        manifest.update(stack=str(crops.rule), box_scale=float(crops.scale), box_names=crops.rule.box_names)

    def fill(out):
        clipped = decode_into(src, order, out, size=size, channels=channels, preprocess=preprocess,
                              resample=resample, desc=f"preparing {label or src.path.name} ({size}x{size})",
                              crops=crops)
        if clipped:
            warn_once(f"{src.path}: {clipped:,} crop box(es) reach past their image's border; clipped to the "
                      f"image (as Near32/PYTORCH_VAE's datasetXYS.py does)")
            return {"clipped_boxes": clipped}
        return None

    images, manifest = build_entry(entry, shape, fill, manifest,
                                   {"factors": table} if table is not None else None)
    return Prepared(images, manifest, entry)


def prepare(name: str, source: str | os.PathLike | None = None, *, size: int | None = None,
            force: bool = False, **options):
    """``vaelab data prepare``: load dataset ``name`` from ``source`` (a file or folder), building
    its cache once. Returns the :class:`~vaelab.data.base.FactorDataset`."""
    from . import load

    if force:
        options["force"] = True
    return load(name, root=source, size=size, **options)
