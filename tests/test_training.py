"""The training loop end to end: CLI, run folder, resume bit-exactness, crashes, NaN, folds, presets."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vaelab
from vaelab.cli import main
from vaelab.config import preset_names, resolve
from vaelab.training import checkpoint


@pytest.fixture
def dsprites_npz(shared_data):
    p = shared_data / "dsprites" / "dsprites_downsampled.npz"
    if not p.exists():
        pytest.skip(f"real dSprites subset missing: {p}")
    return p


def small(dsprites_npz, *extra):
    """Overrides for a tiny, fast run on the real dSprites subset."""
    return ["--set", "data.name=dsprites", "--set", f"data.root={dsprites_npz}", "--set", "train.batch_size=16",
            "--set", "train.log_every=5", "--device", "cpu", "--quiet", *extra]


def test_cli_train_writes_a_complete_run_folder(tmp_path, dsprites_npz):
    out = tmp_path / "run"
    rc = main(["train", "quickstart", "--steps", "12", "--out", str(out), *small(dsprites_npz)])
    assert rc == 0
    assert (out / "config.toml").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 12]
    for key in ("loss", "recon", "kl", "tc", "disc_acc", "lr.vae", "lr.disc", "it_per_s"):
        assert key in rows[-1], key
    assert len(rows[-1]["kl_per_dim"]) == 10
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    ck = checkpoint.list_checkpoints(out)
    assert ck and ck[-1].name == "step-00000012"
    assert (ck[-1] / "tensors.safetensors").is_file() and (ck[-1] / "state.json").is_file()
    assert list((out / "images").glob("reconstruction_step*.png"))
    run = vaelab.load_run(out)
    ds = run.dataset()
    codes = run.encode(ds.images[:5])
    assert codes.shape == (5, 10) and np.isfinite(codes).all()
    with torch.no_grad():  # encode's channels-last copy computes the model's own function
        direct = run.model.representation(ds.images[:5].float() / 255).numpy()
    np.testing.assert_allclose(codes, direct, rtol=1e-4, atol=1e-5)
    mu, logvar = run.encode_params(ds.images[:5])
    np.testing.assert_allclose(mu, codes, rtol=1e-6, atol=1e-6)
    assert run.decode(np.zeros((2, 10))).shape == (2, 1, 64, 64)


def _final_tensors(run_dir):
    ck = checkpoint.list_checkpoints(run_dir)[-1]
    return load_file(str(ck / "tensors.safetensors"))


@pytest.mark.parametrize("preset", ["quickstart", "dlib-btcvae-dsprites"])
def test_resume_is_bit_identical(tmp_path, dsprites_npz, preset):
    args = small(dsprites_npz, "--set", "model.net=burgess64" if preset != "quickstart" else "train.seed=3")
    assert main(["train", preset, "--steps", "16", "--out", str(tmp_path / "once"), *args]) == 0
    assert main(["train", preset, "--steps", "8", "--out", str(tmp_path / "split"), *args]) == 0
    assert main(["train", preset, "--steps", "16", "--out", str(tmp_path / "split"), "--resume", *args]) == 0
    a, b = _final_tensors(tmp_path / "once"), _final_tensors(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_existing_run_needs_resume(tmp_path, dsprites_npz):
    out = str(tmp_path / "r")
    assert main(["train", "quickstart", "--steps", "2", "--out", out, *small(dsprites_npz)]) == 0
    assert main(["train", "quickstart", "--steps", "2", "--out", out, *small(dsprites_npz)]) == 2


def test_resume_mistakes_are_one_line(tmp_path, dsprites_npz, capsys):
    out = str(tmp_path / "r")
    assert main(["train", "quickstart", "--steps", "4", "--out", out, *small(dsprites_npz)]) == 0
    capsys.readouterr()
    # another preset's name: the run is not silently continued as the saved one
    assert main(["train", "dlib-betavae-dsprites", "--resume", "--steps", "6", "--out", out,
                 *small(dsprites_npz)]) == 2
    assert "holds a 'quickstart' run, not 'dlib-betavae-dsprites'" in capsys.readouterr().err
    # a changed architecture: the error names what does not fit, not only the class
    assert main(["train", "quickstart", "--resume", "--steps", "6", "--out", out,
                 *small(dsprites_npz, "--set", "model.latent_dim=5")]) == 2
    err = capsys.readouterr().err
    assert "size mismatch for" in err and len(err.strip().splitlines()) == 1
    # a changed hyperparameter is said, not silently taken
    assert main(["train", "quickstart", "--resume", "--steps", "5", "--out", out, "--device", "cpu",
                 "--set", "model.gamma=20"]) == 0
    assert "resume: changed from the saved config: model.gamma 6.4 -> 20" in capsys.readouterr().out
    # already past the asked length: said, nothing trained
    main(["train", "quickstart", "--resume", "--steps", "2", "--out", out, "--device", "cpu"])
    assert "already at step 5" in capsys.readouterr().out
    assert _newest_step(tmp_path / "r") == 5


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "nothing to train"),
    (["--set", "train.epochs=-1"], "train.epochs must be >= 0"),
    (["--set", "data.name=dsprites-procedural", "--set", "data.root=/nonexistent/vaelab"], "is not there"),
])
def test_train_bad_lengths_and_roots(tmp_path, capsys, argv, message):
    assert main(["train", "quickstart", "--out", str(tmp_path / "x"), "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() and not Path("/nonexistent/vaelab").exists()


def test_out_that_is_a_file(tmp_path, dsprites_npz, capsys):
    f = tmp_path / "afile.txt"
    f.write_text("x")
    assert main(["train", "quickstart", "--steps", "2", "--out", str(f), *small(dsprites_npz)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and f.read_text() == "x"
    assert main(["train", "quickstart", "--steps", "2", "--folds", "2", "--out", str(f), *small(dsprites_npz)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and f.read_text() == "x"


def test_nan_stops_with_step_and_term(tmp_path, dsprites_npz, capsys):
    out = tmp_path / "nan"
    rc = main(["train", "dlib-betavae-dsprites", "--steps", "200", "--out", str(out), "--checkpoint-every", "1",
               *small(dsprites_npz, "--set", "optim.vae.lr=1e12", "--set", "model.net=burgess64",
                      "--set", "train.log_every=1")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "non-finite value in term" in err[0] and "at step" in err[0]
    for ck in checkpoint.list_checkpoints(out):  # every kept checkpoint holds finite weights
        t, _ = checkpoint.load(ck)
        assert all(torch.isfinite(v.float()).all() for k, v in t.items() if k.startswith("model."))


def _spawn_train(out, npz, steps, resume=False):
    cmd = [sys.executable, "-m", "vaelab", "train", "dlib-betavae-dsprites", "--steps", str(steps), "--out", str(out),
           "--checkpoint-every", "1", *small(npz, "--set", "model.net=burgess64", "--set", "train.keep_checkpoints=2",
                                             "--set", "train.tensorboard=false")]
    if resume:
        cmd.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _newest_step(out):
    cks = checkpoint.list_checkpoints(out)
    return int(cks[-1].name.split("-")[1]) if cks else -1


def test_sigkill_never_leaves_an_unreadable_checkpoint(tmp_path, dsprites_npz):
    out = tmp_path / "killed"
    rng = np.random.default_rng(0)
    for attempt in range(3):  # kill it three times at random moments while it saves every step
        before = _newest_step(out)
        proc = _spawn_train(out, dsprites_npz, 100000, resume=attempt > 0)
        deadline = time.time() + 120
        while _newest_step(out) <= before and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1].decode()[-800:]
        time.sleep(float(rng.uniform(0.0, 1.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for ck in checkpoint.list_checkpoints(out):
            checkpoint.load(ck)  # raises if damaged
    last = _newest_step(out)
    assert last > 0
    assert main(["train", "dlib-betavae-dsprites", "--steps", str(last + 3), "--out", str(out), "--resume",
                 *small(dsprites_npz, "--set", "model.net=burgess64")]) == 0
    assert _newest_step(out) == last + 3


def test_ctrl_c_saves_a_checkpoint(tmp_path, dsprites_npz):
    out = tmp_path / "int"
    proc = _spawn_train(out, dsprites_npz, 100000)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-500:]
    assert checkpoint.list_checkpoints(out)


def test_kfold_trains_k_models_on_disjoint_validation_folds(tmp_path, dsprites_npz):
    out = tmp_path / "cv"
    rc = main(["train", "dlib-betavae-dsprites", "--steps", "3", "--folds", "3", "--out", str(out),
               *small(dsprites_npz, "--set", "model.net=burgess64", "--set", "train.val_batches=2")])
    assert rc == 0
    summary = json.loads((out / "folds.json").read_text())
    assert len(summary["folds"]) == 3
    assert "val.loss" in summary["mean"] and "val.loss" in summary["std"]
    sizes = [f["val_size"] for f in summary["folds"]]
    assert sum(sizes) == 46080
    for i in range(3):
        assert checkpoint.list_checkpoints(out / f"fold-{i}")


def _data_overrides(preset, shared_data, tmp_path):
    """Point a preset at real data we have with the same image shape (or a generated folder)."""
    cfg = resolve(preset)
    name = cfg.data.name
    if name in ("dsprites", "dsprites-procedural"):
        return ["data.name=dsprites", f"data.root={shared_data / 'dsprites' / 'dsprites_downsampled.npz'}"]
    if name == "mnist":
        return ["data.name=mnist", f"data.root={shared_data / 'mnist'}", "data.split=test"]
    if name == "image-folder":
        from PIL import Image

        folder = tmp_path / "folder"
        folder.mkdir()
        rng = np.random.default_rng(0)
        rows = ["file,gaze_x,reye_xmin,reye_ymin,reye_xmax,reye_ymax,leye_xmin,leye_ymin,leye_xmax,leye_ymax"]
        for i in range(40):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
            rows.append(f"{i:03d}.png,{i % 4},20,40,52,60,76,40,108,60")  # eye boxes at 2x (XYS stack)
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
        return ["data.name=image-folder", f"data.root={folder}"]
    # celeba, chairs, mixtures: the 100 real CelebA faces (RGB 64x64)
    return ["data.name=celeba", f"data.root={shared_data / 'celeba'}", "data.options={}"]


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_starts_and_runs_a_few_steps(preset, tmp_path, shared_data, data_home):
    over = _data_overrides(preset, shared_data, tmp_path)
    over += ["train.steps=2", "train.epochs=0", "train.batch_size=8", "train.val_batches=1",
             "train.tensorboard=false"]
    args = ["train", preset, "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"]
    for o in over:
        args += ["--set", o]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows and np.isfinite(train_rows[-1]["loss"])
    if resolve(preset).data.val_fraction > 0 and resolve(preset).train.val_every:
        assert any("val.loss" in r for r in rows)
