"""A sweep killed at any moment (SIGKILL: no chance to save) finishes when its command is run again
with --resume: trained runs kept, the stopped run resumed from its checkpoint, the rest started."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from vaelab.cli import main
from vaelab.config import read_toml, resolve
from vaelab.training import checkpoint
from vaelab.training.trainer import Trainer

STEPS = 300


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Bitwise comparisons with the subprocess (which runs on one thread too)."""


def _env(data: Path) -> dict:
    return {**os.environ, "VAELAB_DATA": str(data), "OMP_NUM_THREADS": "1", "VAELAB_QUIET": "1"}


def _argv(npz: Path, out: Path) -> list[str]:
    return ["sweep", "dlib-betavae-dsprites", "--grid", "model.beta=1,2,4", "--seeds", "0", "--steps", str(STEPS),
            "--set", f"data.root={npz}", "--set", "model.net=higgins_mlp", "--set", "model.net_options={hidden=8}",
            "--set", "model.latent_dim=3", "--set", "train.batch_size=8", "--set", "train.checkpoint_every=20",
            "--set", "train.log_every=20", "--set", "train.image_every=0", "--set", "train.tensorboard=false",
            "--device", "cpu", "--mode", "sequential", "--quiet", "--out", str(out)]


def _newest(run: Path) -> int | None:
    cks = checkpoint.list_checkpoints(run)
    return int(cks[-1].name[len(checkpoint.PREFIX):]) if cks else None


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_sigkilled_sweep_finishes_with_resume(tmp_path, subset_npz, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "sw"
    runs = [out / f"dlib-betavae-dsprites-{k}" for k in range(3)]
    cmd = [sys.executable, "-m", "vaelab", *_argv(subset_npz, out)]
    proc = subprocess.Popen(cmd, env=_env(data), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # kill it while a run after the first is half-trained (the first then is finished)
    stopped, deadline = None, time.monotonic() + 240
    try:
        while stopped is None and proc.poll() is None and time.monotonic() < deadline:
            for k in (1, 2):
                step = _newest(runs[k])
                if step is not None and step < STEPS:
                    stopped = k
                    break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert stopped is not None, f"the sweep ended before it could be killed mid-run: {proc.stderr.read()!r}"
    finished = runs[:stopped]
    before = {r: (_newest(r), (r / "metrics.jsonl").read_bytes()) for r in finished}
    at = _newest(runs[stopped])
    kept_rows = [line for line in (runs[stopped] / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["step"] <= at]

    # without --resume: one line, nothing touched
    res = subprocess.run(cmd, env=_env(data), capture_output=True, text=True)
    assert res.returncode == 2 and "pass --resume to continue the sweep" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    # the same command with --resume finishes the sweep
    res = subprocess.run([*cmd, "--resume"], env=_env(data), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for r in runs:
        assert _newest(r) == STEPS and _steps(r) == list(range(20, STEPS + 1, 20)), r  # each step logged once
    for r in finished:  # not retrained
        assert (_newest(r), (r / "metrics.jsonl").read_bytes()) == before[r]
    # the stopped run continued from its checkpoint: its rows up to there are the ones logged before the kill
    assert (runs[stopped] / "metrics.jsonl").read_text().splitlines()[:len(kept_rows)] == kept_rows
    # ... and ends where an uninterrupted run ends (CPU resume is bit-exact)
    solo = tmp_path / "solo"
    cfg = resolve(read_toml(runs[stopped] / "config.toml"), {"train.out": str(solo)})
    monkeypatch.setenv("VAELAB_DATA", str(data))
    Trainer(cfg, quiet=True).fit()
    a = load_file(str(checkpoint.find(runs[stopped]) / "tensors.safetensors"))
    b = load_file(str(checkpoint.find(solo) / "tensors.safetensors"))
    for k in a:
        if k.startswith("model."):
            np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)
    # run again: everything is kept
    res = subprocess.run([*cmd, "--resume"], env=_env(data), capture_output=True, text=True)
    assert res.returncode == 0 and all(_newest(r) == STEPS for r in runs)


def test_resume_refuses_a_folder_of_another_grid(tmp_path, subset_npz, monkeypatch, capsys):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    argv = _argv(subset_npz, tmp_path / "sw")
    argv[argv.index("--steps") + 1] = "2"
    argv[argv.index("--grid") + 1] = "model.beta=1"
    assert main(argv) == 0
    argv[argv.index("--grid") + 1] = "model.beta=3"
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "holds the run with model.beta=1, but this sweep puts model.beta=3 there" in err
