"""FactorVAE: permutation, TC estimate, update order and gradient isolation (docs/objectives.md#factorvae)."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.models import build_model
from vaelab.models.factorvae import permute_dims

SHAPE = (1, 6, 6)


def make(source="same_batch", **kw):
    cfg = {"objective": "factorvae", "net": "higgins_mlp", "latent_dim": 3, "net_options": {"hidden": 8},
           "permute_source": source, "gamma": 5.0, **kw}
    return build_model(cfg, SHAPE, 100)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 6), st.integers(0, 10_000))
def test_permutation_keeps_column_multisets(b, d, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, d, generator=g)
    p = permute_dims(z, generator=g)
    assert p.shape == z.shape
    assert torch.equal(p.sort(0).values, z.sort(0).values)


def test_permutation_is_independent_per_column():
    torch.manual_seed(0)
    z = torch.arange(64.0).unsqueeze(1).repeat(1, 4)  # identical columns
    p = permute_dims(z)
    assert not torch.equal(p[:, 0], p[:, 1])  # columns move independently
    assert not torch.equal(p[:, 0], z[:, 0])


def test_groups_and_batches_per_step():
    m = make("second_batch")
    assert m.batches_per_step == 2
    groups = m.param_groups()
    assert set(groups) == {"vae", "disc"}
    assert {id(p) for p in groups["disc"]} == {id(p) for p in m.disc.parameters()}
    assert not ({id(p) for p in groups["vae"]} & {id(p) for p in groups["disc"]})
    assert make("same_batch").batches_per_step == 1
    with pytest.raises(ValueError):
        m.loss(torch.rand(5, *SHAPE))


def test_loss_terms_formulas():
    torch.manual_seed(0)
    m = make("same_batch")
    x = torch.rand(8, *SHAPE)
    torch.manual_seed(1)
    t = m.loss(x)
    torch.manual_seed(1)
    mu, lv = m.encode(x)
    z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
    logits = m.disc(z)
    tc = (logits[:, 0] - logits[:, 1]).mean()
    assert t["tc"].item() == pytest.approx(tc.item(), rel=1e-5, abs=1e-7)
    assert t["loss"].item() == pytest.approx((t["recon"] + t["kl"] + 5.0 * t["tc"]).item(), rel=1e-6)
    perm = permute_dims(z)  # same RNG stream as the loss
    lp_r = torch.log_softmax(m.disc(z), 1)
    lp_p = torch.log_softmax(m.disc(perm), 1)
    want = 0.5 * (torch.nn.functional.cross_entropy(m.disc(z), torch.zeros(8, dtype=torch.long))
                  + torch.nn.functional.cross_entropy(m.disc(perm), torch.ones(8, dtype=torch.long)))
    assert t["disc_loss"].item() == pytest.approx(want.item(), rel=1e-5)
    acc = ((lp_r[:, 0].exp() >= 0.5).float().sum() + (lp_p[:, 0].exp() < 0.5).float().sum()) / 16
    assert t["disc_acc"].item() == pytest.approx(acc.item())
    assert t["p0_real"].item() == pytest.approx(lp_r[:, 0].exp().mean().item(), rel=1e-5)


def _vae_params(m):
    return m.param_groups()["vae"]


@pytest.mark.parametrize("source", ["same_batch", "second_batch"])
def test_gradient_isolation(source):
    torch.manual_seed(0)
    m = make(source)
    ref = copy.deepcopy(m)
    x = torch.rand(8 * m.batches_per_step, *SHAPE)
    groups = m.param_groups()
    # VAE lr 0 and D lr 0: the grads left after update() are exactly what each loss produced
    opts = {"vae": torch.optim.Adam(groups["vae"], lr=0.0), "disc": torch.optim.Adam(groups["disc"], lr=0.0)}
    torch.manual_seed(5)
    m.update(x, 0, opts)
    torch.manual_seed(5)
    t = ref.loss(x)  # same random draws in the same order, same (unchanged) parameters
    g_vae = torch.autograd.grad(t["loss"], _vae_params(ref), allow_unused=True)
    g_disc = torch.autograd.grad(t["disc_loss"], list(ref.disc.parameters()))
    # encoder/decoder grads come from the VAE loss alone (the D loss adds nothing)
    for p, g in zip(_vae_params(m), g_vae):
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7)
    # discriminator grads come from the D loss alone (the VAE loss adds nothing)
    for p, g in zip(m.disc.parameters(), g_disc):
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7)
    # and the D loss has no path to the encoder at all
    assert all(g is None or float(g.abs().max()) == 0.0 for g in
               torch.autograd.grad(t["disc_loss"], _vae_params(ref), allow_unused=True))


@pytest.mark.parametrize("source", ["same_batch", "second_batch"])
def test_each_step_moves_only_its_own_network(source):
    torch.manual_seed(0)
    x = torch.rand(8 * 2, *SHAPE)[: 8 * make(source).batches_per_step]
    # real VAE optimiser, frozen D optimiser: D must not move
    m = make(source)
    g = m.param_groups()
    d_before = [p.detach().clone() for p in g["disc"]]
    v_before = [p.detach().clone() for p in g["vae"]]
    m.update(x, 0, {"vae": torch.optim.Adam(g["vae"], lr=1e-2), "disc": torch.optim.SGD(g["disc"], lr=0.0)})
    assert all(torch.equal(a, b) for a, b in zip(d_before, g["disc"]))
    assert any(not torch.equal(a, b) for a, b in zip(v_before, g["vae"]))
    # frozen VAE optimiser, real D optimiser: the VAE must not move
    m = make(source)
    g = m.param_groups()
    d_before = [p.detach().clone() for p in g["disc"]]
    v_before = [p.detach().clone() for p in g["vae"]]
    m.update(x, 0, {"vae": torch.optim.SGD(g["vae"], lr=0.0), "disc": torch.optim.Adam(g["disc"], lr=1e-2)})
    assert all(torch.equal(a, b) for a, b in zip(v_before, g["vae"]))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, g["disc"]))


def test_vae_step_reaches_disc_params_never():
    m = make("same_batch")
    t = m.loss(torch.rand(8, *SHAPE))
    t["loss"].backward()
    assert all(p.grad is None for p in m.disc.parameters())
    assert all(p.grad is not None for p in m.encoder.parameters())


def test_disc_learns_to_separate_correlated_codes():
    # codes with perfectly correlated dimensions: the discriminator should learn permuted != real
    torch.manual_seed(0)
    m = make("same_batch", disc_layers=2)
    opt = torch.optim.Adam(m.disc.parameters(), lr=1e-3)
    for _ in range(150):
        z = torch.randn(64, 1).repeat(1, 3)
        d = m._disc_terms(z, z)
        opt.zero_grad()
        d["disc_loss"].backward()
        opt.step()
    assert d["disc_acc"].item() > 0.8
    logits = m.disc(torch.randn(256, 1).repeat(1, 3))
    assert (logits[:, 0] - logits[:, 1]).mean().item() > 0.5  # positive TC estimate
