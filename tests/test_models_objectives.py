"""Every objective: loss dict, one update, build_model / defaults / errors (docs/objectives.md)."""
import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.models import (COMMON_DEFAULTS, OBJECTIVES, build_model, model_defaults, objective_defaults)

SMALL = {"net": "higgins_mlp", "latent_dim": 4, "net_options": {"hidden": 16}}
SHAPE = (1, 8, 8)
TERMS = {
    "vae": [],
    "betavae": [],
    "annealedvae": ["capacity"],
    "factorvae": ["tc", "disc_loss", "disc_acc", "p0_real", "p0_perm"],
    "btcvae": ["mi", "tc", "dwkl"],
    "dipvae": ["dip"],
    "ugvae": ["kl_z", "kl_d", "kl_beta"],
}


def make(objective, **extra):
    if objective == "ugvae":
        cfg = {"objective": "ugvae", "net": "ugvae_fc28", "latent_dim": 4, "dim_beta": 3, "K": 5, **extra}
        return build_model(cfg, (1, 28, 28), 1000), (1, 28, 28)
    return build_model({"objective": objective, **SMALL, **extra}, SHAPE, 1000), SHAPE


def test_registry_names():
    assert set(OBJECTIVES) == set(TERMS)


@pytest.mark.parametrize("objective", sorted(TERMS))
def test_loss_terms_and_update(objective):
    torch.manual_seed(0)
    model, shape = make(objective)
    x = torch.rand(8 * model.batches_per_step, *shape)
    terms = model.loss(x, 0)
    for key in ["loss", "recon", "kl", "kl_per_dim", *TERMS[objective]]:
        assert key in terms, key
        assert torch.isfinite(terms[key]).all(), key
    assert terms["loss"].dim() == 0
    assert terms["kl_per_dim"].shape == (model.latent_dim,)
    groups = model.param_groups()
    assert "vae" in groups
    names = {id(p) for ps in groups.values() for p in ps}
    assert names == {id(p) for p in model.parameters()}  # every parameter in exactly one group
    assert sum(len(ps) for ps in groups.values()) == len(list(model.parameters()))
    opts = {k: torch.optim.Adam(ps, lr=1e-3) for k, ps in groups.items()}
    before = [p.detach().clone() for p in model.parameters()]
    for step in range(2):
        out = model.update(x, torch.tensor(step), opts)
    assert set(out) == set(terms)
    assert all(not v.requires_grad for v in out.values())
    assert all(torch.isfinite(v).all() for v in out.values())
    moved = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert moved > 0
    model.eval()
    with torch.no_grad():
        ev = model.loss(x, 10)
        rep = model.representation(x[:8])
    assert torch.isfinite(ev["loss"])
    assert rep.shape == (8, model.latent_dim)


def test_betavae_and_vae_loss_formula():
    torch.manual_seed(0)
    m, _ = make("betavae", beta=3)
    t = m.loss(torch.rand(4, *SHAPE))
    assert t["loss"].item() == pytest.approx((t["recon"] + 3 * t["kl"]).item(), rel=1e-6)
    m, _ = make("vae")
    t = m.loss(torch.rand(4, *SHAPE))
    assert t["loss"].item() == pytest.approx((t["recon"] + t["kl"]).item(), rel=1e-6)


def test_defaults():
    assert objective_defaults("betavae") == {"beta": 4.0}
    assert objective_defaults("annealedvae") == {"gamma": 1000.0, "c_max": 25.0, "c_start": 0.0, "c_steps": 100000}
    fd = objective_defaults("factorvae")
    assert fd["gamma"] == 6.4 and fd["disc_layers"] == 5 and fd["permute_source"] == "second_batch"
    assert objective_defaults("dipvae") == {"kind": "i", "lambda_od": 10.0, "lambda_d_factor": 10.0}
    ug = model_defaults("ugvae")
    assert ug["dim_beta"] == 20 and ug["K"] == 10 and ug["variance"] == 0.2 and ug["likelihood"] == "gaussian"
    assert model_defaults("vae") == {"objective": "vae", **COMMON_DEFAULTS}
    for name in OBJECTIVES:  # a resolved table rebuilds the model
        cfg = model_defaults(name)
        shape = (1, 28, 28) if name == "ugvae" else (1, 64, 64)
        cfg.update({"latent_dim": 2})
        if name == "ugvae":
            cfg.update({"dim_beta": 2, "K": 2})
        else:
            cfg.update({"net": "higgins_mlp", "net_options": {"hidden": 4}})
        model = build_model(cfg, shape, 100)
        assert model.config() == cfg


def test_build_model_errors():
    with pytest.raises(VaelabError, match="did you mean 'betavae'"):
        build_model({"objective": "betavea"}, SHAPE, 10)
    with pytest.raises(VaelabError, match="needs an objective"):
        build_model({}, SHAPE, 10)
    with pytest.raises(VaelabError) as e:
        build_model({"objective": "betavae", **SMALL, "bta": 2}, SHAPE, 10)
    assert "did you mean 'beta'" in str(e.value) and "valid:" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(VaelabError, match="unknown key 'gamma' for objective 'betavae'"):
        from vaelab.models import BetaVAE
        BetaVAE(SHAPE, 2, net="higgins_mlp", gamma=3)
    with pytest.raises(VaelabError, match="must be one of"):
        build_model({"objective": "dipvae", **SMALL, "kind": "iii"}, SHAPE, 10)
    with pytest.raises(VaelabError, match="must be a number"):
        build_model({"objective": "betavae", **SMALL, "beta": "4"}, SHAPE, 10)
    with pytest.raises(VaelabError, match="must be an integer"):
        build_model({"objective": "annealedvae", **SMALL, "c_steps": 1.5}, SHAPE, 10)
    with pytest.raises(VaelabError, match="gamma must be finite and >= 0, got -5.0"):
        build_model({"objective": "factorvae", **SMALL, "gamma": -5}, SHAPE, 10)
    with pytest.raises(VaelabError, match="beta must be finite"):
        build_model({"objective": "betavae", **SMALL, "beta": float("nan")}, SHAPE, 10)
    with pytest.raises(VaelabError, match="K must be a count >= 1"):
        build_model({"objective": "ugvae", "K": 0}, (1, 28, 28), 10)
    with pytest.raises(VaelabError, match="ugvae_fc28"):
        build_model({"objective": "ugvae", "net": "burgess64"}, (1, 64, 64), 10)
    with pytest.raises(VaelabError, match="disagree"):
        build_model({"objective": "ugvae", "dim_z": 3, "latent_dim": 4}, (1, 28, 28), 10)
    with pytest.raises(VaelabError, match="64×64"):
        build_model({"objective": "vae", "net": "burgess64"}, (1, 32, 32), 10)
    with pytest.raises(VaelabError, match="num_train"):
        build_model({"objective": "btcvae", **SMALL}, SHAPE, None)
    m = build_model({"objective": "ugvae", "dim_z": 3, "dim_beta": 2, "K": 2}, (1, 28, 28), 10)
    assert m.latent_dim == 3 and m.net_name == "ugvae_fc28"
    assert build_model({"objective": "factorvae"}, (1, 64, 64), 10).net_name == "fvae64"
    assert build_model({"objective": "vae", "net": "burgess"}, (1, 64, 64), 10).net_name == "burgess64"
