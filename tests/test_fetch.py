"""Downloads against a local HTTP server on 127.0.0.1 (never the real network)."""
from __future__ import annotations

import collections
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vaelab.data.fetch import download, fetch
from vaelab.errors import VaelabError


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        srv = self.server
        name = self.path.lstrip("/")
        srv.hits[name] += 1
        srv.ranges.append(self.headers.get("Range"))
        srv.hosts.append(self.headers.get("Host"))
        if name in srv.redirects:
            self.send_response(302)
            self.send_header("Location", srv.redirects[name])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = srv.files.get(name)
        if data is None:
            self.send_error(404)
            return
        mode = srv.modes.get(name, "ok")
        start = 0
        rng = self.headers.get("Range")
        if rng and mode != "no_range":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if mode.startswith("no_length"):  # no Content-Length: the body ends when the connection closes
            self.close_connection = True
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if mode == "no_length_cut" and srv.hits[name] == 1 else body)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = mode == "truncate_always" or (mode == "truncate_once" and srv.hits[name] == 1)
        if cut:  # promise everything, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.modes, srv.hits, srv.ranges = {}, {}, collections.Counter(), []
    srv.redirects, srv.hosts = {}, []
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    monkeypatch.setenv("VAELAB_FETCH_BASE_URL", url)  # nothing below may reach the real network
    srv.url = url
    yield srv
    srv.shutdown()
    srv.server_close()


def _blob(n=300_000, seed=0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_download_verifies_and_renames(server, tmp_path):
    data = _blob()
    server.files["a.bin"] = data
    dest = tmp_path / "out" / "a.bin"
    digest = download(f"{server.url}/a.bin", dest, sha256=hashlib.sha256(data).hexdigest(), quiet=True)
    assert dest.read_bytes() == data and digest == hashlib.sha256(data).hexdigest()
    assert not (tmp_path / "out" / "a.bin.part").exists()


def test_truncated_response_is_resumed_with_range(server, tmp_path):
    data = _blob()
    server.files["t.bin"] = data
    server.modes["t.bin"] = "truncate_once"
    dest = tmp_path / "t.bin"
    download(f"{server.url}/t.bin", dest, md5=hashlib.md5(data).hexdigest(), quiet=True)
    assert dest.read_bytes() == data
    assert server.hits["t.bin"] == 2
    assert server.ranges[-1] == f"bytes={len(data) // 2}-"


def test_always_truncated_keeps_part_then_resumes_next_run(server, tmp_path):
    data = _blob()
    server.files["u.bin"] = data
    server.modes["u.bin"] = "truncate_always"
    dest = tmp_path / "u.bin"
    with pytest.raises(VaelabError) as e:
        download(f"{server.url}/u.bin", dest, retries=2, quiet=True)
    msg = str(e.value)
    assert "stopped at" in msg and "again to resume" in msg and "\n" not in msg
    assert not dest.exists()
    part = tmp_path / "u.bin.part"
    assert 0 < part.stat().st_size < len(data)
    server.modes["u.bin"] = "ok"
    download(f"{server.url}/u.bin", dest, sha256=hashlib.sha256(data).hexdigest(), quiet=True)
    assert dest.read_bytes() == data and not part.exists()


def test_server_ignoring_range_restarts(server, tmp_path):
    data = _blob(50_000)
    server.files["r.bin"] = data
    server.modes["r.bin"] = "no_range"
    (tmp_path / "r.bin.part").write_bytes(b"junk" * 10)
    download(f"{server.url}/r.bin", tmp_path / "r.bin", quiet=True)
    assert (tmp_path / "r.bin").read_bytes() == data


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["c.bin"] = _blob(1000)
    dest = tmp_path / "c.bin"
    with pytest.raises(VaelabError) as e:
        download(f"{server.url}/c.bin", dest, md5="0" * 32, quiet=True)
    assert "checksum mismatch" in str(e.value) and "c.bin" in str(e.value)
    assert not dest.exists() and not (tmp_path / "c.bin.part").exists()


def test_http_error_is_one_line(server, tmp_path):
    with pytest.raises(VaelabError, match="HTTP 404"):
        download(f"{server.url}/nope.bin", tmp_path / "n.bin", quiet=True)


def test_fetch_mnist_test_files_with_real_md5(server, shared_data, data_home):
    mnist = shared_data / "mnist"
    for n in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        if not (mnist / n).is_file():
            pytest.skip("MNIST test files missing")
        server.files[n] = (mnist / n).read_bytes()
    server.modes["t10k-images-idx3-ubyte.gz"] = "truncate_once"
    lines = []
    got = fetch("mnist", files=["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"], quiet=True,
                say=lines.append)
    assert [p.name for p in got] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert all("md5 verified" in ln for ln in lines if ln.startswith(str(data_home)))
    manifest = json.loads((data_home / "mnist" / "fetch_manifest.json").read_text())
    assert manifest["t10k-labels-idx1-ubyte.gz"]["checksum"] == "sha256 and md5 verified"
    from vaelab.data import load

    assert len(load("mnist", split="test")) == 10_000  # straight from the data directory
    # present files are not downloaded again
    hits = sum(server.hits.values())
    fetch("mnist", files=["t10k-labels-idx1-ubyte.gz"], quiet=True, say=lines.append)
    assert sum(server.hits.values()) == hits


def test_fetch_corrupt_mnist_file(server, data_home):
    server.files["t10k-labels-idx1-ubyte.gz"] = b"x" * 4542  # the published size, other bytes
    with pytest.raises(VaelabError, match="sha256 checksum mismatch"):
        fetch("mnist", files=["t10k-labels-idx1-ubyte.gz"], quiet=True, say=lambda s: None)
    assert not (data_home / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    server.files["t10k-labels-idx1-ubyte.gz"] = b"not the real labels"  # not even the published size
    with pytest.raises(VaelabError, match="offers 19 bytes, but the file is 4,542 bytes"):
        fetch("mnist", files=["t10k-labels-idx1-ubyte.gz"], quiet=True, say=lambda s: None)
    assert not (data_home / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list((data_home / "mnist").glob("*.part"))


def _unpublished(monkeypatch, name):
    """Pretend nothing (size, checksum) is published for ``name``'s files (the tests serve stand-ins)."""
    import dataclasses

    from vaelab.data import fetch as F

    monkeypatch.setitem(F.REMOTE, name, [dataclasses.replace(rf, md5=None, sha256=None, size=None)
                                         for rf in F.REMOTE[name]])


def test_fetch_unknown_checksum_is_recorded(server, data_home, monkeypatch):
    _unpublished(monkeypatch, "shapes3d")
    data = _blob(2000)
    server.files["3dshapes.h5"] = data
    lines = []
    fetch("shapes3d", quiet=True, say=lines.append)
    assert (data_home / "shapes3d" / "3dshapes.h5").read_bytes() == data
    assert any("no published checksum" in ln and hashlib.sha256(data).hexdigest() in ln for ln in lines)
    manifest = json.loads((data_home / "shapes3d" / "fetch_manifest.json").read_text())
    assert manifest["3dshapes.h5"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_fetch_manual_and_unknown(data_home):
    with pytest.raises(VaelabError, match="mmlab"):
        fetch("celeba")
    with pytest.raises(VaelabError, match="did you mean"):
        fetch("mnistt")
    with pytest.raises(VaelabError, match="no file named"):
        fetch("mnist", files=["nope.gz"])


def test_fetch_smallnorb_gz_files_where_the_loader_looks(server, data_home, monkeypatch):
    import gzip

    from vaelab.data.registry import get
    from vaelab.data.smallnorb import FILES

    _unpublished(monkeypatch, "smallnorb")
    for i, name in enumerate(FILES):
        server.files[name + ".gz"] = gzip.compress(_blob(500, seed=i))
    lines = []
    got = fetch("smallnorb", quiet=True, say=lines.append)
    assert sorted(p.name for p in got) == sorted(f + ".gz" for f in FILES)
    assert all((data_home / "smallnorb" / (f + ".gz")).read_bytes() == server.files[f + ".gz"] for f in FILES)
    assert sum("no published checksum" in ln for ln in lines) == 6
    assert get("smallnorb").present(data_home)


def test_fetch_the_scream_where_dsprites_scream_looks(server, data_home, shared_data):
    import io

    import numpy as np
    from PIL import Image

    from vaelab.data import load

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 480, 3), dtype=np.uint8)).save(buf, "JPEG")
    server.files["The_Scream.jpg"] = buf.getvalue()  # dlib's Wikimedia file name
    got = fetch("dsprites-scream", files=["scream.jpg"], quiet=True, say=lambda s: None)
    assert got == [data_home / "scream" / "scream.jpg"] and got[0].read_bytes() == buf.getvalue()
    npz = shared_data / "dsprites" / "dsprites_downsampled.npz"
    if npz.is_file():
        ds = load("dsprites-scream", root=npz)
        assert (ds.view.height, ds.view.width) == (274, 219)  # 480 x 600 fitted into 350 x 274
        assert ds.image_shape == (3, 64, 64)


# ------------------------------------------------------------------ nothing cut short, empty or foreign
def test_cut_short_without_content_length_is_resumed_to_the_published_size(server, tmp_path):
    """No Content-Length and half the body: the published size says it is short, so the rest is fetched."""
    data = _blob(40_000)
    server.files["h.bin"] = data
    server.modes["h.bin"] = "no_length_cut"
    dest = tmp_path / "h.bin"
    download(f"{server.url}/h.bin", dest, size=len(data), quiet=True)
    assert dest.read_bytes() == data and server.hits["h.bin"] == 2
    assert server.ranges[-1] == f"bytes={len(data) // 2}-"


def test_cut_short_archive_without_a_checksum_is_refused(server, data_home):
    """A tar cut short (no Content-Length, nothing published) never lands, and a later good one does."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        payload = _blob(30_000)
        info = tarfile.TarInfo("rendered_chairs/chair_0/a.png")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    whole = buf.getvalue()
    dest = data_home / "chairs" / "rendered_chairs.tar"
    server.modes["rendered_chairs.tar"] = "no_length"
    # what a dropped connection leaves: inside the member, or right after it (no end-of-archive blocks)
    for cut, why in ((20_000, "cut short or corrupt"), (512 + 30_208, "tar archive stops before its end")):
        server.files["rendered_chairs.tar"] = whole[:cut]
        with pytest.raises(VaelabError, match=why):
            fetch("chairs", quiet=True, say=lambda s: None)
        assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    server.files["rendered_chairs.tar"] = whole
    assert fetch("chairs", quiet=True, say=lambda s: None) == [dest] and dest.read_bytes() == whole


@pytest.mark.parametrize("mode", ["ok", "no_length"])
def test_empty_download_is_refused(server, data_home, capsys, mode):
    """0 bytes is never a dataset file: not for a published size (3D Shapes), not without one (The Scream)."""
    from vaelab.cli import main

    server.files["3dshapes.h5"] = b""
    server.files["The_Scream.jpg"] = b""
    server.modes["3dshapes.h5"] = server.modes["The_Scream.jpg"] = mode
    assert main(["data", "fetch", "shapes3d", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert "ready" not in out and err.count("\n") == 1 and "vaelab: error:" in err
    assert ("offers 0 bytes, but the file is 267,573,662" if mode == "ok" else "empty (0 bytes, expected 267,573,662)") in err
    assert main(["data", "fetch", "dsprites-scream", "--file", "scream.jpg", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert "ready" not in out and "empty (0 bytes)" in err and err.count("\n") == 1
    assert not (data_home / "shapes3d" / "3dshapes.h5").exists() and not (data_home / "scream" / "scream.jpg").exists()
    assert not list(data_home.rglob("*.part"))


def test_cross_host_redirect_is_refused(server, tmp_path):
    data = _blob(5000)
    server.files["real.bin"] = data
    port = server.server_address[1]
    server.redirects["same.bin"] = "/real.bin"  # same host: followed
    server.redirects["away.bin"] = f"http://localhost:{port}/real.bin"  # another host name, same machine
    download(f"{server.url}/same.bin", tmp_path / "same.bin", quiet=True)
    assert (tmp_path / "same.bin").read_bytes() == data
    with pytest.raises(VaelabError, match="redirected to another host, 'localhost'") as e:
        download(f"{server.url}/away.bin", tmp_path / "away.bin", quiet=True)
    assert "\n" not in str(e.value)
    assert server.hits["real.bin"] == 1 and not list(tmp_path.glob("away.bin*"))
    # a host the source lists (GitHub's raw.githubusercontent.com for dSprites) is followed
    download(f"{server.url}/away.bin", tmp_path / "away.bin", hosts=("localhost",), quiet=True)
    assert (tmp_path / "away.bin").read_bytes() == data and server.hosts[-1] == f"localhost:{port}"


def test_fetch_refuses_a_mirror_redirecting_elsewhere(server, data_home):
    port = server.server_address[1]
    server.redirects["t10k-labels-idx1-ubyte.gz"] = f"http://localhost:{port}/elsewhere.gz"
    with pytest.raises(VaelabError, match="another host"):
        fetch("mnist", files=["t10k-labels-idx1-ubyte.gz"], quiet=True, say=lambda s: None)
    assert server.hits["elsewhere.gz"] == 0


def test_present_files_are_verified_not_just_found(server, data_home, shared_data):
    """An empty file, a wrong-size one and a same-size one with other bytes are downloaded again."""
    name = "t10k-labels-idx1-ubyte.gz"
    real = (shared_data / "mnist" / name).read_bytes()
    server.files[name] = real
    dest = data_home / "mnist" / name
    dest.parent.mkdir(parents=True)
    for bad in (b"", real[:100], bytes(len(real))):
        dest.write_bytes(bad)
        lines = []
        assert fetch("mnist", files=[name], quiet=True, say=lines.append) == [dest]
        assert dest.read_bytes() == real
        assert any("is damaged" in ln for ln in lines) and not any("already present" in ln for ln in lines)
    hits = server.hits[name]
    lines = []
    fetch("mnist", files=[name], quiet=True, say=lines.append)
    assert server.hits[name] == hits and lines == [f"{dest} already present (sha256 and md5 verified; use --force "
                                                   f"to download again)"]


def test_present_file_without_published_checksum_is_checked_against_the_recorded_one(server, data_home):
    import gzip

    data = gzip.compress(_blob(3000))
    server.files["nips2015-analogy-data.tar.gz"] = data
    dest = data_home / "cars" / "nips2015-analogy-data.tar.gz"
    from vaelab.data import fetch as F

    F.download(f"{server.url}/nips2015-analogy-data.tar.gz", dest, quiet=True)
    F._record(dest, "x", hashlib.sha256(data).hexdigest(), "recorded (no published checksum)")
    rf = F.REMOTE["cars"][0]
    assert F.verify_present(dest, rf) == (None, "sha256 matches the one recorded at download")
    dest.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    problem, _ = F.verify_present(dest, rf)
    assert "sha256" in problem
    dest.write_bytes(data[:1000])
    assert "3,000" not in F.verify_present(dest, rf)[0] and "bytes, expected" in F.verify_present(dest, rf)[0]
    (dest.parent / "fetch_manifest.json").unlink()  # put there by hand: it must at least look whole
    assert "cut short" in F.verify_present(dest, rf)[0]
    dest.write_bytes(data)
    assert F.verify_present(dest, rf) == (None, "not verified: no checksum published or recorded")


def test_every_source_records_what_is_published():
    from vaelab.data.fetch import REMOTE

    for name in ("mnist", "shapes3d", "smallnorb"):
        assert all(rf.size and rf.sha256 for rf in REMOTE[name]), name
    assert all(rf.md5 for rf in REMOTE["mnist"] + REMOTE["dsprites"])
    assert REMOTE["dsprites"][0].hosts == ("raw.githubusercontent.com",)
