"""`vaelab data list | info | show | prepare | fetch`, end to end, and bad input (exit 2, one line)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaelab.cli import main


def run(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own usage errors (one line, exit 2)
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("vaelab: error: ")
    assert all(ln.startswith("vaelab: ") for ln in lines), err
    return lines[-1]


def test_list(capsys, data_home, shared_data):
    import shutil

    shutil.copytree(shared_data / "mnist", data_home / "mnist")
    rc, out, _ = run(["data", "list"], capsys)
    assert rc == 0
    table = {ln.split()[0]: ln for ln in out.splitlines()[1:] if ln.strip()}
    for name in ("dsprites", "shapes3d", "mnist", "celeba", "chairs", "cars", "faces", "image-folder",
                 "celeba_faces", "cars_chairs", "mnist_inverted_mix"):
        assert name in table, name
    assert table["dsprites"].split()[1] == "no"
    if "dsprites-noisy" in table:  # absent files, but the procedural base needs none: a footnote says so
        assert table["dsprites-noisy"].split()[1] == "no*" and table["dsprites-scream"].split()[1] == "no"
        assert '* needs no file with the data option base = "procedural"' in out
    assert "737,280" in table["dsprites"] and "orientation 40" in table["dsprites"]
    assert table["mnist"].split()[1] == "no"  # only the test files are here
    for n in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (data_home / "mnist" / n).write_bytes(b"")
    rc, out, _ = run(["data", "list"], capsys)
    assert [ln for ln in out.splitlines() if ln.startswith("mnist ")][0].split()[1] == "yes"
    assert f"data directory: {data_home}" in out


def test_info_procedural_is_static_and_fast(capsys, data_home):
    from vaelab.data import names

    if "dsprites-procedural" not in names():
        pytest.skip("procedural dSprites not registered")
    t0 = time.perf_counter()
    rc, out, _ = run(["data", "info", "dsprites-procedural"], capsys)
    assert rc == 0 and time.perf_counter() - t0 < 5
    assert "737,280 images" in out and "factor sizes: 3 6 40 32 32" in out
    assert not (data_home / "cache").exists()  # nothing rendered


def test_info_real_sets(capsys, data_home, shared_data):
    from vaelab.data import prepare

    prepare._WARNED.clear()  # warnings are once per process; this test wants to see them
    rc, out, _ = run(["data", "info", "dsprites", "--root",
                      str(shared_data / "dsprites" / "dsprites_downsampled.npz")], capsys)
    assert rc == 0 and "46,080 images, 1 x 64 x 64" in out and "factor sizes: 3 6 10 16 16" in out
    assert "full grid" in out
    rc, out, err = run(["data", "info", "celeba", "--root", str(shared_data / "celeba")], capsys)
    assert rc == 0 and "100 images, 3 x 64 x 64" in out and "factor sizes: " + " ".join(["2"] * 40) in out
    assert "vaelab: warning:" in err and "202,599" in err
    rc, out, _ = run(["data", "info", "mnist_inverted_mix", "--root", str(shared_data / "mnist"),
                      "--split", "test"], capsys)
    assert rc == 0 and "mnist (10,000), mnist_inverted (10,000)" in out


def test_show_writes_png(capsys, data_home, shared_data, tmp_path):
    out_png = tmp_path / "grid.png"
    rc, out, _ = run(["data", "show", "mnist", "--root", str(shared_data / "mnist"), "--split", "test",
                      "--n", "16", "--out", str(out_png), "--seed", "3"], capsys)
    assert rc == 0 and out_png.is_file()
    img = np.asarray(Image.open(out_png))
    assert img.shape == (4 * 30 + 2, 4 * 30 + 2)  # 4 x 4 of 28 px, pad 2, grey
    rc, _, err = run(["data", "show", "mnist", "--root", str(shared_data / "mnist"), "--split", "test",
                      "--n", "0"], capsys)
    assert rc == 2 and "--n" in _one_error_line(err)


def test_prepare_then_load_reuses(capsys, data_home, shared_data, tmp_path):
    rc, out, err = run(["data", "prepare", "celeba", "--source", str(shared_data / "celeba"), "--size", "32",
                        "--quiet"], capsys)
    assert rc == 0 and "prepared celeba: 100 images, 3 x 32 x 32" in out
    cache = Path(out.split("cache: ")[1].split(" (")[0])
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["count"] == 100 and manifest["size"] == 32 and len(manifest["files"]) == 100
    assert manifest["sha256_of"] == "sorted file list" and len(manifest["sha256"]) == 64
    from vaelab.data import load

    ds = load("celeba", root=shared_data / "celeba", size=32)
    assert ds.meta["cache"] == str(cache)
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(3):
        Image.new("RGB", (9, 9), (i, 0, 0)).save(faces / f"{i}.jpg")
    rc, out, _ = run(["data", "prepare", "faces", "--source", str(faces), "--channels", "1"], capsys)
    assert rc == 0 and "3 images, 1 x 64 x 64" in out
    rc, _, err = run(["data", "prepare", "mnist", "--source", str(shared_data / "mnist"), "--channels", "1"],
                     capsys)
    assert rc == 2 and "does not take --channels" in _one_error_line(err)


def test_fetch_from_local_server(capsys, data_home, shared_data):
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(shared_data / "mnist")))
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        rc, out, _ = run(["data", "fetch", "mnist", "--base-url", url, "--file", "t10k-images-idx3-ubyte.gz",
                          "--file", "t10k-labels-idx1-ubyte.gz", "--quiet"], capsys)
        assert rc == 0 and "md5 verified" in out and "2 file(s) ready" in out
        rc, _, err = run(["data", "fetch", "mnist", "--base-url", url, "--file", "train-labels-idx1-ubyte.gz",
                          "--quiet"], capsys)
        assert rc == 2 and "HTTP 404" in _one_error_line(err)
    finally:
        srv.shutdown()
        srv.server_close()
    rc, out, _ = run(["data", "info", "mnist", "--split", "test"], capsys)
    assert rc == 0 and "10,000 images, 1 x 28 x 28" in out


@pytest.mark.parametrize("argv, expect", [
    (["data", "info", "dsprites"], ["dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", "vaelab data fetch dsprites"]),
    (["data", "info", "mnist", "--split", "test"], ["t10k-images-idx3-ubyte", "vaelab data fetch mnist"]),
    (["data", "info", "celeba"], ["celeba", "mmlab"]),
    (["data", "info", "dsprite"], ["did you mean 'dsprites'"]),
    (["data", "info", "image-folder"], ["--root"]),
    (["data", "fetch", "celeba"], ["img_align_celeba.zip"]),
    (["data", "import-voc", "no-such-folder"], ["no annotations folder at no-such-folder"]),
    (["data", "import-voc", ".", "--factor", "gaze_x"], ["--factor 'gaze_x': expected NAME=PATH"]),
    (["data", "info", "mpi3d", "--variant", "bogus"], ["unknown MPI3D variant 'bogus'", "real_complex"]),
    (["data", "info", "mpi3d", "--variant", "real"], ["mpi3d_real.npz", "rr-learning/disentanglement_dataset"]),
    (["data", "info", "dsprites", "--variant", "real"], ["does not take --variant"]),
    (["data", "info", "smallnorb"], ["vaelab data fetch smallnorb"]),
    (["data", "show", "dsprites-procedural", "--seed", "-1"], ["invalid seed -1"]),
    (["data", "show", "dsprites-procedural", "--nrow", "0"], ["--nrow must be at least 1"]),
    (["data", "show", "dsprites-procedural", "--out", "grid.jpgx"], ["ending in .png"]),
    (["--data-dir", __file__, "data", "list"], ["is a file"]),
])
def test_bad_input_exit_2_one_line(capsys, data_home, argv, expect):
    rc, _, err = run(argv, capsys)
    assert rc == 2
    line = _one_error_line(err)
    for e in expect:
        assert e in line, line


def test_corrupt_files_exit_2(capsys, data_home, tmp_path):
    bad = tmp_path / "d.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    rc, _, err = run(["data", "info", "dsprites", "--root", str(bad)], capsys)
    assert rc == 2 and str(bad) in _one_error_line(err)
    gz = tmp_path / "m"
    gz.mkdir()
    (gz / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00cut")
    (gz / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00cut")
    rc, _, err = run(["data", "info", "mnist", "--root", str(gz), "--split", "test"], capsys)
    line = _one_error_line(err)
    assert rc == 2 and "t10k-images-idx3-ubyte.gz" in line and "gzip" in line
    z = tmp_path / "faces.zip"
    z.write_bytes(b"PK\x05\x06" + b"\0" * 10)
    rc, _, err = run(["data", "show", "faces", "--root", str(z), "--out", str(tmp_path / "g.png")], capsys)
    assert rc == 2 and "faces.zip" in _one_error_line(err)


def test_subprocess_exit_codes(shared_data, tmp_path):
    env = dict(os.environ, VAELAB_DATA=str(tmp_path), VAELAB_QUIET="1")
    ok = subprocess.run([sys.executable, "-m", "vaelab", "data", "info", "mnist", "--root",
                         str(shared_data / "mnist"), "--split", "test"], capture_output=True, text=True, env=env,
                        timeout=120)
    assert ok.returncode == 0 and "10,000 images" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "vaelab", "data", "info", "shapes3d"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "vaelab data fetch shapes3d" in bad.stderr


def test_every_subcommand_shows_vaelab_warnings_as_one_line(capsys):
    """cli.main formats vaelab's own warnings (e.g. a cut-short CelebA attribute file while training)
    as one line in every subcommand; other libraries' warnings keep Python's format."""
    import warnings

    from vaelab.cli import _one_line_warnings
    from vaelab.data.prepare import DataWarning

    with _one_line_warnings():
        warnings.simplefilter("always")
        warnings.warn("attribute file cut short", DataWarning)
        warnings.warn("something else", DeprecationWarning)
    err = capsys.readouterr().err
    assert "vaelab: warning: attribute file cut short\n" in err
    assert "something else" not in err  # left to Python's (here pytest's) own handling
