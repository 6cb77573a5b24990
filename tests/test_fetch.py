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
    assert manifest["t10k-labels-idx1-ubyte.gz"]["checksum"] == "md5 verified"
    from vaelab.data import load

    assert len(load("mnist", split="test")) == 10_000  # straight from the data directory
    # present files are not downloaded again
    hits = sum(server.hits.values())
    fetch("mnist", files=["t10k-labels-idx1-ubyte.gz"], quiet=True, say=lines.append)
    assert sum(server.hits.values()) == hits


def test_fetch_corrupt_mnist_file(server, data_home):
    server.files["t10k-labels-idx1-ubyte.gz"] = b"not the real labels"
    with pytest.raises(VaelabError, match="md5 checksum mismatch"):
        fetch("mnist", files=["t10k-labels-idx1-ubyte.gz"], quiet=True, say=lambda s: None)
    assert not (data_home / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_fetch_unknown_checksum_is_recorded(server, data_home):
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


def test_fetch_smallnorb_gz_files_where_the_loader_looks(server, data_home):
    from vaelab.data.registry import get
    from vaelab.data.smallnorb import FILES

    for i, name in enumerate(FILES):
        server.files[name + ".gz"] = _blob(500, seed=i)
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
