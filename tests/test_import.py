"""`vaelab import`: disentangling-vae folders and 1Konny FactorVAE / Beta-VAE checkpoints as run folders, the
same functions as the upstream nets (re-implemented here with their key names and shapes), bad files
refused before anything runs; `vaelab evaluate --encoder` and `vaelab.evaluate(encode, dataset)`."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

import vaelab
from vaelab.cli import main
from vaelab.errors import VaelabError

TOL = 1e-5


# ----------------------------------------------------------------------------- upstream nets, re-implemented
# Layer names, shapes and forward passes as the upstream files define them: YannDubs/disentangling-vae
# disvae/models/{encoders,decoders,vae}.py (Burgess), 1Konny/FactorVAE model.py, 1Konny/Beta-VAE model.py.
class DisvaeEncoder(nn.Module):
    def __init__(self, img_size, latent_dim):
        super().__init__()
        c, h, _ = img_size
        self.latent_dim, self.big = latent_dim, h == 64
        self.conv1 = nn.Conv2d(c, 32, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 4, stride=2, padding=1)
        if self.big:
            self.conv_64 = nn.Conv2d(32, 32, 4, stride=2, padding=1)
        self.lin1 = nn.Linear(512, 256)
        self.lin2 = nn.Linear(256, 256)
        self.mu_logvar_gen = nn.Linear(256, 2 * latent_dim)

    def forward(self, x):
        b = x.size(0)
        x = torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))))
        if self.big:
            x = torch.relu(self.conv_64(x))
        x = torch.relu(self.lin2(torch.relu(self.lin1(x.view((b, -1))))))
        mu, logvar = self.mu_logvar_gen(x).view(-1, self.latent_dim, 2).unbind(-1)
        return mu, logvar


class DisvaeDecoder(nn.Module):
    def __init__(self, img_size, latent_dim):
        super().__init__()
        c, h, _ = img_size
        self.big = h == 64
        self.lin1 = nn.Linear(latent_dim, 256)
        self.lin2 = nn.Linear(256, 256)
        self.lin3 = nn.Linear(256, 512)
        if self.big:
            self.convT_64 = nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1)
        self.convT1 = nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1)
        self.convT2 = nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1)
        self.convT3 = nn.ConvTranspose2d(32, c, 4, stride=2, padding=1)

    def forward(self, z):
        x = torch.relu(self.lin3(torch.relu(self.lin2(torch.relu(self.lin1(z))))))
        x = x.view(z.size(0), 32, 4, 4)
        if self.big:
            x = torch.relu(self.convT_64(x))
        return torch.sigmoid(self.convT3(torch.relu(self.convT2(torch.relu(self.convT1(x))))))


class DisvaeVAE(nn.Module):
    def __init__(self, img_size, latent_dim):
        super().__init__()
        self.encoder = DisvaeEncoder(img_size, latent_dim)
        self.decoder = DisvaeDecoder(img_size, latent_dim)


def konny_factorvae(z_dim, nc, f):
    m = nn.Module()
    m.encode = nn.Sequential(
        nn.Conv2d(nc, 32, 4, 2, 1), nn.ReLU(True), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(True),
        nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(True), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(True),
        nn.Conv2d(64, f, 4, 1), nn.ReLU(True), nn.Conv2d(f, 2 * z_dim, 1))
    m.decode = nn.Sequential(
        nn.Conv2d(z_dim, f, 1), nn.ReLU(True), nn.ConvTranspose2d(f, 64, 4), nn.ReLU(True),
        nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(True), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(True),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(True), nn.ConvTranspose2d(32, nc, 4, 2, 1))
    return m


def konny_discriminator(z_dim):
    m = nn.Module()
    layers = []
    for a in (z_dim, 1000, 1000, 1000, 1000):
        layers += [nn.Linear(a, 1000), nn.LeakyReLU(0.2, True)]
    m.net = nn.Sequential(*layers, nn.Linear(1000, 2))
    return m


class View(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, t):
        return t.view(self.size)


def konny_betavae(kind, z_dim, nc):
    m = nn.Module()
    if kind == "H":
        m.encoder = nn.Sequential(
            nn.Conv2d(nc, 32, 4, 2, 1), nn.ReLU(True), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(True), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(64, 256, 4, 1), nn.ReLU(True), View((-1, 256)), nn.Linear(256, 2 * z_dim))
        m.decoder = nn.Sequential(
            nn.Linear(z_dim, 256), View((-1, 256, 1, 1)), nn.ReLU(True), nn.ConvTranspose2d(256, 64, 4), nn.ReLU(True),
            nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(True), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(True),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(True), nn.ConvTranspose2d(32, nc, 4, 2, 1))
    else:
        m.encoder = nn.Sequential(
            nn.Conv2d(nc, 32, 4, 2, 1), nn.ReLU(True), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(True), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(True),
            View((-1, 512)), nn.Linear(512, 256), nn.ReLU(True), nn.Linear(256, 256), nn.ReLU(True),
            nn.Linear(256, 2 * z_dim))
        m.decoder = nn.Sequential(
            nn.Linear(z_dim, 256), nn.ReLU(True), nn.Linear(256, 256), nn.ReLU(True),
            nn.Linear(256, 512), nn.ReLU(True),
            View((-1, 32, 4, 4)), nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(True),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(True), nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(True),
            nn.ConvTranspose2d(32, nc, 4, 2, 1))
    return m


def _adam_state(module):
    """An Adam state dict after one step (moments and step counts, as a trained checkpoint holds)."""
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return opt.state_dict()


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module", autouse=True)
def data_env(tmp_path_factory):
    """One data directory (its dSprites cache) for the whole module; progress bars off."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAELAB_DATA", str(tmp_path_factory.mktemp("vaelab-data")))
        mp.setenv("VAELAB_QUIET", "1")
        yield


SPECS = {"batch_size": 64, "betaB_G": 1000, "betaB_finC": 25, "betaB_initC": 0, "betaH_B": 4, "btcvae_A": 1,
         "btcvae_B": 6, "btcvae_G": 1, "checkpoint_every": 10, "dataset": "dsprites", "epochs": 30,
         "eval_batchsize": 1000, "experiment": "custom", "factor_G": 6, "img_size": [1, 64, 64],
         "is_eval_only": False, "is_metrics": False, "latent_dim": 10, "log_level": "info", "loss": "betaH",
         "lr": 0.0005, "lr_disc": 5e-05, "model_type": "Burgess", "name": "test", "no_cuda": False,
         "no_progress_bar": True, "no_test": False, "rec_dist": "bernoulli", "reg_anneal": 10000, "seed": 1234}


def disvae_folder(path, img_size=(1, 64, 64), latent_dim=10, seed=0, **specs):
    torch.manual_seed(seed)
    net = DisvaeVAE(img_size, latent_dim)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path / "model.pt")
    (path / "specs.json").write_text(json.dumps({**SPECS, "img_size": list(img_size), "latent_dim": latent_dim,
                                                 **specs}, indent=4))
    return net


def cli(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def refused(argv, capsys, *needles):
    rc, out, err = cli(argv, capsys)
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaelab: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def images(n, c, side, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, c, side, side, generator=g) * 255).round().to(torch.uint8)


def assert_close(a, b):
    a = torch.as_tensor(np.asarray(a, dtype=np.float32)) if not isinstance(a, torch.Tensor) else a
    b = torch.as_tensor(np.asarray(b, dtype=np.float32)) if not isinstance(b, torch.Tensor) else b
    assert a.shape == b.shape, (a.shape, b.shape)
    assert float((a.float() - b.float()).abs().max()) < TOL


# ----------------------------------------------------------------------------- disentangling-vae
@pytest.mark.parametrize("img_size, spec, want", [
    ((1, 64, 64), {"loss": "betaH", "betaH_B": 3.0}, {"objective": "betavae", "beta": 3.0, "net": "burgess64",
                                                     "likelihood": "bernoulli"}),
    ((1, 32, 32), {"loss": "btcvae", "btcvae_A": -5, "btcvae_B": 10, "rec_dist": "laplace", "dataset": "mnist"},
     {"objective": "btcvae", "alpha": -5.0, "beta": 10.0, "estimator": "mss", "net": "burgess32",
      "likelihood": "laplace"}),
    ((3, 64, 64), {"loss": "betaB", "betaB_G": 100, "betaB_finC": 50, "rec_dist": "gaussian", "dataset": "celeba",
                   "reg_anneal": 100000}, {"objective": "annealedvae", "gamma": 100.0, "c_max": 50.0,
                                           "c_steps": 100000, "likelihood": "gaussian"}),
    ((1, 64, 64), {"loss": "factor", "factor_G": 6.4, "batch_size": 128, "lr_disc": 1e-4, "dataset": "chairs"},
     {"objective": "factorvae", "gamma": 6.4, "permute_source": "second_batch"}),
])
def test_disvae_import_is_the_upstream_function(img_size, spec, want, tmp_path, capsys):
    d = 6
    net = disvae_folder(tmp_path / "exp", img_size, d, **spec)
    rc, out, err = cli(["import", "disentangling-vae", tmp_path / "exp", "--out", tmp_path / "run"], capsys)
    assert rc == 0, err
    assert "run folder:" in out and "note:" in out
    run = vaelab.load_run(tmp_path / "run")
    m = run.config["model"]
    for k, v in want.items():
        assert m[k] == v, (k, m[k])
    assert m["latent_dim"] == d
    if spec.get("rec_dist") == "gaussian":
        assert m["variance"] == pytest.approx(1 / 510)  # disvae: 255·Σ(x − m)²
    if spec.get("rec_dist") == "laplace":
        assert m["variance"] == pytest.approx(2 / 9)  # disvae: 3·Σ|x − m|, scale 1/3
    if want["objective"] == "factorvae":
        assert run.cfg.train.batch_size == 64 and run.cfg.optim["disc"].lr == 1e-4  # the doubled batch halved
        assert run.config["data"]["options"] == {"channels": 1}  # disvae's grey chairs
    if spec.get("dataset") == "mnist":
        assert run.config["data"]["size"] == 32
    info = json.loads((tmp_path / "run" / "import.json").read_text())
    assert info["format"] == "disentangling-vae" and info["upstream"]["loss"] == spec["loss"] and info["notes"]
    # same weights, same function: encoder (μ, ln σ²) and decoder mean
    x = images(5, img_size[0], img_size[1])
    with torch.no_grad():
        mu_up, lv_up = net.encoder(x.float() / 255)
        mu, lv = run.encode_params(x)
        assert_close(mu, mu_up)
        assert_close(lv, lv_up)
        z = torch.randn(4, d)
        assert_close(run.decode(z), net.decoder(z))
        assert_close(torch.sigmoid(run.model.decode(z)), net.decoder(z))


def test_disvae_import_runs_every_command_on_real_dsprites(subset_npz, tmp_path, capsys):
    net = disvae_folder(tmp_path / "exp", seed=3)
    rc, out, err = cli(["import", "disentangling-vae", tmp_path / "exp", "--out", tmp_path / "run",
                        "--data-root", subset_npz, "--quiet"], capsys)
    assert rc == 0 and out == "", err
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "config.toml", "import.json"]
    run = vaelab.load_run(run_dir)
    ds = run.dataset()
    x = ds.gather(torch.arange(0, 4000, 500))
    with torch.no_grad():
        assert_close(run.encode(x), net.encoder(x.float() / 255)[0])
    rc, out, err = cli(["evaluate", run_dir, "--metrics", "mig,latent", "--profile", "fast"], capsys)
    assert rc == 0, err
    scores = json.loads((run_dir / "eval.json").read_text())
    assert 0 <= scores["mig.score"] <= 1 and scores["num_latents"] == 10
    for argv in (["traverse", run_dir, "--steps", "4"], ["reconstruct", run_dir, "--n", "8"],
                 ["sample", run_dir, "--n", "8"], ["report", run_dir]):
        rc, out, err = cli(argv, capsys)
        assert rc == 0, (argv, err)
    assert list((run_dir / "images").glob("*traverse*")) and (run_dir / "report.html").is_file()
    # an imported run holds weights only: resuming its training is refused in one line
    refused(["train", run_dir / "config.toml", "--resume", "--out", run_dir], capsys, "imported")


def test_disvae_import_api_and_dataset_override(tmp_path):
    disvae_folder(tmp_path / "exp")
    run = vaelab.import_run("disentangling-vae", tmp_path / "exp", tmp_path / "run", dataset="dsprites-procedural")
    assert run.config["data"]["name"] == "dsprites-procedural" and run.latent_dim == 10
    assert run.step == 30 * -(-737_280 // 64)  # epochs × ceil(N / batch)
    with pytest.raises(VaelabError, match="already exists"):
        vaelab.import_run("disentangling-vae", tmp_path / "exp", tmp_path / "run")
    with pytest.raises(VaelabError, match="unknown import format"):
        vaelab.import_run("disvae", tmp_path / "exp")


# ----------------------------------------------------------------------------- 1Konny
def test_1konny_factorvae_import_is_the_upstream_function(tmp_path, capsys):
    torch.manual_seed(1)
    vae, disc = konny_factorvae(7, 1, 128), konny_discriminator(7)
    ck = {"iter": 12345, "win_states": {"D_z": None, "recon": "window_3a"},
          "model_states": {"VAE": vae.state_dict(), "D": disc.state_dict()},
          "optim_states": {"optim_VAE": _adam_state(vae), "optim_D": _adam_state(disc)}}
    (tmp_path / "ckpts").mkdir()
    torch.save(ck, tmp_path / "ckpts" / "12345")
    torch.save({"iter": 500}, tmp_path / "ckpts" / "500")  # an older one (never read)
    refused(["import", "1konny-factorvae", tmp_path / "ckpts", "--out", tmp_path / "run", "--data-root",
             tmp_path / "nowhere"], capsys, "does not exist")
    # its checkpoint folder: the highest iteration, as the solver's load_checkpoint('last')
    rc, out, err = cli(["import", "1konny-factorvae", tmp_path / "ckpts", "--out", tmp_path / "run",
                        "--gamma", "10"], capsys)
    assert rc == 0, err
    run = vaelab.load_run(tmp_path / "run")
    m = run.config["model"]
    assert (m["objective"], m["net"], m["latent_dim"], m["gamma"], run.step) == ("factorvae", "fvae64", 7, 10.0, 12345)
    assert run.config["data"]["name"] == "dsprites"  # a one-channel FactorVAE net: 1Konny's dSprites
    x = images(5, 1, 64)
    with torch.no_grad():
        stats = vae.encode(x.float() / 255)
        mu, lv = run.encode_params(x)
        assert_close(mu, stats[:, :7].squeeze(-1).squeeze(-1))
        assert_close(lv, stats[:, 7:].squeeze(-1).squeeze(-1))
        z = torch.randn(3, 7)
        assert_close(run.model.decode(z), vae.decode(z.view(3, 7, 1, 1)))
        assert_close(run.model.disc(z), disc.net(z))


def test_1konny_factorvae_three_channels_needs_the_dataset(tmp_path, capsys):
    torch.manual_seed(2)
    vae, disc = konny_factorvae(10, 3, 256), konny_discriminator(10)
    torch.save({"iter": 5, "model_states": {"VAE": vae.state_dict(), "D": disc.state_dict()},
                "optim_states": {}}, tmp_path / "ck")
    refused(["import", "1konny-factorvae", tmp_path / "ck", "--out", tmp_path / "r"], capsys, "--dataset")
    refused(["import", "1konny-factorvae", tmp_path / "ck", "--out", tmp_path / "r", "--dataset", "mnist"], capsys,
            "3×64×64", "mnist")
    refused(["import", "1konny-factorvae", tmp_path / "ck", "--out", tmp_path / "r", "--dataset", "celeba",
             "--latent-dim", "12"], capsys, "10-dimensional")
    rc, out, err = cli(["import", "1konny-factorvae", tmp_path / "ck", "--out", tmp_path / "r", "--dataset", "celeba"],
                       capsys)
    assert rc == 0, err
    run = vaelab.load_run(tmp_path / "r")
    x = images(3, 3, 64)
    with torch.no_grad():
        assert_close(run.encode(x), vae.encode(x.float() / 255)[:, :10, 0, 0])


@pytest.mark.parametrize("kind, nc, extra, objective", [
    ("H", 3, ["--dataset", "celeba", "--beta", "10"], "betavae"),
    ("B", 1, ["--gamma", "100", "--c-max", "20"], "annealedvae"),
])
def test_1konny_betavae_import_is_the_upstream_function(kind, nc, extra, objective, tmp_path, capsys):
    torch.manual_seed(4)
    net = konny_betavae(kind, 5, nc)
    ck = {"iter": 1500, "win_states": {"recon": None, "kld": None, "mu": None, "var": None},
          "model_states": {"net": net.state_dict()}, "optim_states": {"optim": _adam_state(net)}}
    torch.save(ck, tmp_path / "last")
    rc, out, err = cli(["import", "1konny-betavae", tmp_path / "last", "--out", tmp_path / "run", *extra], capsys)
    assert rc == 0, err
    run = vaelab.load_run(tmp_path / "run")
    m = run.config["model"]
    assert m["objective"] == objective and m["latent_dim"] == 5 and run.step == 1500
    assert m["net"] == ("betavae_h" if kind == "H" else "burgess64")
    if kind == "H":
        assert m["beta"] == 10.0 and m["likelihood"] == "gaussian" and m["variance"] == 0.5  # solver.py: celeba
    else:
        assert (m["gamma"], m["c_max"], m["c_steps"], m["likelihood"]) == (100.0, 20.0, 100000, "bernoulli")
    x = images(4, nc, 64)
    with torch.no_grad():
        stats = net.encoder(x.float() / 255)
        mu, lv = run.encode_params(x)
        assert_close(mu, stats[:, :5])
        assert_close(lv, stats[:, 5:])
        z = torch.randn(3, 5)
        assert_close(run.model.decode(z), net.decoder(z))


# ----------------------------------------------------------------------------- bad files
class RunsCode:
    """A pickle whose loading would run a shell command (creating ``marker``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bad_files_are_refused_in_one_line_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    # a pickle that would run code: as a disvae model.pt and as a 1Konny checkpoint
    disvae_folder(tmp_path / "evil")
    torch.save({"encoder.conv1.weight": RunsCode(marker)}, tmp_path / "evil" / "model.pt")
    refused(["import", "disentangling-vae", tmp_path / "evil", "--out", tmp_path / "r1"], capsys,
            "needs more than tensors", "system")
    torch.save({"iter": 1, "model_states": {"net": RunsCode(marker)}}, tmp_path / "evil-ck")
    refused(["import", "1konny-betavae", tmp_path / "evil-ck", "--out", tmp_path / "r2"], capsys,
            "needs more than tensors")
    assert not marker.exists()  # the command in the pickle never ran
    # truncated files
    disvae_folder(tmp_path / "cut")
    data = (tmp_path / "cut" / "model.pt").read_bytes()
    (tmp_path / "cut" / "model.pt").write_bytes(data[: len(data) // 2])
    refused(["import", "disentangling-vae", tmp_path / "cut", "--out", tmp_path / "r3"], capsys, "truncated")
    torch.manual_seed(0)
    net = konny_betavae("B", 10, 1)
    torch.save({"iter": 1, "model_states": {"net": net.state_dict()}, "optim_states": {}}, tmp_path / "ck")
    (tmp_path / "ck-cut").write_bytes((tmp_path / "ck").read_bytes()[:1000])
    refused(["import", "1konny-betavae", tmp_path / "ck-cut", "--out", tmp_path / "r4"], capsys, "truncated")
    # no specs.json
    disvae_folder(tmp_path / "nospecs")
    (tmp_path / "nospecs" / "specs.json").unlink()
    refused(["import", "disentangling-vae", tmp_path / "nospecs", "--out", tmp_path / "r5"], capsys, "no specs.json")
    # wrong keys: a 1Konny BetaVAE_B state dict given as a disvae model
    disvae_folder(tmp_path / "keys")
    torch.save(net.state_dict(), tmp_path / "keys" / "model.pt")
    refused(["import", "disentangling-vae", tmp_path / "keys", "--out", tmp_path / "r6"], capsys,
            "does not hold disentangling-vae's Burgess net", "missing decoder.convT1.bias", "unexpected decoder.0.bias")
    # wrong shapes: specs.json says 10 latents, the weights have 12
    disvae_folder(tmp_path / "shapes", latent_dim=12)
    specs = json.loads((tmp_path / "shapes" / "specs.json").read_text())
    (tmp_path / "shapes" / "specs.json").write_text(json.dumps({**specs, "latent_dim": 10}))
    refused(["import", "disentangling-vae", tmp_path / "shapes", "--out", tmp_path / "r7"], capsys,
            "encoder.mu_logvar_gen.weight has shape [24, 256], expected [20, 256]")
    # a 1Konny file that is not the named kind, a FactorVAE checkpoint given as Beta-VAE's
    torch.save({"iter": 1, "model_states": {"VAE": {}, "D": {}}, "optim_states": {}}, tmp_path / "fv")
    refused(["import", "1konny-betavae", tmp_path / "fv", "--out", tmp_path / "r8"], capsys, "no 'net' entry")
    # a BetaVAE_H whose last encoder layer has the wrong shape
    bad = konny_betavae("H", 10, 3).state_dict()
    bad["decoder.0.weight"] = torch.zeros(256, 11)
    torch.save({"iter": 1, "model_states": {"net": bad}, "optim_states": {}}, tmp_path / "badshape")
    refused(["import", "1konny-betavae", tmp_path / "badshape", "--out", tmp_path / "r9", "--dataset", "celeba"],
            capsys, "decoder.0.weight has shape [256, 11], expected [256, 10]")
    # a plain-container check beyond weights_only: a non-tensor where weights go
    torch.save({"iter": 1, "model_states": {"net": {"encoder.0.weight": [1.0, 2.0]}}, "optim_states": {}},
               tmp_path / "lists")
    refused(["import", "1konny-betavae", tmp_path / "lists", "--out", tmp_path / "r10"], capsys, "not a tensor")
    refused(["import", "1konny-betavae", tmp_path / "nope", "--out", tmp_path / "r11"], capsys, "not found")
    # nothing was written for any of them
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 12))
    assert not list(tmp_path.glob(".tmp-import-*"))


def test_disvae_reconstruction_losses_are_vaelab_likelihoods_up_to_a_constant():
    import math

    from vaelab.models.likelihood import recon_loss

    torch.manual_seed(0)
    o, x = torch.randn(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    m, p = torch.sigmoid(o), 64
    # disvae losses.py _reconstruction_loss, per image: laplace 3·Σ|x − m|, gaussian Σ((m − x)·255)² / 255
    laplace = 3 * (m - x).abs().flatten(1).sum(1)
    gaussian = ((m * 255 - x * 255) ** 2).flatten(1).sum(1) / 255
    assert torch.allclose(recon_loss(o, x, "laplace", 2 / 9), laplace + p * math.log(2 / 3), atol=1e-4)
    v = 1 / 510
    assert torch.allclose(recon_loss(o, x, "gaussian", v), gaussian + p * 0.5 * math.log(2 * math.pi * v), atol=1e-3)


def test_nets_import_uses_burgess32_with_disvae_init_count():
    from vaelab.nets import build_net, count_parameters

    enc, dec = build_net("burgess32", (1, 32, 32), 10)
    assert count_parameters(enc, dec) == 469_173
    up = DisvaeVAE((1, 32, 32), 10)
    assert count_parameters(up) == 469_173
    with pytest.raises(VaelabError, match="32×32"):
        build_net("burgess32", (1, 64, 64), 10)


# ----------------------------------------------------------------------------- any encoder
ENCODER_FILE = '''
import numpy as np
import torch
from torch import nn


def encode(images):
    """Centre of mass and total mass of each image: uint8 N x C x H x W -> N x 3."""
    x = images.float().mean(1) / 255
    h, w = x.shape[1:]
    m = x.sum((1, 2)) + 1e-6
    ys = (x.sum(2) * torch.arange(h)).sum(1) / m
    xs = (x.sum(1) * torch.arange(w)).sum(1) / m
    return np.stack([xs.numpy(), ys.numpy(), m.numpy()], 1)


class Pool(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 4)
        torch.manual_seed(0)
        nn.init.normal_(self.lin.weight)

    def forward(self, x):  # float images in [0, 1]
        assert x.dtype == torch.float32 and float(x.max()) <= 1.0
        h = nn.functional.adaptive_avg_pool2d(x.mean(1, keepdim=True), 4).flatten(1)
        return self.lin(h), torch.zeros(len(x), 4)


net = Pool()


def broken(images):
    raise ValueError("no good")
'''


@pytest.fixture
def encoder_module(tmp_path, monkeypatch):
    name = "my_encoder_for_vaelab"
    (tmp_path / f"{name}.py").write_text(ENCODER_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / f"{name}.py", name
    sys.modules.pop(name, None)


def test_evaluate_encoder_from_the_command_line(encoder_module, subset_npz, tmp_path, capsys):
    path, name = encoder_module
    base = ["evaluate", "--data", "dsprites", "--root", subset_npz, "--metrics", "mig,sap", "--profile", "fast"]
    rc, out, err = cli(base + ["--encoder", f"{path}:encode", "--out", tmp_path / "scores.json"], capsys)
    assert rc == 0, err
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["num_latents"] == 3 and scores["mig.per_factor"]["posX"] > 0.2  # the centre of mass is position
    rc, out, err = cli(base + ["--encoder", f"{name}:net", "--json"], capsys)  # an nn.Module from an importable module
    assert rc == 0, err
    assert json.loads(out)["num_latents"] == 4 and not (tmp_path / "eval.json").exists()
    refused(base + ["--encoder", f"{name}:broken"], capsys, "broken failed", "ValueError: no good")
    refused(base + ["--encoder", f"{name}:nothing"], capsys, "has no 'nothing'")
    refused(base + ["--encoder", "no_such_module_here:f"], capsys, "no module named 'no_such_module_here'")
    refused(base + ["--encoder", "encode"], capsys, "MODULE:FUNCTION")
    refused(["evaluate", "--encoder", f"{path}:encode"], capsys, "--data NAME")
    refused(["evaluate"], capsys, "--encoder")


def test_evaluate_encode_function_and_module_from_python(encoder_module, subset_npz):
    import importlib

    from vaelab.data import load

    _, name = encoder_module
    mod = importlib.import_module(name)
    ds = load("dsprites", root=subset_npz)
    kw = dict(metrics="mig", profile="fast", save=False)
    a = vaelab.evaluate(mod.encode, ds, **kw)
    b = vaelab.evaluate(lambda x: torch.from_numpy(mod.encode(x)), ds, **kw)  # a tensor works as an array
    assert a["mig.score"] == pytest.approx(b["mig.score"]) and a["num_latents"] == 3
    c = vaelab.evaluate(mod.net, ds, **kw)  # an nn.Module: images / 255, the first of (mu, logvar)
    assert c["num_latents"] == 4 and 0 <= c["mig.score"] <= 1
    with pytest.raises(VaelabError, match="is a class"):
        vaelab.evaluate(mod.Pool, ds, **kw)
