"""vaelab.metrics.evaluate.evaluate with an encode callable: keys, eval.json, skips, seeds, bad input."""
import json
import math

import numpy as np
import pytest
import torch

from vaelab.data import FactorDataset
from vaelab.errors import VaelabError
from vaelab.metrics.evaluate import METRICS, evaluate, format_table, profile_settings, resolve_metrics

SIZES = (3, 4, 5)
SMALL = {"dci": {"num_train": 200, "num_test": 100}, "beta_vae": {"num_train": 300, "num_eval": 200},
         "factor_vae": {"num_train": 300, "num_eval": 200, "num_variance_estimate": 300},
         "sap": {"num_train": 300, "num_test": 200}, "modularity": {"num_train": 300, "num_test": 200}}


def grid(sizes=SIZES, is_grid=True, with_factors=True):
    n = int(np.prod(sizes))
    idx = np.arange(n)
    images = np.stack([idx % 256, idx // 256, np.zeros(n)], axis=1).astype(np.uint8).reshape(n, 1, 1, 3)
    f = np.stack(np.unravel_index(idx, sizes), axis=1)
    if not with_factors:
        return FactorDataset(images=torch.from_numpy(images), name="plain")
    return FactorDataset(images=torch.from_numpy(images), factors=torch.from_numpy(f),
                         factor_names=["a", "b", "c"][:len(sizes)], factor_sizes=list(sizes), is_grid=is_grid,
                         name="tiny")


def encoder(sizes=SIZES, noise=0.05):
    table = np.random.default_rng(0).normal(0, noise, size=(int(np.prod(sizes)), len(sizes) + 1))
    table[:, -1] = 0.0  # the last latent is collapsed (exactly constant)

    def encode(images):
        x = images.reshape(len(images), 3).long().numpy()
        rows = x[:, 0] + 256 * x[:, 1]
        f = np.stack(np.unravel_index(rows, sizes), axis=1).astype(float)
        return np.concatenate([f, np.zeros((len(f), 1))], 1) + table[rows]
    return encode


def test_evaluate_all_metrics_keys_and_eval_json(tmp_path):
    res = evaluate(encoder(), grid(), seed=0, profile="fast", out=tmp_path, options=SMALL, n_jobs=1)
    for key in ("beta_vae.eval_accuracy", "beta_vae.train_accuracy", "factor_vae.eval_accuracy",
                "factor_vae.num_active_dims", "mig.score", "sap.score", "dci.disentanglement", "dci.completeness",
                "dci.informativeness_train", "dci.informativeness_test", "modularity.modularity",
                "modularity.explicitness_train", "modularity.explicitness_test", "irs.score",
                "unsupervised.gaussian_total_correlation", "unsupervised.gaussian_wasserstein_correlation",
                "unsupervised.gaussian_wasserstein_correlation_norm", "unsupervised.mutual_info_score",
                "latent.active_units"):
        assert key in res, key
        assert isinstance(res[key], (int, float))
    assert set(res["mig.per_factor"]) == {"a", "b", "c"}
    assert set(res["dci.per_factor"]["completeness"]) == {"a", "b", "c"}
    assert np.array(res["dci.importance"]).shape == (4, 3)
    assert res["mig.score"] > 0.9 and res["beta_vae.eval_accuracy"] > 0.9 and res["factor_vae.eval_accuracy"] > 0.9
    assert res["latent.active_units"] == 3
    assert set(res["seconds"]) >= (set(METRICS) - {"elbo"}) | {"encode", "total"}
    assert set(res["versions"]) >= {"numpy", "scikit-learn", "torch"}
    assert res["convergence_warnings"]["total"] == sum(v for k, v in res["convergence_warnings"].items()
                                                       if k != "total")
    assert list(res["skipped"]) == ["elbo"]  # an encode function: no decoder to score the fit with
    assert res["settings"]["mig"] == {"num_train": 1000, "num_bins": 20}  # fast = 10x fewer points
    assert res["settings"]["dci"]["num_train"] == 200  # an option overrides the profile
    assert res["images_encoded"] <= 60
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["mig.score"] == res["mig.score"] and saved["profile"] == "fast"
    # the constant latent: total correlation is +inf, written as Infinity, never NaN
    assert math.isinf(saved["unsupervised.gaussian_total_correlation"])
    table = format_table(res)
    assert "beta_vae" in table and "eval_accuracy" in table and "total" in table


def test_evaluate_same_seed_same_numbers():
    kw = dict(metrics="mig,sap,modularity,irs,beta_vae,factor_vae", profile="fast", options=SMALL, save=False)
    a = evaluate(encoder(noise=0.5), grid(), seed=4, **kw)
    b = evaluate(encoder(noise=0.5), grid(), seed=4, **kw)
    c = evaluate(encoder(noise=0.5), grid(), seed=5, **kw)
    scores = lambda r: {k: v for k, v in r.items() if "." in k}  # noqa: E731
    assert scores(a) == scores(b)
    assert scores(a) != scores(c)


def test_evaluate_labelled_set_skips_grid_metrics():
    res = evaluate(encoder(), grid(is_grid=False), metrics="all", profile="fast", options=SMALL, n_jobs=1,
                   save=False)
    assert set(res["skipped"]) == {"beta_vae", "factor_vae", "elbo"}
    assert "grid" in res["skipped"]["beta_vae"]
    assert "mig.score" in res and "beta_vae.eval_accuracy" not in res
    with pytest.raises(VaelabError, match="grid"):
        evaluate(encoder(), grid(is_grid=False), metrics="beta_vae", save=False)


def test_evaluate_without_factors_gives_unsupervised_only(tmp_path):
    res = evaluate(encoder(), grid(with_factors=False), profile="fast", out=tmp_path / "x.json")
    assert res["metrics"] == ["unsupervised", "latent"]
    assert set(res["skipped"]) == {"beta_vae", "factor_vae", "mig", "sap", "dci", "modularity", "irs", "elbo"}
    assert all("no ground-truth factors" in why for k, why in res["skipped"].items() if k != "elbo")
    assert (tmp_path / "x.json").is_file()
    with pytest.raises(VaelabError, match="no ground-truth factors"):
        evaluate(encoder(), grid(with_factors=False), metrics="mig", save=False)


def test_evaluate_bad_input():
    with pytest.raises(VaelabError, match="unknown metric"):
        evaluate(encoder(), grid(), metrics="mgi")
    with pytest.raises(VaelabError, match="profile"):
        evaluate(encoder(), grid(), profile="slow")
    with pytest.raises(VaelabError, match="needs a dataset"):
        evaluate(encoder())
    with pytest.raises(VaelabError, match="seed"):
        evaluate(encoder(), grid(), seed=-1)
    with pytest.raises(VaelabError, match="unexpected keyword"):
        evaluate(encoder(), grid(), metrics="mig", options={"mig": {"bins": 3}}, save=False)
    with pytest.raises(VaelabError, match="NaN"):
        evaluate(lambda x: np.full((len(x), 3), np.nan), grid(), metrics="mig", save=False)


def test_metric_names_and_profiles():
    assert resolve_metrics("all") == (list(METRICS), False)
    assert resolve_metrics("DCI, factorvae,beta-vae") == (["beta_vae", "factor_vae", "dci"], True)
    assert resolve_metrics(["explicitness"])[0] == ["modularity"]
    # the default profile is dlib's study counts (docs/metrics.md#defaults)
    assert profile_settings("beta_vae") == {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000}
    assert profile_settings("factor_vae") == {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000,
                                              "num_variance_estimate": 10_000, "threshold": 0.05,
                                              "nan_policy": "reference"}  # the module's DEFAULTS, all of them
    assert profile_settings("dci") == {"num_train": 10_000, "num_test": 5_000, "trees": "vectorised"}
    assert profile_settings("sap")["continuous"] is False
    assert profile_settings("irs")["diff_quantile"] == 0.99
    assert profile_settings("dci", "fast") == {"num_train": 1_000, "num_test": 500, "trees": "vectorised"}


def test_evaluate_background_dci_matches_in_process():
    kw = dict(metrics="mig,dci,irs", profile="fast", options={"dci": {"num_train": 150, "num_test": 100}},
              save=False)
    a = evaluate(encoder(noise=0.5), grid(), n_jobs=1, **kw)
    b = evaluate(encoder(noise=0.5), grid(), n_jobs=2, **kw)  # GBT fits in worker processes, overlapped
    assert a["dci.importance"] == b["dci.importance"]
    assert a["dci.disentanglement"] == b["dci.disentanglement"]
    assert b["metrics"] == ["mig", "dci", "irs"]
    assert b["seconds"]["dci"] > 0


def test_table_warns_when_no_latent_is_active():
    from vaelab.metrics.evaluate import format_table

    result = {"metrics": ["mig", "latent"], "mig.discrete_mig": 0.01, "latent.active_units": 0,
              "latent.kl_total": 0.02, "seconds": {"mig": 1.0, "latent": 0.1, "encode": 0.5, "total": 1.2}}
    table = format_table(result)
    assert table.splitlines()[0].split() == ["metric", "key", "value", "seconds"]
    assert "no latent is active" in table
    result["latent.active_units"] = 3
    assert "no latent is active" not in format_table(result)
    result.update({"metrics": ["factor_vae"], "factor_vae.eval_accuracy": 0.7,
                   "dataset": {"factor_sizes": [3, 6, 40, 32, 32]}})
    assert "chance level of factor_vae accuracy is 1/K = 0.200 (5 factors)" in format_table(result)
    # which latent carries each factor: MI / H, best and runner-up (hand-computed)
    result.update({"mig.mutual_info": [[0.5, 0.0], [0.1, 0.9]], "mig.entropy": {"a": 1.0, "bb": 1.8}})
    lines = format_table(result).splitlines()
    assert "  a   z0 0.50   next z1 0.10" in lines and "  bb  z1 0.50   next z0 0.00" in lines


def test_elbo_is_the_fit_on_the_latent_metric_rows(tmp_path_factory, shared_data):
    """elbo = -(reconstruction + kl); kl is the latent metric's kl_total (same rows, same seed);
    reconstruction_at_mean is -log p(x | mu) computed here by hand on those rows."""
    import vaelab
    from test_viz import build_run
    from vaelab.models.likelihood import recon_loss

    run = vaelab.load_run(build_run(tmp_path_factory.getbasetemp(), shared_data, "dsprites"))
    opts = {"elbo": {"num_train": 300}, "latent": {"num_train": 300}}
    r = evaluate(run, metrics="elbo,latent", seed=4, out=tmp_path_factory.mktemp("e") / "e.json", options=opts)
    assert r["elbo.elbo"] == pytest.approx(-(r["elbo.reconstruction"] + r["elbo.kl"]))
    assert r["elbo.kl"] == pytest.approx(r["latent.kl_total"], rel=1e-4)
    rows = np.sort(np.random.default_rng(4).integers(0, len(run.dataset()), size=300))
    x = run.dataset().images[torch.from_numpy(rows)].float() / 255
    with torch.no_grad():
        mu, _ = run.model.encode(x)
        by_hand = recon_loss(run.model.decode(mu), x, run.model.likelihood, run.model.variance).mean().item()
    assert r["elbo.reconstruction_at_mean"] == pytest.approx(by_hand, rel=1e-5)
    again = evaluate(run, metrics="elbo", seed=4, out=tmp_path_factory.mktemp("e") / "e.json", options=opts)
    assert again["elbo.reconstruction"] == r["elbo.reconstruction"]  # the posterior draw is seeded
    # an encode function alone has no decoder: named, it is one clear error
    with pytest.raises(VaelabError, match="needs a run's decoder"):
        evaluate(run.encode, dataset=run.dataset(), metrics="elbo", seed=0,
                 out=tmp_path_factory.mktemp("e") / "e.json")
    from vaelab.metrics.evaluate import _skip_reason

    ug = type("UgRun", (), {"config": {"model": {"objective": "ugvae"}}})()
    assert "global term" in _skip_reason(METRICS["elbo"], run.dataset(), ug)
