"""Plugins (vaelab.plugins): an objective, a metric, a net and a dataset in files outside the package go
through train -> resume -> sweep -> evaluate -> report from the command line; bad plugins are one line."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaelab import plugins
from vaelab.cli import main
from vaelab.config import resolve
from vaelab.errors import VaelabError
from vaelab.training import checkpoint

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY_NET = '''
from torch import nn
from vaelab.plugins import register_net


@register_net("tiny_mlp", aliases=("tiny",))
def tiny_mlp(image_shape, latent_dim, hidden: int = 16):
    c, h, w = image_shape
    enc = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
    dec = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, c * h * w),
                        nn.Unflatten(1, (c, h, w)))
    return enc, dec
'''

CONFIG = '''
name = "iv"
plugins = ["infovae.py", "bars.py", "tiny_net.py"]

[data]
name = "bars"

[model]
objective = "infovae"
net = "tiny"
latent_dim = 3

[optim.vae]
lr = 1e-3

[train]
steps = 4
batch_size = 8
log_every = 1
checkpoint_every = 2
image_every = 0
tensorboard = false
device = "cpu"
'''


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


def _registries():
    from vaelab import models, nets
    from vaelab.data import registry
    from vaelab.metrics import evaluate

    registry.names()  # vaelab's own datasets registered before the snapshot
    return [models.OBJECTIVES, evaluate.METRICS, nets.NETS, nets.NET_ALIASES, registry.REGISTRY, plugins._loaded]


@pytest.fixture
def forget():
    """Call it to drop what plugins registered (as a new process would start); done after each test too, so
    the other tests see vaelab's own objectives, metrics, nets and datasets only."""
    saved = [(d, dict(d)) for d in _registries()]
    modules = set(sys.modules)
    done = plugins._entry_points_done

    def restore():
        for d, copy in saved:
            d.clear()
            d.update(copy)
        for name in set(sys.modules) - modules:
            if name.startswith("vaelab_plugin_"):
                del sys.modules[name]
        plugins._entry_points_done = done

    yield restore
    restore()


@pytest.fixture
def work(tmp_path, forget):
    """The example plugins copied beside the user's config, outside the package, and a tiny net plugin."""
    shutil.copy(EXAMPLES / "infovae.py", tmp_path / "infovae.py")
    shutil.copy(EXAMPLES / "dataset_plugin.py", tmp_path / "bars.py")
    shutil.copy(EXAMPLES / "metric_plugin.py", tmp_path / "metric.py")
    (tmp_path / "tiny_net.py").write_text(TINY_NET)
    (tmp_path / "cfg.toml").write_text(CONFIG)
    return tmp_path


def _tensors(run_dir):
    return load_file(str(checkpoint.list_checkpoints(run_dir)[-1] / "tensors.safetensors"))


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_plugins_go_through_train_resume_sweep_evaluate_report(work, forget, capsys):
    cfg, metric = str(work / "cfg.toml"), str(work / "metric.py")
    run, halves = work / "runs" / "iv", work / "runs" / "iv-halves"
    assert main(["train", cfg, "--out", str(run), "--quiet", "--plugin", metric]) == 0
    recorded = resolve(str(run / "config.toml")).plugins
    assert recorded == [str(work / n) for n in ("infovae.py", "bars.py", "tiny_net.py", "metric.py")]
    assert "mmd" in json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])

    # resume: 2 steps, a new process (nothing registered), 2 more == 4 straight, bit for bit
    assert main(["train", cfg, "--out", str(halves), "--quiet", "--steps", "2"]) == 0
    forget()
    assert main(["train", cfg, "--out", str(halves), "--quiet", "--resume", "--steps", "4"]) == 0
    a, b = _tensors(run), _tensors(halves)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(run) == _losses(halves)

    # a vmapped sweep of λ: each model as trained alone
    sw = work / "runs" / "sw"
    assert main(["sweep", cfg, "--grid", "model.lambda_=10,1000", "--mode", "vmap", "--out", str(sw),
                 "--steps", "2", "--quiet"]) == 0
    manifest = json.loads((sw / "sweep.json").read_text())
    assert manifest["mode"] == "vmap" and len(manifest["runs"]) == 2
    solo = work / "runs" / "solo"
    assert main(["train", cfg, "--out", str(solo), "--quiet", "--steps", "2", "--set", "model.lambda_=1000"]) == 0
    np.testing.assert_allclose(_losses(manifest["runs"][1]["path"]), _losses(solo), rtol=1e-5)

    # evaluate and report in "new processes": the run's config.toml brings its plugins back
    forget()
    assert main(["evaluate", str(run), "--profile", "fast", "--metrics", "code_correlation,mig,elbo", "--quiet"]) == 0
    scores = json.loads((run / "eval.json").read_text())
    assert 0 <= scores["code_correlation.mean_abs"] <= scores["code_correlation.max_abs"] <= 1
    assert "elbo.elbo" in scores and "mig.score" in scores
    forget()
    assert main(["evaluate", str(sw), "--profile", "fast", "--metrics", "code_correlation", "--quiet"]) == 2
    assert "unknown metric 'code_correlation'" in capsys.readouterr().err  # the sweep was trained without it
    assert main(["evaluate", str(sw), "--profile", "fast", "--metrics", "code_correlation", "--quiet",
                 "--plugin", metric]) == 0
    assert "code_correlation.mean_abs" in (sw / "study.json").read_text()
    forget()
    assert main(["report", str(run), "--quiet"]) == 0
    page = (run / "report.html").read_text()
    assert "Code correlation" in page and "infovae" in page
    capsys.readouterr()


def test_a_plugin_objective_has_the_fast_path_and_a_vmapped_step(work):
    from vaelab.models import build_model, objective_class
    from vaelab.training.fast import _forward_methods, make_step
    from vaelab.training.sampler import BatchSampler
    from vaelab.training.vmap import vmap_problem

    plugins.load([str(work / "infovae.py"), str(work / "tiny_net.py")])
    cls = objective_class("infovae")
    assert cls.vmap_problem() is None and cls.sweep_keys == ("alpha", "lambda_")
    cfgs = [resolve(str(work / "cfg.toml"), {"model.lambda_": v}) for v in (10.0, 100.0)]
    assert vmap_problem(cfgs) is None
    images = torch.from_numpy((np.random.default_rng(0).random((32, 1, 8, 8)) < 0.3).astype(np.uint8) * 255)

    def setup():
        torch.manual_seed(0)
        model = build_model({"objective": "infovae", "net": "tiny_mlp", "latent_dim": 3}, (1, 8, 8))
        opts = {"vae": torch.optim.Adam(model.parameters(), lr=1e-3)}
        return model, opts, BatchSampler(images, torch.arange(32), 8, seed=1, device="cpu")

    model, opts, s = setup()
    assert _forward_methods(model) == ("loss",)
    torch.manual_seed(5)
    plain = [float(model.update(s.next(), torch.tensor(i), opts)["loss"]) for i in range(3)]
    model, opts, s = setup()
    torch.manual_seed(5)
    fn = make_step(model, opts, s, "compile", "cpu", compile_backend="eager")  # torch.compile accepts it
    assert fn.mode == "compile"
    fast = []
    for i in range(3):
        fn.step_t.fill_(i)
        fast.append(float(fn(fn.step_t)["loss"]))
    assert fast == plain


def test_bad_plugins_are_one_line_errors(tmp_path, forget, capsys):
    (tmp_path / "raises.py").write_text("x = 1\ny = x / 0\n")
    (tmp_path / "clash.py").write_text("from vaelab.plugins import register_net\n"
                                       "register_net('burgess64', lambda shape, d: None)\n")
    cases = [
        (["--plugin", str(tmp_path / "raises.py"), "data", "list"], ["raises.py", "ZeroDivisionError", "line 2"]),
        (["data", "list", "--plugin", str(tmp_path / "raisse.py")], ["raisse.py", "no such file", "raises.py"]),
        (["data", "list", "--plugin", "no_such_plugin_module"], ["'no_such_plugin_module' not found"]),
        (["data", "list", "--plugin", str(tmp_path / "clash.py")], ["clash.py", "'burgess64' is already registered"]),
    ]
    for argv, words in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("vaelab: error: plugin "), err
        assert all(w in err for w in words), err
    # a run whose plugin file has gone: the command that opens it says which
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(f'plugins = ["{tmp_path / "gone.py"}"]\n')
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gone.py" in err


def test_registration_checks_and_dataset_options(work, forget, capsys):
    from vaelab.models import VAE, register_objective

    class Keyword(VAE):
        objective = "kw"
        defaults = {"lambda": 1.0}

    with pytest.raises(VaelabError, match="'lambda' is not a Python name"):
        register_objective(Keyword)

    class Taken(VAE):
        objective = "betavae"

    with pytest.raises(VaelabError, match="'betavae' is already registered"):
        register_objective(Taken)
    bars = str(work / "bars.py")
    assert main(["data", "info", "bars", "--plugin", bars, "--option", "gapp=1"]) == 2
    assert "did you mean 'gap'" in capsys.readouterr().err
    out = work / "bars.png"
    assert main(["data", "show", "bars", "--plugin", bars, "--option", "gap=2", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["data", "show", "bars", "--plugin", bars, "--option", "gap=9", "--out", str(out)]) == 2
    assert "gap must be 1 to 3" in capsys.readouterr().err


def test_an_installed_plugin_is_found_through_its_entry_point(tmp_path, forget, monkeypatch):
    from vaelab.nets import canonical_net

    site = tmp_path / "site"
    (site / "ep_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "ep_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n")
    (site / "ep_plugin-0.1.dist-info" / "entry_points.txt").write_text("[vaelab.plugins]\nep = ep_plugin_mod\n")
    (site / "ep_plugin_mod.py").write_text(TINY_NET.replace('"tiny_mlp", aliases=("tiny",)', '"ep_net"'))
    monkeypatch.syspath_prepend(str(site))
    plugins._entry_points_done = False
    assert canonical_net("ep_net") == "ep_net"  # an unknown name loads the installed plugins first


def test_ugvae_dim_z_is_one_alias_everywhere():
    base = {"name": "u", "data": {"name": "mnist"}, "model": {"objective": "ugvae", "dim_z": 3}}
    assert resolve(base).model["latent_dim"] == 3 and "dim_z" not in resolve(base).model
    with pytest.raises(VaelabError, match="disagree"):
        resolve(base, {"model.latent_dim": 4})
    from vaelab.models import objective_class

    ug = objective_class("ugvae")
    assert ug.vmap_problem() and not ug.per_image_elbo and ug.mixture_prior and ug.global_latent
    assert objective_class("factorvae").autocast_methods() == ("_vae_terms", "_second_codes", "_disc_terms")
    assert "global term" in ug.elbo_note


def test_a_plugin_dataset_declares_its_own_download(tmp_path, forget):
    import hashlib

    from vaelab.data import DatasetSpec, register_dataset
    from vaelab.data.fetch import RemoteFile, fetch

    data = b"the plugin's one file"
    rf = RemoteFile("https://example.invalid/mine.bin", "mine/mine.bin", sha256=hashlib.sha256(data).hexdigest(),
                    size=len(data))

    def load_mine(root=None, split="train", size=None):
        raise AssertionError("not loaded by fetch")

    register_dataset(DatasetSpec("mine", load_mine, "a plugin's dataset", files=["mine/mine.bin"], remote=[rf]))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mine.bin").write_bytes(data)
    said = []
    assert fetch("mine", data_dir=tmp_path, say=said.append) == [tmp_path / "mine" / "mine.bin"]
    assert "already present (sha256 verified" in said[0]  # checked against the spec's checksum; no download
    (tmp_path / "mine" / "mine.bin").write_bytes(b"x" * len(data))
    with pytest.raises(VaelabError, match="example.invalid"):  # damaged: fetched again from the spec's URL
        fetch("mine", data_dir=tmp_path, say=said.append, quiet=True)
    assert any("is damaged" in line for line in said)
