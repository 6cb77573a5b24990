"""Sweeps (training/sweep.py + vmap.py, `vaelab sweep`): M models in one vmapped step equal M models trained alone."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vaelab
from vaelab.cli import main
from vaelab.config import resolve
from vaelab.data import FactorDataset
from vaelab.errors import VaelabError
from vaelab.training import checkpoint
from vaelab.training.sweep import expand, parse_grid, sweep
from vaelab.training.vmap import StackedAdam, vmap_problem
from vaelab.training.trainer import Trainer

STEPS = 4


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    return FactorDataset.from_arrays((rng.random((48, 1, 64, 64)) < 0.2).astype(np.uint8) * 255)


def base(objective, **train):
    optim = {"vae": {"lr": 1e-3}}
    if objective == "factorvae":
        optim["disc"] = {"lr": 1e-4, "betas": [0.5, 0.9]}
    return {"name": "t", "model": {"objective": objective, "net": "burgess64"}, "optim": optim,
            "train": {"steps": STEPS, "batch_size": 8, "log_every": 1, "checkpoint_every": 0, "image_every": 0,
                      "tensorboard": False, "device": "cpu", **train}}


def _final(run_dir):
    return load_file(str(checkpoint.list_checkpoints(run_dir)[-1] / "tensors.safetensors"))


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("objective,grid,seeds", [
    ("betavae", {"model.beta": [1.0, 4.0]}, [0, 1]),       # M = 4: two values x two seeds
    ("factorvae", {"model.gamma": [2.0, 20.0, 40.0]}, [3]),  # M = 3, two optimisers per iteration
])
def test_vmapped_sweep_equals_runs_trained_alone(tmp_path, dataset, objective, grid, seeds):
    res = sweep(base(objective), grid, seeds, out=tmp_path / "sw", quiet=True, dataset=dataset, mode="vmap")
    assert res.mode == "vmap" and res.note is None and len(res) == len(seeds) * len(next(iter(grid.values())))
    manifest = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    for run in manifest["runs"]:
        solo = tmp_path / f"solo-{run['name']}"
        cfg = resolve(base(objective), {**run["values"], "train.out": str(solo)})
        Trainer(cfg, quiet=True, dataset=dataset).fit()
        np.testing.assert_allclose(_losses(run["path"]), _losses(solo), rtol=1e-5)
        a, b = _final(Path(run["path"])), _final(solo)
        assert a.keys() == b.keys()
        for k in a:
            if k.startswith("model."):
                # Adam's first steps are ~sign(grad)·lr: an element whose gradient is float noise may flip
                # sign between two summation orders, so the bound is 2·lr·steps; nearly all agree closely
                d = (a[k] - b[k]).abs()
                assert float(d.max()) <= 2 * 1e-3 * STEPS, k
                assert float(d.median()) < 1e-5, k
            elif not a[k].is_floating_point():  # sampler position and RNG: resumable alone
                assert torch.equal(a[k], b[k]), k
        # each run folder opens as any run: its own config, a model that encodes
        r = vaelab.load_run(run["path"])
        for key, value in run["values"].items():
            section, name = key.split(".")
            assert (r.config[section][name] if section == "model" else r.cfg.train.seed) == value
        codes = r.encode(dataset.images[:3])
        assert codes.shape == (3, 10) and np.isfinite(codes).all()


def test_a_sweep_run_resumes_alone_as_if_trained_alone(tmp_path, dataset):
    sweep(base("annealedvae", checkpoint_every=2), {"model.c_max": [5.0, 25.0]}, [0], out=tmp_path / "sw",
          quiet=True, dataset=dataset, steps=2, mode="vmap")
    run = tmp_path / "sw" / "t-1"
    Trainer(resolve(base("annealedvae"), {"model.c_max": 25.0, "train.out": str(run)}), resume=True, quiet=True,
            dataset=dataset).fit()
    solo = tmp_path / "solo"
    Trainer(resolve(base("annealedvae"), {"model.c_max": 25.0, "train.out": str(solo)}), quiet=True,
            dataset=dataset).fit()
    np.testing.assert_allclose(_losses(run)[-2:], _losses(solo)[-2:], rtol=1e-5)
    # and the whole sweep resumes in one vmapped step
    sweep(base("annealedvae", checkpoint_every=2), {"model.c_max": [5.0, 25.0]}, [0], out=tmp_path / "sw2",
          quiet=True, dataset=dataset, steps=2, mode="vmap")
    res = sweep(base("annealedvae"), {"model.c_max": [5.0, 25.0]}, [0], out=tmp_path / "sw2", quiet=True,
                dataset=dataset, steps=STEPS, resume=True, mode="vmap")
    assert res.mode == "vmap"
    np.testing.assert_allclose(_losses(res[1])[-2:], _losses(solo)[-2:], rtol=1e-5)
    assert vaelab.load_run(res[0]).step == STEPS


def test_sequential_mode_and_automatic_fallback(tmp_path, dataset, capsys):
    res = sweep(base("factorvae", steps=2), {"model.gamma": [1.0, 10.0]}, None, out=tmp_path / "seq",
                mode="sequential", quiet=True, dataset=dataset)
    assert res.mode == "sequential" and len(res) == 2
    for p in res:
        assert vaelab.load_run(p).step == 2
    # a structural difference (the net) cannot share a vmapped step: sequential, with one line
    res = sweep(base("betavae", steps=1), {"model.latent_dim": [4, 6]}, None, out=tmp_path / "auto",
                quiet=True, dataset=dataset, mode="vmap")
    assert res.mode == "sequential" and "model.latent_dim differs" in res.note
    assert [vaelab.load_run(p).latent_dim for p in res] == [4, 6]
    # the default, auto, trains one after another on the CPU (where the vmapped step is slower)
    res = sweep(base("betavae", steps=1), {"model.beta": [1.0, 4.0]}, None, out=tmp_path / "cpu",
                quiet=True, dataset=dataset)
    assert res.mode == "sequential" and res.note is None and len(res) == 2


def test_stacked_adam_is_m_independent_adams():
    torch.manual_seed(0)
    m, shape = 3, (4, 5)
    p0 = torch.randn(m, *shape)
    lrs, wds = [1e-2, 1e-3, 1e-2], [0.0, 0.1, 0.0]
    refs = [torch.nn.Parameter(p0[k].clone()) for k in range(m)]
    opts = [torch.optim.Adam([refs[k]], lr=lrs[k], betas=(0.9, 0.99), weight_decay=wds[k]) for k in range(m)]
    flat = p0.reshape(m, -1).clone()
    adam = StackedAdam(flat)
    for _ in range(5):
        g = torch.randn(m, *shape)
        for k in range(m):
            refs[k].grad = g[k].clone()
            opts[k].step()
        adam.step(g.reshape(m, -1), lrs, [0.9] * m, [0.99] * m, [1e-8] * m, wds)
    for k in range(m):
        torch.testing.assert_close(flat[k].reshape(shape), refs[k].detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(adam.exp_avg_sq[k].reshape(shape), opts[k].state[refs[k]]["exp_avg_sq"])


def test_grid_parsing_expansion_and_vmap_checks(tmp_path):
    assert parse_grid(["model.beta=1,2.5,4", "train.batch_size=8"]) == {"model.beta": [1, 2.5, 4],
                                                                         "train.batch_size": [8]}
    with pytest.raises(VaelabError, match="expected key=v1"):
        parse_grid(["model.beta"])
    cfgs, labels, out = expand(base("betavae"), {"model.beta": [1, 4]}, [0, 1, 2], out=tmp_path / "x")
    assert len(cfgs) == 6 and out == tmp_path / "x"
    assert labels[4] == {"model.beta": 4, "train.seed": 1}
    assert cfgs[4].model["beta"] == 4.0 and cfgs[4].train.seed == 1 and cfgs[4].train.out.endswith("t-4")
    assert vmap_problem(cfgs) is None
    cfgs, _, _ = expand(base("betavae"), {"train.batch_size": [8, 16]}, None)
    assert "train.batch_size differs" in vmap_problem(cfgs)
    cfgs, _, _ = expand(base("ugvae") | {"model": {"objective": "ugvae"}}, None, [0, 1])
    assert "ugvae" in vmap_problem(cfgs)
    with pytest.raises(VaelabError, match="--seeds"):
        expand(base("betavae"), {"train.seed": [1, 2]}, None)


def test_cli_sweep(tmp_path, shared_data, capsys):
    npz = shared_data / "dsprites" / "dsprites_downsampled.npz"
    if not npz.exists():
        pytest.skip("real dSprites subset missing")
    out = tmp_path / "cli"
    rc = main(["sweep", "quickstart", "--grid", "model.gamma=1,10", "--seeds", "0", "--steps", "2",
               "--set", "data.name=dsprites", "--set", f"data.root={npz}", "--set", "train.batch_size=8",
               "--set", "model.net=burgess64", "--set", "train.tensorboard=false", "--device", "cpu",
               "--mode", "vmap", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "sweep of 2 runs (vmap)" in text and "model.gamma=10" in text
    assert sorted(p.name for p in out.iterdir()) == ["quickstart-0", "quickstart-1", "sweep.json"]
    assert vaelab.load_run(out / "quickstart-1").config["model"]["gamma"] == 10.0
    assert main(["sweep", "quickstart", "--seeds", "a,b", "--out", str(tmp_path / "bad")]) == 2


@pytest.mark.parametrize("args, message", [
    (["--grid", "model.gamma=1,2", "--out", "FILE"], "--out FILE is a file"),
    (["--grid", "model.gamma=1,2", "--grid", "model.gamma=3"], "--grid model.gamma is given twice"),
    (["--seeds", ","], "gives no seed"),
    (["--seeds", ""], "gives no seed"),
    (["--seeds", "0,,1"], "comma-separated integers"),
    (["--seeds", "0,0"], "gives 0 twice"),
    (["--grid", "model.gamma=1,1.0"], "gives 1.0 twice"),
    (["--runs-per-task", "0"], "--runs-per-task only applies with --backend ray"),
    (["--gpus-per-task", "0.5"], "--gpus-per-task only applies with --backend ray"),
    (["--ray-address", "auto"], "--ray-address only applies with --backend ray"),
    (["--grid", "model.gamma=1,2", "--set", "model.gamma=5"], "model.gamma is both in --grid and in --set"),
    (["--grid", "train.steps=1,2"], "train.steps is both in --grid and in --steps"),
])
def test_cli_sweep_bad_input_one_line_exit_2(args, message, tmp_path, data_home, capsys, monkeypatch):
    """Every mistake ends with one line before anything is trained or written (quickstart's dSprites
    is not in the empty data directory, so a sweep that went on would fail on the data instead)."""
    monkeypatch.chdir(tmp_path)
    Path("FILE").write_text("not a folder")
    out = ["--out", "sw"] if "--out" not in args else []
    assert main(["sweep", "quickstart", "--steps", "1", "--device", "cpu", *out, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error:") and message in err, err
    assert len(err.splitlines()) == 1
    assert not Path("sw").exists() and Path("FILE").read_text() == "not a folder"


def test_sweep_api_refuses_what_it_would_ignore_or_repeat(tmp_path, dataset):
    """The Python API has the CLI's rules: each of these would otherwise train (or silently merge)."""
    kw = dict(out=tmp_path / "sw", quiet=True, dataset=dataset, steps=1, mode="sequential")
    b = base("betavae")
    for extra, message in [({"runs_per_task": 0}, "--runs-per-task only applies with --backend ray"),
                           ({"gpus_per_task": 1.0}, "--gpus-per-task only applies"),
                           ({"ray_address": "auto"}, "--ray-address only applies"),
                           ({"overrides": ["model.beta=5"]}, "model.beta is both in --grid and in --set model"),
                           ({"overrides": {"model.beta": 5}}, "model.beta is both in --grid and in --set"),
                           ({"device": "cpu"}, "train.device is both in --grid and in --device")]:
        grid = {"train.device": ["cpu"]} if "device" in extra else {"model.beta": [1.0, 4.0]}
        with pytest.raises(VaelabError, match=message):
            sweep(b, grid, None, **{**kw, **extra})
    with pytest.raises(VaelabError, match="model.beta=1,4,1.0 gives 1.0 twice"):
        sweep(b, {"model.beta": [1, 4, 1.0]}, None, **kw)
    with pytest.raises(VaelabError, match="--seeds 3,3 gives 3 twice"):
        sweep(b, None, [3, 3], **kw)
    with pytest.raises(VaelabError, match="--seeds is empty"):
        sweep(b, None, [], **kw)
    with pytest.raises(VaelabError, match="model.beta has no values"):
        sweep(b, {"model.beta": []}, None, **kw)
    assert not (tmp_path / "sw").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(VaelabError, match="is a file"):
        sweep(b, None, None, **{**kw, "out": tmp_path / "file"})
    with pytest.raises(VaelabError, match="cannot create the sweep folder"):
        sweep(b, None, None, **{**kw, "out": tmp_path / "file" / "sw"})


def test_parse_grid_refuses_a_key_given_twice():
    with pytest.raises(VaelabError, match="--grid model.gamma is given twice"):
        parse_grid(["model.gamma=1,2", "model.gamma=3"])
    with pytest.raises(VaelabError, match="--grid model.beta is given twice"):
        parse_grid(["model.beta=1", " model.beta =2"])  # the same key, however spaced
    assert parse_grid(["model.beta=1", "model.gamma=1"]) == {"model.beta": [1], "model.gamma": [1]}
