"""The optional presets of docs/recipes.md#optional-presets (1Konny/Beta-VAE scripts): values, and the objectives against 1Konny's solver.py."""
import math

import pytest
import torch
import torch.nn.functional as F

from vaelab.config import preset_names, resolve
from vaelab.models import build_model


# preset -> (objective, net, data, D, likelihood, objective values, lr, seed) — docs/recipes.md#optional-presets
OPTIONAL = {
    "betavae-celeba-b10-z10": ("betavae", "betavae_h", "celeba", 10, "gaussian", {"beta": 10.0}, 1e-4, 1),
    "betavae-celeba-b10-z32": ("betavae", "betavae_h", "celeba", 32, "gaussian", {"beta": 10.0}, 1e-4, 1),
    "betavae-3dchairs-b4-z10": ("betavae", "betavae_h", "chairs", 10, "gaussian", {"beta": 4.0}, 1e-4, 1),
    "betavae-3dchairs-b4-z16": ("betavae", "betavae_h", "chairs", 16, "gaussian", {"beta": 4.0}, 1e-4, 1),
    "annealedvae-dsprites-1konny": ("annealedvae", "burgess64", "dsprites", 10, "bernoulli",
                                    {"gamma": 100.0, "c_max": 20.0, "c_steps": 100_000, "c_start": 0.0}, 5e-4, 2),
}


@pytest.mark.parametrize("name", sorted(OPTIONAL))
def test_optional_preset_values(name):
    objective, net, data, d, likelihood, values, lr, seed = OPTIONAL[name]
    assert name in preset_names()
    cfg = resolve(name)
    m = cfg.model
    assert (m["objective"], m["net"], cfg.data.name, m["latent_dim"], m["likelihood"]) == (
        objective, net, data, d, likelihood)
    if likelihood == "gaussian":
        assert m["variance"] == 0.5  # 1Konny "gaussian" = sum of squared errors (docs/conventions.md#likelihoods)
    for key, value in values.items():
        assert m[key] == value, key
    opt = cfg.optim["vae"]
    assert (opt.lr, list(opt.betas), opt.eps, opt.schedule) == (lr, [0.9, 0.999], 1e-8, "constant")
    assert set(cfg.optim) == {"vae"}
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.seed) == (1_500_000, 64, seed)
    if data == "celeba":
        assert cfg.data.options.get("preprocess") == "resize" and cfg.data.split == "all"


def _same_noise_loss(model, x, step, seed=0):
    """vaelab's terms, and the (mu, logvar, z, o) of the same forward pass (same reparameterisation noise)."""
    torch.manual_seed(seed)
    terms = model.loss(x, step)
    mu, logvar = model.encode(x)
    torch.manual_seed(seed)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    return terms, mu, logvar, model.decode(z)


def _konny_kl(mu, logvar):  # solver.py kl_divergence: total_kld = klds.sum(1).mean()
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1).mean()


def test_objective_h_with_gaussian_is_betavae_sigma2_half():
    """1Konny objective H, gaussian: mse_loss(sigmoid(o), x, sum)/B + β·KL. vaelab's betavae with σ² ½ gives the
    same loss up to the likelihood constant P·½ ln π (no gradient), so β needs no conversion."""
    cfg = resolve("betavae-celeba-b10-z10")
    torch.manual_seed(0)
    model = build_model({**cfg.model, "latent_dim": 4}, (3, 64, 64), 100)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        terms, mu, logvar, o = _same_noise_loss(model, x, 0)
        konny = F.mse_loss(torch.sigmoid(o), x, reduction="sum") / 4 + 10.0 * _konny_kl(mu, logvar)
    const = 3 * 64 * 64 * 0.5 * math.log(math.pi)  # ½ ln(2πσ²) per pixel at σ² ½
    torch.testing.assert_close(terms["loss"] - const, konny, rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("t", [0, 50_000, 250_000])
def test_objective_b_is_annealedvae(t):
    """1Konny objective B: bce_with_logits(o, x, sum)/B + γ·|KL − C|, C = clamp(C_max/C_stop_iter·iter, 0, C_max)
    with iter counted from 1 at the first update; vaelab's t counts completed iterations (docs/conventions.md#training-conventions)."""
    cfg = resolve("annealedvae-dsprites-1konny")
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 64, 64), 100)
    model.train()
    x = (torch.rand(4, 1, 64, 64) > 0.9).float()
    with torch.no_grad():
        terms, mu, logvar, o = _same_noise_loss(model, x, t)
        c = min(20.0 / 100_000 * t, 20.0)  # 1Konny's C at global_iter = t (vaelab's at t completed iterations)
        konny = (F.binary_cross_entropy_with_logits(o, x, reduction="sum") / 4
                 + 100.0 * (_konny_kl(mu, logvar) - c).abs())
    torch.testing.assert_close(terms["capacity"], torch.tensor(c))
    torch.testing.assert_close(terms["loss"], konny, rtol=1e-5, atol=1e-3)
