"""`vaelab explore`: the server's API (decode, bad parameters, path traversal, 404s, still serving
afterwards), the CLI's error paths and Ctrl-C, and the page end to end in a real headless Chromium
(Playwright driving Debian's chromium; skipped with a message where either is missing).

The runs are the small session runs of test_viz.py (FactorVAE on the real dSprites subset, 20 steps;
UG-VAE on MNIST, 4 steps)."""
from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_viz import build_run  # noqa: F401  (the shared session runs)
from vaelab.cli import main
from vaelab.explore import DEAD_KL, Explorer, serve
from vaelab.explore.explorer import factor_labels


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shared_data) -> Path:
    return build_run(tmp_path_factory.getbasetemp(), shared_data, "dsprites")


@pytest.fixture(scope="module")
def server(run_dir):
    s = serve(run_dir, port=0)
    yield s
    s.stop()


def request(server, path: str, method: str = "GET", headers=None):
    """(status, parsed JSON or raw bytes, headers) of one request, the path sent exactly as given."""
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", (headers or {}).get("Host", f"127.0.0.1:{server.port}"))
        c.endheaders()
        r = c.getresponse()
        body = r.read()
    finally:
        c.close()
    if r.getheader("Content-Type", "").startswith("application/json"):
        body = json.loads(body)
    return r.status, body, r


def png(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def still_serving(server):
    st, info, _ = request(server, "/api/info")
    assert st == 200 and info["latent_dim"] == 10


# ---------------------------------------------------------------------- the API
def test_info_orders_latents_by_kl(server):
    st, info, r = request(server, "/api/info")
    assert st == 200 and r.getheader("Cache-Control") == "no-store"
    kl = [lat["kl"] for lat in info["latents"]]
    assert kl == sorted(kl, reverse=True) and sorted(lat["index"] for lat in info["latents"]) == list(range(10))
    assert all(lat["dead"] == (lat["kl"] <= DEAD_KL) for lat in info["latents"])
    assert all(lat["range"][0] <= -3 and lat["range"][1] >= 3 for lat in info["latents"])
    assert [f["name"] for f in info["factors"]] == ["shape", "scale", "orientation", "posX", "posY"]
    assert info["factors"][0]["values"] == ["square", "ellipse", "heart"]
    assert info["images"] == 46080 and info["image_shape"] == [1, 64, 64] and info["global_latent"] is None
    assert "vaelab evaluate" in info["eval"]  # no eval.json: the page says how to get factor labels


def test_image_and_decode(server):
    st, im, _ = request(server, "/api/image?index=123")
    assert st == 200 and im["index"] == 123 and len(im["z"]) == 10 and len(im["factors"]) == 5
    original, recon = png(im["original"]), png(im["reconstruction"])
    assert original.shape == recon.shape == (64, 64)
    ex = server.explorer
    assert np.array_equal(original, ex.ds.gather([123])[0, 0].numpy())

    z = ",".join(str(v) for v in im["z"])
    st, dec, _ = request(server, f"/api/decode?z={z}")
    assert st == 200 and dec["components"] is None
    assert np.array_equal(png(dec["image"]), recon)  # the image's code decodes to its reconstruction
    want = ex.run.decode(np.asarray([im["z"]], np.float32))[0, 0].numpy()
    assert np.abs(png(dec["image"]) / 255.0 - want).max() <= 1 / 255 + 1e-4  # the decoder's mean image

    top = server.explorer.info()["latents"][0]["index"]
    moved = list(im["z"])
    moved[top] = 3.0 if moved[top] < 0 else -3.0
    st, dec2, _ = request(server, "/api/decode?z=" + ",".join(map(str, moved)))
    assert st == 200 and np.abs(png(dec2["image"]).astype(int) - recon).mean() > 0.5  # the top latent matters


def test_find_by_factors(server):
    st, found, _ = request(server, "/api/find?shape=2&scale=5&posX=0")
    assert st == 200 and found["exact"]
    f = server.explorer.ds.factors[found["index"]].tolist()
    assert f[0] == 2 and f[1] == 5 and f[3] == 0
    st, im, _ = request(server, f"/api/image?index={found['index']}")
    assert im["factors"] == f
    st, anyone, _ = request(server, "/api/find")
    assert st == 200 and 0 <= anyone["index"] < 46080


@pytest.mark.parametrize("path, words", [
    ("/api/image", "missing parameter 'index'"),
    ("/api/image?index=46080", "out of range"),
    ("/api/image?index=-1", "out of range"),
    ("/api/image?index=1.5", "integer"),
    ("/api/image?index=abc", "integer"),
    ("/api/image?index=1&index=2", "given twice"),
    ("/api/image?index=1&evil=2", "unknown parameter"),
    ("/api/image?index", "malformed query"),
    ("/api/decode?z=1,2,3", "must be 10 numbers"),
    ("/api/decode?z=" + ",".join(["0"] * 11), "must be 10 numbers"),
    ("/api/decode?z=a,b", "comma-separated numbers"),
    ("/api/decode?z=" + ",".join(["nan"] * 10), "finite"),
    ("/api/decode?z=" + ",".join(["inf"] * 10), "finite"),
    ("/api/decode?z=" + ",".join(["1e6"] * 10), "within"),
    ("/api/decode?z=" + ",".join(["0"] * 10) + "&beta=1", "UG-VAE"),
    ("/api/decode?z=%ff%fe", "malformed query"),
    ("/api/decode?z=" + "1," * 9000 + "1", "too long"),
    ("/api/find?shape=3", "out of range"),
    ("/api/find?colour=1", "unknown parameter"),
    ("/api/component?k=0", "UG-VAE"),
    ("/api/info?x=1", "unknown parameter"),
])
def test_bad_parameters_are_400_with_a_json_error(server, path, words):
    st, body, r = request(server, path)
    assert st == 400, (path, st, body)
    assert r.getheader("Content-Type") == "application/json" and words in body["error"], body
    still_serving(server)


SECRET = "vaelab-secret-sentinel-7f3a"


@pytest.mark.parametrize("path", [
    "/secret.txt", "/static/secret.txt", "/static/../secret.txt", "/static/..%2fsecret.txt",
    "/static/%2e%2e/%2e%2e/secret.txt", "/../../../../etc/passwd", "/static/../../../../etc/passwd",
    "/static/explore.js/../../secret.txt", "/static/..\\..\\secret.txt", "/static/explore.js%00.png",
    "/static/", "/static", "/static/index.html", "/api/", "/api/info/", "/api/info/../../secret.txt",
    "/config.toml", "/checkpoints", "/%2e%2e/config.toml", "//etc/passwd", "/explorer.py", "/index.htm",
])
def test_no_file_outside_the_whitelist(server, run_dir, path):
    (run_dir / "secret.txt").write_text(SECRET)
    st, body, _ = request(server, path)
    assert st == 404, (path, st)
    text = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert SECRET.encode() not in text and b"root:" not in text and b"[model]" not in text
    still_serving(server)


def test_static_files_and_headers(server):
    st, page, r = request(server, "/")
    assert st == 200 and r.getheader("Content-Type").startswith("text/html")
    assert "default-src 'none'" in r.getheader("Content-Security-Policy")
    assert b"/static/explore.js" in page and b"http" not in page.replace(b'http-equiv', b'')  # nothing from elsewhere
    for name in ("explore.js", "explore.css"):
        st, body, r = request(server, f"/static/{name}")
        assert st == 200 and b"https://" not in body and b"http://" not in body
    st, body, r = request(server, "/", method="HEAD")
    assert st == 200 and body == b"" and int(r.getheader("Content-Length")) > 100


def test_other_methods_hosts_and_garbage_keep_it_serving(server):
    st, _, _ = request(server, "/api/info", method="POST")
    assert st == 501
    st, body, _ = request(server, "/api/info", headers={"Host": "evil.example:80"})
    assert st == 403 and "Host" in body["error"]  # a page elsewhere cannot reach it by DNS rebinding
    assert request(server, "/api/info", headers={"Host": "localhost"})[0] == 200
    for raw in (b"GARBAGE\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01",
                b"GET /api/info HTTP/9.9\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
    still_serving(server)


def test_concurrent_decodes_are_serialised(server):
    ex = server.explorer
    active, peak, lock = [0], [0], threading.Lock()
    original = ex._decode

    def counting(*a, **k):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.002)
            return original(*a, **k)
        finally:
            with lock:
                active[0] -= 1

    ex._decode = counting
    errors = []

    def client(k):
        for i in range(4):
            z = ",".join(str((k + i) * 0.1 - 1) for _ in range(10))
            st, body, _ = request(server, f"/api/decode?z={z}")
            if st != 200:
                errors.append(body)

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        del ex._decode
    assert not errors and peak[0] == 1  # the lock: one decode at a time


def test_factor_labels_from_eval_json(tmp_path):
    mi = np.zeros((10, 3))
    mi[4, 0], mi[4, 1], mi[7, 1], mi[2, 2] = 0.9, 0.5, 1.2, 0.1  # factor b goes to z7, a to z4
    p = tmp_path / "eval.json"
    p.write_text(json.dumps({"mig.mutual_info": mi.tolist(), "mig.entropy": {"a": 1.0, "b": 2.0, "c": 0.5},
                             "step": 20}))
    labels, note = factor_labels(p, 10, 20)
    assert labels == {4: "a 0.90", 7: "b 0.60", 2: "c 0.20"} and "MIG" in note and "not this" not in note
    assert "scored at step 20" in factor_labels(p, 10, 30)[1]
    assert factor_labels(p, 12, 20)[0] == {}  # another model's scores: no labels
    p.write_text("{not json")
    assert factor_labels(p, 10, 20)[0] == {}


def test_labels_reach_the_page(run_dir, tmp_path):
    run = tmp_path / "labelled"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("images", "tensorboard", "*.html"))
    mi = np.full((10, 5), 0.01)
    mi[3, 4] = 2.0
    (run / "eval.json").write_text(json.dumps({"mig.mutual_info": mi.tolist(), "step": 20, "mig.entropy": {
        "shape": 1.0, "scale": 1.0, "orientation": 1.0, "posX": 1.0, "posY": 2.5}}))
    with serve(run, port=0) as s:
        _, info, _ = request(s, "/api/info")
    z3 = next(lat for lat in info["latents"] if lat["index"] == 3)
    assert z3["label"].startswith("posY 0.80")


def test_ugvae_global_latent_and_components(tmp_path_factory, shared_data):
    ug = build_run(tmp_path_factory.getbasetemp(), shared_data, "ugvae")
    with serve(ug, port=0) as s:
        _, info, _ = request(s, "/api/info")
        u = info["global_latent"]
        assert u and len(u["beta"]) == u["dim_beta"] == len(u["beta_ref"]) and u["components"] >= 2
        _, im, _ = request(s, "/api/image?index=3")
        assert len(im["beta"]) == u["dim_beta"] and abs(sum(im["components"]) - 1) < 1e-3
        z, beta = ",".join(map(str, im["z"])), ",".join(map(str, im["beta"]))
        st, dec, _ = request(s, f"/api/decode?z={z}&beta={beta}")
        assert st == 200 and np.array_equal(png(dec["image"]), png(im["reconstruction"]))
        moved = ",".join(str(v + 3.0) for v in im["beta"])
        st, dec2, _ = request(s, f"/api/decode?z={z}&beta={moved}")
        assert st == 200 and len(dec2["components"]) == u["components"]
        st, comp, _ = request(s, f"/api/component?k=1&beta={beta}")
        assert st == 200 and comp["component"] == 1 and len(comp["z"]) == info["latent_dim"]
        assert request(s, f"/api/component?k={u['components']}")[0] == 400
        assert request(s, f"/api/decode?z={z}&beta=1,2")[0] == 400
        st, found, _ = request(s, "/api/find?digit=3")  # MNIST's label is its one factor
        assert st == 200 and found["exact"] and s.explorer.ds.factors[found["index"], 0].item() == 3


# ---------------------------------------------------------------------- the CLI
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error:") and "\n" not in err, err
    return err


def test_cli_without_checkpoint_is_one_line_exit_2(run_dir, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "config.toml", bare / "config.toml")
    assert main(["explore", str(bare), "--no-browser"]) == 2
    assert "no checkpoint" in _one_line_error(capsys)
    assert main(["explore", str(tmp_path / "nowhere"), "--no-browser"]) == 2
    assert "not a folder" in _one_line_error(capsys)
    assert main(["explore", str(run_dir), "--step", "7", "--no-browser"]) == 2
    assert "7" in _one_line_error(capsys)


def test_cli_port_in_use_is_one_line_exit_2(run_dir, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["explore", str(run_dir), "--port", str(port), "--no-browser"]) == 2
    assert f"port {port}" in _one_line_error(capsys)
    assert main(["explore", str(run_dir), "--port", "70000", "--no-browser"]) == 2
    assert "--port" in _one_line_error(capsys)


def test_cli_warns_off_loopback(run_dir, monkeypatch, capsys):
    """--host beyond this machine: one warning line (bound on loopback here: tests stay off the network)."""
    import vaelab.explore.explorer as explorer_mod
    import vaelab.explore.server as server_mod

    real_bind = server_mod.bind
    monkeypatch.setattr(server_mod, "bind", lambda host, port, verbose=False: real_bind("127.0.0.1", 0))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(explorer_mod, "Explorer", interrupted)
    assert main(["explore", str(run_dir), "--host", "0.0.0.0", "--no-browser"]) == 0
    out = capsys.readouterr()
    assert out.err.strip().count("\n") == 0 and "no authentication" in out.err and out.err.startswith("vaelab: warning:")
    assert out.out.strip() == "vaelab explore: stopped"


@pytest.mark.parametrize("started_with", ["default", "sigint-ignored"])
def test_cli_serves_and_stops_on_ctrl_c(run_dir, started_with):
    """Ctrl-C / kill -INT stop it, also when it was started as a background job is (SIGINT ignored, so
    Python installs no KeyboardInterrupt handler of its own: it hung before cli.main installed one)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if started_with == "sigint-ignored" else None
    proc = subprocess.Popen([sys.executable, "-m", "vaelab", "explore", str(run_dir), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=ignore)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(" at ", 1)[1].split()[0]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/api/info")
        assert c.getresponse().status == 200
        c.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "vaelab explore: stopped" and err.strip() == "", (out, err)


# ---------------------------------------------------------------------- the page in a real browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def browser_or_skip():
    """(sync_playwright, chromium path): Playwright drives Debian's chromium and never downloads its own."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test skipped: playwright is not installed (pip install -e '.[test]')")
    exe = os.environ.get("VAELAB_CHROMIUM") or next(
        (shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
    if not exe:
        pytest.skip("browser test skipped: chromium is not installed (apt-get install -y chromium)")
    return sync_playwright, exe


PIXELS = """(id) => { const img = document.getElementById(id); const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  return Array.from(g.getImageData(0, 0, c.width, c.height).data); }"""


def test_page_in_chromium(server, tmp_path):
    sync_playwright, exe = browser_or_skip()
    ex = server.explorer
    active, peak, lock = [0], [0], threading.Lock()
    original = ex._decode

    def counting(*a, **k):  # how many decodes the page has at the server at once
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return original(*a, **k)
        finally:
            with lock:
                active[0] -= 1

    ex._decode = counting
    console = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                page.on("requestfailed", lambda r: console.append(f"requestfailed: {r.url}"))
                page.goto(server.url)
                page.wait_for_selector("body[data-ready='1']", timeout=30_000)
                assert page.locator("#sliders .slider").count() + page.locator("#dead-sliders .slider").count() == 10
                before = np.asarray(page.evaluate(PIXELS, "img-current"))
                n0 = page.evaluate("window.vaelabExplore.stats.decodes")

                # drag the top latent's slider to the far end from where it is
                top = page.locator("#sliders .slider input[type=range]").first
                box = top.bounding_box()
                value = float(top.input_value())
                x = box["x"] + (3 if value > 0 else box["width"] - 3)
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                page.mouse.down()
                for k in range(1, 11):
                    page.mouse.move(box["x"] + box["width"] / 2 + (x - box["x"] - box["width"] / 2) * k / 10,
                                    box["y"] + box["height"] / 2)
                page.mouse.up()
                page.wait_for_function("n => window.vaelabExplore.stats.decodes > n", arg=n0, timeout=10_000)
                page.wait_for_timeout(300)  # the last slider state's decode
                after = np.asarray(page.evaluate(PIXELS, "img-current"))
                assert after.shape == before.shape and np.abs(after - before).mean() > 0.5, "the image did not change"
                assert abs(float(top.input_value()) - value) > 2

                # animate a latent, interpolate, a random image, reset, find by factors, save
                n1 = page.evaluate("window.vaelabExplore.stats.decodes")
                page.locator("#sliders .slider .play").first.click()
                page.wait_for_timeout(700)
                page.locator("#sliders .slider .play").first.click()
                assert page.evaluate("window.vaelabExplore.stats.decodes") >= n1 + 3
                page.locator("#interp").fill("0.5")
                page.locator("#interp").dispatch_event("input")
                page.locator("#random").click()
                page.locator("#reset").click()
                page.select_option("#factor-0", "2")
                page.locator("#find").click()
                page.wait_for_timeout(300)
                assert page.evaluate("window.vaelabExplore.state.index") is not None
                shape = page.evaluate("window.vaelabExplore.state.index")
                assert ex.ds.factors[shape, 0].item() == 2
                with page.expect_download() as dl:
                    page.locator("#save").click()
                saved = tmp_path / "saved.png"
                dl.value.save_as(saved)
                assert Image.open(saved).size == (64, 64)
                stats = page.evaluate("window.vaelabExplore.stats")
                page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)
            finally:
                browser.close()
    finally:
        del ex._decode
    assert stats["errors"] == [] and console == [], (stats["errors"], console)
    assert peak[0] == 1  # the page keeps one decode in flight, however fast the slider moves
    assert np.median(stats["times"]) < 1000
