"""`vaelab evaluate` killed (SIGKILL, SIGTERM) leaves no worker process behind: DCI's loky workers die with
their parent (metrics.dci.die_with_parent), and SIGTERM goes through the clean-up that kills the pool."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _children(pid: int) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.add(int(d))
    return out


def _descendants(pid: int) -> set[int]:
    todo, seen = [pid], set()
    while todo:
        for c in _children(todo.pop()):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
    npz = shared_data / "dsprites" / "dsprites_downsampled.npz"
    if not npz.is_file():
        pytest.skip(f"{npz} missing")
    run = tmp_path_factory.mktemp("ev") / "run"
    r = subprocess.run([sys.executable, "-m", "vaelab", "train", "betavae-dsprites-higgins", "--set", f"data.root={npz}",
                        "--set", "model.net_options={hidden=64}", "--set", "train.batch_size=16", "--steps", "2",
                        "--device", "cpu", "--out", str(run), "--quiet"], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    return run


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_evaluate_leaves_no_worker(tiny_run, tmp_path, sig):
    proc = subprocess.Popen([sys.executable, "-m", "vaelab", "evaluate", str(tiny_run), "--metrics", "dci",
                             "--profile", "fast", "--jobs", "2", "--quiet", "--out", str(tmp_path / "e.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    kids: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            kids = _descendants(proc.pid)
            workers = {k for k in kids if "loky" in _cmdline(k).lower() and "resource_tracker" not in _cmdline(k)}
            if len(workers) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) >= 2, f"no DCI workers seen (rc {proc.poll()}, {proc.stderr.read1(2000) if proc.poll() is not None else ''})"
        time.sleep(0.5)  # let them start on the fits
        kids = _descendants(proc.pid)  # workers and the resource trackers
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_running(k) for k in kids):
            time.sleep(0.1)
        alive = {k: _cmdline(k)[:120] for k in kids if _running(k)}
        assert not alive, f"still running {time.monotonic() - deadline + 5:.1f} s after {sig.name}: {alive}"
        # nothing holds the caller's pipes open any more: both reach EOF at once
        assert proc.stdout.read() is not None and proc.stderr.read() is not None
        if sig == signal.SIGTERM:
            assert proc.returncode == 130
    finally:  # whatever happened, leave nothing running
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for k in kids:
            if _running(k):
                os.kill(k, signal.SIGKILL)


def test_die_with_parent_exits_when_the_parent_is_already_gone():
    """The initializer itself: a worker whose parent has gone ends at once."""
    code = ("import sys, time; print('started', flush=True); from vaelab.metrics.dci import die_with_parent; "
            "die_with_parent(int(sys.argv[1]), poll=0.05); time.sleep(5); print('survived')")
    # the recorded parent pid is not ours: as if the parent died and we were re-parented
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    r = subprocess.run([sys.executable, "-c", code, gone], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout.split() == ["started"] and not r.stderr, r.stderr


def test_cancel_kills_running_fits_and_the_next_dci_starts_fresh():
    """An error (or Ctrl-C) while DCI's fits run: cancel kills the busy workers instead of letting them
    finish unseen; the next DCI gets a new pool and the same numbers."""
    import numpy as np

    from vaelab.metrics.dci import GbtFits, dci_details

    rng = np.random.default_rng(0)
    f = rng.integers(0, 8, size=(3000, 4))
    z = f + rng.normal(0, 2.0, f.shape)
    fits = GbtFits(z, f, z[:500], f[:500], seed=1, n_jobs=2)
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 2:
        workers = {k for k in _descendants(os.getpid()) if "LokyProcess" in _cmdline(k)}
        time.sleep(0.05)
    assert len(workers) >= 2
    fits.cancel()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(k) for k in workers):
        time.sleep(0.05)
    assert not any(_running(k) for k in workers)
    small = (z[:200], f[:200, :2], z[200:300], f[200:300, :2])
    assert np.array_equal(dci_details(*small, seed=3, n_jobs=2)["importance"],
                          dci_details(*small, seed=3, n_jobs=1)["importance"])
