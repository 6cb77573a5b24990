"""The HTML report in a real browser: headless Chromium loads the run report and the comparison page,
with no console errors, every image decoded (naturalWidth > 0), a non-blank rendering, and a table
that sorts when its headers are clicked. Skips when Chromium is not installed."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from test_viz import add_eval_and_experiments, build_run, copy_run  # noqa: F401  (shared session run)
from vaelab.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Injected into a copy of each page: records errors (script errors, failed resources, console.error),
# checks every <img> once the page has loaded, clicks the first sortable table's headers, and writes
# the result into the DOM, which --dump-dom prints.
CHECK = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(e.message || ("failed to load " + ((e.target && (e.target.src || e.target.href)) || "?").slice(0, 60)));
  }, true);
  var ce = console.error;
  console.error = function () { errors.push(Array.prototype.join.call(arguments, " ")); ce.apply(console, arguments); };
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.alt; });
    var out = {images: imgs.length, broken: broken, errors: errors, sorts: []};
    var t = document.querySelector("table.sortable");
    if (t) {
      var col = function (k) {
        return Array.prototype.map.call(t.tBodies[0].rows, function (r) { return r.cells[k].textContent.trim(); });
      };
      Array.prototype.forEach.call(t.tHead.rows[0].cells, function (th, k) {
        if (th.textContent === "run" || th.textContent === "steps") {
          th.click(); var a = col(k); th.click(); var b = col(k);
          out.sorts.push({col: th.textContent, asc: a, desc: b});
        }
      });
    }
    var pre = document.createElement("pre");
    pre.id = "vaelab-check";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
})();
</script>"""


def chromium() -> str:
    exe = os.environ.get("VAELAB_CHROMIUM") or next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if not exe:
        pytest.skip("headless browser test skipped: chromium is not installed (apt-get install -y chromium)")
    return exe


def browse(exe, page, tmp_path, *extra) -> subprocess.CompletedProcess:
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr", "--v=0", *extra, page.resolve().as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def checked(exe, page, tmp_path) -> dict:
    """Load a copy of ``page`` with the check script; returns its findings."""
    text = page.read_text(encoding="utf-8")
    assert text.count("<head>") == 1
    probe = page.with_name(page.stem + ".check.html")
    probe.write_text(text.replace("<head>", "<head>" + CHECK, 1), encoding="utf-8")
    res = browse(exe, probe, tmp_path, "--dump-dom", "--virtual-time-budget=10000")
    m = re.search(r'<pre id="vaelab-check">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the page did not finish loading in chromium (rc {res.returncode}): {res.stderr[-2000:]}"
    uncaught = [line for line in res.stderr.splitlines() if "Uncaught" in line or ("CONSOLE" in line and "rror" in line)]
    assert not uncaught, uncaught
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def pages(tmp_path_factory, shared_data):
    base = tmp_path_factory.getbasetemp()
    run = build_run(base, shared_data, "dsprites")
    root = tmp_path_factory.mktemp("browser")
    a = copy_run(run, root / "runs" / "alpha")
    b = copy_run(run, root / "runs" / "beta")
    add_eval_and_experiments(b)
    assert main(["report", str(a), str(b), "--quiet"]) == 0
    return {"report": b / "report.html", "comparison": root / "runs" / "comparison.html"}


def test_report_loads_in_chromium(pages, tmp_path):
    exe = chromium()
    found = checked(exe, pages["report"], tmp_path)
    assert found["errors"] == []
    assert found["broken"] == []
    # 3 shape traversals (origin, grid, all-latent GIF, 10 per-latent GIFs), zero and prior grids, curves,
    # reconstructions, samples, KL bars, the experiment figure
    assert found["images"] >= 3 * 13 + 2 + 6

    shot = tmp_path / "report.png"
    res = browse(exe, pages["report"], tmp_path, f"--screenshot={shot}", "--window-size=1366,5000")
    assert shot.is_file(), res.stderr[-2000:]
    a = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert a.std() > 20, "the screenshot is (nearly) blank"
    assert (a < 60).mean() > 0.02  # dark pixels: plots, text and the black dSprites backgrounds render


def test_comparison_page_sorts_in_chromium(pages, tmp_path):
    exe = chromium()
    found = checked(exe, pages["comparison"], tmp_path)
    assert found["errors"] == [] and found["broken"] == []
    sorts = {s["col"]: s for s in found["sorts"]}
    assert sorts["run"]["asc"] == ["alpha", "beta"] and sorts["run"]["desc"] == ["beta", "alpha"]
    assert "steps" in sorts
