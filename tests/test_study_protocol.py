"""`vaelab study PROTOCOL` (protocols/, studies.py, viz/study_report.py): a study trains, scores and
reports; killed (SIGKILL) while training and while scoring and started again with the same command, it
finishes with every run trained once and the scores of an uninterrupted study."""
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
from vaelab.errors import VaelabError
from vaelab.protocols import load_protocol, protocol_names
from vaelab.studies import eta_seconds, merge_plan, run_name, select, study_steps
from vaelab.training import checkpoint

STEPS, LOG = 100, 20

TINY = """
name = "tiny"
description = "two objectives, two values, two seeds, a tiny net"
source = "tests"
steps = 1000
seeds = [0, 1, 2]
metrics = ["mig", "sap", "elbo"]
set = ["model.net=higgins_mlp", "model.net_options={hidden=8}", "model.latent_dim=3", "train.batch_size=8",
       "train.image_every=0", "train.tensorboard=false", "train.log_every=%d", "train.checkpoint_every=%d"]

[models.betavae]
title = "beta-VAE"
preset = "dlib-betavae-dsprites"
key = "model.beta"
values = [1, 4, 16]

[models.btcvae]
title = "beta-TCVAE"
preset = "dlib-btcvae-dsprites"
key = "model.beta"
values = [1, 6]
""" % (LOG, LOG)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Bitwise comparisons with the subprocesses (which run on one thread too)."""


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    return p


def _argv(protocol, npz, out):
    return ["study", str(protocol), "--values", "betavae=1,16", "--seeds", "0,1", "--steps", str(STEPS),
            "--set", f"data.root={npz}", "--profile", "fast", "--jobs", "1", "--eval-device", "cpu",
            "--device", "cpu", "--out", str(out)]


def _env(data):
    return {**os.environ, "VAELAB_DATA": str(data), "OMP_NUM_THREADS": "1", "VAELAB_QUIET": "1"}


def _runs(out):
    return sorted(p for p in Path(out).glob("*/*-s*") if p.is_dir())


def _newest(run):
    cks = checkpoint.list_checkpoints(run)
    return int(cks[-1].name[len(checkpoint.PREFIX):]) if cks else None


def _kill_when(cmd, env, ready, timeout=240):
    """Start ``cmd``, SIGKILL it once ``ready()`` holds; True when it was killed (not finished first)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return False


def test_a_study_killed_while_training_and_while_scoring_finishes_as_uninterrupted(tmp_path, tiny, subset_npz,
                                                                                    monkeypatch):
    data, out, ref = tmp_path / "data", tmp_path / "study", tmp_path / "ref"
    monkeypatch.setenv("VAELAB_DATA", str(data))
    # the uninterrupted study (in this process): trains, scores, reports
    argv = _argv(tiny, subset_npz, ref)
    assert main([*argv, "--quiet"]) == 0
    study = json.loads((ref / "study.json").read_text())
    assert study["progress"] == {"runs": 8, "trained": 8, "scored": 8}
    assert [r["name"] for r in study["runs"][:2]] == ["betavae-beta1-s0", "betavae-beta1-s1"]
    assert {(r["model"], r["value"]) for r in study["runs"]} == {("betavae", 1.0), ("betavae", 16.0),
                                                                ("btcvae", 1.0), ("btcvae", 6.0)}
    assert [row["setting"] for row in study["settings"]["betavae"]] == [{"model.beta": 1.0}, {"model.beta": 16.0}]
    assert (ref / "report.html").is_file() and (ref / "figures" / "spearman.png").is_file()
    assert (ref / "figures" / "strength_btcvae.png").is_file() and (ref / "figures" / "tradeoff.png").is_file()
    html = (ref / "report.html").read_text()
    assert "Best setting per objective" in html and "(n=2)" in html

    cmd = [sys.executable, "-m", "vaelab", *_argv(tiny, subset_npz, out)]
    env = _env(data)
    # 1. killed while a run is half-trained
    assert _kill_when(cmd, env, lambda: any(0 < (_newest(r) or 0) < STEPS for r in _runs(out))), \
        "the study finished before it could be killed while training"
    # 2. killed while scoring the first objective: some of its runs scored, some not
    def scoring():
        runs = [r for r in _runs(out) if r.parent.name == "betavae"]
        done = [r for r in runs if (r / "eval.json").is_file()]
        return 0 < len(done) < 4
    assert _kill_when(cmd, env, scoring), "the study finished before it could be killed while scoring"
    scored = {r: ((r / "eval.json").read_bytes(), (r / "eval.json").stat().st_mtime_ns)
              for r in _runs(out) if (r / "eval.json").is_file()}
    trained = {r: (r / "metrics.jsonl").read_bytes() for r in _runs(out) if _newest(r) == STEPS}
    # 3. the same command finishes it
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "already scored with these settings (kept)" in res.stdout and "ETA" in res.stdout
    for r, (text, mtime) in scored.items():  # scored runs are not scored again
        assert ((r / "eval.json").read_bytes(), (r / "eval.json").stat().st_mtime_ns) == (text, mtime)
    for r, rows in trained.items():  # trained runs are not trained again
        assert (r / "metrics.jsonl").read_bytes() == rows
    a, b = json.loads((out / "study.json").read_text()), json.loads((ref / "study.json").read_text())
    assert a["progress"] == b["progress"]
    for ra, rb in zip(a["runs"], b["runs"]):
        assert ra["name"] == rb["name"] and ra["scores"] == rb["scores"], ra["name"]
    for run in _runs(out):  # each step logged once; the same weights as the uninterrupted run
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(LOG, STEPS + 1, LOG)), run
        x = load_file(str(checkpoint.find(run) / "tensors.safetensors"))
        y = load_file(str(checkpoint.find(ref / run.parent.name / run.name) / "tensors.safetensors"))
        for k in x:
            if k.startswith("model."):
                np.testing.assert_array_equal(x[k].numpy(), y[k].numpy(), err_msg=f"{run.name} {k}")
    assert (out / "report.html").is_file()
    # `vaelab report STUDY` writes the study report again
    (out / "report.html").unlink()
    assert main(["report", str(out), "--quiet"]) == 0 and (out / "report.html").is_file()

    # a larger selection merges: the old runs kept, one seed added
    bigger = _argv(tiny, subset_npz, out)
    bigger[bigger.index("--seeds") + 1] = "0,1,2"
    bigger[bigger.index("--values") + 1] = "betavae=1"
    bigger[1:1] = ["--models", "betavae"]
    assert main([*bigger, "--quiet", "--no-report"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["selection"]["betavae"] == {"values": [1.0, 16.0], "seeds": [0, 1, 2]}
    assert len(plan["history"]) == 4 and (out / "betavae" / "betavae-beta1-s2").is_dir()
    assert not (out / "betavae" / "betavae-beta16-s2").exists()
    # another step count is refused
    other = _argv(tiny, subset_npz, out)
    other[other.index("--steps") + 1] = "300"
    assert main(other) == 2


@pytest.mark.parametrize("text, message", [
    ("name = 'x'\nsteps = [", "is not valid TOML"),
    (TINY.replace('source = "tests"', 'sorce = "tests"'), "unknown key 'sorce'"),
    (TINY.replace("steps = 1000", "steps = 0"), "steps must be a positive integer"),
    (TINY.replace("seeds = [0, 1, 2]", "seeds = [0, 0]"), "seeds lists a seed twice"),
    (TINY.replace('key = "model.beta"\nvalues = [1, 6]', 'key = "model.bta"\nvalues = [1, 6]'),
     "key model.bta is not in preset dlib-btcvae-dsprites"),
    (TINY.replace("values = [1, 6]", "values = [1, 1.0]"), "values lists a value twice"),
    (TINY.replace("values = [1, 6]", "values = []"), "values must be a non-empty list"),
    (TINY.replace('preset = "dlib-btcvae-dsprites"', 'preset = "dlib-nope"'), "unknown preset 'dlib-nope'"),
    (TINY.replace('metrics = ["mig", "sap", "elbo"]', 'metrics = ["mgi"]'), "unknown metric 'mgi'"),
    (TINY.split("[models.betavae]")[0], "no [models.NAME] table"),
])
def test_bad_protocol_files_are_one_line_errors(tmp_path, capsys, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    assert main(["study", str(p), "--out", str(tmp_path / "st")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error:") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "st").exists()


@pytest.mark.parametrize("args, message", [
    (["--models", "betavae,nope"], "unknown model 'nope'"),
    (["--values", "betavae=3"], "3 is not one of protocol tiny's model.beta values for betavae (1, 4, 16)"),
    (["--values", "betavae"], "expected MODEL=V1,V2"),
    (["--values", "betavae=x"], "'x' is not a number"),
    (["--values", "factorvae=10"], "unknown model 'factorvae'"),
    (["--models", "btcvae", "--values", "betavae=1"], "--models leaves betavae out"),
    (["--seeds", "7"], "seed 7 is not one of protocol tiny's seeds"),
    (["--steps", "10", "--scale", "0.5"], "--steps and --scale both"),
    (["--scale", "-1"], "--scale must be a positive fraction"),
    (["--set", "model.beta=3"], "that is the key the study varies for betavae"),
    (["--set", "train.seed=3"], "pick them with --seeds"),
    (["--ray-address", "auto"], "--ray-address only applies with --backend ray"),
])
def test_unknown_objectives_values_and_options_are_one_line_errors(tmp_path, tiny, capsys, args, message):
    assert main(["study", str(tiny), "--out", str(tmp_path / "st"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error:") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "st").exists()


def test_unknown_protocol_and_the_list(capsys):
    assert main(["study", "unsupervised_studdy_v1"]) == 2
    assert "did you mean 'unsupervised_study_v1'" in capsys.readouterr().err
    assert main(["study"]) == 0
    assert "unsupervised_study_v1" in capsys.readouterr().out


def test_the_packaged_dlib_protocol():
    """disentanglement_lib's unsupervised_study_v1 grid (sweep.py) on the dlib presets' keys."""
    assert "unsupervised_study_v1" in protocol_names()
    p = load_protocol("unsupervised_study_v1")
    grid = {m: (s.preset, s.key, s.values) for m, s in p.models.items()}
    assert grid == {
        "betavae": ("dlib-betavae-dsprites", "model.beta", [1.0, 2.0, 4.0, 6.0, 8.0, 16.0]),
        "factorvae": ("dlib-factorvae-dsprites", "model.gamma", [10.0, 20.0, 30.0, 40.0, 50.0, 100.0]),
        "dipvae1": ("dlib-dipvae1-dsprites", "model.lambda_od", [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]),
        "dipvae2": ("dlib-dipvae2-dsprites", "model.lambda_od", [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]),
        "btcvae": ("dlib-btcvae-dsprites", "model.beta", [1.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
        "annealedvae": ("dlib-annealedvae-dsprites", "model.c_max", [5.0, 10.0, 25.0, 50.0, 75.0, 100.0]),
    }
    assert p.seeds == list(range(50)) and p.steps == 300_000
    assert {"beta_vae", "factor_vae", "mig", "dci", "modularity", "sap", "unsupervised", "elbo"} == set(p.metrics)
    assert sum(len(s.values) for s in p.models.values()) * len(p.seeds) == 1800
    sel = select(p, "betavae,factorvae", ["factorvae=40,10"], [1, 0])
    assert sel == {"betavae": {"values": [1.0, 2.0, 4.0, 6.0, 8.0, 16.0], "seeds": [0, 1]},
                   "factorvae": {"values": [10.0, 40.0], "seeds": [0, 1]}}
    assert study_steps(p, scale=0.01) == 3000 and study_steps(p) == 300_000
    assert run_name("annealedvae", "model.c_max", 25.0, 3) == "annealedvae-c_max25-s3"
    assert run_name("x", "model.beta", 0.5, 0) == "x-beta0.5-s0"


def test_merge_plan():
    sel = {"betavae": {"values": [1.0], "seeds": [0]}}
    new = {"protocol": "p", "digest": "d", "steps": 10, "overrides": ["data.root=/a", "model.latent_dim=3"],
           "selection": sel}
    plan, changes = merge_plan(None, new)
    assert plan["selection"] == sel and changes == [] and len(plan["history"]) == 1
    moved = {**new, "overrides": ["data.root=/b", "model.latent_dim=3"],
             "selection": {"betavae": {"values": [4.0], "seeds": [1]}, "btcvae": {"values": [1.0], "seeds": [0]}}}
    merged, changes = merge_plan(plan, moved)  # where the data is may change; the selection merges
    assert merged["selection"] == {"betavae": {"values": [1.0, 4.0], "seeds": [0, 1]},
                                   "btcvae": {"values": [1.0], "seeds": [0]}}
    assert len(changes) == 2 and "adds values 4 and seeds 1" in changes[0] and "adds model btcvae" in changes[1]
    with pytest.raises(VaelabError, match="trains every run for 10 steps"):
        merge_plan(plan, {**new, "steps": 20})
    with pytest.raises(VaelabError, match="--set model.latent_dim differs"):
        merge_plan(plan, {**new, "overrides": ["model.latent_dim=4"]})
    with pytest.raises(VaelabError, match="the protocol given now differs"):
        merge_plan(plan, {**new, "digest": "other"})


def test_eta():
    rates = {"a": 10.0, "b": 5.0}
    # one after another: the sum of the steps left; vmapped: the most steps left
    assert eta_seconds({"a": [100, 50]}, rates, {"a": False}, 0, None) == pytest.approx(15.0)
    assert eta_seconds({"a": [100, 50]}, rates, {"a": True}, 0, None) == pytest.approx(10.0)
    # a model not measured yet borrows the others' mean rate; scoring at its measured seconds per run
    assert eta_seconds({"c": [75]}, rates, {}, 2, 3.0) == pytest.approx(75 / 7.5 + 6.0)
    assert eta_seconds({"a": [10]}, {}, {}, 0, None) is None
    assert eta_seconds({"a": []}, {}, {}, 1, None) is None
    assert eta_seconds({"a": []}, {}, {}, 0, None) == 0.0
