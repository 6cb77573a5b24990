"""UG-VAE experiments (docs/experiments.md): series streams, and each `vaelab experiment` command end to end on tiny
UG-VAEs trained on the real MNIST test set and the 100 real CelebA faces."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.cli import main
from vaelab.experiments.series import RULES, SeriesSampler, digit_stream, series_members


# ---------------------------------------------------------------------------------------------- series

def _s(rule, n):
    return "".join(map(str, digit_stream(rule)[:n]))


def test_series_streams_hand_checked():
    assert _s("even", 21) == "024681012141618202224"
    assert _s("odd", 20) == "13579111315171921232"
    assert _s("fibonacci", 24) == "011235813213455891442333"
    assert _s("primes", 22) == "2357111317192329313741"
    for r in RULES:
        assert len(digit_stream(r)) == 256
        assert len(series_members(r)) == 256
    assert series_members("primes")[-1] == 1619  # the 256th prime
    assert series_members("fibonacci")[:8] == [0, 1, 1, 2, 3, 5, 8, 13]


def test_series_sampler_wraps_and_draws_matching_digits():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 7)
    rng.shuffle(labels)
    s = SeriesSampler(labels, batch_size=128)
    idx, digits, rule = s.batch(rng, rule="even", start=200)
    stream = digit_stream("even")
    assert rule == "even"
    assert np.array_equal(digits, np.concatenate([stream[200:], stream[:72]]))  # wraps modulo 256
    assert np.array_equal(labels[idx], digits)
    idx, digits, rules = s.batches(12, np.random.default_rng(1))
    assert idx.shape == digits.shape == (12, 128) and len(rules) == 12
    assert np.array_equal(labels[idx], digits)
    assert set(rules) <= set(RULES)
    # every batch is a window of its rule's stream
    for d, r in zip(digits, rules):
        st = digit_stream(r)
        assert any(np.array_equal(d, st[(k + np.arange(128)) % 256]) for k in range(256))


def test_series_sampler_needs_every_digit():
    from vaelab.errors import VaelabError

    with pytest.raises(VaelabError, match="digit"):
        SeriesSampler(np.zeros(50, dtype=np.int64))


# ---------------------------------------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _train(out: Path, preset: str, root: Path, *extra: str, steps: int = 30):
    rc = main(["train", preset, "--set", f"data.root={root}", "--set", "train.tensorboard=false",
               "--set", "train.epochs=0", "--steps", str(steps), "--device", "cpu", "--out", str(out),
               "--quiet", *extra])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def mnist_root(shared_data):
    """The real MNIST test set (conftest's shared_data finds it); skips the test when absent."""
    root = shared_data / "mnist"
    if not (root / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST test set not found in {root}")
    return root


@pytest.fixture(scope="module")
def mnist_run(mnist_root, tmp_path_factory, one_thread):
    return _train(tmp_path_factory.mktemp("ug") / "mnist", "ugvae-mnist", mnist_root, "--set", "data.split=test",
                  "--set", "train.batch_size=32")


@pytest.fixture(scope="module")
def mix_run(mnist_root, tmp_path_factory, one_thread):
    return _train(tmp_path_factory.mktemp("ug") / "mix", "ugvae-mnist", mnist_root, "--set", "data.split=test",
                  "--set", "data.name=mnist_inverted_mix", "--set", "train.batch_size=32", steps=20)


@pytest.fixture(scope="module")
def celeba_run(shared_data, tmp_path_factory, one_thread):
    root = shared_data / "celeba"
    if not (root / "list_attr_celeba.txt").is_file():
        pytest.skip(f"CelebA faces not found in {root}")
    mp = pytest.MonkeyPatch()
    mp.setenv("VAELAB_DATA", str(tmp_path_factory.mktemp("vaelab-data")))  # image caches go here
    mp.setenv("VAELAB_QUIET", "1")
    try:
        yield _train(tmp_path_factory.mktemp("ug") / "celeba", "ugvae-celeba", root, "--set", "data.split=all",
                     "--set", "train.batch_size=16", steps=3)
    finally:
        mp.undo()


def _result(run: Path, name: str) -> dict:
    path = run / "experiments" / name / f"{name}.json"
    assert path.is_file()
    data = json.loads(path.read_text())
    assert isinstance(data["summary"], dict) and data["summary"]
    assert isinstance(data["notes"], list) and all(isinstance(n, str) for n in data["notes"])
    for f in data["figures"]:
        assert (path.parent / f).is_file() and (path.parent / f).stat().st_size > 0
    return data


def _in01(*values):
    for v in values:
        assert v is not None and 0.0 <= v <= 1.0, v


# ---------------------------------------------------------------------------------------------- commands

def test_interpolation_mnist(mnist_run):
    rc = main(["experiment", "interpolation", str(mnist_run), "--steps", "4", "--device", "cpu", "--quiet",
               "--raw-grids", "--components", "0,3"])
    assert rc == 0
    d = _result(mnist_run, "interpolation")
    out = mnist_run / "experiments" / "interpolation"
    for f in ("encoding.png", "encoding.pdf", "sampling.png", "sampling.pdf", "encoding_grid.png",
              "sampling_component03.png"):
        assert (out / f).is_file(), f
    assert d["model"]["dim_z"] == 10 and d["model"]["dim_beta"] == 20 and d["model"]["K"] == 10
    assert [c["component"] for c in d["sampling"]["components"]] == [0, 3]
    _in01(*(v for k, v in d["summary"].items() if "change" in k))
    from PIL import Image

    w, h = Image.open(out / "encoding_grid.png").size
    assert (w, h) == (4 * 29 + 1, 4 * 29 + 1)  # 4x4 cells of 28 px with 1 px gaps


def test_domain_alignment_mnist_vs_inverted(mnist_run, capsys):
    rc = main(["experiment", "domain-alignment", str(mnist_run), "--batches", "20", "--mixed-batches", "6",
               "--embed", "pca", "--steps", "3", "--device", "cpu", "--no-pdf"])
    assert rc == 0
    out = capsys.readouterr().out  # the caveat is printed beside the accuracy, not only kept in the JSON
    assert "domain_accuracy = " in out and "note: " in out and "out of its training distribution" in out
    d = _result(mnist_run, "domain_alignment")
    s = d["summary"]
    _in01(s["domain_accuracy"], s["random_label_accuracy"], s["chance"])
    assert s["domain_accuracy"] > s["random_label_accuracy"]  # inverted images: trivially separable
    assert d["params"]["domains"] == ["mnist", "mnist-inverted"]
    assert any("inverted" in n for n in d["notes"])
    assert (mnist_run / "experiments" / "domain_alignment" / "domain_map.png").is_file()
    assert not (mnist_run / "experiments" / "domain_alignment" / "domain_map.pdf").exists()


def test_domain_alignment_own_mixture_and_reference_mode(mix_run):
    rc = main(["experiment", "domain-alignment", str(mix_run), "--batches", "12", "--mixed-batches", "4",
               "--embed", "tsne", "--device", "cpu", "--quiet", "--no-pdf"])
    assert rc == 0
    d = _result(mix_run, "domain_alignment")
    assert d["params"]["source"] == "mnist_inverted_mix"
    assert d["params"]["domains"] == ["mnist", "mnist_inverted"]
    assert d["summary"]["mixed_position"] is not None
    rc = main(["experiment", "domain-alignment", str(mix_run), "--batches", "12", "--mode", "reference",
               "--embed", "pca", "--device", "cpu", "--quiet", "--no-pdf"])
    assert rc == 0
    d = _result(mix_run, "domain_alignment")
    assert d["params"]["mode"] == "reference"
    _in01(d["summary"]["domain_accuracy"])
    # interpolation pairs one batch from each domain of a mixture
    assert main(["experiment", "interpolation", str(mix_run), "--variant", "encoding", "--steps", "3",
                 "--device", "cpu", "--quiet", "--no-pdf"]) == 0
    assert "domain" in _result(mix_run, "interpolation")["encoding"]["batches"]


def test_global_structure_mnist_series(mnist_run):
    rc = main(["experiment", "global-structure", str(mnist_run), "--series-batches", "40",
               "--random-batches", "40", "--local-points", "150", "--embed", "pca", "--device", "cpu",
               "--quiet", "--no-pdf"])
    assert rc == 0
    d = _result(mnist_run, "global_structure")
    s = d["summary"]
    assert d["params"]["kind"] == "series"
    _in01(s["series_linear_test"], s["series_rbf_test"], s["series_chance_test"], s["series_cv_accuracy"],
          s["series_cv_random_labels"], s["five_class_linear_test"])
    assert sum(d["batches"]["series"].values()) == 40
    assert (mnist_run / "experiments" / "global_structure" / "series_maps.png").is_file()


def test_global_structure_celeba_attributes(celeba_run):
    rc = main(["experiment", "global-structure", str(celeba_run), "--attribute-batches", "10",
               "--random-batches", "10", "--batch-size", "64", "--embed", "pca", "--device", "cpu", "--quiet",
               "--no-pdf"])
    assert rc == 0
    d = _result(celeba_run, "global_structure")
    s = d["summary"]
    assert d["params"]["kind"] == "attributes" and d["params"]["attribute"] == "Male"
    _in01(s["attribute_linear_test"], s["attribute_rbf_test"], s["attribute_chance_test"],
          s["three_class_linear_test"])
    assert any("with replacement" in n for n in d["notes"])  # 100 faces: fewer per attribute than a batch of 64
    assert main(["experiment", "interpolation", str(celeba_run), "--steps", "3", "--components", "1",
                 "--device", "cpu", "--quiet", "--no-pdf"]) == 0
    assert _result(celeba_run, "interpolation")["model"]["image_shape"] == [3, 64, 64]


# ---------------------------------------------------------------------------------------------- bad input

def _one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error:") and "\n" not in err, err
    return err


@pytest.mark.parametrize("name", ["interpolation", "domain-alignment", "global-structure"])
def test_non_ugvae_run_is_one_line_exit_2(tmp_path, capsys, name):
    run = tmp_path / "betavae-run"
    run.mkdir()
    (run / "config.toml").write_text('name = "x"\n[model]\nobjective = "betavae"\n')
    err = _one_line_error(capsys, ["experiment", name, str(run), "--device", "cpu"])
    assert "ugvae" in err
    err = _one_line_error(capsys, ["experiment", name, str(tmp_path / "missing"), "--device", "cpu"])
    assert "missing" in err


def test_bad_options_are_one_line_exit_2(mnist_run, capsys):
    err = _one_line_error(capsys, ["experiment", "global-structure", str(mnist_run), "--kind", "attributes",
                                   "--device", "cpu"])
    assert "Male" in err
    err = _one_line_error(capsys, ["experiment", "domain-alignment", str(mnist_run), "--domains", "mnist,nosuchset",
                                   "--device", "cpu"])
    assert "nosuchset" in err
    _one_line_error(capsys, ["experiment", "domain-alignment", str(mnist_run), "--domains", "mnist",
                             "--device", "cpu"])
    err = _one_line_error(capsys, ["experiment", "interpolation", str(mnist_run), "--components", "10",
                                   "--device", "cpu"])
    assert "K = 10" in err
