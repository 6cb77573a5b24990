"""DIP-VAE I / II covariance and penalty (docs/objectives.md#dip-vae)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.models import build_model
from vaelab.models.dipvae import dip_covariance, dip_penalty

MU = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
VAR = torch.tensor([[1.0, 0.5], [1.0, 0.5], [1.0, 2.0]], dtype=torch.float64)


def test_hand_computed_covariances():
    # mean (1, 1); centred rows (0,−1), (−1,0), (1,1): Cov = [[2/3, 1/3], [1/3, 2/3]]
    cov1 = dip_covariance(MU, VAR.log(), "i")
    assert torch.allclose(cov1, torch.tensor([[2, 1], [1, 2]], dtype=torch.float64) / 3)
    cov2 = dip_covariance(MU, VAR.log(), "ii")
    assert torch.allclose(cov2, torch.tensor([[5, 1], [1, 5]], dtype=torch.float64) / 3)
    # I: λ_od 10, λ_d 100: 10·2·(1/3)² + 100·2·(1/3)² = 220/9
    assert dip_penalty(cov1, 10, 100).item() == pytest.approx(220 / 9)
    # II: λ_od 10, λ_d 10: 10·2/9 + 10·2·(2/3)² = 100/9
    assert dip_penalty(cov2, 10, 10).item() == pytest.approx(100 / 9)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 9), st.integers(1, 5), st.integers(0, 10_000))
def test_type_ii_minus_type_i_is_diag_of_mean_variances(b, d, seed):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(b, d, generator=g, dtype=torch.float64)
    logvar = torch.randn(b, d, generator=g, dtype=torch.float64)
    diff = dip_covariance(mu, logvar, "ii") - dip_covariance(mu, logvar, "i")
    assert torch.allclose(diff, torch.diag(logvar.exp().mean(0)))
    cov = dip_covariance(mu, logvar, "i")
    assert torch.allclose(cov, torch.cov(mu.t(), correction=0).reshape(d, d))


def test_model_penalty_uses_lambda_d_factor():
    torch.manual_seed(0)
    cfg = {"objective": "dipvae", "net": "higgins_mlp", "latent_dim": 3, "net_options": {"hidden": 8},
           "kind": "ii", "lambda_od": 2.0, "lambda_d_factor": 3.0}
    m = build_model(cfg, (1, 4, 4), 100)
    x = torch.rand(5, 1, 4, 4)
    t = m.loss(x)
    mu, logvar = m.encode(x)
    cov = dip_covariance(mu, logvar, "ii")
    want = 2.0 * sum(cov[i, j] ** 2 for i in range(3) for j in range(3) if i != j) + \
        6.0 * sum((cov[i, i] - 1) ** 2 for i in range(3))
    assert t["dip"].item() == pytest.approx(want.item(), rel=1e-5)
    assert t["loss"].item() == pytest.approx((t["recon"] + t["kl"] + t["dip"]).item(), rel=1e-6)
    assert math.isfinite(t["loss"].item())
