"""AnnealedVAE capacity schedule (docs/objectives.md#annealedvae)."""
import pytest
import torch

from vaelab.models import build_model


def model(**kw):
    cfg = {"objective": "annealedvae", "net": "higgins_mlp", "latent_dim": 2, "net_options": {"hidden": 4}, **kw}
    return build_model(cfg, (1, 4, 4), 100)


@pytest.mark.parametrize("step,want", [(0, 0.0), (1, 25 / 100000), (50_000, 12.5), (100_000, 25.0),
                                       (250_000, 25.0)])
def test_capacity_ramp(step, want):
    m = model()
    assert m.capacity(step).item() == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert m.capacity(torch.tensor(step)).item() == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_capacity_start_and_eval():
    m = model(c_start=5, c_max=50, c_steps=1000)
    assert m.capacity(0).item() == pytest.approx(5.0)
    assert m.capacity(500).item() == pytest.approx(27.5)
    assert m.capacity(torch.tensor(2000, dtype=torch.int64)).item() == pytest.approx(50.0)
    m.eval()
    assert m.capacity(0).item() == pytest.approx(50.0)
    m.train()
    assert model(c_steps=0).capacity(0).item() == pytest.approx(25.0)


def test_loss_uses_abs_kl_minus_capacity():
    torch.manual_seed(0)
    m = model(gamma=7, c_max=25, c_steps=100)
    x = torch.rand(6, 1, 4, 4)
    t = m.loss(x, 40)
    assert t["capacity"].item() == pytest.approx(10.0)
    assert t["loss"].item() == pytest.approx((t["recon"] + 7 * (t["kl"] - 10).abs()).item(), rel=1e-6)
    m.eval()
    t = m.loss(x, 40)
    assert t["capacity"].item() == pytest.approx(25.0)
    assert t["loss"].item() == pytest.approx((t["recon"] + 7 * (t["kl"] - 25).abs()).item(), rel=1e-6)
