"""The numbers behind a study report (metrics/study_stats.py, pure) and the report drawn from them
(viz/study_report.py) on a hand-made study.json."""
import json
import math

import numpy as np
import pytest

from vaelab.metrics import study_stats as st
from vaelab.viz.study_report import label_of, plot_keys, write_study_report


def test_spearman_by_hand():
    # no ties: 1 - 6 sum(d^2) / (n (n^2 - 1)) with d = (0, -1, 1, 0): 1 - 12 / 60
    assert st.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties share their average rank: y ranks (1, 2, 3.5, 5, 3.5); Pearson of the ranks = 8 / sqrt(10 * 9.5)
    assert list(st.rankdata([5, 6, 7, 8, 7])) == [1, 2, 3.5, 5, 3.5]
    assert st.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95), abs=1e-12)
    assert st.spearman([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)  # monotone, not linear: still 1
    assert st.spearman([1, 2, 3], [1, 8, 27]) == pytest.approx(1.0)
    assert st.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(st.spearman([1, 2, 3], [4, 4, 4])) and math.isnan(st.spearman([1], [2]))
    try:
        from scipy.stats import spearmanr
    except ImportError:
        return
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 40), rng.normal(size=40)
    assert st.spearman(x, y) == pytest.approx(spearmanr(x, y)[0], abs=1e-12)


def _runs():
    """Objective a at strengths 1 and 10 (two seeds, one scored once), b at 2 (one seed)."""
    return [
        {"model": "a", "value": 1.0, "seed": 0, "scores": {"mig.score": 0.1, "sap.score": 0.01, "elbo.reconstruction": 30.0}},
        {"model": "a", "value": 1.0, "seed": 1, "scores": {"mig.score": 0.3, "sap.score": 0.03, "elbo.reconstruction": 32.0}},
        {"model": "a", "value": 10.0, "seed": 0, "scores": {"mig.score": 0.5, "sap.score": 0.02, "elbo.reconstruction": 50.0}},
        {"model": "a", "value": 10.0, "seed": 1, "scores": {"sap.score": 0.04, "elbo.reconstruction": 52.0}},
        {"model": "b", "value": 2.0, "seed": 0, "scores": {"mig.score": 0.2, "sap.score": float("nan")}},
    ]


def test_best_setting_table_and_curves():
    runs = _runs()
    best = {b["model"]: b for b in st.best_settings(runs, "mig.score")}
    # a: strength 1 has mean 0.2 over two seeds, strength 10 mean 0.5 from one seed (no std for n = 1)
    assert best["a"] == {"model": "a", "value": 10.0, "mean": 0.5, "std": None, "n": 1, "settings": 2}
    assert best["b"]["value"] == 2.0 and best["b"]["n"] == 1
    sap = {b["model"]: b for b in st.best_settings(runs, "sap.score")}
    assert sap["a"]["value"] == 10.0 and sap["a"]["mean"] == pytest.approx(0.03)
    assert sap["a"]["std"] == pytest.approx(math.sqrt(2) * 0.01) and "b" not in sap  # b's only sap is NaN
    # the reconstruction is better when smaller
    rec = st.best_settings(runs, "elbo.reconstruction")
    assert rec[0]["value"] == 1.0 and rec[0]["mean"] == pytest.approx(31.0) and rec[0]["n"] == 2
    curve = st.strength_curve(runs, "a", "mig.score")
    assert [(c["value"], c["n"]) for c in curve] == [(1.0, 2), (10.0, 1)]
    assert curve[0]["mean"] == pytest.approx(0.2) and curve[0]["std"] == pytest.approx(math.sqrt(0.02))
    assert curve[0]["points"] == [(0, 0.1), (1, 0.3)]
    assert st.distributions(runs, "mig.score") == {"a": [0.1, 0.3, 0.5], "b": [0.2]}
    assert st.tradeoff(runs, "mig.score") == {"a": [(30.0, 0.1, 1.0), (32.0, 0.3, 1.0), (50.0, 0.5, 10.0)]}
    assert st.mean_std([4.0]) == (4.0, None, 1) and st.mean_std([]) == (None, None, 0)
    assert st.spans_decades([1, 2, 16]) and not st.spans_decades([1, 2, 8]) and not st.spans_decades([0, 100])
    rho, n = st.spearman_matrix(runs, ["mig.score", "sap.score"])
    assert n.tolist() == [[4, 3], [3, 4]]  # pairs where both scores are finite
    assert rho[0, 1] == pytest.approx(st.spearman([0.1, 0.3, 0.5], [0.01, 0.03, 0.02]))  # = 0.5


def test_the_report_of_a_study_json(tmp_path):
    """Every figure, the best-setting table (n shown, no ± for n = 1), labels with units."""
    runs = [{**r, "key": "model.beta", "name": f"{r['model']}-{r['value']}-{r['seed']}", "path": "x", "step": 5,
             "trained": True, "scored": True} for r in _runs()]
    runs.append({"model": "b", "key": "model.beta", "value": 4.0, "seed": 0, "name": "b-4-0", "path": "x",
                 "step": 2, "trained": False, "scored": False})
    study = {"version": 1, "protocol": {"name": "hand", "description": "made by hand", "source": "tests",
                                        "paper": "-", "steps": 10},
             "steps": 5, "eval": {"metrics": ["mig", "sap", "elbo"], "seed": 0, "profile": "fast"},
             "models": [{"name": "a", "title": "Model A", "key": "model.beta", "values": [1.0, 10.0], "seeds": [0, 1]},
                        {"name": "b", "title": "Model B", "key": "model.gamma", "values": [2.0, 4.0], "seeds": [0]}],
             "runs": runs, "progress": {"runs": 6, "trained": 5, "scored": 5}, "settings": {}}
    (tmp_path / "study.json").write_text(json.dumps(study))
    assert plot_keys(study) == ["mig.score", "sap.score"]
    assert label_of("mig.score") == "MIG" and label_of("dci.disentanglement") == "DCI disentanglement"
    page = write_study_report(tmp_path)
    figs = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figs == ["scores_by_objective.png", "spearman.png", "strength_a.png", "strength_b.png", "tradeoff.png"]
    html = page.read_text()
    assert "6 runs selected: 5 trained" in html and "The figures show the 5 scored runs" in html
    assert "beta = 10<br>0.500 (n=1)" in html  # n = 1: no ±
    assert "0.030 ± 0.014 (n=2)" in html  # a's best SAP: mean ± sample std over its two seeds
    assert "lower is better" in html and "MIG (normalised MI gap, 0 to 1)" in html
