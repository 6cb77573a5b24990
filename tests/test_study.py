"""Many runs' scores in one table (metrics/study.py, `vaelab evaluate SWEEP`)."""
import json
import math
import shutil

import pytest

from vaelab.cli import main
from vaelab.errors import VaelabError
from vaelab.metrics.study import format_study, runs_of, summarize


def test_summarize_means_over_seeds_by_hand():
    results = [
        {"metrics": ["mig"], "mig.score": 0.2},
        {"metrics": ["mig"], "mig.score": 0.4},
        {"metrics": ["mig", "sap"], "mig.score": 0.9, "sap.score": 0.05},
        {"metrics": ["mig"], "mig.score": float("nan")},  # a NaN score is left out of its mean (n < runs)
    ]
    labels = [{"model.beta": 1, "train.seed": 0}, {"model.beta": 1, "train.seed": 1},
              {"model.beta": 4, "train.seed": 0}, {"model.beta": 4, "train.seed": 1}]
    rows = summarize(results, labels)
    assert [r["setting"] for r in rows] == [{"model.beta": 1}, {"model.beta": 4}]
    assert [r["runs"] for r in rows] == [2, 2]
    mig1 = rows[0]["scores"]["mig.score"]
    assert mig1["mean"] == pytest.approx(0.3) and mig1["n"] == 2
    assert mig1["std"] == pytest.approx(math.sqrt(((0.2 - 0.3) ** 2 + (0.4 - 0.3) ** 2) / 1))  # sample std
    assert rows[1]["scores"]["mig.score"] == {"mean": 0.9, "std": None, "n": 1}  # one value: no spread
    assert rows[1]["scores"]["sap.score"]["mean"] == 0.05 and "sap.score" not in rows[0]["scores"]
    table = format_study(rows).splitlines()
    assert table[0].split() == ["beta", "runs", "mig", "sap"]
    assert "0.300±0.141" in table[2] and "0.900 (n=1)" in table[3] and table[2].rstrip().endswith("-")


def _fake_sweep(root, names=("t-0", "t-1")):
    """A sweep folder as `vaelab sweep` writes it (absolute paths in sweep.json), runs marked by a file."""
    root.mkdir(parents=True)
    runs = []
    for k, name in enumerate(names):
        (root / name).mkdir()
        (root / name / "config.toml").write_text(f"# {root.name}\n")
        runs.append({"name": name, "path": str((root / name).resolve()), "values": {"train.seed": k}})
    (root / "sweep.json").write_text(json.dumps({"runs": runs, "mode": "sequential"}))
    return root


def test_a_copied_sweep_folder_stands_for_its_own_runs(tmp_path):
    """A copy (or a moved sweep) is read from its own subfolders, never from the original's paths."""
    orig = _fake_sweep(tmp_path / "orig" / "sw")
    copy = tmp_path / "elsewhere" / "sw-copy"
    shutil.copytree(orig, copy)
    paths, labels, summary = runs_of([copy])
    assert paths == [copy / "t-0", copy / "t-1"] and summary == copy / "study.json"
    assert labels == [{"train.seed": 0}, {"train.seed": 1}]
    # an entry without a name: the last part of its path, inside the sweep folder
    manifest = json.loads((copy / "sweep.json").read_text())
    del manifest["runs"][1]["name"]
    (copy / "sweep.json").write_text(json.dumps(manifest))
    assert runs_of([copy])[0] == [copy / "t-0", copy / "t-1"]
    for bad in ("../orig", "/abs/t-0", "", 3):  # a name must be one of the sweep folder's own subfolders
        manifest["runs"][1]["name"] = bad
        (copy / "sweep.json").write_text(json.dumps(manifest))
        with pytest.raises(VaelabError, match="not a sweep manifest"):
            runs_of([copy])
    (copy / "sweep.json").write_text(json.dumps({"runs": []}))
    with pytest.raises(VaelabError, match="lists no runs"):
        runs_of([copy])


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, shared_data):
    """A trained sweep: quickstart at gamma 2 and 20, seeds 0 and 1, three steps each."""
    root = tmp_path_factory.mktemp("study")
    npz = shared_data / "dsprites" / "dsprites_downsampled.npz"
    sets = ["--set", "data.name=dsprites", "--set", f"data.root={npz}", "--set", "train.image_every=0",
            "--set", "train.tensorboard=false", "--set", "model.latent_dim=4"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAELAB_DATA", str(root / "data"))
        assert main(["sweep", "quickstart", "--grid", "model.gamma=2,20", "--seeds", "0,1", "--steps", "3",
                     "--out", str(root / "sw"), "--quiet", "--device", "cpu", *sets]) == 0
    return root


def test_evaluate_a_sweep_folder_end_to_end(sweep_dir, capsys, monkeypatch):
    """`vaelab evaluate SWEEP`: every run scored, one row per gamma, eval.json reused the second time."""
    monkeypatch.setenv("VAELAB_DATA", str(sweep_dir / "data"))
    sw = sweep_dir / "sw"
    argv = ["evaluate", str(sw), "--metrics", "mig,modularity", "--profile", "fast", "--jobs", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    study = json.loads((sw / "study.json").read_text())
    assert [r["setting"] for r in study["settings"]] == [{"model.gamma": 2.0}, {"model.gamma": 20.0}]
    for row in study["settings"]:
        runs = [r for r in study["runs"] if r["values"]["model.gamma"] == row["setting"]["model.gamma"]]
        migs = [json.loads((sw / r["path"].split("/")[-1] / "eval.json").read_text())["mig.score"] for r in runs]
        assert row["runs"] == 2 and row["scores"]["mig.score"]["mean"] == pytest.approx(sum(migs) / 2)
    assert "gamma" in out and "mig" in out and f"wrote {sw / 'study.json'}" in out
    assert main(argv) == 0  # again: nothing to score
    assert capsys.readouterr().out.count("eval.json reused") == 4
    assert main([*argv, "--backend", "ray"]) == 0  # nothing to score: no Ray needed, and no error
    assert capsys.readouterr().out.count("eval.json reused") == 4
    assert main([*argv, "--out", str(sweep_dir / "x.json")]) == 2
    assert "--out applies to one run" in capsys.readouterr().err


def test_evaluate_a_sweep_on_ray_scores_as_here(sweep_dir, capsys, monkeypatch, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'vaelab[ray]')")
    monkeypatch.setenv("VAELAB_DATA", str(sweep_dir / "data"))
    sw = sweep_dir / "sw"
    common = ["evaluate", str(sw), "--metrics", "mig,sap", "--profile", "fast", "--jobs", "1", "--force", "--json"]
    assert main(common) == 0
    here = json.loads(capsys.readouterr().out)
    assert main([*common, "--backend", "ray"]) == 0
    there = json.loads(capsys.readouterr().out)
    assert [r["setting"] for r in there["settings"]] == [r["setting"] for r in here["settings"]]
    for a, b in zip(here["settings"], there["settings"]):
        for key, s in a["scores"].items():
            assert b["scores"][key]["mean"] == pytest.approx(s["mean"], abs=1e-6), key


def test_report_of_a_sweep_shows_the_study(sweep_dir, capsys, monkeypatch):
    """`vaelab report SWEEP`: each run's report and SWEEP/comparison.html with the study table on top."""
    monkeypatch.setenv("VAELAB_DATA", str(sweep_dir / "data"))
    sw = sweep_dir / "sw"
    assert main(["evaluate", str(sw), "--metrics", "mig", "--profile", "fast", "--jobs", "1", "--quiet"]) == 0
    assert main(["report", str(sw), "--quiet"]) == 0
    html = (sw / "comparison.html").read_text()
    assert "Study: each setting" in html and html.count('href="quickstart-') == 4
    study = json.loads((sw / "study.json").read_text())
    first = study["settings"][0]["scores"]["mig.score"]
    assert f"{first['mean']:.4f}"[:5] in html
    for k in range(4):
        assert (sw / f"quickstart-{k}" / "report.html").is_file()
    capsys.readouterr()
    assert main(["report", str(sw)]) == 0  # not quiet: every page it wrote, the comparison last
    lines = capsys.readouterr().out.splitlines()
    for k in range(4):
        assert str((sw / f"quickstart-{k}" / "report.html").resolve()) in lines, lines
    assert lines[-1] == str((sw / "comparison.html").resolve()), lines
