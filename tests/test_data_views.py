"""Image views and disentanglement_lib's dSprites variants (dsprites-color / -noisy / -scream).

Pixel properties of each view checked by hand on synthetic masks, reproducibility, the shown shape
everywhere (nets, `vaelab data info`), training a few steps on each variant, bit-exact resume, a
vmapped sweep equal to runs trained alone, and a sampled metric drawing fresh noise per draw.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import vaelab
from vaelab.cli import main
from vaelab.data import FactorDataset, load
from vaelab.data.views import ColorView, NoisyView, ScreamView, show, torch_generator
from vaelab.errors import VaelabError
from vaelab.training import checkpoint


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Bitwise comparisons below need one thread on both sides (conftest.one_thread)."""


def _masks(n=8, seed=0):
    """dSprites-like stored images: 1 x 64 x 64, pixels 0/255, every image with sprite and background."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 1, 64, 64)) < 0.3).astype(np.uint8) * 255
    return torch.from_numpy(x)


def _painting(h=90, w=110, seed=1):
    """A painting of known, non-repeating content (uint8 H x W x 3)."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------- pixels
def test_color_one_colour_per_image_in_half_to_one_background_black():
    x = _masks()
    y = ColorView()(x, torch.Generator().manual_seed(0))
    assert y.shape == (8, 3, 64, 64) and y.dtype == torch.uint8
    colours = []
    for i in range(8):
        sprite = x[i, 0] == 255
        bg = ~sprite
        assert int(y[i][:, bg].max()) == 0  # background 0 in every channel
        pix = y[i][:, sprite]  # 3 x (sprite pixels)
        assert (pix == pix[:, :1]).all()  # the same colour on every sprite pixel of the image
        c = pix[:, 0].float()
        assert (c >= 127.5 - 0.5).all() and (c <= 255).all()  # U(0.5, 1)^3 x 255, rounded
        colours.append(tuple(c.tolist()))
    assert len(set(colours)) == 8  # one colour per image, drawn per image


def test_noisy_sprite_white_background_spread_and_new_per_draw():
    x = _masks()
    ds = FactorDataset.from_arrays(x, view=NoisyView())
    y = ds.gather(torch.arange(8))
    assert y.shape == (8, 3, 64, 64)
    sprite = (x == 255).expand(-1, 3, -1, -1)
    assert (y[sprite] == 255).all()  # min(1 + u, 1) = 1
    bg = y[~sprite].view(-1)
    for c in range(3):  # every channel's background spreads over 0..255, roughly uniform
        vals = y[:, c][~sprite[:, c]].float()
        assert vals.min() <= 2 and vals.max() >= 253 and abs(float(vals.mean()) - 127.5) < 3
    assert abs(float(bg.float().std()) - 255 / 12 ** 0.5) < 3
    again = ds.gather(torch.arange(8))  # the same rows drawn again: new noise
    assert not torch.equal(y, again) and (again[sprite] == 255).all()
    assert float((y[~sprite] == again[~sprite]).float().mean()) < 0.02


def test_scream_background_is_patch_plus_colour_halved_and_the_sprite_inverted():
    paint = _painting()
    view = ScreamView(paint)
    x = _masks(6)
    y = view(x, torch.Generator().manual_seed(5)).numpy().astype(np.float64)
    assert y.shape == (6, 3, 64, 64)
    p = paint.astype(np.float64)  # H x W x 3
    H, W = paint.shape[:2]
    seen = set()
    for i in range(6):
        bg = x[i, 0].numpy() == 0
        # find the patch: the offset at which 2·bg − patch is one constant colour over the background
        best = None
        for oy in range(H - 64):
            for ox in range(W - 64):
                patch = p[oy:oy + 64, ox:ox + 64].transpose(2, 0, 1)  # 3 x 64 x 64
                d = 2 * y[i] - patch  # = 255 * colour (+ rounding) where the background is
                spread = float(np.ptp(d[:, bg], axis=1).max())
                if best is None or spread < best[0]:
                    best = (spread, oy, ox, d[:, bg].mean(axis=1))
        spread, oy, ox, colour255 = best
        assert spread <= 2.0 + 1e-9, spread  # rounding of (patch + colour) / 2 to a level: at most 1 level x 2
        assert 0 <= oy < H - 64 and 0 <= ox < W - 64  # dlib: randint(0, H - 64)
        assert (colour255 >= -1).all() and (colour255 <= 256).all()  # U(0, 1)^3 x 255
        expect_bg = (p[oy:oy + 64, ox:ox + 64].transpose(2, 0, 1) + colour255[:, None, None]) / 2
        assert np.abs(y[i][:, bg] - expect_bg[:, bg]).max() <= 1.0
        sprite = ~bg
        assert np.abs(y[i][:, sprite] - (255 - expect_bg[:, sprite])).max() <= 1.0  # 1 - (patch + colour)/2
        seen.add((oy, ox))
    assert len(seen) >= 5  # a patch per image


@pytest.mark.parametrize("make", [ColorView, NoisyView, lambda: ScreamView(_painting())])
def test_views_are_reproducible_and_map_any_leading_shape(make):
    view = make()
    x = _masks()
    a = view(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, view(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, view(x, torch.Generator().manual_seed(8)))
    # M x B leading dims (a vmapped sweep's gather) draw exactly what the flat gather draws
    b = view(x.view(2, 4, 1, 64, 64), torch.Generator().manual_seed(7))
    assert b.shape == (2, 4, 3, 64, 64) and torch.equal(b.reshape(8, 3, 64, 64), a)
    one = view(x[0], torch.Generator().manual_seed(7))  # a single image, C x H x W
    assert one.shape == (3, 64, 64)
    # the default generator when none is given, and the global RNG only then
    torch.manual_seed(3)
    c = view(x)
    torch.manual_seed(3)
    assert torch.equal(c, view(x))


def test_dataset_with_a_view_shows_three_channels_and_without_one_is_unchanged():
    x = _masks(16)
    f = np.stack(np.unravel_index(np.arange(16), (4, 4)), axis=1)
    plain = FactorDataset.from_arrays(x, f)
    assert torch.equal(plain.gather(np.array([3, 1])), plain.images[torch.tensor([3, 1])])
    assert plain.image_shape == plain.stored_shape == (1, 64, 64)
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    assert torch.equal(plain.images_for(f[:5], rng_a), plain.images[:5])
    assert rng_a.integers(1 << 30) == rng_b.integers(1 << 30)  # no view: the metric's rng is not touched

    ds = FactorDataset.from_arrays(x, f, view=NoisyView())
    assert ds.image_shape == (3, 64, 64) and ds.stored_shape == (1, 64, 64) and ds.is_grid
    assert "view noisy" in ds.describe() and "3 x 64 x 64" in ds.describe()
    imgs = ds.images_for(f[:5], np.random.default_rng(0))
    assert imgs.shape == (5, 3, 64, 64)
    assert torch.equal(imgs, ds.images_for(f[:5], np.random.default_rng(0)))  # noise from the rng
    fac, imgs = ds.sample(6, np.random.default_rng(1))
    assert imgs.shape == (6, 3, 64, 64) and fac.shape == (6, 2)
    sub = ds.subset([0, 2])
    assert sub.view is ds.view and sub.image_shape == (3, 64, 64)
    assert show(x[:2]) is not None and torch.equal(show(x[:2]), x[:2])
    g = torch_generator(np.random.default_rng(0))
    assert isinstance(g, torch.Generator) and torch_generator(None) is None
    with pytest.raises(VaelabError, match="1-channel"):
        FactorDataset.from_arrays(x.expand(-1, 3, -1, -1).contiguous(), view=ColorView())
    with pytest.raises(VaelabError, match="larger than"):
        FactorDataset.from_arrays(x, view=ScreamView(_painting(64, 100)))


# ---------------------------------------------------------------------------------------- loaders
def test_variants_load_on_the_real_subset_with_the_shown_shape(subset_npz, tmp_path):
    for kind in ("color", "noisy"):
        ds = load(f"dsprites-{kind}", root=subset_npz)
        assert ds.name == f"dsprites-{kind}" and len(ds) == 46_080 and ds.is_grid
        assert ds.image_shape == (3, 64, 64) and tuple(ds.images.shape) == (46_080, 1, 64, 64)
        assert ds.factor_sizes == [3, 6, 10, 16, 16] and ds.meta["view"] == kind
    # scream: a painting larger than the thumbnail box is shrunk to fit 350 x 274, as dlib does
    paint = tmp_path / "scream.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (548, 700, 3), dtype=np.uint8)).save(paint)
    ds = load("dsprites-scream", root=subset_npz, painting=str(paint))
    assert (ds.view.height, ds.view.width) == (274, 350)
    y = ds.gather(torch.arange(4), torch.Generator().manual_seed(0))
    assert y.shape == (4, 3, 64, 64)
    with pytest.raises(VaelabError, match="no painting at .*vaelab data fetch dsprites-scream"):
        load("dsprites-scream", root=subset_npz, painting=str(tmp_path / "nope.jpg"))
    with pytest.raises(VaelabError, match="does not take option 'painting'"):
        load("dsprites-noisy", root=subset_npz, painting=str(paint))
    with pytest.raises(VaelabError, match="unknown base"):
        load("dsprites-noisy", root=subset_npz, base="png")


def test_missing_npz_points_at_fetch_and_the_procedural_base(data_home):
    with pytest.raises(VaelabError, match="vaelab data fetch dsprites.*base = \"procedural\""):
        load("dsprites-color")


def test_cli_info_reports_three_channels(subset_npz, data_home, capsys, tmp_path):
    assert main(["data", "info", "dsprites-noisy", "--root", str(subset_npz)]) == 0
    out = capsys.readouterr().out
    assert "dsprites-noisy: 46,080 images, 3 x 64 x 64 uint8" in out and "view noisy" in out
    assert main(["data", "info", "dsprites-color", "--base", "procedural"]) == 0  # static: renders nothing
    out = capsys.readouterr().out
    assert "737,280 images, 3 x 64 x 64" in out
    assert main(["data", "info", "mnist", "--base", "procedural"]) == 2  # an option mnist does not take
    assert "does not take --base" in capsys.readouterr().err
    assert main(["data", "info", "dsprites-scream", "--root", str(subset_npz)]) == 2  # no painting here
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "The_Scream.jpg" in err
    out_png = tmp_path / "grid.png"
    assert main(["data", "show", "dsprites-color", "--root", str(subset_npz), "--n", "9", "--out", str(out_png)]) == 0
    grid = np.asarray(Image.open(out_png))
    assert grid.ndim == 3 and (grid[..., 0] != grid[..., 1]).any()  # colour, not grey


# ---------------------------------------------------------------------------------------- training
def _train_args(npz, name, *extra):
    return ["--set", f"data.name={name}", "--set", f"data.root={npz}", "--set", "train.batch_size=8",
            "--set", "train.log_every=2", "--set", "model.net=burgess64", "--device", "cpu", "--quiet", *extra]


def _final(run_dir):
    return load_file(str(checkpoint.list_checkpoints(run_dir)[-1] / "tensors.safetensors"))


@pytest.mark.parametrize("kind", ["color", "noisy", "scream"])
def test_trainer_runs_a_few_steps_on_each_variant(kind, subset_npz, tmp_path):
    extra = []
    if kind == "scream":
        paint = tmp_path / "scream.jpg"
        Image.fromarray(_painting(274, 219)).save(paint, quality=95)
        extra = ["--set", f'data.options={{painting = "{paint}"}}']
    out = tmp_path / "run"
    args = _train_args(subset_npz, f"dsprites-{kind}", *extra)
    assert main(["train", "dlib-betavae-dsprites", "--steps", "3", "--out", str(out), *args]) == 0
    state = json.loads((checkpoint.list_checkpoints(out)[-1] / "state.json").read_text())
    assert state["image_shape"] == [3, 64, 64]
    run = vaelab.load_run(out)
    assert run.model.image_shape == (3, 64, 64) and run.decode(np.zeros((2, 10))).shape == (2, 3, 64, 64)
    pictures = sorted((out / "images").glob("reconstruction_step*.png"))
    assert pictures and np.asarray(Image.open(pictures[-1])).ndim == 3
    codes = run.encode(run.dataset().gather(range(4)))
    assert codes.shape == (4, 10) and np.isfinite(codes).all()
    if kind == "noisy":  # `vaelab encode`: each image's noise drawn from the seed, so the file is reproducible
        a, b, c = (run.encode_dataset(n=16, seed=s) for s in (5, 5, 6))
        assert np.array_equal(a["mu"], b["mu"]) and np.array_equal(a["index"], b["index"])
        same = run.encode_dataset(n=16, seed=6)
        assert np.array_equal(c["mu"], same["mu"]) and not np.array_equal(a["index"], c["index"])


def test_resume_is_bit_identical_on_dsprites_noisy(subset_npz, tmp_path):
    args = _train_args(subset_npz, "dsprites-noisy", "--set", "train.seed=3")
    assert main(["train", "quickstart", "--steps", "10", "--out", str(tmp_path / "once"), *args]) == 0
    assert main(["train", "quickstart", "--steps", "5", "--out", str(tmp_path / "split"), *args]) == 0
    assert main(["train", "quickstart", "--steps", "10", "--out", str(tmp_path / "split"), "--resume", *args]) == 0
    a, b = _final(tmp_path / "once"), _final(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_vmapped_sweep_with_a_view_equals_runs_trained_alone(tmp_path):
    from vaelab.config import resolve
    from vaelab.training.sweep import sweep
    from vaelab.training.trainer import Trainer

    ds = FactorDataset.from_arrays(_masks(48), view=NoisyView())
    base = {"name": "t", "model": {"objective": "betavae", "net": "burgess64"}, "optim": {"vae": {"lr": 1e-3}},
            "train": {"steps": 3, "batch_size": 8, "log_every": 1, "checkpoint_every": 0, "image_every": 0,
                      "tensorboard": False, "device": "cpu"}}
    res = sweep(base, {"model.beta": [1.0, 4.0]}, [0], out=tmp_path / "sw", quiet=True, dataset=ds, mode="vmap")
    assert res.mode == "vmap"
    manifest = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    for run in manifest["runs"]:
        solo = tmp_path / f"solo-{run['name']}"
        Trainer(resolve(base, {**run["values"], "train.out": str(solo)}), quiet=True, dataset=ds).fit()
        la = [json.loads(ln)["loss"] for ln in (Path(run["path"]) / "metrics.jsonl").read_text().splitlines()]
        lb = [json.loads(ln)["loss"] for ln in (solo / "metrics.jsonl").read_text().splitlines()]
        np.testing.assert_allclose(la, lb, rtol=1e-5)
        a, b = _final(Path(run["path"])), _final(solo)
        assert torch.equal(a["rng.torch"], b["rng.torch"])  # the same noise drawn in the same order


def test_device_sampler_and_make_step_show_through_the_view():
    from vaelab.models import build_model
    from vaelab.training.fast import DeviceSampler, make_step
    from vaelab.training.sampler import BatchSampler

    x = _masks(32)
    s = DeviceSampler(x, None, 8, view=ColorView())
    batch = s.next()
    assert batch.shape == (8, 3, 64, 64) and batch.dtype == torch.float32
    host = BatchSampler(x, torch.arange(32), 8, seed=1, view=NoisyView())
    dev = DeviceSampler.from_host(host)
    assert dev.view is host.view and host.next().shape == (8, 3, 64, 64)
    torch.manual_seed(0)
    model = build_model({"objective": "betavae", "net": "burgess64"}, (3, 64, 64), num_train=32)
    opts = {"vae": torch.optim.Adam(model.parameters(), lr=1e-3)}
    fn = make_step(model, opts, x, "off", "cpu", batch_size=8, view=NoisyView())
    assert fn.sampler.view is not None and torch.isfinite(fn(0)["loss"])


# ---------------------------------------------------------------------------------------- metrics
def test_a_sampled_metric_draws_fresh_noise_per_draw_and_is_seeded(subset_npz):
    from vaelab.metrics.evaluate import evaluate
    from vaelab.metrics.sampling import CodeSampler

    ds = load("dsprites-noisy", root=subset_npz)
    def encode(images):  # a fixed "encoder": mean brightness per channel and the sprite's size
        assert images.shape[1:] == (3, 64, 64) and images.dtype == torch.uint8
        x = images.float() / 255
        return torch.cat([x.mean((2, 3)), (x.min(1).values == 1).float().mean((1, 2), keepdim=False)[:, None]], 1)

    sampler = CodeSampler(encode, ds)
    assert not sampler.cached  # a view: no per-row code cache, each draw encoded with its own noise
    rows = np.array([5, 5])
    f = ds.factors[torch.from_numpy(rows)].numpy()
    z = sampler.codes_for_factors(f, np.random.default_rng(0))
    assert not np.array_equal(z[0], z[1])  # the same row drawn twice: different noise, different code
    a = evaluate(encode, ds, metrics="mig", profile="fast", save=False)
    b = evaluate(encode, ds, metrics="mig", profile="fast", save=False)
    assert a["mig.score"] == b["mig.score"]  # reproducible from the seed
    assert 0 <= a["mig.score"] <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("make", [NoisyView, lambda: ScreamView(_painting())])
def test_cuda_graph_captures_the_view_and_follows_the_eager_step(make):
    from vaelab.models import build_model
    from vaelab.training.fast import DeviceSampler, make_step

    x = _masks(256).cuda()
    results = []
    for mode in ("off", "cuda-graph"):
        torch.manual_seed(0)
        model = build_model({"objective": "betavae", "net": "burgess64"}, (3, 64, 64), num_train=256).cuda()
        opts = {"vae": torch.optim.Adam(model.parameters(), lr=1e-3)}
        s = DeviceSampler(x, None, 8, seed=1, view=make().to("cuda"))
        torch.manual_seed(123)
        fn = make_step(model, opts, s, mode, "cuda")
        assert fn.mode == mode, fn.note
        losses = []
        for i in range(6):
            fn.step_t.fill_(i)
            losses.append(float(fn(fn.step_t)["loss"]))
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    (ref, ref_p), (out, out_p) = results
    np.testing.assert_allclose(out, ref, rtol=1e-3)  # the same noise drawn inside the graph as eagerly
    for a, b in zip(ref_p, out_p):
        torch.testing.assert_close(a, b, rtol=0, atol=2 * 1e-3 * 6)
