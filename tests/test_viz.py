"""Pictures of a run: reconstruct, traverse, sample, plot, report (CLI end to end), traversal exactness,
the live training pictures, and bad input (one line, exit 2).

One small FactorVAE run on the real dSprites subset (and one tiny UG-VAE run on MNIST) is trained once
per test session and shared by every test here and in test_report.py.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.cli import main

DSPRITES_ARGS = ["--steps", "20", "--checkpoint-every", "10", "--device", "cpu", "--quiet", "--set", "data.name=dsprites",
                 "--set", "train.batch_size=16", "--set", "train.log_every=5", "--set", "train.tensorboard=false"]


def build_run(base: Path, shared_data: Path, kind: str = "dsprites") -> Path:
    """Train (once per session: the folder is reused) a small run; returns its folder."""
    out = base / f"viz-{kind}"
    if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        return out
    shutil.rmtree(out, ignore_errors=True)
    if kind == "dsprites":
        npz = shared_data / "dsprites" / "dsprites_downsampled.npz"
        if not npz.exists():
            pytest.skip(f"real dSprites subset missing: {npz}")
        args = ["train", "quickstart", "--out", str(out), "--set", f"data.root={npz}", *DSPRITES_ARGS]
    else:
        mnist = shared_data / "mnist"
        if not (mnist / "t10k-images-idx3-ubyte.gz").exists():
            pytest.skip(f"MNIST test set missing under {mnist}")
        args = ["train", "ugvae-mnist", "--out", str(out), "--steps", "4", "--device", "cpu", "--quiet",
                "--set", f"data.root={mnist}", "--set", "data.split=test", "--set", "train.epochs=0",
                "--set", "train.batch_size=32", "--set", "train.log_every=2", "--set", "train.tensorboard=false"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def viz_run(tmp_path_factory, shared_data) -> Path:
    return build_run(tmp_path_factory.getbasetemp(), shared_data, "dsprites")


@pytest.fixture(scope="session")
def ug_run(tmp_path_factory, shared_data) -> Path:
    return build_run(tmp_path_factory.getbasetemp(), shared_data, "ugvae")


@pytest.fixture(scope="session")
def viz_report(viz_run) -> Path:
    """RUN/report.html of the session run (its pictures rendered once, reused by later reports)."""
    out = viz_run / "report.html"
    if not out.is_file():
        assert main(["report", str(viz_run), "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def loaded(viz_run):
    import vaelab

    return vaelab.load_run(viz_run)


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ---------------------------------------------------------------------- CLI end to end
def test_reconstruct_cli(viz_run, tmp_path):
    assert main(["reconstruct", str(viz_run), "--n", "10", "--out", str(tmp_path)]) == 0
    (png,) = tmp_path.glob("reconstruct_step*.png")
    a = _png(png)
    # 10 images, 8 per row: 2 row pairs (originals over reconstructions) of 64 x 64 cells, 2 px apart,
    # after a left margin that labels the rows (data / recon)
    from vaelab.viz.common import text_width
    from vaelab.viz.recon import ROW_LABELS

    left = max(text_width(t) for t in ROW_LABELS) + 6
    assert a.shape == (4 * 66 + 2, left + 8 * 66 + 2, 3)
    assert a[2:66, left + 2:left + 66].std() > 0  # a dSprites shape, not a blank cell
    assert (a[:, :left] < 128).any()  # the labels' ink


def test_traverse_cli_defaults_gif(viz_run, tmp_path):
    rc = main(["traverse", str(viz_run), "--gif", "--steps", "5", "--dims", "0", "3", "--out", str(tmp_path)])
    assert rc == 0
    pngs = sorted(p.name.split("_")[1] for p in tmp_path.glob("traverse_*.png"))
    assert pngs == ["ellipse", "heart", "square"]  # dSprites default: one of each shape (1Konny/FactorVAE)
    for shape in pngs:
        (folder,) = tmp_path.glob(f"traverse_{shape}_step*[0-9]")
        assert sorted(p.name for p in folder.iterdir()) == ["all.gif", "z00.gif", "z03.gif"]
        with Image.open(folder / "all.gif") as im:
            assert im.format == "GIF" and im.info.get("loop") == 0
            assert 1 <= im.n_frames <= 2 * 5 - 2  # forth and back (identical neighbours may merge)


def test_traverse_cli_origins(viz_run, tmp_path):
    rc = main(["traverse", str(viz_run), "--image", "7", "--random", "--zero", "--prior-sample", "--range", "-2", "2",
               "--steps", "4", "--out", str(tmp_path)])
    assert rc == 0
    names = sorted(p.name.split("_")[1] for p in tmp_path.glob("traverse_*.png"))
    assert names == ["image7", "prior", "random", "zero"]


def test_sample_cli(viz_run, tmp_path):
    assert main(["sample", str(viz_run), "--n", "16", "--out", str(tmp_path)]) == 0
    (png,) = tmp_path.glob("sample_step*.png")
    assert png.name == "sample_step00000020.png"
    assert _png(png).shape == (4 * 66 + 2, 4 * 66 + 2, 3)
    assert main(["sample", str(viz_run), "--step", "10", "--n", "4", "--out", str(tmp_path)]) == 0  # older checkpoint
    assert _png(tmp_path / "sample_step00000010.png").shape == (2 * 66 + 2, 2 * 66 + 2, 3)


def test_api_exports():
    import vaelab.viz as viz

    for name in viz.__all__:
        assert callable(getattr(viz, name)), name


def test_plot_cli(viz_run, tmp_path):
    assert main(["plot", str(viz_run), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "kl_latents.png").is_file()
    assert main(["plot", str(viz_run), "--step", "10", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "curves_step00000010.png").is_file()


def test_report_cli(viz_report, tmp_path):
    text = viz_report.read_text()
    assert text.count("data:image/gif;base64,") >= 3 * 11  # 3 shapes x (10 latents + all)
    assert "http://" not in text and "https://" not in text  # self-contained
    for anchor in ("id=config", "id=curves", "id=recon", "id=traversals", "id=samples", "id=kl"):
        assert anchor in text
    assert f"<code>vaelab explore {viz_report.parent.resolve()}</code>" in text  # how to explore it live
    images = viz_report.parent / "images"
    assert len(list(images.glob("pictures_step*.json"))) == 1
    out = tmp_path / "r.html"  # a second report reuses the pictures and may go elsewhere
    assert main(["report", str(viz_report.parent), "--out", str(out), "--quiet"]) == 0
    assert out.read_text().count("<img ") == text.count("<img ")


def test_ugvae_sample_and_report(ug_run, tmp_path):
    import vaelab
    from vaelab.viz.sample import sample_grid

    run = vaelab.load_run(ug_run)
    k = run.model.K
    g = sample_grid(run, per_component=5)
    assert g.shape[0] == k * 30 + 2  # one row of 28 x 28 draws per mixture component
    assert main(["sample", str(ug_run), "--out", str(tmp_path)]) == 0
    assert main(["sample", str(ug_run), "--n", "64", "--out", str(tmp_path)]) == 2  # rows per component instead
    assert main(["traverse", str(ug_run), "--zero", "--prior-sample", "--out", str(tmp_path)]) == 0
    assert main(["report", str(ug_run), "--out", str(tmp_path / "ug.html"), "--quiet"]) == 0


# ---------------------------------------------------------------------- exactness
def test_traversal_cells_are_the_decoder_outputs(loaded):
    from vaelab.viz import traverse as tv

    run = loaded
    values = np.linspace(-2.5, 1.5, 4)
    origin = tv.make_origins(run, images=[123])[0]
    ds = run.dataset()
    assert np.allclose(origin.z, run.encode(ds.images[123:124])[0], atol=1e-6)  # posterior mean
    t = tv.traversal(run, origin, values, dims=[1, 4, 7])
    kl = tv.latent_kl(run)
    assert sorted(t.dims) == [1, 4, 7] and list(t.dims) == sorted([1, 4, 7], key=lambda j: -kl[j])
    assert t.cells.shape == (3, 4, 1, 64, 64)
    # layout: label margin + 3 x 4 cells of 64 px with 2 px gaps (make_grid), header on top
    assert t.image.shape == (t.top + 3 * 66 + 2, t.left + 4 * 66 + 2, 3)
    for r, j in enumerate(t.dims):
        for s, v in enumerate(values):
            z = origin.z.copy()
            z[j] = v
            want = (run.decode(z[None])[0, 0].numpy() * 255).round()  # one decoder call per cell
            y0, x0 = t.top + 2 + r * 66, t.left + 2 + s * 66
            assert (y0, x0, y0 + 64, x0 + 64) == t.cell_box(r, s)
            cell = t.image[y0:y0 + 64, x0:x0 + 64].astype(np.float64)
            for c in range(3):  # grey decoder output in all three channels
                assert np.abs(cell[..., c] - want).max() <= 1.0, (r, s)
    # nothing else in the grid body but white padding
    body = t.image[t.top:, t.left:]
    mask = np.ones(body.shape[:2], bool)
    for r in range(3):
        for s in range(4):
            mask[2 + r * 66:2 + r * 66 + 64, 2 + s * 66:2 + s * 66 + 64] = False
    assert (body[mask] == 255).all()


# ---------------------------------------------------------------------- live pictures
def test_training_images_fast_and_rng_free(loaded):
    from vaelab.viz.live import training_images

    model = loaded.model
    x = loaded.dataset().images[:8]
    model.train()
    try:
        training_images(model, x, "cpu")  # warm-up
        state = torch.get_rng_state()
        t0 = time.perf_counter()
        out = training_images(model, x, "cpu")
        dt = time.perf_counter() - t0
        assert torch.equal(state, torch.get_rng_state())
        assert model.training
    finally:
        model.eval()
    assert set(out) == {"reconstruction", "traversal"}
    for a in out.values():
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert out["reconstruction"].shape[0] == 2 * 66 + 2 and out["reconstruction"].shape[1] > 8 * 66 + 2  # + labels
    assert dt < 1.5, f"training_images took {dt:.2f} s (target < 0.5 s on an idle CPU)"


# ---------------------------------------------------------------------- plots
def test_capacity_and_validation_curves(tmp_path):
    from vaelab.viz import plots

    rows = [{"step": s, "loss": 1000.0 / s, "recon": 900.0 / s, "kl": 0.5 * s, "capacity": 0.4 * s,
             "kl_per_dim": [0.1 * s, 0.2, 0.0], "lr.vae": 1e-4, "it_per_s": 50.0} for s in range(1, 400, 20)]
    rows += [{"step": 200, "val.loss": 7.0, "val.recon": 6.0}, {"step": 380, "val.loss": 3.0, "val.recon": 2.5}]
    panels = dict(plots._panels(plots.metric_series(rows)[0]))
    assert ("capacity", "capacity") in panels["kl"]  # C drawn against the KL
    assert ("val.loss", "val") in panels["loss"]
    assert plots.wants_log([1.0, 1000.0]) and not plots.wants_log([1.0, 2.0]) and not plots.wants_log([-1.0, 500.0])
    assert plots.plot_curves(rows, tmp_path / "c.png").is_file()
    assert plots.plot_latent_kl(rows, tmp_path / "k.png").is_file()


# ---------------------------------------------------------------------- bad input
def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaelab: error:") and "\n" not in err, err
    return err


@pytest.mark.parametrize("cmd", ["reconstruct", "traverse", "sample", "plot", "report"])
def test_not_a_run_folder(cmd, tmp_path, capsys):
    assert main([cmd, str(tmp_path)]) == 2
    assert "not a run folder" in _one_line_error(capsys)


@pytest.mark.parametrize("args, words", [
    (["traverse", "{run}", "--dims", "0", "10"], "latent index 10"),
    (["traverse", "{run}", "--image", "99999999"], "image index"),
    (["reconstruct", "{run}", "--images", "99999999"], "image index"),
    (["sample", "{run}", "--step", "7"], "7"),
    (["report", "{run}", "--step", "7"], "7"),
    (["traverse", "{run}", "--range", "2", "-2"], "range"),
    (["traverse", "{run}", "--random", "--seed", "-1"], "invalid seed -1"),
    (["reconstruct", "{run}", "--images", "1", "2", "--n", "5"], "not both"),
    (["sample", "{run}", "--per-component", "3"], "--per-component is for UG-VAE runs"),
    (["plot", "{run}", "--step", "99999"], "past the last logged step"),
])
def test_bad_input_one_line_exit_2(viz_run, args, words, capsys):
    capsys.readouterr()
    try:
        rc = main([a.format(run=viz_run) for a in args])
    except SystemExit as e:  # argparse's own usage errors (one line, exit 2)
        rc = e.code
    assert rc == 2
    assert words in _one_line_error(capsys)


# ---------------------------------------------------------------------- report extras
def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run folder, its rendered pictures included (copy2 keeps their times)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report.html", "tensorboard"))
    return dst


def add_eval_and_experiments(run_dir: Path):
    (run_dir / "eval.json").write_text(json.dumps({  # the layout `vaelab evaluate` writes
        "mig.score": 0.123, "mig.per_factor": {"shape": 0.01, "scale": 0.2},
        "dci.disentanglement": 0.45, "dci.completeness": 0.5, "dci.importance": [[0.1, 0.2]] * 10,
        "factor_vae.eval_accuracy": 0.61, "factor_vae.train_accuracy": 0.63,
        "metrics": ["factor_vae", "mig", "dci"], "step": 20, "seed": 0, "profile": "fast",
        "dataset": {"name": "dsprites", "factor_names": ["shape", "scale"]}, "seconds": {"mig": 1.0}}))
    exp = run_dir / "experiments" / "interpolation"
    exp.mkdir(parents=True)
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(exp / "grid_d0.png")
    (exp / "numbers.json").write_text(json.dumps({"steps": 7, "accuracy": {"linear": 0.84, "rbf": 0.89}}))


def test_report_scores_experiments_and_comparison(viz_run, viz_report, tmp_path):
    other = copy_run(viz_run, tmp_path / "runs" / "b")
    first = copy_run(viz_run, tmp_path / "runs" / "a")
    add_eval_and_experiments(other)
    assert main(["report", str(first), str(other), "--quiet"]) == 0
    comp = (tmp_path / "runs" / "comparison.html").read_text()
    assert 'href="a/report.html"' in comp and 'href="b/report.html"' in comp
    assert "mig.score" in comp and "sortable" in comp and "All runs:" in comp
    rep = (other / "report.html").read_text()
    assert "Disentanglement scores" in rep and "0.123" in rep and "0.61" in rep
    assert "factor_vae.eval_accuracy" in comp and "dci.disentanglement" in comp
    assert "<th>scored at</th>" in comp
    assert "UG-VAE experiments" in rep and "interpolation" in rep and "0.89" in rep
    assert "class=stale" not in rep  # scored at the checkpoint the page shows
    data = json.loads((other / "eval.json").read_text())
    (other / "eval.json").write_text(json.dumps({**data, "step": 10}))  # scores of an older checkpoint
    assert main(["report", str(other), "--quiet"]) == 0
    rep = (other / "report.html").read_text()
    assert "These scores are of the checkpoint at step 10; the rest of this page shows step 20" in rep
