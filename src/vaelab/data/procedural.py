"""``dsprites-procedural``: the full dSprites grid (737,280 images) rendered with no file.

Same grid, factor values and index order as deepmind/dsprites-dataset
(``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``, colour factor hidden): ``images[i]``
shows what ``imgs[i]`` of the official file shows, with pixels 0/255 (docs/conventions.md#tensors).

Geometry (pixel coordinates, x = column, y = row pointing down, pixel (i, j) has its centre
at (j + 0.5, i + 0.5)): a sprite is centred at (16 + 32 posX, 16 + 32 posY), scaled by
``scale``, turned by ``orientation`` radians counter-clockwise on screen about its centre,
and a pixel is on when its centre lies inside (point sampling, no antialiasing). Shapes at
scale 1: a square of side 19.2; an ellipse with semi-axes 12.763 (x) x 7.215 (y); the classic
heart curve x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t, scaled and shifted.
The official generator is unpublished; every constant was fitted to the 46,080 real images
of ``dsprites_downsampled.npz`` (scripts/dsprites_iou.py measures the agreement: mean IoU
above 0.999 per shape).

The full grid is rendered once (about 3 GB) into ``cache_dir()/dsprites-procedural-v1.npy``
and memory-mapped afterwards. Beside it, ``dsprites-procedural-v1.json`` records the file's size and a
blake2b digest of 512 evenly spread 32 KiB blocks (the whole file when smaller), checked on every open
(16 MB read): a damaged cache (a zeroed or cut-short stretch) is rendered again. Builders take turns on
``dsprites-procedural-v1.lock``; a render killed half-way leaves a temporary file that the next build or
open removes once no builder holds the lock.
"""
from __future__ import annotations

import contextlib
import functools
import os
import secrets
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError
from .base import FactorDataset
from .registry import DatasetSpec, register, require_grid_split

NAME = "dsprites-procedural"
VERSION = 1  # bump when the renderer's output changes: the cache file name carries it
SIDE = 64
FACTOR_NAMES = ["shape", "scale", "orientation", "posX", "posY"]
FACTOR_SIZES = [3, 6, 40, 32, 32]  # docs/datasets.md#procedural-dsprites (official grid without the size-1 colour factor)
COUNT = int(np.prod(FACTOR_SIZES))  # 737,280
SHAPE_NAMES = ["square", "ellipse", "heart"]  # official latents_values 1, 2, 3
# Factor values as in the official latents_values (docs/datasets.md#dsprites).
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2 * np.pi, 40)
POSITIONS = np.linspace(0.0, 1.0, 32)
_BASES = np.array([6 * 40 * 32 * 32, 40 * 32 * 32, 32 * 32, 32, 1], dtype=np.int64)  # posY fastest

# ---- geometry, in pixels at scale 1 ----
# Fitted to the 46,080 real images of dsprites_downsampled.npz (first from the outline traced in
# polar coordinates over all real pixels, then refined on the count of mismatched pixels; each
# value sits at a sharp optimum: moving it by 0.005 px adds >10% mismatches).
CENTRE_OFFSET = 16.0  # sprite centre = CENTRE_OFFSET + CENTRE_SPAN * pos, both axes
CENTRE_SPAN = 32.0
SQUARE_HALF = 9.6  # half side; 19.2^2 = 368.6 px, the "about 368 pixels" of docs/datasets.md#procedural-dsprites
ELLIPSE_A = 12.763  # semi-axis along x at orientation 0
ELLIPSE_B = 7.215  # semi-axis along y
HEART_X = 9.595  # x = HEART_X sin^3 t  (the classic curve's 16 sin^3 t, scaled)
HEART_Y = 0.66187  # y = -HEART_Y (13 cos t - 5 cos 2t - 2 cos 3t - cos 4t) + HEART_DY (tip down)
HEART_DY = -1.4368

_TABLE_STEP = 1.0 / 4096  # heart cross-section tables: sampling step along y, pixels
_TABLE_LIMIT = 24.0  # tables cover |y| <= this; lookups beyond are clipped to an end (outside)


@functools.lru_cache(maxsize=1)
def _heart_tables():
    """Cross-sections of the heart: inside iff ``inner(y) <= |x| <= outer(y)``.

    Each half of the curve (t in [0, pi]) runs from the notch up to a lobe's top (inner
    branch) and down to the tip (outer branch); both are monotone in y. Returns
    (y0, step, outer, inner, radius) with tables sampled at y0 + k * step, outer = -1 where
    no point is inside, and the largest distance of the outline from the centre."""
    t = np.linspace(0.0, np.pi, 200_001)
    x = HEART_X * np.sin(t) ** 3
    y = -HEART_Y * (13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) + HEART_DY
    top = int(np.argmin(y))
    yi, xi = y[: top + 1][::-1], x[: top + 1][::-1]  # inner branch, increasing y (top -> notch)
    yo, xo = y[top:], x[top:]  # outer branch, increasing y (top -> tip)
    grid = np.arange(-_TABLE_LIMIT, _TABLE_LIMIT + _TABLE_STEP / 2, _TABLE_STEP)
    outer = np.interp(grid, yo, xo, left=-1.0, right=-1.0)
    inner = np.interp(grid, yi, xi, left=0.0, right=0.0)
    return (float(grid[0]), _TABLE_STEP, outer.astype(np.float32), inner.astype(np.float32),
            float(np.hypot(x, y).max()))


def _radius(shape: int) -> float:
    """Largest distance from the rotation centre to the outline of ``shape`` at scale 1."""
    if shape == 0:
        return SQUARE_HALF * np.sqrt(2.0)
    if shape == 1:
        return max(ELLIPSE_A, ELLIPSE_B)
    return _heart_tables()[4]


def _inside(shape: int, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Boolean mask: local points (u right, w down; scale-1 pixels) inside ``shape``."""
    if shape == 0:
        return (np.abs(u) <= SQUARE_HALF) & (np.abs(w) <= SQUARE_HALF)
    if shape == 1:
        u = u * (1.0 / ELLIPSE_A)
        w = w * (1.0 / ELLIPSE_B)
        return u * u + w * w <= 1.0
    y0, step, outer, inner, _ = _heart_tables()
    k = np.rint((w - y0) * (1.0 / step))
    np.clip(k, 0, len(outer) - 1, out=k)
    k = k.astype(np.intp)
    a = np.abs(u)
    return (a <= outer[k]) & (a >= inner[k])


def _render_shape(shape: int, scale, orientation, posx, posy, out: np.ndarray) -> None:
    """Draw sprites of one shape into ``out`` (n x 64 x 64 uint8, zeros); class-index arrays."""
    s = SCALES[scale]
    th = ORIENTATIONS[orientation]
    cx = CENTRE_OFFSET + CENTRE_SPAN * POSITIONS[posx]
    cy = CENTRE_OFFSET + CENTRE_SPAN * POSITIONS[posy]
    # A window around the centre that holds the whole sprite (pixel centres within radius + 1.5).
    half = int(np.ceil(_radius(shape) * float(s.max()) + 1.5))
    win = min(2 * half, SIDE)
    col0 = np.clip(np.floor(cx).astype(np.intp) - half, 0, SIDE - win)
    row0 = np.clip(np.floor(cy).astype(np.intp) - half, 0, SIDE - win)
    offs = np.arange(win)
    inv = (1.0 / s)[:, None]
    dx = ((col0[:, None] + offs + 0.5 - cx[:, None]) * inv).astype(np.float32)  # n x win
    dy = ((row0[:, None] + offs + 0.5 - cy[:, None]) * inv).astype(np.float32)
    c = np.cos(th).astype(np.float32)[:, None]
    sn = np.sin(th).astype(np.float32)[:, None]
    # Rotating the sprite by +th on screen = sampling it at the pixel offsets rotated by -th
    # (y down): u = cos dx - sin dy, w = sin dx + cos dy.
    u = (c * dx)[:, None, :] - (sn * dy)[:, :, None]  # n x win(rows) x win(cols)
    w = (sn * dx)[:, None, :] + (c * dy)[:, :, None]
    mask = _inside(shape, u, w)
    n = len(s)
    rows = (row0[:, None] + offs)[:, :, None]
    cols = (col0[:, None] + offs)[:, None, :]
    out[np.arange(n)[:, None, None], rows, cols] = mask.view(np.uint8) * np.uint8(255)


def render_factors(shape, scale, orientation, posx, posy) -> np.ndarray:
    """uint8 images ``n x 64 x 64`` (0/255) for factor class indices (arrays, broadcast together):
    shape 0..2 (square, ellipse, heart), scale 0..5, orientation 0..39, posX 0..31, posY 0..31."""
    f = np.broadcast_arrays(*(np.asarray(a) for a in (shape, scale, orientation, posx, posy)))
    f = [np.asarray(a, dtype=np.int64).reshape(-1) for a in f]
    for name, size, a in zip(FACTOR_NAMES, FACTOR_SIZES, f):
        if a.size and (a.min() < 0 or a.max() >= size):
            raise VaelabError(f"{name} class indices must be in [0, {size - 1}], "
                              f"got {int(a.min())}..{int(a.max())}")
    n = f[0].size
    out = np.zeros((n, SIDE, SIDE), dtype=np.uint8)
    chunk = 2048  # bounds the float temporaries to ~10 MB each
    for sh in range(3):
        idx = np.flatnonzero(f[0] == sh)
        for start in range(0, len(idx), chunk):
            sel = idx[start:start + chunk]
            block = np.zeros((len(sel), SIDE, SIDE), dtype=np.uint8)
            _render_shape(sh, f[1][sel], f[2][sel], f[3][sel], f[4][sel], block)
            out[sel] = block
    return out


def factors_of(indices) -> np.ndarray:
    """``n x 5`` int64 class indices (shape, scale, orientation, posX, posY) of official indices."""
    idx = np.asarray(indices)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise VaelabError(f"dSprites indices must be integers, got {idx.dtype}")
    idx = idx.astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= COUNT):
        raise VaelabError(f"dSprites indices must be in [0, {COUNT - 1}], got {int(idx.min())}..{int(idx.max())}")
    return np.stack(np.unravel_index(idx, FACTOR_SIZES), axis=1).astype(np.int64)


def index_of(factors) -> np.ndarray:
    """Official indices (colour factor hidden) of ``n x 5`` class-index rows."""
    return np.asarray(factors, dtype=np.int64).reshape(-1, 5) @ _BASES


def render(indices) -> np.ndarray:
    """uint8 images ``n x 64 x 64`` (0/255) for official dSprites indices in [0, 737280):
    index = (((shape * 6 + scale) * 40 + orientation) * 32 + posX) * 32 + posY."""
    f = factors_of(indices)
    return render_factors(f[:, 0], f[:, 1], f[:, 2], f[:, 3], f[:, 4])


def factor_values() -> list[np.ndarray]:
    """The real value of each class, per factor (shape as the official 1, 2, 3)."""
    return [np.array([1.0, 2.0, 3.0]), SCALES.copy(), ORIENTATIONS.copy(), POSITIONS.copy(), POSITIONS.copy()]


def grid_factors() -> np.ndarray:
    """All ``737280 x 5`` int64 factor rows in official order (posY fastest)."""
    return np.stack(np.unravel_index(np.arange(COUNT, dtype=np.int64), FACTOR_SIZES), axis=1).astype(np.int64)


# ------------------------------------------------------------------ the cached full grid
def cache_path(root: Path | None = None) -> Path:
    """Where the rendered grid lives: ``cache_dir(root)/dsprites-procedural-v<VERSION>.npy``."""
    from ..paths import cache_dir

    return cache_dir(root) / f"{NAME}-v{VERSION}.npy"


_CHECK = np.array([0, 87040, 332800, 578560, COUNT - 1])  # spot checks (incl. 1Konny's traversal images)


_SAMPLE_BLOCKS = 512  # blocks hashed to check the cache on open: spread evenly over the file
_SAMPLE_BYTES = 1 << 15  # 32 KiB each (16 MB in all; the whole file when it is smaller than that)


def sidecar_path(path: Path) -> Path:
    """The cache's metadata: size and a digest of sampled blocks (``dsprites-procedural-v1.json``)."""
    return path.with_suffix(".json")


def _sample_digest(path: Path, blocks: int | None = None, block_bytes: int | None = None) -> dict:
    """blake2b of ``blocks`` evenly spread ``block_bytes`` blocks of the file (all of it when smaller)."""
    import hashlib

    blocks = _SAMPLE_BLOCKS if blocks is None else blocks
    block_bytes = _SAMPLE_BYTES if block_bytes is None else block_bytes
    size = path.stat().st_size
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        if size <= blocks * block_bytes:
            blocks = 0  # the whole file
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        else:
            for start in np.linspace(0, size - block_bytes, blocks).astype(np.int64).tolist():
                f.seek(start)
                h.update(f.read(block_bytes))
    return {"bytes": size, "blocks": blocks, "block_bytes": block_bytes, "blake2b": h.hexdigest()}


def _check_cache(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(the cached grid memory-mapped copy-on-write, None) or (None, what is wrong; None when absent)."""
    import json

    if not path.is_file():
        return None, None
    try:
        meta = json.loads(sidecar_path(path).read_text())
        want = {k: meta[k] for k in ("bytes", "blocks", "block_bytes", "blake2b")}
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"its record {sidecar_path(path).name} is missing or unreadable"
    if meta.get("version") != VERSION or meta.get("count") != COUNT:
        return None, f"{sidecar_path(path).name} describes another render"
    try:
        if path.stat().st_size != want["bytes"]:
            return None, f"it has {path.stat().st_size:,} bytes, not {want['bytes']:,}"
        arr = np.load(path, mmap_mode="c", allow_pickle=False)
    except (ValueError, OSError) as e:
        return None, f"it cannot be read ({e})"
    if arr.dtype != np.uint8 or arr.shape != (COUNT, SIDE, SIDE):
        return None, f"it holds {arr.dtype} {arr.shape}, not uint8 {(COUNT, SIDE, SIDE)}"
    try:
        got = _sample_digest(path, int(want["blocks"]) or 1 << 62, int(want["block_bytes"]))
    except (OSError, ValueError) as e:
        return None, f"it cannot be read ({e})"
    if got["blake2b"] != want["blake2b"]:
        return None, "its contents differ from what was written (checksum of sampled blocks)"
    if not np.array_equal(np.asarray(arr[_CHECK]), render(_CHECK)):
        return None, "its pixels differ from what this renderer draws"
    return arr, None


def _open_cache(path: Path) -> np.ndarray | None:
    """The cached grid, memory-mapped copy-on-write, or None when absent, damaged or not what we render."""
    return _check_cache(path)[0]


def _lock_path(path: Path) -> Path:
    return path.with_suffix(".lock")


@contextlib.contextmanager
def _build_lock(path: Path, wait: bool = True):
    """Hold the cache's build lock (POSIX flock on ``<cache>.lock``); yields False when ``wait`` is off and
    another process holds it. Where fcntl is missing (Windows) it yields True and locks nothing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(_lock_path(path), "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not writing it (its own writes hold the lock and clean up)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temporaries(path: Path, locked: bool = False) -> list[Path]:
    """Delete the temporary files of renders that died half-way (multi-GB each); returns them.

    A temporary ``<cache>.<pid>.<token>.tmp`` is stale when no builder holds its cache's lock (``locked``:
    the caller holds it) and its writer's process is gone."""
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in sorted(path.parent.glob(f"{NAME}-v*.npy.*.tmp")):
        parts = tmp.name.rsplit(".", 3)
        if len(parts) != 4 or not parts[1].isdigit() or _pid_alive(int(parts[1])):
            continue
        target = tmp.with_name(parts[0])
        if locked and target == path:
            free = True
        else:
            try:
                with _build_lock(target, wait=False) as free:
                    pass
            except OSError:  # a read-only cache folder: leave it be
                continue
        if free:
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _write_cache(path: Path, quiet: bool = True, reuse: bool = False) -> None:
    """Render the full grid into ``path`` under the build lock (processes that need it at once take
    turns), first removing what dead renders left. ``reuse``: keep a valid cache that another process
    finished while this one waited for the lock."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _build_lock(path)
        lock.__enter__()
    except OSError as e:
        raise VaelabError(f"cannot write the {NAME} cache in {path.parent} ({e.strerror or e}); set --data-dir "
                          f"/ VAELAB_DATA to a writable folder") from None
    try:
        if reuse:  # checked again under the lock: another process may have just finished it
            arr, problem = _check_cache(path)
            if arr is not None:
                return
            if problem:
                from .prepare import warn_once

                warn_once(f"the {NAME} cache {path} is damaged ({problem}); rendering it again")
        remove_stale_temporaries(path, locked=True)
        _render_cache(path, quiet)
    finally:
        lock.__exit__(None, None, None)


def _render_cache(path: Path, quiet: bool = True) -> None:
    """Render the full grid in blocks of 1,024 images into ``path`` (temp file, fsync, rename), then
    record its size and sampled-block digest in the sidecar."""
    if not quiet and os.environ.get("VAELAB_QUIET", "") in ("", "0"):  # before the minutes it takes: what, where
        print(f"{NAME}: rendering the {COUNT:,} images once into {path} ({COUNT * SIDE * SIDE / 1e9:.1f} GB; "
              f"later runs memory-map it; --data-dir or $VAELAB_DATA moves it)", file=sys.stderr, flush=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # open_memmap writes the .npy header and sizes the file; the pixels then go in through
        # plain writes, so the process never maps (and keeps resident) the 3 GB it produces.
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(COUNT, SIDE, SIDE))
        offset = mm.offset
        del mm
        from .prepare import progress  # tqdm on stderr; off under VAELAB_QUIET or without a terminal

        block = 32 * 32  # one (shape, scale, orientation): consecutive official indices
        with open(tmp, "r+b") as fh, progress(total=COUNT, disable=quiet, unit="img", unit_scale=True,
                                              desc=f"rendering {NAME}") as bar:
            fh.seek(offset)
            pos = np.repeat(np.arange(32), 32), np.tile(np.arange(32), 32)
            for g in range(COUNT // block):
                sh, sc, orient = np.unravel_index(g, FACTOR_SIZES[:3])
                imgs = np.zeros((block, SIDE, SIDE), dtype=np.uint8)
                _render_shape(int(sh), np.full(block, sc), np.full(block, orient), pos[0], pos[1], imgs)
                fh.write(imgs.data)
                bar.update(block)
            fh.flush()
            os.fsync(fh.fileno())
        record = {"name": NAME, "version": VERSION, "count": COUNT, **_sample_digest(Path(tmp))}
        os.replace(tmp, path)
        try:  # make the rename itself durable
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
        from .prepare import atomic_write_json

        atomic_write_json(sidecar_path(path), record)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise VaelabError(f"cannot write the {NAME} cache {path} ({e.strerror or e}); it needs "
                          f"{COUNT * SIDE * SIDE / 1e9:.1f} GB: free space or set --data-dir / VAELAB_DATA") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def grid_images(root: Path | None = None, quiet: bool = True) -> np.ndarray:
    """The full grid ``737280 x 64 x 64`` uint8 (0/255), memory-mapped copy-on-write from the
    cache; rendered and cached first when missing (about 3 GB of disk)."""
    path = cache_path(root)
    remove_stale_temporaries(path)  # what renders killed half-way left (none running now)
    arr = _open_cache(path)
    if arr is None:
        _write_cache(path, quiet=quiet, reuse=True)
        arr = _open_cache(path)
        if arr is None:
            raise VaelabError(f"the {NAME} cache {path} could not be read back after writing it")
    return arr


def load(root: Path | None = None, split: str = "train", size: int | None = None, *,
         quiet: bool = False, force: bool = False, **unknown) -> FactorDataset:
    """The full grid as a FactorDataset (registry loader). ``root``: the data directory whose
    ``cache/`` holds the render. ``quiet``: no progress bar; ``force``: render again."""
    require_grid_split(NAME, split)
    if size not in (None, SIDE):
        raise VaelabError(f"{NAME} images are 64 x 64; size {size} is not available (drop --size)")
    if unknown:
        raise VaelabError(f"{NAME} does not take option(s) {', '.join(sorted(unknown))} (it takes quiet, force)")
    if root is not None and not Path(root).is_dir():  # a mistyped path must not get a 3 GB cache
        what = "a file" if Path(root).exists() else "not there"
        raise VaelabError(f"{NAME} needs no data file; root is the data directory whose cache/ holds the "
                          f"render, and {root} is {what} (leave root unset for the default)")
    if force:
        _write_cache(cache_path(root), quiet=quiet)
    arr = grid_images(root, quiet=quiet)
    images = torch.from_numpy(arr).view(COUNT, 1, SIDE, SIDE)
    return FactorDataset(
        images=images, factors=torch.from_numpy(grid_factors()), factor_names=list(FACTOR_NAMES),
        factor_sizes=list(FACTOR_SIZES), factor_values=factor_values(), is_grid=True, name=NAME,
        source=SOURCE, meta={"shape_names": list(SHAPE_NAMES), "cache": str(cache_path(root)),
                             "renderer_version": VERSION})


SOURCE = ("procedural re-rendering of deepmind/dsprites-dataset (Matthey et al. 2017), "
          "geometry fitted to the real images")

register(DatasetSpec(
    name=NAME, loader=load,
    description="dSprites rendered procedurally: the full 737,280-image grid, no download "
                "(cached on first use, ~3 GB)",
    factors=list(zip(FACTOR_NAMES, FACTOR_SIZES)), count=COUNT, image_shape=(1, SIDE, SIDE),
    files=[], source=SOURCE))
