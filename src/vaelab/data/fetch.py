"""``vaelab data fetch NAME``: download a dataset's files into the data directory.

urllib only. Each file goes to ``<final>.part`` first; an interrupted or cut-short download is
resumed with an HTTP Range request (on the next try, or the next run). A download is complete only
when it has every byte the server promised (Content-Length / Content-Range) and, where the size is
published, exactly that many; it is never empty; its checksum is verified (md5 where that is what is
published, sha256 where known); a file with no published checksum must at least look whole (gzip
stream to its end, tar to its end-of-archive blocks, zip central directory, JPEG end marker). Only
then is it renamed into place atomically. The sha256 of every download is recorded in
``fetch_manifest.json`` beside the file. A file already present is verified the same way (size and
the published or recorded checksum) before it counts as present; a damaged one is downloaded again.

Redirects may stay on the host asked, or go to the hosts a source lists (GitHub's raw files are
served from raw.githubusercontent.com); anything else, or https -> http, is refused.

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
import urllib.parse
import urllib.request
import zipfile
import zlib
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
    size: int | None = None  # bytes, where published
    hosts: tuple[str, ...] = ()  # other hosts its URL may redirect to

    @property
    def filename(self) -> str:
        return PurePosixPath(self.dest).name


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # torchvision's mirror of yann.lecun.com
_NORB = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"  # the URL dlib's norb.py names
# Sizes and sha256: tensorflow/datasets url_checksums (mnist.txt, shapes3d.txt, smallnorb.txt; the t10k
# MNIST files were checked against ../shared/data). md5 of the dSprites npz: BoevaLab/latte
# (latte/dataset/dsprites.py). Chairs, Cars3D and The Scream have nothing published: their sha256 is
# recorded at download and checked afterwards.
_GITHUB_RAW = ("raw.githubusercontent.com",)  # where github.com/.../raw/... redirects
REMOTE: dict[str, list[RemoteFile]] = {
    "dsprites": [RemoteFile(
        "https://github.com/deepmind/dsprites-dataset/raw/master/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
        "dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", md5="7da33b31b13a06f4b04a70402ce90c2e",
        hosts=_GITHUB_RAW)],
    "shapes3d": [RemoteFile("https://storage.googleapis.com/3d-shapes/3dshapes.h5", "shapes3d/3dshapes.h5",
                            sha256="0a0f6ed98baff276a50f3a081a7434d788da63cb135a98189b2a5b5769be1785",
                            size=267_573_662)],
    "mnist": [  # md5 of the .gz files: torchvision's mnist.py; sha256 and sizes: tensorflow/datasets
        RemoteFile(_MNIST + "train-images-idx3-ubyte.gz", "mnist/train-images-idx3-ubyte.gz",
                   md5="f68b3c2dcbeaaa9fbdd348bbdeb94873", size=9_912_422,
                   sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        RemoteFile(_MNIST + "train-labels-idx1-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz",
                   md5="d53e105ee54ea40749a09fcbcd1e9432", size=28_881,
                   sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        RemoteFile(_MNIST + "t10k-images-idx3-ubyte.gz", "mnist/t10k-images-idx3-ubyte.gz",
                   md5="9fb629c4189551a2d022fa330f9573f3", size=1_648_877,
                   sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        RemoteFile(_MNIST + "t10k-labels-idx1-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz",
                   md5="ec29112dd5afa0611ce80d1b7f02629c", size=4_542,
                   sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ],
    "chairs": [RemoteFile("https://www.di.ens.fr/willow/research/seeing3Dchairs/data/rendered_chairs.tar",
                          "chairs/rendered_chairs.tar")],
    # SmallNORB, both splits (dlib merges them); read gzipped as distributed
    "smallnorb": [RemoteFile(f"{_NORB}{stem}-{part}.mat.gz", f"smallnorb/{stem}-{part}.mat.gz", sha256=sha, size=n)
                  for stem, part, n, sha in (
                      ("smallnorb-5x46789x9x18x6x2x96x96-training", "dat", 131_896_188,
                       "5ffd6272a07d32695ee1082a26a41a93a37aab8c28da047f8c34ed348d214873"),
                      ("smallnorb-5x46789x9x18x6x2x96x96-training", "cat", 348,
                       "2784e542c1922060691090952b6cd6278879a216c90f81476f0f00256d42cdaa"),
                      ("smallnorb-5x46789x9x18x6x2x96x96-training", "info", 71_052,
                       "de7eb932ebe7a4ee16217fead60660d0eb3d23632c2f4d1c51f88c501c17bf32"),
                      ("smallnorb-5x01235x9x18x6x2x96x96-testing", "dat", 130_799_817,
                       "cf7104eed3e51174d2f65b66d1e5878b9da233b886f161b0d88f4510ba2c7474"),
                      ("smallnorb-5x01235x9x18x6x2x96x96-testing", "cat", 347,
                       "ecaf6d5bb8c3bc5eab9cf0258f6d2198dd474e016e374836fc097f2e5ff509ff"),
                      ("smallnorb-5x01235x9x18x6x2x96x96-testing", "info", 10_428,
                       "16adf314226327ee006d1a44db8cfef52773c06c829951d5653a9f6f310248a2"))],
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


def _host(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").lower()


class _GuardedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the host first asked or to one the source lists, never https -> http."""

    def __init__(self, url: str, hosts=()):
        super().__init__()
        self.url = url
        self.allowed = {_host(url)} | {h.lower() for h in hosts}

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = urllib.parse.urlsplit(newurl)
        host = (new.hostname or "").lower()
        why = None
        if host not in self.allowed:
            why = f"to another host, {host or newurl!r}, which its source does not list"
        elif urllib.parse.urlsplit(req.full_url).scheme == "https" and new.scheme != "https":
            why = "from https to plain http"
        if why:
            fp.close()
            raise VaelabError(f"download of {self.url} was redirected {why} ({newurl}); refused — fetch the file "
                              f"by hand if you trust that place, or use --base-url with a mirror")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _looks_complete(path: Path, name: str | None = None) -> str | None:
    """Why a file with no published checksum is clearly cut short or empty (None: it looks whole).

    gzip (also .tar.gz): the stream decompresses to its end and its CRC / length trailer checks out;
    tar: the last member's data is all there and the end-of-archive block follows; zip / npz: the
    central directory at the end reads; JPEG: the end-of-image marker is there. ``name``: the file's
    final name (its type), when ``path`` is a temporary."""
    name = (name or path.name).lower()
    try:
        size = path.stat().st_size
        if size == 0:
            return "it is empty"
        if name.endswith((".gz", ".tgz")):
            import gzip

            with gzip.open(path, "rb") as g:
                while g.read(_CHUNK * 4):
                    pass
        elif name.endswith(".tar"):
            with tarfile.open(path, "r:") as t:
                end = 0
                for m in t:
                    end = m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            with open(path, "rb") as f:
                f.seek(end)
                block = f.read(tarfile.BLOCKSIZE)
            if len(block) < tarfile.BLOCKSIZE or block.strip(b"\0"):
                return "the tar archive stops before its end"
        elif name.endswith((".zip", ".npz")):
            with zipfile.ZipFile(path) as z:
                z.infolist()
        elif name.endswith((".jpg", ".jpeg")):
            with open(path, "rb") as f:
                f.seek(max(0, size - 4096))
                tail = f.read().rstrip(b"\0\r\n ")
            if not tail.endswith(b"\xff\xd9"):
                return "the JPEG has no end-of-image marker"
    except (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile) as e:
        return f"it is cut short or corrupt ({e})"
    return None


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
             size: int | None = None, hosts=(), retries: int = 3, timeout: float = 60.0,
             quiet: bool = False) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify, rename atomically; return its sha256.

    size: the published size in bytes (the server must offer exactly that). hosts: other hosts a
    redirect may go to. Raises :class:`VaelabError` (one line) on network errors, a refused redirect,
    a download that stays short after ``retries`` resumptions (the .part is kept: run again to
    resume), a wrong size, an empty file, or a checksum mismatch (the .part is deleted; nothing is
    left at ``dest``)."""
    from .. import __version__

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    opener = urllib.request.build_opener(_GuardedRedirects(url, hosts))

    def refuse(msg):
        part.unlink(missing_ok=True)
        raise VaelabError(msg)

    if size is not None and part.exists() and part.stat().st_size > size:
        part.unlink()  # longer than the real file: not a prefix of it
    total = size
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": f"vaelab/{__version__}"}
        if have:
            headers["Range"] = f"bytes={have}-"
        req = urllib.request.Request(url, headers=headers)
        try:
            resp = opener.open(req, timeout=timeout)
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
                offered = int(crange.rsplit("/", 1)[1]) if "/" in crange and crange.rsplit("/", 1)[1].isdigit() else (
                    have + length if length is not None else None)
            else:  # 200: the server ignored the Range (or there was none): start over
                mode, have = "wb", 0
                offered = length
            if size is not None and offered is not None and offered != size:
                refuse(f"download of {url}: the server offers {offered:,} bytes, but the file is {size:,} bytes; "
                       f"refused (a different or broken file) — try again later, or fetch it by hand")
            total = size if size is not None else offered
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
        got = part.stat().st_size if part.exists() else 0
        if got == 0:
            refuse(f"download of {url} is empty (0 bytes, expected {total:,}) after {retries + 1} tries; "
                   f"try again later, or fetch it by hand")
        raise VaelabError(f"download of {url} stopped at {got:,} of {total:,} bytes after {retries + 1} tries; "
                          f"run the command again to resume from {part}")
    got = part.stat().st_size if part.exists() else 0
    if total is not None and got != total:
        refuse(f"download of {url}: got {got:,} bytes, expected {total:,}; removed it — try again")
    if got == 0:
        refuse(f"download of {url} is empty (0 bytes); removed it — try again, or fetch it by hand")
    digest = _digest(part, "sha256")
    for algo, want, got_ in (("sha256", sha256, digest), ("md5", md5, _digest(part, "md5") if md5 else None)):
        if want and got_ != want.lower():
            refuse(f"{dest.name}: {algo} checksum mismatch (got {got_}, expected {want}); the corrupt "
                   f"download was removed — try again, or fetch {url} by hand")
    if not (md5 or sha256):
        why = _looks_complete(part, dest.name)
        if why:
            refuse(f"download of {url}: {why}; removed it — try again, or fetch it by hand")
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    return digest


def _manifest(folder: Path) -> dict:
    try:
        data = json.loads((folder / "fetch_manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(dest: Path, url: str, sha256: str, verified: str) -> Path:
    manifest = dest.parent / "fetch_manifest.json"
    data = _manifest(dest.parent)
    data[dest.name] = {"url": url, "sha256": sha256, "bytes": dest.stat().st_size, "checksum": verified,
                       "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(manifest, data)
    return manifest


def verify_present(dest: Path, rf: RemoteFile) -> tuple[str | None, str]:
    """Check a file already at ``dest``: (what is wrong or None, how it was checked).

    Size against the published one (else the one recorded at download), then the published checksum
    (else the sha256 recorded in fetch_manifest.json); a file with neither must look whole."""
    entry = _manifest(dest.parent).get(dest.name)
    entry = entry if isinstance(entry, dict) else {}
    have = dest.stat().st_size
    if have == 0:
        return "it is empty (0 bytes)", ""
    want = rf.size if rf.size is not None else entry.get("bytes")
    if isinstance(want, int) and have != want:
        return f"it has {have:,} bytes, expected {want:,}", ""
    checks = [(a, v) for a, v in (("sha256", rf.sha256), ("md5", rf.md5)) if v]
    if checks:
        how = f"{' and '.join(a for a, _ in checks)} verified"
    elif entry.get("sha256"):
        checks, how = [("sha256", entry["sha256"])], "sha256 matches the one recorded at download"
    for algo, value in checks:
        got = _digest(dest, algo)
        if got != str(value).lower():
            return f"its {algo} is {got}, expected {value}", ""
    if checks:
        return None, how
    why = _looks_complete(dest)
    return why, "not verified: no checksum published or recorded"


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

    files: only these file names (e.g. the MNIST test files). Files already present are verified
    (size, checksum) and kept; a damaged one is downloaded again. ``force``: download them all again."""
    from . import registry

    spec = registry.get(name)  # unknown names: error with a suggestion
    root = paths.data_dir(data_dir)
    names = ALIASES.get(name, [name])
    remote = {n: REMOTE[n] for n in names if n in REMOTE}
    if spec.remote and name not in remote:  # a dataset that declares its own sources (a plugin's)
        remote[name] = list(spec.remote)
    if not remote:
        if name in MANUAL:
            raise VaelabError(MANUAL[name].format(dir=root))
        spec = registry.get(name)
        if not spec.needs_files:
            raise VaelabError(f"{name} needs no files: it is generated (`vaelab data info {name}`)")
        raise VaelabError(f"no download known for {name}: {spec.fetch_command or 'see vaelab data list'}")
    base = resolve_base_url(base_url)
    out = []
    for n in names:
        if n not in remote:
            say(MANUAL.get(n, f"{n}: no download known").format(dir=root))
            continue
        for rf in remote[n]:
            if files and rf.filename not in files:
                continue
            dest = root / rf.dest
            url = _url(rf, base)
            if dest.is_file() and not force:
                problem, how = verify_present(dest, rf)
                if problem is None:
                    say(f"{dest} already present ({how}; use --force to download again)")
                    if n == "cars":
                        _extract_cars(dest, say)
                    out.append(dest)
                    continue
                say(f"{dest} is damaged: {problem}; downloading it again")
            say(f"downloading {url}")
            digest = download(url, dest, md5=rf.md5, sha256=rf.sha256, size=rf.size, hosts=rf.hosts, quiet=quiet)
            algos = [a for a, v in (("sha256", rf.sha256), ("md5", rf.md5)) if v]
            verified = f"{' and '.join(algos)} verified" if algos else "recorded (no published checksum)"
            manifest = _record(dest, url, digest, verified)
            if rf.sha256 or rf.md5:
                say(f"{dest}: {verified}")
            else:
                say(f"{dest}: no published checksum; recorded its sha256 {digest} in {manifest}")
            if n == "cars":
                _extract_cars(dest, say)
            out.append(dest)
    if files and not out:
        known = [rf.filename for n in names for rf in remote.get(n, [])]
        raise VaelabError(f"{name} has no file named {', '.join(files)}; its files: {', '.join(known)}")
    return out
