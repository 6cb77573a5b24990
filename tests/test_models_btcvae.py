"""β-TCVAE estimators vs brute-force loops (docs/objectives.md#beta-tcvae)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.errors import VaelabError
from vaelab.models import build_model
from vaelab.models.btcvae import decomposition, mss_weights


def log_pdf(x, m, lv):
    return -0.5 * (math.log(2 * math.pi) + lv + (x - m) ** 2 / math.exp(lv))


def lse(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def brute_weights(b, n):
    mp = b - 1
    w = [[1.0 / mp] * b for _ in range(b)]
    for i in range(b):
        w[i][i] = 1.0 / n
        if i < b - 1:
            w[i][i + 1] = (n - mp) / (n * mp)
    w[b - 1][0] = (n - mp) / (n * mp)
    return w


def brute(z, mu, lv, n, estimator):
    b, d = len(z), len(z[0])
    w = brute_weights(b, n) if estimator == "mss" else [[1.0 / (n * b)] * b for _ in range(b)]
    out = {"log_qz_x": [], "log_qz": [], "log_prod": [], "log_pz": []}
    for i in range(b):
        out["log_qz_x"].append(sum(log_pdf(z[i][k], mu[i][k], lv[i][k]) for k in range(d)))
        joint = [math.log(w[i][j]) + sum(log_pdf(z[i][k], mu[j][k], lv[j][k]) for k in range(d)) for j in range(b)]
        out["log_qz"].append(lse(joint))
        out["log_prod"].append(sum(lse([math.log(w[i][j]) + log_pdf(z[i][k], mu[j][k], lv[j][k]) for j in range(b)])
                                   for k in range(d)))
        out["log_pz"].append(sum(log_pdf(z[i][k], 0.0, 0.0) for k in range(d)))
    return out


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_estimators_match_brute_force(estimator):
    g = torch.Generator().manual_seed(3)
    b, d, n = 4, 2, 50
    mu = torch.randn(b, d, generator=g, dtype=torch.float64)
    lv = torch.randn(b, d, generator=g, dtype=torch.float64) * 0.5
    z = mu + torch.exp(0.5 * lv) * torch.randn(b, d, generator=g, dtype=torch.float64)
    got = decomposition(z, mu, lv, n, estimator)
    want = brute(z.tolist(), mu.tolist(), lv.tolist(), n, estimator)
    for key in want:
        assert torch.allclose(got[key], torch.tensor(want[key], dtype=torch.float64), atol=1e-10), key


def test_mss_weights_small_case():
    w = mss_weights(4, 10, dtype=torch.float64)
    # M′ = 3: diag 1/10, stratified (10 − 3)/(10·3) = 7/30 after the diagonal (wrapping), others 1/3
    want = torch.tensor([[1 / 10, 7 / 30, 1 / 3, 1 / 3],
                         [1 / 3, 1 / 10, 7 / 30, 1 / 3],
                         [1 / 3, 1 / 3, 1 / 10, 7 / 30],
                         [7 / 30, 1 / 3, 1 / 3, 1 / 10]], dtype=torch.float64)
    assert torch.allclose(w, want)
    with pytest.raises(VaelabError):
        mss_weights(1, 10)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.integers(0, 100_000))
def test_mss_rows_sum_to_one_and_diag(b, extra):
    n = b - 1 + extra
    w = mss_weights(b, n, dtype=torch.float64)
    assert torch.allclose(w.sum(1), torch.ones(b, dtype=torch.float64))
    assert torch.allclose(torch.diagonal(w), torch.full((b,), 1.0 / n, dtype=torch.float64))
    assert torch.allclose(w, torch.tensor(brute_weights(b, n), dtype=torch.float64))


def test_decomposition_sums_to_sampled_kl():
    # MI + TC + dwKL = E[ln q(z|x) − ln p(z)] for either estimator
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(6, 3, generator=g, dtype=torch.float64)
    lv = torch.randn(6, 3, generator=g, dtype=torch.float64)
    z = mu + torch.exp(0.5 * lv) * torch.randn(6, 3, generator=g, dtype=torch.float64)
    for est in ("mws", "mss"):
        t = decomposition(z, mu, lv, 1000, est)
        total = (t["log_qz_x"] - t["log_qz"]) + (t["log_qz"] - t["log_prod"]) + (t["log_prod"] - t["log_pz"])
        assert torch.allclose(total, t["log_qz_x"] - t["log_pz"])


@pytest.mark.parametrize("form,estimator", [("dlib", "mss"), ("chen", "mws"), ("chen", "mss")])
def test_model_forms(form, estimator):
    cfg = {"objective": "btcvae", "net": "higgins_mlp", "latent_dim": 2, "net_options": {"hidden": 8},
           "form": form, "estimator": estimator, "alpha": 2.0, "beta": 5.0, "gamma": 3.0}
    m = build_model(cfg, (1, 4, 4), 500)
    x = torch.rand(4, 1, 4, 4)
    torch.manual_seed(7)
    t = m.loss(x)
    torch.manual_seed(7)
    mu, lv = m.encode(x)
    z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
    ref = decomposition(z, mu, lv, 500, "mws" if form == "dlib" else estimator)
    tc = (ref["log_qz"] - ref["log_prod"]).mean()
    assert t["tc"].item() == pytest.approx(tc.item(), rel=1e-5, abs=1e-6)
    if form == "dlib":  # recon + KL + (β − 1)·TC_MWS, TC logged with its constants
        want = t["recon"] + t["kl"] + 4.0 * t["tc"]
    else:
        want = t["recon"] + 2.0 * t["mi"] + 5.0 * t["tc"] + 3.0 * t["dwkl"]
    assert t["loss"].item() == pytest.approx(want.item(), rel=1e-6)
