"""``vaelab data fetch NAME``: download a dataset's files into the data directory.

urllib only. Each file goes to ``<final>.part`` first; an interrupted or cut-short download is
resumed with an HTTP Range request (on the next try, or the next run); the checksum is verified
(md5 where that is what is published -- MNIST, SPEC 6 -- sha256 where known); only then is the file
renamed into place atomically. When no checksum is published, the sha256 of what was downloaded
is recorded in ``fetch_manifest.json`` beside the file and the command says so.

``VAELAB_FETCH_BASE_URL`` (or ``base_url=``) replaces every file's URL by ``BASE/<file name>``:
for mirrors, and for the tests' local server.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .. import paths
from ..errors import VaelabError
from .prepare import _fsync_dir, atomic_write_json, progress

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    url: str
    dest: str  # relative to the data directory
    md5: str | None = None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return PurePosixPath(self.dest).name


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # torchvision's mirror of yann.lecun.com
_NORB = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"  # the URL dlib's norb.py names
REMOTE: dict[str, list[RemoteFile]] = {
    "dsprites": [RemoteFile(
        "https://github.com/deepmind/dsprites-dataset/raw/master/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
        "dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz")],
    "shapes3d": [RemoteFile("https://storage.googleapis.com/3d-shapes/3dshapes.h5", "shapes3d/3dshapes.h5")],
    "mnist": [  # md5 of the .gz files: SPEC 6
        RemoteFile(_MNIST + "train-images-idx3-ubyte.gz", "mnist/train-images-idx3-ubyte.gz",
                   md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        RemoteFile(_MNIST + "train-labels-idx1-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz",
                   md5="d53e105ee54ea40749a09fcbcd1e9432"),
        RemoteFile(_MNIST + "t10k-images-idx3-ubyte.gz", "mnist/t10k-images-idx3-ubyte.gz",
                   md5="9fb629c4189551a2d022fa330f9573f3"),
        RemoteFile(_MNIST + "t10k-labels-idx1-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz",
                   md5="ec29112dd5afa0611ce80d1b7f02629c"),
    ],
    "chairs": [RemoteFile("https://www.di.ens.fr/willow/research/seeing3Dchairs/data/rendered_chairs.tar",
                          "chairs/rendered_chairs.tar")],
    # SmallNORB, both splits (dlib merges them); read gzipped as distributed; no published checksum
    "smallnorb": [RemoteFile(f"{_NORB}{stem}-{part}.mat.gz", f"smallnorb/{stem}-{part}.mat.gz")
                  for stem in ("smallnorb-5x46789x9x18x6x2x96x96-training", "smallnorb-5x01235x9x18x6x2x96x96-testing")
                  for part in ("dat", "cat", "info")],
    # Cars3D as dlib downloads it (Reed et al. 2015); the car_*_mesh.mat files are extracted from it
    "cars": [RemoteFile("http://www.scottreed.info/files/nips2015-analogy-data.tar.gz",
                        "cars/nips2015-analogy-data.tar.gz")],
    # The Scream for dsprites-scream: the file and place dlib's bin/dlib_download_data uses (no checksum)
    "scream": [RemoteFile("https://upload.wikimedia.org/wikipedia/commons/f/f4/The_Scream.jpg",
                          "scream/scream.jpg")],
}
ALIASES = {"mnist_inverted_mix": ["mnist"], "mnist_inverted_mix_batch": ["mnist"],
           "cars_chairs": ["cars", "chairs"], "cars_chairs_batch": ["cars", "chairs"],
           # dlib's dSprites variants: the official npz (not needed with base = "procedural") and the painting
           "dsprites-color": ["dsprites"], "dsprites-noisy": ["dsprites"], "dsprites-scream": ["dsprites", "scream"]}
MANUAL = {
    "celeba": "CelebA is distributed through Google Drive: download img_align_celeba.zip, list_attr_celeba.txt "
              "and list_eval_partition.txt from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into {dir}/celeba",
    "faces": "put your face images (a folder, zip or tar; e.g. 3D FACES renders, which are not redistributable) "
             "in {dir}/faces",
    "image-folder": "image-folder reads your own images: pass --root PATH",
    # the links in old copies of its README are dead (rr-learning/disentanglement_dataset#3, #4)
    "mpi3d": "MPI3D has no download here: get mpi3d_toy.npz, mpi3d_realistic.npz, mpi3d_real.npz or "
             "real3d_complicated_shapes_ordered.npz from the links in the README of "
             "https://github.com/rr-learning/disentanglement_dataset and put it in {dir}/mpi3d",
}
MANUAL["celeba_faces"] = MANUAL["celeba"] + "; and " + MANUAL["faces"]
MANUAL["celeba_faces_batch"] = MANUAL["celeba_faces"]


def resolve_base_url(override: str | None = None) -> str | None:
    """The mirror replacing every file's URL: ``override``, else ``VAELAB_FETCH_BASE_URL``, else None."""
    return override or os.environ.get("VAELAB_FETCH_BASE_URL") or None


def _url(rf: RemoteFile, base: str | None) -> str:
    return f"{base.rstrip('/')}/{PurePosixPath(rf.url).name}" if base else rf.url


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(_CHUNK), b""):
            h.update(b)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
             retries: int = 3, timeout: float = 60.0, quiet: bool = False) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify, rename atomically; return its sha256.

    Raises :class:`VaelabError` (one line) on network errors, a download that stays short after
    ``retries`` resumptions (the .part is kept: run again to resume), or a checksum mismatch (the
    .part is deleted; nothing is left at ``dest``)."""
    from .. import __version__

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total = None
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": f"vaelab/{__version__}"}
        if have:
            headers["Range"] = f"bytes={have}-"
        req = urllib.request.Request(url, headers=headers)
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to send: the .part is complete
                break
            raise VaelabError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            if attempt < retries:
                time.sleep(min(2.0 ** attempt, 10.0) * 0.1)
                continue
            raise VaelabError(f"cannot download {url}: {reason} (no internet? put the file at {dest} by hand)") from None
        with resp:
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if resp.status == 206:
                mode = "ab"
                crange = resp.headers.get("Content-Range", "")
                total = int(crange.rsplit("/", 1)[1]) if "/" in crange and crange.rsplit("/", 1)[1].isdigit() else (
                    have + length if length is not None else None)
            else:  # 200: the server ignored the Range (or there was none): start over
                mode, have = "wb", 0
                total = length
            got = have
            with open(part, mode) as f, progress(total=total, initial=have, desc=dest.name, unit="B",
                                                 unit_scale=True, disable=quiet) as bar:
                while True:
                    try:
                        b = resp.read(_CHUNK)
                    except (http.client.HTTPException, socket.timeout, ConnectionError, OSError):
                        break  # cut short: resume below
                    if not b:
                        break
                    try:
                        f.write(b)
                    except OSError as e:
                        raise VaelabError(f"cannot write {part}: {e}") from None
                    got += len(b)
                    bar.update(len(b))
                f.flush()
                os.fsync(f.fileno())
        if total is None or got >= total:
            break
        if attempt < retries:
            time.sleep(min(2.0 ** attempt, 10.0) * 0.1)
    else:
        size = part.stat().st_size if part.exists() else 0
        raise VaelabError(f"download of {url} stopped at {size:,} of {total:,} bytes after {retries + 1} tries; "
                          f"run the command again to resume from {part}")
    size = part.stat().st_size
    if total is not None and size != total:
        part.unlink(missing_ok=True)
        raise VaelabError(f"download of {url}: got {size:,} bytes, expected {total:,}; removed it — try again")
    digest = _digest(part, "sha256")
    for algo, want, got_ in (("sha256", sha256, digest), ("md5", md5, _digest(part, "md5") if md5 else None)):
        if want and got_ != want.lower():
            part.unlink(missing_ok=True)
            raise VaelabError(f"{dest.name}: {algo} checksum mismatch (got {got_}, expected {want}); the corrupt "
                              f"download was removed — try again, or fetch {url} by hand")
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    return digest


def _record(dest: Path, url: str, sha256: str, verified: str) -> Path:
    manifest = dest.parent / "fetch_manifest.json"
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        data = {}
    data[dest.name] = {"url": url, "sha256": sha256, "bytes": dest.stat().st_size, "checksum": verified,
                       "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(manifest, data)
    return manifest


def _extract_cars(archive: Path, say) -> None:
    """Pull ``car_*_mesh.mat`` out of nips2015-analogy-data.tar.gz into the archive's folder."""
    out = archive.parent
    n = 0
    try:
        with tarfile.open(archive, "r:*") as t:
            for m in t:
                name = PurePosixPath(m.name).name
                if m.isfile() and name.startswith("car_") and name.endswith("_mesh.mat"):
                    target = out / name
                    if not target.exists():
                        data = t.extractfile(m).read()
                        tmp = target.with_name(f".{name}.tmp-{os.getpid()}")
                        tmp.write_bytes(data)
                        os.replace(tmp, target)
                    n += 1
    except (tarfile.TarError, EOFError, OSError) as e:
        raise VaelabError(f"{archive}: cannot extract ({e}); delete it and fetch again") from None
    if n == 0:
        raise VaelabError(f"{archive}: no car_*_mesh.mat files inside")
    say(f"extracted {n} car_*_mesh.mat files into {out}")


def fetch(name: str, *, data_dir: str | os.PathLike | None = None, base_url: str | None = None,
          force: bool = False, files: list[str] | None = None, quiet: bool = False, say=print) -> list[Path]:
    """Download dataset ``name``'s files into the data directory; returns their paths.

    files: only these file names (e.g. the MNIST test files). Existing files are kept unless ``force``."""
    from . import registry

    registry.get(name)  # unknown names: error with a suggestion
    root = paths.data_dir(data_dir)
    names = ALIASES.get(name, [name])
    if not any(n in REMOTE for n in names):
        if name in MANUAL:
            raise VaelabError(MANUAL[name].format(dir=root))
        spec = registry.get(name)
        if not spec.needs_files:
            raise VaelabError(f"{name} needs no files: it is generated (`vaelab data info {name}`)")
        raise VaelabError(f"no download known for {name}: {spec.fetch_command or 'see vaelab data list'}")
    base = resolve_base_url(base_url)
    out = []
    for n in names:
        if n not in REMOTE:
            say(MANUAL.get(n, f"{n}: no download known").format(dir=root))
            continue
        for rf in REMOTE[n]:
            if files and rf.filename not in files:
                continue
            dest = root / rf.dest
            url = _url(rf, base)
            if dest.exists() and not force:
                say(f"{dest} already present (use --force to download again)")
                out.append(dest)
                continue
            say(f"downloading {url}")
            digest = download(url, dest, md5=rf.md5, sha256=rf.sha256, quiet=quiet)
            if rf.sha256:
                verified = "sha256 verified"
            elif rf.md5:
                verified = "md5 verified"
            else:
                verified = "recorded (no published checksum)"
            manifest = _record(dest, url, digest, verified)
            if rf.sha256 or rf.md5:
                say(f"{dest}: {verified}")
            else:
                say(f"{dest}: no published checksum; recorded its sha256 {digest} in {manifest}")
            if n == "cars":
                _extract_cars(dest, say)
            out.append(dest)
    if files and not out:
        known = [rf.filename for n in names for rf in REMOTE.get(n, [])]
        raise VaelabError(f"{name} has no file named {', '.join(files)}; its files: {', '.join(known)}")
    return out
