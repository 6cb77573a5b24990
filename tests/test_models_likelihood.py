"""Likelihoods, reduction and KL (docs/conventions.md)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.errors import VaelabError
from vaelab.models import build_model
from vaelab.models.likelihood import check_likelihood, kl_normal, log_normal, mean_image, recon_loss


def test_bernoulli_is_sum_of_pixel_cross_entropies():
    o = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]], [[[1.0, -2.0], [0.5, 0.0]]]])  # B2 C1 2×2
    x = torch.tensor([[[[1.0, 0.0], [0.25, 1.0]]], [[[0.0, 1.0], [1.0, 0.5]]]])
    want = []
    for b in range(2):
        s = 0.0
        for oi, xi in zip(o[b].flatten().tolist(), x[b].flatten().tolist()):
            s += math.log1p(math.exp(oi)) - xi * oi  # softplus(o) − x·o
        want.append(s)
    got = recon_loss(o, x, "bernoulli")
    assert got.shape == (2,)
    assert torch.allclose(got, torch.tensor(want), atol=1e-5)


def test_gaussian_includes_constant():
    o = torch.randn(3, 3, 4, 5)
    x = torch.rand(3, 3, 4, 5)
    var = 0.2
    m = torch.sigmoid(o)
    per_pixel = (x - m) ** 2 / (2 * var) + 0.5 * math.log(2 * math.pi * var)
    assert torch.allclose(recon_loss(o, x, "gaussian", var), per_pixel.flatten(1).sum(1), rtol=1e-5)
    # perfect reconstruction leaves exactly the constant: P · ½ ln(2πσ²)
    logits = torch.logit(torch.full((1, 1, 8, 8), 0.3, dtype=torch.float64))
    got = recon_loss(logits, torch.sigmoid(logits), "gaussian", 0.5)
    assert got.item() == pytest.approx(64 * 0.5 * math.log(math.pi), rel=1e-9)
    assert torch.equal(mean_image(o), torch.sigmoid(o))


def test_likelihood_validation():
    with pytest.raises(VaelabError, match="did you mean 'gaussian'"):
        check_likelihood("gausian", 0.5)
    with pytest.raises(VaelabError, match="positive"):
        check_likelihood("gaussian", 0.0)


def test_loss_reduction_sum_over_pixels_mean_over_batch():
    torch.manual_seed(0)
    m = build_model({"objective": "vae", "net": "higgins_mlp", "latent_dim": 3,
                     "net_options": {"hidden": 8}}, (1, 6, 6), 100)
    x = torch.rand(5, 1, 6, 6)
    torch.manual_seed(1)
    terms = m.loss(x, 0)
    torch.manual_seed(1)
    mu, logvar = m.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    o = m.decode(z)
    per_image = recon_loss(o, x, "bernoulli")
    kl_image = kl_normal(mu, logvar).sum(1)
    assert terms["recon"].item() == pytest.approx(per_image.mean().item(), rel=1e-6)
    assert terms["kl"].item() == pytest.approx(kl_image.mean().item(), rel=1e-6)
    assert torch.allclose(terms["kl_per_dim"], kl_normal(mu, logvar).mean(0))
    assert terms["kl_per_dim"].sum().item() == pytest.approx(terms["kl"].item(), rel=1e-5)


def test_kl_closed_form_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
    logvar = torch.tensor([0.0, -1.0, 0.7, -2.0], dtype=torch.float64)
    n = 400_000
    z = mu + torch.exp(0.5 * logvar) * torch.randn(n, 4, generator=g, dtype=torch.float64)
    mc = (log_normal(z, mu, logvar) - log_normal(z, torch.zeros_like(z), torch.zeros_like(z))).mean(0)
    closed = kl_normal(mu, logvar)
    assert torch.allclose(mc, closed, atol=0.02)
    # and the formula of docs/conventions.md#posterior-and-kl written out
    want = 0.5 * (mu ** 2 + logvar.exp() - logvar - 1)
    assert torch.allclose(closed, want)


@settings(max_examples=60, deadline=None)
@given(st.floats(-20, 20), st.floats(-15, 15))
def test_kl_nonnegative(mu, logvar):
    v = kl_normal(torch.tensor([mu], dtype=torch.float64), torch.tensor([logvar], dtype=torch.float64))
    assert v.item() >= -1e-12
