"""`vaelab encode` / Run.encode_dataset: a run's posterior over a split, with the ground truth, as .npz."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_viz import build_run  # noqa: F401  (the session's small dSprites run)
from vaelab.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shared_data):
    return build_run(tmp_path_factory.getbasetemp(), shared_data, "dsprites")


def test_cli_writes_codes_equal_to_the_model_on_the_same_images(run_dir, tmp_path, capsys):
    import vaelab

    out = tmp_path / "codes.npz"
    assert main(["encode", str(run_dir), "--n", "300", "--seed", "3", "--out", str(out), "--quiet",
                 "--batch-size", "64"]) == 0
    assert "300 images x 10 latents, 5 factors" in capsys.readouterr().out
    z = np.load(out)  # no pickle needed
    assert set(z.files) == {"mu", "logvar", "index", "factors", "factor_names", "factor_sizes", "factor_values",
                            "step"}
    run = vaelab.load_run(run_dir)
    ds = run.dataset()
    idx = z["index"]
    assert idx.shape == (300,) and np.all(np.diff(idx) > 0) and idx.max() < len(ds)
    assert len(set(idx.tolist())) == 300
    # the codes are the model's posterior on exactly those images, the factors theirs
    mu, lv = run.model.encode(ds.images[torch.from_numpy(idx)].float() / 255)
    np.testing.assert_allclose(z["mu"], mu.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(z["logvar"], lv.detach().numpy(), atol=1e-5)
    assert np.array_equal(z["factors"], ds.factors[torch.from_numpy(idx)].numpy())
    assert z["factor_names"].tolist() == ["shape", "scale", "orientation", "posX", "posY"]
    assert z["factor_sizes"].tolist() == list(ds.factor_sizes) and int(z["step"]) == run.step
    for k, values in enumerate(ds.factor_values):  # real values, NaN past each factor's size
        n = len(values)
        assert np.allclose(z["factor_values"][k, :n], values) and np.isnan(z["factor_values"][k, n:]).all()
    # the same seed draws the same images; another seed others
    again = run.encode_dataset(n=300, seed=3)
    assert np.array_equal(again["index"], idx)
    assert not np.array_equal(run.encode_dataset(n=300, seed=4)["index"], idx)


def test_default_is_every_image_into_the_run_folder(run_dir, capsys):
    assert main(["encode", str(run_dir), "--quiet"]) == 0
    files = sorted(run_dir.glob("codes_step*_train.npz"))
    assert len(files) == 1 and files[0].name.startswith("codes_step00000020")
    z = np.load(files[0])
    assert np.array_equal(z["index"], np.arange(len(z["index"]))) and len(z["index"]) == 46080
    assert not list(run_dir.glob(".codes*"))  # no temporary file left


@pytest.mark.parametrize("argv, message", [
    (["--n", "0"], "n must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--out", "codes.txt"], "must end in .npz"),
    (["--step", "7"], "no checkpoint at step 7"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, capsys, argv, message):
    assert main(["encode", str(run_dir), "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_not_a_run_folder(tmp_path, capsys):
    assert main(["encode", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_an_out_path_under_a_file_is_one_line(run_dir, tmp_path, capsys):
    """cli.main turns an OS error about a path the user gave into one line (here: a folder that is a file)."""
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["encode", str(run_dir), "--n", "4", "--quiet", "--out", str(f / "codes.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error:") and str(f) in err and len(err.splitlines()) == 1
