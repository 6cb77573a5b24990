"""Two-domain mixtures (UG-VAE) and their batch sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vaelab.data import FactorDataset, load
from vaelab.data.mixtures import domain_batch_indices, mixture
from vaelab.errors import VaelabError


def _set(n, c, value, size=8, name="x"):
    return FactorDataset(images=torch.full((n, c, size, size), value, dtype=torch.uint8), name=name)


def test_mixture_concatenates_and_converts_grey():
    a, b = _set(3, 1, 10, name="grey"), _set(5, 3, 200, name="rgb")
    m = mixture(a, b, "mix")
    assert tuple(m.images.shape) == (8, 3, 8, 8)
    assert m.factor_names == ["domain"] and m.factor_sizes == [2] and not m.is_grid
    assert m.factors[:, 0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert m.meta["domains"] == ["grey", "rgb"]
    np.testing.assert_array_equal(m.meta["domain_index"], m.factors[:, 0].numpy())
    assert int(m.images[0, 2, 0, 0]) == 10 and int(m.images[7, 0, 0, 0]) == 200
    with pytest.raises(VaelabError, match="same size"):
        mixture(a, _set(2, 3, 0, size=16), "bad")


def test_domain_batches_mixed_and_single():
    m = mixture(_set(10, 1, 0, name="a"), _set(990, 1, 255, name="b"), "mix")
    rng = np.random.default_rng(0)
    idx = domain_batch_indices(m, 20_000, rng, mode="mixed")
    dom = m.meta["domain_index"][idx]
    assert abs(dom.mean() - 0.5) < 0.02  # domain p 1/2 despite 10 vs 990 images
    assert set(idx[dom == 0].tolist()) == set(range(10))  # uniform within the small domain
    seen = set()
    for _ in range(40):
        b = domain_batch_indices(m, 64, rng, mode="single")
        d = np.unique(m.meta["domain_index"][b])
        assert len(d) == 1
        seen.add(int(d[0]))
    assert seen == {0, 1}
    with pytest.raises(VaelabError, match="batch mode"):
        domain_batch_indices(m, 4, rng, mode="both")
    with pytest.raises(VaelabError, match="not a domain mixture"):
        domain_batch_indices(_set(4, 1, 0), 4, rng)


def test_mnist_inverted_mix(shared_data):
    d = shared_data / "mnist"
    if not (d / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("MNIST test files missing")
    m = load("mnist_inverted_mix", root=d, split="test")
    assert tuple(m.images.shape) == (20_000, 1, 28, 28)
    assert m.meta["domains"] == ["mnist", "mnist_inverted"] and m.meta["batch_mode"] == "mixed"
    torch.testing.assert_close(m.images[10_000:], 255 - m.images[:10_000])
    single = load("mnist_inverted_mix_batch", root=d, split="test")
    assert single.meta["batch_mode"] == "single"


@pytest.mark.filterwarnings("ignore:chairs. file names")
def test_folder_mixtures_with_subfolders(tmp_path, data_home):
    from PIL import Image

    for sub, n in (("cars", 3), ("chairs", 2)):
        (tmp_path / sub).mkdir()
        for i in range(n):
            Image.new("RGB", (10, 10), (i * 50, 0, 0)).save(tmp_path / sub / f"{i}.png")
    m = load("cars_chairs", root=tmp_path, size=8)
    assert len(m) == 5 and m.meta["domains"] == ["cars", "chairs"]
    m2 = load("cars_chairs_batch", root_a=tmp_path / "chairs", root_b=tmp_path / "cars", size=8)
    assert m2.meta["domain_index"].tolist() == [0, 0, 1, 1, 1] and m2.meta["batch_mode"] == "single"
