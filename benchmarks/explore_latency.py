"""`vaelab explore`'s decode round trip: request to image, over HTTP (median and p95).

Starts the explorer's server on 127.0.0.1 for a run and moves one slider at a time as a drag does:
each request carries the image's code with one latent changed, over one keep-alive connection (as the
page keeps one request in flight). A round trip is the request sent, the JSON answer read and its PNG
decoded to pixels. ``--browser`` measures the same in headless Chromium (Playwright driving Debian's
chromium): the page's own clock from the fetch to the image decoded and shown, the slider moved by
input events. Target: under 50 ms on 2 CPU cores for the 64x64 nets.

    python benchmarks/explore_latency.py --run runs/quickstart [--n 300] [--browser] [--screenshot page.png]
    python benchmarks/explore_latency.py --net burgess64        # a 2-step run trained here on the dSprites subset

Without ``--run`` a run is trained for 2 steps in a temporary folder (the latency does not depend on
training) from ``--npz`` (default: ../shared/data/dsprites/dsprites_downsampled.npz beside the project).
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NPZ = ROOT.parent / "shared" / "data" / "dsprites" / "dsprites_downsampled.npz"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def tiny_run(out: Path, npz: Path, net: str | None) -> Path:
    from vaelab.cli import main

    if not npz.is_file():
        raise SystemExit(f"no run given and {npz} is missing: pass --run RUN or --npz PATH")
    args = ["train", "quickstart", "--out", str(out), "--steps", "2", "--checkpoint-every", "2", "--device", "cpu",
            "--quiet", "--set", "data.name=dsprites", "--set", f"data.root={npz}", "--set", "train.batch_size=8",
            "--set", "train.tensorboard=false", "--set", "train.image_every=0"]
    if net:
        args += ["--set", f"model.net={net}"]
    if main(args) != 0:
        raise SystemExit("training the benchmark's run failed")
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def over_http(server, n: int, warmup: int, seed: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    def get(path):
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"{path[:60]}: HTTP {r.status} {body[:200]!r}")
        return json.loads(body)

    info = get("/api/info")
    z = np.asarray(get(f"/api/image?index={info['start']}")["z"], dtype=np.float64)
    order = [lat["index"] for lat in info["latents"]]
    times, server_ms = [], []
    for i in range(warmup + n):
        j = order[i % min(4, len(order))]  # the top latents, as a user drags them
        lo, hi = info["latents"][order.index(j)]["range"]
        z[j] = rng.uniform(lo, hi)
        q = "z=" + ",".join(f"{v:.4f}" for v in z)
        t0 = time.perf_counter()
        d = get("/api/decode?" + q)
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(d["image"].split(",", 1)[1]))))
        dt = 1000 * (time.perf_counter() - t0)
        assert pixels.size > 0
        if i >= warmup:
            times.append(dt)
            server_ms.append(d["ms"])
    c.close()
    return times, server_ms


MOVE = """async ([n, seed]) => {
  const st = window.vaelabExplore.stats;
  const inputs = Array.from(document.querySelectorAll('#sliders .slider input[type=range]')).slice(0, 4);
  let s = seed;
  const rand = () => { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648; };
  const first = st.times.length;
  for (let i = 0; i < n; i++) {
    const el = inputs[i % inputs.length];
    const before = st.decodes;
    el.value = String(parseFloat(el.min) + rand() * (parseFloat(el.max) - parseFloat(el.min)));
    el.dispatchEvent(new Event('input', {bubbles: true}));
    while (st.decodes === before) await new Promise(r => setTimeout(r, 0));
  }
  return st.times.slice(first);
}"""


def in_browser(server, n: int, warmup: int, seed: int, screenshot: str | None) -> list[float]:
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # Debian's chromium, never a download
    from playwright.sync_api import sync_playwright

    exe = os.environ.get("VAELAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise SystemExit("--browser needs chromium (apt-get install -y chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            page.evaluate(MOVE, [warmup, seed + 1])
            times = page.evaluate(MOVE, [n, seed])
            if screenshot:
                page.evaluate("window.vaelabExplore.state.rows.z.length && document.getElementById('reset').click()")
                page.wait_for_timeout(500)
                page.screenshot(path=screenshot, full_page=True)
                print(f"screenshot: {screenshot}")
        finally:
            browser.close()
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="run folder (default: a 2-step run trained here)")
    ap.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
    ap.add_argument("--npz", type=Path, default=DEFAULT_NPZ, help="dSprites npz for the run trained here")
    ap.add_argument("--net", help="net of the run trained here (default: the quick start's fvae64)")
    ap.add_argument("--n", type=int, default=300, help="timed round trips (default 300)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--browser", action="store_true", help="also measure in headless Chromium (Playwright)")
    ap.add_argument("--screenshot", help="with --browser: save a screenshot of the page here")
    args = ap.parse_args()

    import torch

    from vaelab.explore import serve

    tmp = None
    try:
        run = args.run
        if run is None:
            tmp = tempfile.mkdtemp(prefix="explore-bench-")
            run = tiny_run(Path(tmp) / "run", args.npz, args.net)
        server = serve(run, port=0, step=args.step)
        try:
            info = server.explorer.info()
            print(f"run {info['path']} (step {info['step']}): {info['objective']}, net {info['net']}, "
                  f"{info['latent_dim']} latents, images {'x'.join(map(str, info['image_shape']))}")
            print(f"cpu cores {os.cpu_count()}, torch {torch.__version__} (decodes on 1 thread), "
                  f"load average {os.getloadavg()[0]:.2f}")
            t, s = over_http(server, args.n, args.warmup, args.seed)
            print(f"HTTP round trip over {len(t)} decodes: median {statistics.median(t):.2f} ms, p95 {pct(t, 95):.2f} ms, "
                  f"max {max(t):.2f} ms (server: model + PNG median {statistics.median(s):.2f} ms)")
            if args.browser:
                b = in_browser(server, args.n, args.warmup, args.seed, args.screenshot)
                print(f"Chromium round trip (fetch to image shown) over {len(b)} decodes: median "
                      f"{statistics.median(b):.2f} ms, p95 {pct(b, 95):.2f} ms, max {max(b):.2f} ms")
        finally:
            server.stop()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
