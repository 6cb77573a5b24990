"""`vaelab evaluate`: bad input ends with one line and exit 2; end to end on a 5-step quickstart run."""
import json

import pytest

from vaelab.cli import build_parser, main


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices)


def test_evaluate_is_registered():
    assert "evaluate" in _commands()


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "no/such/run"], "not a folder"),
    (["evaluate", ".", "--metrics", "mgi"], "unknown metric"),
    (["evaluate", ".", "--root", "/tmp"], "--root needs --dataset"),
    (["evaluate", ".", "--jobs", "0"], "--jobs"),
])
def test_evaluate_bad_input_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error:") and message in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "mnist"], "vaelab: error: --dataset applies to one run: with several runs each is scored on its own"),
    (["--out", "x.json"], "vaelab: error: --out applies to one run: with several runs each writes its own"),
    (["--out", "x.json", "--dataset", "mnist"], "vaelab: error: --out and --dataset apply to one run"),
    (["--ray-address", "auto"], "vaelab: error: --ray-address only applies with --backend ray"),
])
def test_evaluate_a_sweep_names_the_options_that_do_not_apply(extra, message, capsys, tmp_path, monkeypatch):
    """The error names exactly the options given that a sweep cannot take (checked before any scoring)."""
    monkeypatch.chdir(tmp_path)
    sw = tmp_path / "sw"
    for k in range(2):
        (sw / f"t-{k}").mkdir(parents=True)
    (sw / "sweep.json").write_text(json.dumps({"runs": [{"name": f"t-{k}", "path": str(sw / f"t-{k}"),
                                                          "values": {"train.seed": k}} for k in range(2)]}))
    assert main(["evaluate", str(sw), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1, err
    if "--out" not in extra:
        assert "--out" not in err
    assert not (sw / "study.json").exists()


def test_evaluate_profile_choice_checked(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", ".", "--profile", "slow"])
    assert e.value.code == 2


def test_evaluate_end_to_end_quickstart(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "quickstart", "--steps", "5", "--device", "cpu", "--out", str(run), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    rc = main(["evaluate", str(run), "--metrics", "mig,dci,unsupervised,latent", "--profile", "fast", "--json",
               "--jobs", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out)
    assert 0.0 <= res["mig.score"] <= 1.0
    assert 0.0 <= res["dci.disentanglement"] <= 1.0 and res["settings"]["dci"]["trees"] == "vectorised"
    assert res["num_latents"] == 10 and res["profile"] == "fast"
    assert res["skipped"] == {}
    assert "latent.kl_per_latent" in res and len(res["latent.kl_per_latent"]) == 10
    saved = json.loads((run / "eval.json").read_text())
    assert saved["mig.score"] == res["mig.score"]
    assert saved["run"] == str(run)
