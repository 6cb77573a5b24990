"""Config: presets parse and validate, overrides, TOML round trip, clear errors."""
import tomllib

import pytest

from vaelab.config import Config, apply_overrides, dumps_toml, load_preset, parse_override, preset_names, resolve
from vaelab.errors import VaelabError


def test_every_preset_resolves_and_names_its_source():
    names = preset_names()
    assert "quickstart" in names and len(names) >= 20
    for name in names:
        cfg = resolve(name)
        assert cfg.source, f"preset {name} has no source"
        assert cfg.model["objective"] in ("vae", "betavae", "annealedvae", "factorvae", "btcvae", "dipvae", "ugvae")


def test_preset_values_from_spec():
    g = resolve("factorvae-dsprites-g6.4")
    assert g.model["gamma"] == 6.4 and g.train.steps == 700_000 and g.train.batch_size == 64
    assert g.optim["disc"].betas == [0.5, 0.9] and g.optim["disc"].lr == 1e-4
    assert resolve("factorvae-celeba").optim["disc"].lr == 1e-5
    b = resolve("annealedvae-dsprites-burgess")
    assert (b.model["gamma"], b.model["c_max"], b.model["c_steps"]) == (1000.0, 25.0, 100_000)
    assert resolve("annealedvae-celeba-burgess").model["c_max"] == 50.0
    d = resolve("dlib-factorvae-dsprites")
    assert d.model["disc_layers"] == 6 and d.data.sampling == "iid" and d.train.steps == 300_000


def test_overrides_parse_toml_values():
    assert parse_override("model.beta=4") == (["model", "beta"], 4)
    assert parse_override("data.name=mnist") == (["data", "name"], "mnist")
    assert parse_override("optim.vae.betas=[0.5, 0.9]") == (["optim", "vae", "betas"], [0.5, 0.9])
    cfg = resolve("quickstart", ["model.gamma=10", "train.steps=7"])
    assert cfg.model["gamma"] == 10.0 and cfg.train.steps == 7


@pytest.mark.parametrize("bad", ["model.gamm=3", "train.stepz=4", "nope=1", "train.steps=abc",
                                 "optim.vae.schedule=cosine", "data.sampling=random", "model.objective=vea"])
def test_bad_overrides_are_one_line_errors(bad):
    with pytest.raises(VaelabError) as e:
        resolve("quickstart", [bad])
    assert "\n" not in str(e.value)


def test_unknown_preset_suggests():
    with pytest.raises(VaelabError, match="did you mean 'quickstart'"):
        load_preset("quikstart")


def test_toml_round_trip():
    cfg = resolve("annealedvae-dsprites-bcvae")
    text = cfg.to_toml()
    again = Config.from_dict(tomllib.loads(text)).validate()
    assert again.to_dict() == cfg.to_dict()
    assert tomllib.loads(dumps_toml({"a": {"b": {"c": 1}}, "x": "q\"uote"})) == {"a": {"b": {"c": 1}}, "x": "q\"uote"}


def test_lr_schedules():
    cfg = resolve("annealedvae-dsprites-bcvae")
    oc = cfg.optim["vae"]
    assert oc.lr_at(0) == 5e-3 and oc.lr_at(1151) == 5e-3
    assert oc.lr_at(1152) == pytest.approx(5e-3 * 0.95)
    assert oc.lr_at(92_159) == pytest.approx(5e-3 * 0.95 ** 8)
    exp = resolve("quickstart", ["optim.vae.schedule=exponential", "optim.vae.decay=0.5", "optim.vae.decay_every=10"])
    assert exp.optim["vae"].lr_at(20) == pytest.approx(1e-3 * 0.25)


def test_apply_overrides_does_not_mutate():
    base = {"train": {"steps": 1}}
    out = apply_overrides(base, {"train.steps": 2})
    assert base["train"]["steps"] == 1 and out["train"]["steps"] == 2


def test_cli_presets_lists_every_preset_and_shows_one_with_its_chain(capsys):
    from vaelab.cli import main
    from vaelab.config import preset_names, resolve, tomllib

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["preset", "objective/net", "dataset", "source"]  # a header names the columns
    lines = lines[1:]
    assert [ln.split()[0] for ln in lines] == preset_names()
    assert any(ln.startswith("factorvae-dsprites-g6.4 ") and "1Konny/FactorVAE" in ln for ln in lines)

    assert main(["presets", "factorvae-dsprites-g6.4"]) == 0
    out = capsys.readouterr().out
    heads = [ln for ln in out.splitlines() if ln.startswith("# ----")]
    assert heads[0] == "# ---- factorvae-dsprites-g6.4.toml" and heads[1] == "# ---- _factorvae-1konny.toml"
    assert "--max_iter 7e5" in out  # the file's comments (sources, conversions) are shown as written
    resolved = tomllib.loads(out.split(heads[-1], 1)[1])
    assert resolved == resolve("factorvae-dsprites-g6.4").to_dict()

    assert main(["presets", "factorvae-dsprite"]) == 2
    assert "did you mean" in capsys.readouterr().err
