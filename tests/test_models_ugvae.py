"""UG-VAE (docs/objectives.md#ug-vae, docs/nets.md#ug-vae-nets): parameter counts, pooling, ELBO terms on a tiny case, helpers."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.models import build_model
from vaelab.models.ugvae import pool_gaussians
from vaelab.nets import count_parameters


def make(net="ugvae_fc28", dz=2, db=3, k=4, shape=(1, 28, 28)):
    cfg = {"objective": "ugvae", "net": net, "latent_dim": dz, "dim_beta": db, "K": k}
    return build_model(cfg, shape, 1000)


@pytest.mark.parametrize("net,shape,dims,count", [
    ("ugvae_fc28", (1, 28, 28), (10, 20, 10), 536_750),
    ("ugvae_conv64", (3, 64, 64), (20, 20, 20), 1_113_767),
    ("ugvae_conv64", (3, 64, 64), (20, 50, 20), 1_291_667),
    ("ugvae_conv64", (3, 64, 64), (40, 40, 40), 2_086_347),
])
def test_parameter_counts(net, shape, dims, count):
    m = make(net, *dims, shape=shape)
    assert count_parameters(m) == count


def test_defaults_are_gaussian_02():
    m = build_model({"objective": "ugvae"}, (1, 28, 28), 100)
    assert (m.likelihood, m.variance, m.dim_beta, m.K, m.latent_dim) == ("gaussian", 0.2, 20, 10, 10)


def brute_pool(m, lv):
    """Fold the product of Gaussians two at a time (per dimension)."""
    mean, var = m[0].tolist(), lv[0].exp().tolist()
    for i in range(1, m.shape[0]):
        for j in range(m.shape[1]):
            v2, m2 = math.exp(lv[i, j].item()), m[i, j].item()
            mean[j], var[j] = (mean[j] * v2 + m2 * var[j]) / (var[j] + v2), var[j] * v2 / (var[j] + v2)
    return torch.tensor(mean, dtype=torch.float64), torch.tensor(var, dtype=torch.float64)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.integers(1, 4), st.integers(0, 10_000))
def test_pooling_is_product_of_gaussians(b, d, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(b, d, generator=g, dtype=torch.float64) * 2
    lv = torch.randn(b, d, generator=g, dtype=torch.float64) * 2
    mu, logvar = pool_gaussians(m, lv)
    bm, bv = brute_pool(m, lv)
    assert torch.allclose(mu, bm, rtol=1e-9, atol=1e-9)
    assert torch.allclose(logvar.exp(), bv, rtol=1e-9)
    # Σ_i ln N(x; m_i, s²_i) − ln N(x; μ, σ²) does not depend on x
    xs = torch.randn(5, d, generator=g, dtype=torch.float64)
    def lognorm(x, mean, lvar):
        return -0.5 * (math.log(2 * math.pi) + lvar + (x - mean) ** 2 / lvar.exp())
    diff = lognorm(xs.unsqueeze(1), m, lv).sum(1) - lognorm(xs, mu, logvar)
    assert torch.allclose(diff, diff[:1].expand_as(diff), atol=1e-8)


def kl1(mq, vq, mp, vp):
    return math.log(math.sqrt(vp) / math.sqrt(vq)) + (vq + (mq - mp) ** 2) / (2 * vp) - 0.5


def test_elbo_terms_on_tiny_case():
    torch.manual_seed(0)
    model = make(dz=2, db=3, k=4).double()
    b = 3
    x = torch.rand(b, 1, 28, 28, dtype=torch.float64)
    torch.manual_seed(11)
    terms = model.loss(x)
    # redo the computation by hand with the same noise (z first, then β)
    torch.manual_seed(11)
    eps_z = torch.randn(b, 2, dtype=torch.float64)
    eps_b = torch.randn(3, dtype=torch.float64)
    with torch.no_grad():
        h = model.trunk(x)
        q = model.qz(h)
        mu_z, lv_z = q[:, :2], q[:, 2:]
        z = mu_z + torch.exp(0.5 * lv_z) * eps_z
        pi = torch.softmax(model.qd(z), 1) + 1e-20
        g = model.qbeta(torch.cat([h, pi], 1))
        m, ls2 = g[:, :3], g[:, 3:]
        mb, vb = brute_pool(m, ls2)
        beta = mb + vb.sqrt() * eps_b
        # K separate prior nets
        means, variances = [], []
        for k in range(4):
            hid = torch.relu(beta @ model.prior_w1[k] + model.prior_b1[k])
            out = hid @ model.prior_w2[k] + model.prior_b2[k]
            means.append(out[:2])
            variances.append(torch.exp(torch.tanh(out[2:])))
        o = model.decode(z, beta)
        mean_img = torch.sigmoid(o)
    var_x = 0.2
    recon = kl_z = kl_d = 0.0
    for i in range(b):
        recon += sum(((xv - mv) ** 2) / (2 * var_x) + 0.5 * math.log(2 * math.pi * var_x)
                     for xv, mv in zip(x[i].flatten().tolist(), mean_img[i].flatten().tolist()))
        for k in range(4):
            p = pi[i, k].item()
            kl_d += p * (math.log(p) + math.log(4))
            for j in range(2):
                kl_z += p * kl1(mu_z[i, j].item(), lv_z[i, j].exp().item(), means[k][j].item(),
                                variances[k][j].item())
    kl_beta = sum(kl1(mb[j].item(), vb[j].item(), 0.0, 1.0) for j in range(3))
    assert terms["recon"].item() == pytest.approx(recon / b, rel=1e-9)
    assert terms["kl_z"].item() == pytest.approx(kl_z / b, rel=1e-9)
    assert terms["kl_d"].item() == pytest.approx(kl_d / b, rel=1e-9, abs=1e-12)
    assert terms["kl_beta"].item() == pytest.approx(kl_beta, rel=1e-9)
    assert terms["loss"].item() == pytest.approx((recon + kl_z + kl_d + kl_beta) / b, rel=1e-9)
    assert terms["kl_per_dim"].sum().item() == pytest.approx(kl_z / b, rel=1e-9)
    # prior variances lie in [e⁻¹, e]
    for v in variances:
        assert float(v.min()) >= math.exp(-1) - 1e-12 and float(v.max()) <= math.e + 1e-12


def test_helpers_shapes():
    torch.manual_seed(0)
    model = make(dz=2, db=3, k=4).eval()
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        mu, lv = model.local_posterior(x)
        assert mu.shape == lv.shape == (6, 2)
        assert torch.equal(model.representation(x), mu)
        pi = model.component_probs(mu)
        assert pi.shape == (6, 4) and torch.allclose(pi.sum(1), torch.ones(6))
        mb, lvb = model.global_posterior(x)
        assert mb.shape == lvb.shape == (3,)
        # pooling over the batch: with use_mean the π come from μ_z
        h = model.trunk(x)
        m, ls2 = model.contributions(h, model.component_probs(mu))
        want_m, want_lv = pool_gaussians(m, ls2)
        assert torch.allclose(mb, want_m) and torch.allclose(lvb, want_lv)
        # more images -> more precision (each contributes)
        _, lv_half = model.global_posterior(x[:3])
        assert (lvb < lv_half).all()
        means, variances = model.prior_components(mb)
        assert means.shape == variances.shape == (4, 2)
        bm, bv = model.prior_components(torch.randn(5, 3))
        assert bm.shape == bv.shape == (5, 4, 2)
        assert model.decode(mu).shape == (6, 1, 28, 28)
        assert torch.equal(model.decode(mu), model.decode(mu, torch.zeros(3)))
        assert torch.equal(model.decode(mu, mb), model.decode(mu, mb.expand(6, 3)))
        g = torch.Generator().manual_seed(1)
        s = model.sample(5, generator=g)
        assert s.shape == (4, 5, 1, 28, 28) and float(s.min()) >= 0 and float(s.max()) <= 1
        g = torch.Generator().manual_seed(1)
        assert torch.equal(model.sample(5, generator=g), s)
        assert model.reconstruct(x).shape == x.shape


def test_conv64_loss_and_batched_prior_matches_single():
    torch.manual_seed(0)
    model = make("ugvae_conv64", dz=3, db=2, k=3, shape=(3, 64, 64))
    t = model.loss(torch.rand(4, 3, 64, 64))
    assert torch.isfinite(t["loss"])
    betas = torch.randn(4, 2)
    bm, bv = model.prior_components(betas)
    for i in range(4):
        m1, v1 = model.prior_components(betas[i])
        assert torch.allclose(bm[i], m1, atol=1e-6) and torch.allclose(bv[i], v1, atol=1e-6)
