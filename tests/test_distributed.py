"""torchrun (training/distributed.py): one run shared by N processes, and sweeps spread over them.

The multi-process tests launch ``python -m torch.distributed.run --nproc_per_node=2`` on the CPU
(gloo), as a user would with ``torchrun``.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaelab.errors import VaelabError
from vaelab.training import checkpoint, distributed
from vaelab.training.sampler import BatchSampler

HERE = Path(__file__).parent


def torchrun(args, cwd, env_extra=None, nproc=2, timeout=240):
    env = {**os.environ, "VAELAB_QUIET": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _model(run_dir):
    t = load_file(str(checkpoint.list_checkpoints(run_dir)[-1] / "tensors.safetensors"))
    return {k: v for k, v in t.items() if k.startswith("model.")}


# ---------------------------------------------------------------------------------------- one process
def test_context_from_env():
    assert distributed.from_env({}) == distributed.Context(0, 1, 0)
    ctx = distributed.from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (ctx.rank, ctx.world, ctx.local_rank, ctx.main, ctx.active) == (2, 4, 0, False, True)
    with pytest.raises(VaelabError, match="RANK 4 of WORLD_SIZE 4"):
        distributed.from_env({"WORLD_SIZE": "4", "RANK": "4"})
    with pytest.raises(VaelabError, match="integers"):
        distributed.from_env({"WORLD_SIZE": "two"})
    assert distributed.shard(list(range(7)), distributed.Context(1, 3, 1)) == [1, 4]


@pytest.mark.parametrize("mode,n_batches", [("epoch_permutation", 1), ("epoch_permutation", 2), ("iid", 2)])
def test_ranks_take_their_slices_of_the_same_global_batch(mode, n_batches):
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    idx = torch.arange(40)
    alone = BatchSampler(images, idx, 8, mode=mode, seed=5)
    ranks = [BatchSampler(images, idx, 8, mode=mode, seed=5, rank=r, world=4) for r in range(4)]
    for _ in range(7):  # past an epoch boundary
        whole = alone.next(n_batches).view(n_batches, 8)
        parts = [s.next(n_batches).view(n_batches, 2) for s in ranks]
        assert torch.equal(torch.cat(parts, 1), whole)
    assert all(s.epoch == alone.epoch and s.pos == alone.pos for s in ranks)


def test_batch_must_divide_among_processes():
    with pytest.raises(VaelabError, match="does not divide among 3 processes"):
        BatchSampler(torch.zeros(40, 1, 1, 1, dtype=torch.uint8), torch.arange(40), 8, rank=0, world=3)


# ---------------------------------------------------------------------------------------- torchrun
def test_two_processes_end_where_one_process_ends(tmp_path):
    """Same global batches, gradients averaged: the weights match one process on the whole batch."""
    worker = str(HERE / "dist_worker.py")
    alone = subprocess.run([sys.executable, worker, str(tmp_path / "one")], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
    assert alone.returncode == 0, alone.stderr[-3000:]
    both = torchrun([worker, str(tmp_path / "two")], cwd=tmp_path)
    assert both.returncode == 0, both.stderr[-3000:]
    one, two = _model(tmp_path / "one"), _model(tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-6, msg=k)
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    rows1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))  # rank 0 alone wrote, once per step
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in rows1], rtol=1e-4)
    assert rows[-1]["loss"] < rows[0]["loss"]  # the run did learn


def test_cli_train_under_torchrun_writes_one_run_and_resumes(tmp_path, shared_data):
    npz = shared_data / "dsprites" / "dsprites_downsampled.npz"
    common = ["-m", "vaelab", "train", "quickstart", "--out", str(tmp_path / "run"),
              "--set", "data.name=dsprites", "--set", f"data.root={npz}", "--set", "train.log_every=2",
              "--set", "train.image_every=0", "--set", "train.tensorboard=false"]
    env = {"VAELAB_DATA": str(tmp_path / "data")}  # empty cache: both ranks need it at once
    res = torchrun([*common, "--steps", "4"], cwd=tmp_path, env_extra=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("run folder:") == 1  # rank 0 speaks, rank 1 is quiet
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "run")] == ["step-00000004"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["loss"]) for r in rows)
    assert "disc_loss" in rows[-1]  # FactorVAE: both optimisers stepped (their hooks averaged)
    res = torchrun([*common, "--steps", "6", "--resume"], cwd=tmp_path, env_extra=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert checkpoint.list_checkpoints(tmp_path / "run")[-1].name == "step-00000006"
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]


def test_cli_sweep_under_torchrun_spreads_runs_over_ranks(tmp_path, shared_data, one_thread):
    """4 runs on 2 processes: each process trains 2, and each run equals the same run trained here."""
    from vaelab.training.sweep import sweep

    npz = shared_data / "dsprites" / "dsprites_downsampled.npz"
    sets = ["data.name=dsprites", f"data.root={npz}", "train.log_every=1", "train.image_every=0",
            "train.tensorboard=false", "train.device=cpu", "model.latent_dim=4"]
    args = ["-m", "vaelab", "sweep", "quickstart", "--grid", "model.gamma=2,20", "--seeds", "0,1",
            "--steps", "3", "--out", str(tmp_path / "dist")]
    for s in sets:
        args += ["--set", s]
    env = {"VAELAB_DATA": str(tmp_path / "data")}
    res = torchrun(args, cwd=tmp_path, env_extra=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("sweep of 4 runs") == 1
    manifest = json.loads((tmp_path / "dist" / "sweep.json").read_text())
    assert len(manifest["runs"]) == 4 and manifest["mode"] == "sequential"
    os.environ["VAELAB_DATA"] = env["VAELAB_DATA"]
    try:
        here = sweep("quickstart", ["model.gamma=2,20"], [0, 1], overrides=sets, steps=3, out=tmp_path / "here",
                     quiet=True)
    finally:
        del os.environ["VAELAB_DATA"]
    for run, mine in zip(manifest["runs"], here):
        theirs = _model(run["path"])
        ours = _model(mine)
        for k in ours:
            torch.testing.assert_close(theirs[k], ours[k], rtol=1e-5, atol=1e-6, msg=k)


# ---------------------------------------------------------------------------------------- Ray
def test_cli_sweep_on_ray_trains_every_run_as_alone(tmp_path, shared_data, one_thread, monkeypatch, capsys):
    """`vaelab sweep --backend ray`: a local Ray, one task per run; each run equals the run trained here."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'vaelab[ray]')")
    from vaelab.cli import main
    from vaelab.training.sweep import sweep

    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))  # empty cache: two Ray workers build it at once
    monkeypatch.setenv("VAELAB_QUIET", "1")
    npz = shared_data / "dsprites" / "dsprites_downsampled.npz"
    sets = ["data.name=dsprites", f"data.root={npz}", "train.log_every=1", "train.image_every=0",
            "train.tensorboard=false", "train.device=cpu", "model.latent_dim=4"]
    argv = ["sweep", "quickstart", "--grid", "model.gamma=2,20", "--steps", "3", "--out", str(tmp_path / "ray"),
            "--backend", "ray"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ray: 2/2 runs done" in out and "sweep of 2 runs (sequential)" in out
    manifest = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    here = sweep("quickstart", ["model.gamma=2,20"], None, overrides=sets, steps=3, out=tmp_path / "here",
                 quiet=True)
    for run, mine in zip(manifest["runs"], here):
        theirs, ours = _model(run["path"]), _model(mine)
        for k in ours:
            torch.testing.assert_close(theirs[k], ours[k], rtol=1e-5, atol=1e-6, msg=k)


def test_ray_task_errors_come_back_as_one_line(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'vaelab[ray]')")
    from vaelab.training.sweep import sweep

    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    over = ["train.device=cpu", "data.name=dsprites", f"data.root={tmp_path / 'missing.npz'}"]
    with pytest.raises(VaelabError, match="must be at least 1"):
        sweep("quickstart", None, [0], steps=1, out=tmp_path / "x", backend="ray", runs_per_task=0, quiet=True,
              overrides=over)
    with pytest.raises(VaelabError, match="must be 0 or more"):
        sweep("quickstart", None, [0], steps=1, out=tmp_path / "x", backend="ray", gpus_per_task=-1, quiet=True,
              overrides=over)
    with pytest.raises(VaelabError, match=r"a sweep task failed on Ray: .*missing\.npz") as e:
        sweep("quickstart", None, [0], steps=1, out=tmp_path / "x", backend="ray", quiet=True, overrides=over)
    assert "\n" not in str(e.value)
