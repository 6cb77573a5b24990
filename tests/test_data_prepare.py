"""Prepared image caches: manifest, reuse, invalidation, atomic files, grids."""
from __future__ import annotations

import hashlib
import json
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from vaelab.data.prepare import ImageSource, prepare_images, sha256_names
from vaelab.errors import VaelabError
from vaelab.viz.grid import make_grid, save_png


def _folder(d, n=6, size=(24, 20)):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(d / f"im{i:03d}.png")
    return d


def test_prepare_folder_manifest_and_reuse(tmp_path, data_home):
    d = _folder(tmp_path / "imgs")
    p = prepare_images(d, size=16, label="toy")
    assert p.images.shape == (6, 3, 16, 16) and p.images.dtype == np.uint8
    assert isinstance(p.images, np.memmap) and p.images.flags.writeable  # mmap_mode "c"
    assert p.entry.parent == data_home / "cache"
    m = json.loads((p.entry / "manifest.json").read_text())
    assert m["count"] == 6 and m["size"] == 16 and m["source"] == str(d.resolve())
    assert m["files"] == [f"im{i:03d}.png" for i in range(6)]
    assert m["sha256"] == sha256_names(m["files"]) and m["sha256_of"] == "sorted file list"
    assert not [f for f in p.entry.iterdir() if ".tmp-" in f.name]  # nothing half-written left
    # the pixels are what Pillow's antialiased bilinear resize gives
    ref = np.asarray(Image.open(d / "im002.png").convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(p.images[2].transpose(1, 2, 0), ref)
    mtime = (p.entry / "images.npy").stat().st_mtime_ns
    again = prepare_images(d, size=16, label="toy")
    assert again.entry == p.entry and (p.entry / "images.npy").stat().st_mtime_ns == mtime
    _folder(tmp_path / "imgs", n=7)  # one more image: the cache is rebuilt
    grown = prepare_images(d, size=16, label="toy")
    assert grown.images.shape[0] == 7
    forced = prepare_images(d, size=16, label="toy", force=True)
    assert (forced.entry / "images.npy").stat().st_mtime_ns != mtime


def test_zip_source_sha256_and_workers_agree(tmp_path, data_home, monkeypatch):
    d = _folder(tmp_path / "imgs", n=20)
    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as f:
        for p in sorted(d.iterdir()):
            f.write(p, f"imgs/{p.name}")
    monkeypatch.setenv("VAELAB_DECODE_WORKERS", "1")
    one = prepare_images(z, size=8, label="z1", cache_root=tmp_path / "c1")
    monkeypatch.setenv("VAELAB_DECODE_WORKERS", "3")
    three = prepare_images(z, size=8, label="z1", cache_root=tmp_path / "c3")
    np.testing.assert_array_equal(np.asarray(one.images), np.asarray(three.images))
    assert one.manifest["sha256"] == hashlib.sha256(z.read_bytes()).hexdigest()
    assert one.manifest["sha256_of"] == "file"
    fromdir = prepare_images(d, size=8, label="d")
    np.testing.assert_array_equal(np.asarray(one.images), np.asarray(fromdir.images))


def test_open_prepared_is_fast(tmp_path, data_home):
    d = _folder(tmp_path / "imgs", n=3)
    prepare_images(d, size=8)
    t0 = time.perf_counter()
    for _ in range(20):
        prepare_images(d, size=8)
    assert (time.perf_counter() - t0) / 20 < 0.25


def test_source_errors(tmp_path):
    with pytest.raises(VaelabError, match="no images at"):
        ImageSource.open(tmp_path / "missing")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "readme.md").write_text("x")
    with pytest.raises(VaelabError, match="no images found.*1 other"):
        ImageSource.open(tmp_path / "e")
    (tmp_path / "x.bin").write_bytes(b"\0" * 100)
    with pytest.raises(VaelabError, match="neither a folder nor a zip or tar"):
        ImageSource.open(tmp_path / "x.bin")


def test_make_grid_and_save_png(tmp_path):
    imgs = np.zeros((5, 3, 4, 6), np.uint8)
    imgs[:, 0] = np.arange(5)[:, None, None] * 10
    g = make_grid(imgs, nrow=2, pad=1, pad_value=255)
    assert g.shape == (3 * 5 + 1, 2 * 7 + 1, 3)
    assert g[0, 0, 0] == 255 and g[1, 1, 0] == 0 and g[1, 8, 0] == 10 and g[6, 1, 0] == 20
    assert (g[11:15, 8:14] == 255).all()  # empty last cell is padding
    grey = make_grid(np.full((2, 1, 3, 3), 7, np.uint8), nrow=2, pad=0)
    assert grey.shape == (3, 6, 1)
    out = save_png(g, tmp_path / "g.png")
    assert np.array_equal(np.asarray(Image.open(out)), g)
    save_png(grey, tmp_path / "grey.png")
    assert Image.open(tmp_path / "grey.png").mode == "L"
    with pytest.raises(VaelabError):
        make_grid(np.zeros((2, 3, 4, 4), np.float32))


def test_concurrent_builds_of_one_entry_take_turns(tmp_path):
    """Two processes (here threads, each with its own lock file handle) need the same cache entry:
    the first builds it, the second waits and opens it instead of building it again."""
    import threading

    from vaelab.data.prepare import build_entry

    entry = tmp_path / "cache" / "x-0123"
    calls = []
    building = threading.Event()

    def slow_fill(out):
        calls.append("first")
        building.set()  # the lock is held while the fill runs
        time.sleep(0.5)
        out[:] = 7

    def must_not_run(out):
        calls.append("second")
        out[:] = 9

    results = {}
    t = threading.Thread(target=lambda: results.setdefault("a", build_entry(entry, (4, 1, 2, 2), slow_fill, {"key": 1})))
    t.start()
    assert building.wait(60)  # the first holds the lock now, however loaded the machine
    results["b"] = build_entry(entry, (4, 1, 2, 2), must_not_run, {"key": 1})
    t.join()
    assert calls == ["first"]
    assert (np.asarray(results["b"][0]) == 7).all() and results["b"][1]["key"] == 1
    # an entry that was already there is rebuilt when the caller asks (stale or forced)
    images, _ = build_entry(entry, (4, 1, 2, 2), must_not_run, {"key": 1})
    assert calls == ["first", "second"] and (np.asarray(images) == 9).all()
