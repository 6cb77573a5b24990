"""Nothing lost, whatever happens: interrupts, a second writer, a folder of the user's, non-finite
checkpoints, a damaged config.toml, a full disk, and one-line errors for inputs that used to end in a
traceback. Kills and interrupts are sent to real `vaelab train` processes."""
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.training import checkpoint

PRESET = "betavae-dsprites-higgins"  # an MLP: with 64 hidden units hundreds of iterations a second


@pytest.fixture(scope="module")
def npz(shared_data):
    return shared_data / "dsprites" / "dsprites_downsampled.npz"


def tiny(npz, *extra):
    return ["--set", f"data.root={npz}", "--set", "model.net_options={hidden=64}", "--set", "train.batch_size=16",
            "--set", "train.log_every=5", "--set", "train.tensorboard=false", "--device", "cpu", "--quiet", *extra]


def spawn(argv, preexec_fn=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-m", "vaelab", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=preexec_fn)


def wait_for_metrics(out, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        f = out / "metrics.jsonl"
        if f.is_file() and f.stat().st_size > 0:
            return
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1].decode()[-800:]
    raise AssertionError("the training process wrote no metrics in time")


def step_of(ck):
    return int(ck.name.split("-", 1)[1])


def newest(out):
    cks = checkpoint.list_checkpoints(out)
    return step_of(cks[-1]) if cks else -1


def final_tensors(out):
    return load_file(str(checkpoint.list_checkpoints(out)[-1] / "tensors.safetensors"))


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vaelab: error: "), err[-1500:]
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def trained(npz, tmp_path_factory):
    """A small run trained once (4 steps, a checkpoint at 2 and 4), copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", PRESET, "--steps", "4", "--checkpoint-every", "2", "--out", str(out), *tiny(npz)]) == 0
    return out


def copy_run(trained, tmp_path, name="run"):
    dst = tmp_path / name
    shutil.copytree(trained, dst)
    (dst / ".vaelab-lock").unlink(missing_ok=True)
    return dst


# ---------------------------------------------------------------------------------------- interrupts
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_resumes_bit_identical(tmp_path, npz, sig):
    """Ctrl-C / SIGTERM land mid-iteration; the checkpoint written must still be one consistent state."""
    out = tmp_path / "stopped"
    proc = spawn(["train", PRESET, "--steps", "100000", "--checkpoint-every", "100000", "--out", str(out),
                  *tiny(npz)])
    wait_for_metrics(out, proc)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-800:]
    stopped = newest(out)
    assert 0 < stopped < 100000
    total = stopped + 7
    assert main(["train", PRESET, "--resume", "--steps", str(total), "--out", str(out), *tiny(npz)]) == 0
    assert main(["train", PRESET, "--steps", str(total), "--checkpoint-every", "100000",
                 "--out", str(tmp_path / "once"), *tiny(npz)]) == 0
    a, b = final_tensors(tmp_path / "once"), final_tensors(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_interrupt_handlers_are_restored(tmp_path, npz):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["train", PRESET, "--steps", "2", "--out", str(tmp_path / "r"), *tiny(npz)]) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ---------------------------------------------------------------------------------------- one writer
def test_second_writer_is_refused_and_a_killed_writer_leaves_no_lock(tmp_path, npz, capsys):
    out = tmp_path / "run"
    first = spawn(["train", PRESET, "--steps", "100000", "--checkpoint-every", "20", "--out", str(out), *tiny(npz)])
    try:
        wait_for_metrics(out, first)
        capsys.readouterr()
        assert main(["train", PRESET, "--resume", "--out", str(out), *tiny(npz)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"pid {first.pid}" in line and socket.gethostname() in line and "started" in line
        assert main(["train", PRESET, "--steps", "10", "--out", str(out), *tiny(npz)]) == 2
        assert f"pid {first.pid}" in capsys.readouterr().err
        while newest(out) < 20 and first.poll() is None:
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    last = newest(out)
    assert last >= 20
    assert main(["train", PRESET, "--resume", "--steps", str(last + 2), "--out", str(out), *tiny(npz)]) == 0
    assert newest(out) == last + 2


def test_folder_lock_is_reusable(tmp_path):
    from vaelab.training.lock import FolderInUse, FolderLock, read_holder

    d = tmp_path / "sweep"
    d.mkdir()
    with FolderLock(d, "the sweep") as held:
        assert held.held and read_holder(d)["pid"] == os.getpid()
        with pytest.raises(FolderInUse, match=f"pid {os.getpid()} on {socket.gethostname()}"):
            FolderLock(d, "the sweep").acquire()
    FolderLock(d).acquire().release()  # released on leaving the block


# ---------------------------------------------------------------------------------------- the user's files
def test_out_onto_a_folder_of_the_users_is_refused(tmp_path, npz, capsys):
    mine = tmp_path / "mine"
    (mine / "checkpoints" / "step-00000001").mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    (mine / "checkpoints" / "step-00000001" / "notes.txt").write_text("keep")
    before = sorted(str(p.relative_to(mine)) for p in mine.rglob("*"))
    for extra in ([], ["--resume"], ["--folds", "2"]):
        assert main(["train", PRESET, "--steps", "2", "--out", str(mine), *tiny(npz), *extra]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert str(mine) in line
        assert sorted(str(p.relative_to(mine)) for p in mine.rglob("*")) == before
    assert (mine / "thesis.tex").read_text() == "years of work"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", PRESET, "--steps", "2", "--out", str(empty), *tiny(npz)]) == 0


def test_checkpoint_rotation_deletes_only_what_vaelab_wrote(tmp_path):
    ckdir = tmp_path / "checkpoints"
    for step in (1, 2):
        checkpoint.save(tmp_path, step, {"w": torch.zeros(2)}, {"step": step}, keep=5)
    (ckdir / "step-00000001" / "notes.txt").write_text("mine")  # the user's file in an old checkpoint
    (ckdir / ".tmp-mine").mkdir()  # the user's folders under checkpoints/
    (ckdir / ".tmp-step-00000009-999999999").mkdir()  # a dead process's temporary folder
    (ckdir / ".tmp-step-00000009-999999999" / "keep.txt").write_text("not vaelab's")
    (ckdir / "step-best").mkdir()
    for step in (3, 4):
        checkpoint.save(tmp_path, step, {"w": torch.zeros(2)}, {"step": step}, keep=1)
    names = sorted(p.name for p in ckdir.iterdir())
    assert "step-00000002" not in names and "step-00000003" not in names  # vaelab's own: rotated out
    assert (ckdir / "step-00000001" / "notes.txt").read_text() == "mine"
    assert (ckdir / ".tmp-mine").is_dir() and (ckdir / "step-best").is_dir()
    assert (ckdir / ".tmp-step-00000009-999999999" / "keep.txt").is_file()
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000001", "step-00000004"]


# ---------------------------------------------------------------------------------------- finite checkpoints
def test_checkpoints_are_checked_finite_when_written_and_read(tmp_path):
    checkpoint.save(tmp_path, 1, {"w": torch.ones(2)}, {"step": 1})
    bad = {"w": torch.ones(2), "optim.vae.0.exp_avg_sq": torch.tensor([1.0, float("inf")])}
    with pytest.raises(VaelabError, match="optim.vae.0.exp_avg_sq"):
        checkpoint.save(tmp_path, 2, bad, {"step": 2})
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000001"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    ck = checkpoint.list_checkpoints(tmp_path)[0]
    save_file({"w": torch.tensor([float("nan"), 1.0])}, str(ck / "tensors.safetensors"))
    with pytest.raises(VaelabError, match="non-finite value in tensor 'w'"):
        checkpoint.load(ck)


def test_nan_in_a_loaded_optimiser_state_and_resume_from_an_older_step(tmp_path, trained, capsys):
    run = copy_run(trained, tmp_path)
    ck4 = checkpoint.find(run, 4)
    t = load_file(str(ck4 / "tensors.safetensors"))
    name = next(k for k in t if k.startswith("optim.vae.") and k.endswith("exp_avg_sq"))
    t[name][0] = float("nan")
    save_file(t, str(ck4 / "tensors.safetensors"))
    capsys.readouterr()
    assert main(["train", PRESET, "--resume", "--steps", "6", "--out", str(run), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert name in line and "--step" in line
    assert main(["train", PRESET, "--step", "2", "--steps", "6", "--out", str(run), "--quiet"]) == 2
    assert "needs --resume" in capsys.readouterr().err
    assert main(["train", PRESET, "--resume", "--step", "2", "--steps", "6", "--out", str(run), "--quiet"]) == 0
    assert newest(run) == 6
    aside = list((run / "checkpoints").glob("set-aside-*/step-00000004"))
    assert len(aside) == 1 and (aside[0] / "tensors.safetensors").is_file()  # set aside, not deleted


def test_divergence_names_the_last_finite_checkpoint(tmp_path, trained, capsys):
    run = copy_run(trained, tmp_path)
    capsys.readouterr()
    rc = main(["train", PRESET, "--resume", "--steps", "200", "--out", str(run), "--checkpoint-every", "1",
               "--set", "optim.vae.lr=1e12", "--set", "train.log_every=1", "--quiet"])
    assert rc == 2
    line = one_error_line(capsys.readouterr().err)
    assert "non-finite value in" in line
    last = newest(run)
    assert f"the last finite checkpoint is {checkpoint.find(run, last)}" in line
    assert f"--resume --step {last}" in line
    for ck in checkpoint.list_checkpoints(run):
        checkpoint.load(ck)  # all finite


def test_nonfinite_adam_state_is_not_saved(tmp_path, npz):
    from vaelab.config import resolve
    from vaelab.training.trainer import Trainer

    over = {"data.root": str(npz), "model.net_options": {"hidden": 16}, "train.batch_size": 8,
            "train.steps": 2, "train.device": "cpu", "train.tensorboard": False, "train.out": str(tmp_path / "r")}
    tr = Trainer(resolve(PRESET, over), quiet=True)
    try:
        tr.fit()
        from vaelab.training.lock import FolderLock

        FolderLock(tmp_path / "r").acquire().release()  # a finished trainer holds no lock
        state = next(iter(tr.optimizers["vae"].state.values()))
        state["exp_avg"].fill_(float("nan"))
        tr.step += 1
        with pytest.raises(VaelabError, match="non-finite value in tensor 'optim.vae.") as e:
            tr.save_checkpoint()
        assert str(checkpoint.find(tmp_path / "r", 2)) in str(e.value)
    finally:
        tr.close()
    assert newest(tmp_path / "r") == 2


# ---------------------------------------------------------------------------------------- config.toml
@pytest.mark.parametrize("damage", ["missing", "empty", "not-utf8", "torn"])
def test_resume_falls_back_to_the_checkpoint_config(tmp_path, trained, capsys, damage):
    run = copy_run(trained, tmp_path)
    cfg = run / "config.toml"
    good = cfg.read_text()
    if damage == "missing":
        cfg.unlink()
    elif damage == "empty":
        cfg.write_bytes(b"")
    elif damage == "not-utf8":
        cfg.write_bytes(b"name = \"\xff\"\n" + good.encode())
    else:
        cfg.write_text(good[: len(good) // 2] + "\n[[[")
    capsys.readouterr()
    assert main(["train", PRESET, "--resume", "--steps", "6", "--out", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "vaelab: warning:" in err and "config saved in" in err
    assert newest(run) == 6
    from vaelab.config import read_toml, resolve

    assert resolve(read_toml(cfg)).train.steps == 6  # written again, whole


def test_config_toml_is_written_through_the_atomic_writer(tmp_path, npz, monkeypatch):
    from vaelab.data import prepare

    seen = []
    real = prepare.atomic_write_bytes
    monkeypatch.setattr(prepare, "atomic_write_bytes", lambda p, b: (seen.append(os.fspath(p)), real(p, b))[1])
    assert main(["train", PRESET, "--steps", "2", "--out", str(tmp_path / "r"), *tiny(npz)]) == 0
    assert str(tmp_path / "r" / "config.toml") in seen


# ---------------------------------------------------------------------------------------- a full disk
def _file_size_limit(nbytes):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


@pytest.mark.parametrize("limit, extra, what", [
    (1_000_000, ["--resume", "--steps", "8", "--checkpoint-every", "2"], "cannot write checkpoint"),
    (6_000, ["--resume", "--steps", "100000", "--checkpoint-every", "100000", "--set", "train.log_every=1"],
     "metrics.jsonl"),
    (20_000, ["--resume", "--steps", "100000", "--checkpoint-every", "100000", "--set", "train.log_every=1",
              "--set", "train.tensorboard=true"], "tensorboard"),
    (100, ["--resume", "--steps", "8"], "config.toml"),
], ids=["checkpoint", "metrics", "tensorboard", "config"])
def test_full_disk_is_one_line_and_older_checkpoints_stay(tmp_path, trained, npz, limit, extra, what):
    run = copy_run(trained, tmp_path)
    before = {p.name: (p / "tensors.safetensors").read_bytes() for p in checkpoint.list_checkpoints(run)}
    proc = spawn(["train", PRESET, "--out", str(run), *tiny(npz, *extra)], preexec_fn=_file_size_limit(limit))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err.decode()[-1500:]
    line = one_error_line(err.decode())
    assert what in line and ("File too large" in line or "EFBIG" in line), line
    for ck in checkpoint.list_checkpoints(run):
        checkpoint.load(ck)
        if ck.name in before:
            assert (ck / "tensors.safetensors").read_bytes() == before[ck.name]
    assert set(before) <= {p.name for p in checkpoint.list_checkpoints(run)}
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]


# ---------------------------------------------------------------------------------------- one line, not a traceback
def _bad_inputs(tmp_path, run):
    """(argv, a piece of the expected message) for each input that used to end in a traceback."""
    bad_preset = tmp_path / "bad.toml"
    bad_preset.write_bytes(b'name = "caf\xe9"\n[model]\nobjective = "betavae"\n')
    state = checkpoint.find(run, 4) / "state.json"
    return {
        "epochs-inf": (["train", PRESET, "--set", "train.epochs=inf"], "train.epochs must be a finite number"),
        "eps": (["train", PRESET, "--set", "optim.vae.eps=-1"], "optim.vae.eps must be a positive number"),
        "weight-decay": (["train", PRESET, "--set", "optim.vae.weight_decay=-1"], "optim.vae.weight_decay"),
        "device-meta": (["train", PRESET, "--device", "meta"], "device 'meta'"),
        "device-mps": (["train", PRESET, "--device", "mps"], "device 'mps'"),
        "preset-not-utf8": (["train", str(bad_preset)], "not UTF-8"),
        "out-not-utf8": (["train", PRESET, "--out", os.fsdecode(bytes(tmp_path) + b"/r\xff")], "not valid UTF-8"),
        "epochs-tiny": (["train", PRESET, "--set", "train.epochs=1e-9"], "gives no iteration"),
        "state-not-object": (["sample", str(run), "--out", str(tmp_path / "pics")], "state.json: not a JSON object",
                             lambda: state.write_text("[1, 2, 3]")),
        "sample-too-many": (["sample", str(run), "--n", "100000000", "--out", str(tmp_path / "pics")], "too many"),
        "config-not-utf8": (["report", str(run)], "not UTF-8",
                            lambda: (run / "config.toml").write_bytes(b"name = \"\xff\"\n")),
    }


@pytest.mark.parametrize("case", ["epochs-inf", "eps", "weight-decay", "device-meta", "device-mps",
                                  "preset-not-utf8", "out-not-utf8", "epochs-tiny", "state-not-object",
                                  "sample-too-many", "config-not-utf8"])
def test_bad_inputs_are_one_line(tmp_path, trained, npz, capsys, case):
    if case == "device-mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    run = copy_run(trained, tmp_path)
    argv, message, *damage = _bad_inputs(tmp_path, run)[case]
    for d in damage:
        d()
    if argv[0] == "train":  # (a later --device or --out wins over the earlier one)
        argv = [argv[0], argv[1], "--out", str(tmp_path / "new"), *tiny(npz), *argv[2:],
                *(["--steps", "2"] if "epochs" not in case else [])]
    capsys.readouterr()
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert message in line, line
    assert not (tmp_path / "new").exists()


def test_a_step_best_folder_is_ignored(tmp_path, trained):
    run = copy_run(trained, tmp_path)
    (run / "checkpoints" / "step-best").mkdir()
    assert [step_of(p) for p in checkpoint.list_checkpoints(run)] == [2, 4]
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "pics")]) == 0
    assert (run / "checkpoints" / "step-best").is_dir()


def test_malformed_study_json_in_report(tmp_path, trained, capsys):
    a, b = copy_run(trained, tmp_path, "a"), copy_run(trained, tmp_path, "b")
    for study in ('{"settings": [1, 2]}', '[]', '{"settings": [{"setting": {}, "runs": 2, "scores": {"m": 3}}]}',
                  "{not json"):
        (tmp_path / "study.json").write_text(study)
        capsys.readouterr()
        assert main(["report", str(a), str(b)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "study.json is not a study table" in line
        assert not (a / "report.html").exists()


def test_nan_in_a_numeric_factor_column_is_refused(tmp_path, data_home):
    from PIL import Image

    from vaelab.data import load

    d = tmp_path / "imgs"
    d.mkdir()
    rows = ["file,size,colour"]
    for i in range(40):
        Image.fromarray(np.full((8, 8, 3), i * 5, np.uint8)).save(d / f"img{i:02d}.png")
        rows.append(f"img{i:02d}.png,{'nan' if i == 17 else i * 0.5},{['red', 'blue'][i % 2]}")
    (d / "factors.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(VaelabError, match=r"factor 'size' of img17.png is 'nan', not a finite number"):
        load("image-folder", root=d, size=8)
