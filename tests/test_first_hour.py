"""What a newcomer meets in the first hour: the README's Python snippet after the quick start, tests on a
fresh clone, evaluate's progress bar, the report's matrices and counts, scores below chance, and the
small things (split hint, report paths, labels, headers, quiet bars off a terminal, the cache line)."""
import gzip
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import vaelab
import vaelab.data
from vaelab.cli import main
from vaelab.errors import VaelabError, naming

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


# ---------------------------------------------------------------------- 1. errors in the caller's words
def test_an_error_names_python_arguments_in_python_and_flags_on_the_command_line():
    e = naming("{run} is taken; pass {resume}", run="runs/x", resume=("resume=True", "--resume"))
    assert str(e) == "runs/x is taken; pass resume=True" and e.for_cli() == "runs/x is taken; pass --resume"
    back = pickle.loads(pickle.dumps(e))  # a Ray task's error keeps both wordings
    assert str(back) == str(e) and back.for_cli() == e.for_cli()
    assert e.prefixed("run-3: ").for_cli() == "run-3: runs/x is taken; pass --resume"
    plain = VaelabError("no flags here")
    assert plain.for_cli() == "no flags here" and plain.prefixed("a: ").for_cli() == "a: no flags here"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
    """A 4-step quick-start run on the real dSprites subset, trained through the CLI with its messages on."""
    npz = shared_data / "dsprites" / "dsprites_downsampled.npz"
    out = tmp_path_factory.mktemp("first-hour") / "runs" / "quickstart"
    args = ["train", "quickstart", "--steps", "4", "--out", str(out), "--device", "cpu", "--set", "data.name=dsprites",
            "--set", f"data.root={npz}", "--set", "train.batch_size=16", "--set", "train.log_every=2",
            "--set", "train.tensorboard=false", "--set", "train.image_every=0"]
    return out, args, npz


def test_quick_start_then_python_train_into_the_same_folder(tiny_run, capfd, monkeypatch):
    """The README's order: the CLI run exists, then Python trains. Into the same folder the error names
    ``resume=True`` and ``run_dir`` (the Python arguments); the CLI's names --resume and --out. And with
    stderr not a terminal (captured here) no progress bar is drawn, VAELAB_QUIET unset."""
    out, args, npz = tiny_run
    monkeypatch.delenv("VAELAB_QUIET", raising=False)
    assert main(args) == 0
    err = capfd.readouterr().err
    assert "it/s" not in err and "\r" not in err, err  # no bar when stderr is not a terminal
    with pytest.raises(VaelabError) as info:
        vaelab.train("quickstart", steps=4, device="cpu", run_dir=out, quiet=True,
                     overrides={"data.name": "dsprites", "data.root": str(npz)})
    msg = str(info.value)
    assert "resume=True" in msg and "run_dir" in msg and "--" not in msg, msg
    assert main(args) == 2
    err = capfd.readouterr().err
    assert "pass --resume" in err and "another --out" in err and "resume=True" not in err, err
    with pytest.raises(VaelabError, match=r"start the run without resume=True"):
        vaelab.train("quickstart", resume=True, run_dir=out.parent / "nothing-here", quiet=True)


def test_readme_python_snippet_trains_into_its_own_folders():
    """After the CLI quick start (runs/quickstart, runs/quickstart-sweep from "Using it") the snippet must
    not train into those folders: it names its own."""
    block = README.split("From Python:", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    train = re.search(r"vaelab\.train\((.*)\)", block).group(1)
    folder = re.search(r"run_dir=\"([^\"]+)\"", train)
    assert folder and folder.group(1).rstrip("/") != "runs/quickstart", train
    sweep = re.search(r"vaelab\.sweep\((.*)\)", block).group(1)
    out = re.search(r"out=\"([^\"]+)\"", sweep)
    assert out and out.group(1).rstrip("/") not in ("runs/quickstart-sweep", folder.group(1)), sweep
    assert 'load_run("runs/quickstart")' in block  # it reopens the quick start's own run


# ---------------------------------------------------------------------- 2. real test data on a fresh clone
def test_shipped_test_data_is_the_real_thing_with_its_licences():
    d = ROOT / "tests" / "data"
    with np.load(d / "dsprites" / "dsprites_downsampled.npz", allow_pickle=False) as z:
        assert z["imgs"].shape == (46080, 64, 64) and z["latents_classes"].shape == (46080, 5)
    assert "Apache License" in (d / "dsprites" / "LICENSE").read_text()
    from vaelab.data.mnist import MD5

    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert hashlib.md5((d / "mnist" / name).read_bytes()).hexdigest() == MD5[name]
    assert len(gzip.decompress((d / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())) == 8 + 10_000
    notes = (d / "README.md").read_text()
    assert "CC BY-SA 3.0" in notes and "CelebA" in notes and "VAELAB_TEST_DATA" in notes
    assert not (d / "celeba").exists()  # non-commercial research use only: never shipped


def test_each_piece_is_found_on_its_own_and_the_run_ends_with_one_line(tmp_path):
    """$VAELAB_TEST_DATA, then ../shared/data, then tests/data, piece by piece; a piece found nowhere skips
    its tests, and the last line of the run counts them and says how to point VAELAB_TEST_DATA at it."""
    proj, env_dir, shared = tmp_path / "proj", tmp_path / "env", tmp_path / "shared" / "data"
    tests = proj / "tests"
    shipped = tests / "data"
    pieces = {"dsprites": "dsprites/dsprites_downsampled.npz", "mnist": "mnist/t10k-images-idx3-ubyte.gz"}
    for base, names in ((env_dir, ["dsprites"]), (shared, ["mnist"]), (shipped, ["dsprites", "mnist"])):
        for n in names:
            (base / pieces[n]).parent.mkdir(parents=True, exist_ok=True)
            (base / pieces[n]).write_bytes(b"")
    shutil.copy(ROOT / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "test_pieces.py").write_text(textwrap.dedent(f"""
        def test_dsprites_from_the_environment(shared_data):
            assert shared_data / "dsprites" == __import__("pathlib").Path({str(env_dir / "dsprites")!r})

        def test_mnist_from_shared_before_shipped(shared_data):
            assert shared_data / "mnist" == __import__("pathlib").Path({str(shared / "mnist")!r})

        def test_celeba_is_nowhere(shared_data):
            shared_data / "celeba"
            raise AssertionError("not skipped")

        def test_subset_npz(subset_npz):
            assert subset_npz.parent.parent == __import__("pathlib").Path({str(env_dir)!r})
    """))
    env = {**os.environ, "VAELAB_TEST_DATA": str(env_dir)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)], cwd=proj,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed, 1 skipped" in r.stdout, r.stdout
    tail = r.stdout.strip().splitlines()[-2:]  # the summary line, then pytest's counts
    last = tail[0]
    assert tail[1].startswith("3 passed, 1 skipped") and last.startswith("real test data: dsprites from $VAELAB_TEST_DATA, mnist from ../shared/data, "
                           "celeba missing; 1 test(s) skipped for missing data; to run them set VAELAB_TEST_DATA "
                           "to a folder holding celeba/"), last


# ---------------------------------------------------------------------- 3. evaluate's progress, planned
class _Bar:
    """Stands in for the tqdm bar: records the total it was made with and every change."""
    made: list = []

    def __init__(self, *a, total=None, desc="", **k):
        self._total, self.n, self.desc, self.totals, self.closed_at = total, 0, desc, [total], None
        _Bar.made.append(self)

    @property
    def total(self):
        return self._total

    @total.setter
    def total(self, v):
        self.totals.append(v)
        self._total = v

    def update(self, k=1):
        assert k >= 0
        self.n += k
        assert self.n <= self._total, (self.n, self._total)

    def refresh(self):
        pass

    def close(self):
        self.closed_at = self.n


class _Drawn(vaelab.data.FactorDataset):
    """A grid whose images are drawn per call (images_for overridden): no per-row cache, every draw encoded."""

    def images_for(self, factors, rng=None):
        return super().images_for(factors, rng)


def _grid(sizes, cls=vaelab.data.FactorDataset):
    n = int(np.prod(sizes))
    idx = np.arange(n)
    images = np.stack([idx % 256, idx // 256, np.zeros(n)], axis=1).astype(np.uint8).reshape(n, 1, 1, 3)
    f = np.stack(np.unravel_index(idx, sizes), axis=1)
    return cls(images=torch.from_numpy(images), factors=torch.from_numpy(f), factor_names=list("abcd")[:len(sizes)],
               factor_sizes=list(sizes), is_grid=True, name="tiny")


def _encode(sizes):
    def encode(images):
        x = images.reshape(len(images), 3).long().numpy()
        f = np.stack(np.unravel_index(x[:, 0] + 256 * x[:, 1], sizes), axis=1).astype(float)
        return f + 0.01 * np.sin(np.arange(f.size).reshape(f.shape))
    return encode


@pytest.mark.parametrize("case", ["all rows up front", "draws, cached", "draws, every one encoded"])
def test_evaluate_progress_total_is_known_up_front_and_reached(case, monkeypatch):
    from vaelab.data import prepare
    from vaelab.metrics.evaluate import evaluate

    monkeypatch.setattr(prepare, "progress", _Bar)
    _Bar.made = []
    small = {"beta_vae": {"num_train": 40, "num_eval": 20, "batch_size": 8},
             "factor_vae": {"num_train": 40, "num_eval": 20, "batch_size": 8, "num_variance_estimate": 200},
             "sap": {"num_train": 300, "num_test": 100}}
    if case == "all rows up front":  # 60 images, thousands of draws: every row encoded once, first
        sizes, ds, metrics = (3, 4, 5), _grid((3, 4, 5)), "beta_vae,factor_vae,mig"
    elif case == "draws, cached":  # 10,000 images, 1,000 + 400 draws: the bar counts the codes served
        sizes, ds, metrics = (10, 10, 10, 10), _grid((10, 10, 10, 10)), "mig,sap"
    else:
        sizes, ds, metrics = (3, 4, 5), _grid((3, 4, 5), _Drawn), "beta_vae,mig"
    res = evaluate(_encode(sizes), ds, metrics=metrics, profile="fast", options=small, save=False, progress=True,
                   n_jobs=1)
    assert len(_Bar.made) == 1, [b.desc for b in _Bar.made]
    bar = _Bar.made[0]
    assert len(bar.totals) == 1, bar.totals  # the total never changes
    assert bar.closed_at == bar.total  # and the work reaches it
    if case == "all rows up front":
        assert bar.total == 60 == res["images_encoded"] and "all 60 images" in bar.desc
    elif case == "draws, cached":
        assert bar.total == 1000 + 400 and res["images_encoded"] < bar.total
    else:
        assert bar.total == 2 * 8 * 60 + 1000 == res["images_encoded"]


# ---------------------------------------------------------------------- 4, 5. the report's matrices and counts
EVAL = {"metrics": ["factor_vae", "latent", "irs", "mig"], "num_latents": 10, "step": 4,
        "dataset": {"factor_names": ["shape", "scale", "orientation", "posX", "posY"],
                    "factor_sizes": [3, 6, 40, 32, 32]},
        "settings": {"latent": {"num_train": 10000, "threshold": 0.01}, "factor_vae": {"threshold": 0.05}},
        "factor_vae.eval_accuracy": 0.0, "factor_vae.train_accuracy": 0.0, "factor_vae.num_active_dims": 0,
        "factor_vae.votes_eval": [[k * 10 + j for j in range(10)] for k in range(5)],
        "mig.score": 0.2, "mig.mutual_info": [[0.1 * j] * 5 for j in range(10)],
        "latent.active_units": 5, "latent.kl_per_latent": [1.2, 0.9, 0.5, 0.3, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0],
        "irs.num_active_dims": 10, "irs.score": 0.3,
        "seconds": {"factor_vae": 1.0, "latent": 0.1, "irs": 0.1, "mig": 0.1, "encode": 0.5, "total": 2.0}}


def _table(html: str, caption: str) -> str:
    return html.split(f"<h3>{caption}</h3>", 1)[1].split("</table>", 1)[0]


def test_report_labels_factor_rows_and_latent_columns_of_the_votes(tmp_path):
    from vaelab.viz.report import _scores_section

    (tmp_path / "eval.json").write_text(json.dumps(EVAL))
    html = _scores_section(tmp_path)
    votes = _table(html, "factor_vae.votes_eval")
    heads = re.findall(r"<th(?: class=n)?>([^<]*)</th>", votes)
    assert heads[1:11] == [f"z{j}" for j in range(10)], heads  # columns: latents
    assert heads[11:] == EVAL["dataset"]["factor_names"], heads  # rows: factors by name
    mi = _table(html, "mig.mutual_info")  # latents x factors, the other way round
    heads = re.findall(r"<th(?: class=n)?>([^<]*)</th>", mi)
    assert heads[1:6] == EVAL["dataset"]["factor_names"] and heads[6:] == [f"z{j}" for j in range(10)]


def test_active_latent_counts_say_what_each_counts_in_table_and_report(tmp_path):
    from vaelab.metrics.evaluate import format_table
    from vaelab.viz.report import _scores_section

    table = format_table(EVAL)
    assert "each count has its own test" in table
    lines = {ln.split()[0]: ln for ln in table.splitlines() if ln.startswith("  ") and ln.split()[0].count(".") == 1}
    assert "4 of 10" in lines["latent.kl_per_latent"] and "0.02 nats" in lines["latent.kl_per_latent"]
    assert "5 of 10" in lines["latent.active_units"] and "> 0.01" in lines["latent.active_units"]
    assert "0 of 10" in lines["factor_vae.num_active_dims"] and ">= 0.05" in lines["factor_vae.num_active_dims"]
    assert "10 of 10" in lines["irs.num_active_dims"] and "> 0" in lines["irs.num_active_dims"]
    (tmp_path / "eval.json").write_text(json.dumps(EVAL))
    active = _table(_scores_section(tmp_path), "Active latents")
    assert "Burda" in active and "FactorVAE" in active and "IRS" in active and "0.02 nats" in active


# ---------------------------------------------------------------------- 6. below chance, one seed
def test_scores_below_chance_are_flagged_and_explained_and_one_value_has_no_std():
    from vaelab.metrics.evaluate import format_table
    from vaelab.metrics.study import format_study, summarize
    from vaelab.viz.report import _study_section

    assert "below chance: factor_vae.eval_accuracy 0.0000 < 1/K = 0.200" in format_table(EVAL)
    assert "no active latent" in format_table(EVAL)
    one = {k: EVAL[k] for k in ("metrics", "dataset", "factor_vae.num_active_dims")}
    results = [{**one, "factor_vae.eval_accuracy": 0.0}, {**one, "factor_vae.eval_accuracy": 0.0},
               {**one, "factor_vae.eval_accuracy": 0.1968, "factor_vae.num_active_dims": 3}]
    labels = [{"model.gamma": 10, "train.seed": 0}, {"model.gamma": 10, "train.seed": 1},
              {"model.gamma": 40, "train.seed": 0}]
    rows = summarize(results, labels)
    fv = rows[0]["scores"]["factor_vae.eval_accuracy"]
    assert fv["chance"] == pytest.approx(0.2) and fv["std"] == 0.0 and fv["n"] == 2
    assert rows[0]["notes"] and "2 of 2 runs had no active latent" in rows[0]["notes"][0]
    single = rows[1]["scores"]["factor_vae.eval_accuracy"]
    assert single["std"] is None and single["n"] == 1
    assert "the active latents carry no factor" in rows[1]["notes"][0]  # below chance with active latents
    text = format_study(rows)
    assert "0.000±0.000 !" in text and "0.197 (n=1) !" in text and "±" not in text.splitlines()[3]
    assert "! gamma=10: factor_vae.eval_accuracy 0.0000 is below chance (1/K = 0.200)" in text
    html = _study_section({"settings": rows, "seed": 0, "profile": "fast"})
    assert "0.1968 (n=1) !" in html and ">3 (n=1)<" in html and "0.1968 ± " not in html and "3 ± 0" not in html
    assert "no active latent" in html


# ---------------------------------------------------------------------- 7. the smaller things
def test_readme_correlation_snippet_does_not_promise_nan_for_dead_latents():
    assert "nan: a dead latent" not in README
    after = README.split("vaelab encode runs/quickstart --n 20000", 1)[1].split("```", 2)[1]
    assert "switched-off latent is not constant" in after and "KL" in after  # what to look at instead


def test_mnist_with_only_the_test_files_suggests_the_test_split(shared_data, capsys, tmp_path):
    root = shared_data / "mnist"
    assert main(["data", "show", "mnist", "--root", str(root), "--out", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err
    assert "holds the test split only" in err and "--split test" in err and err.count("\n") == 1, err
    with pytest.raises(VaelabError, match=r"pass split='test'"):
        vaelab.data.load("mnist", root=root)


def test_reconstruction_grid_labels_its_rows():
    from vaelab.viz.common import PAD, text_width
    from vaelab.viz.recon import ROW_LABELS, pairs_grid

    x = np.zeros((5, 1, 16, 16), np.uint8)
    bare = pairs_grid(x, x, per_row=4, labels=False)
    g = pairs_grid(x, x, per_row=4)
    left = max(text_width(t) for t in ROW_LABELS) + 6
    assert g.shape == (bare.shape[0], bare.shape[1] + left, 3)
    for i in range(4):  # two row pairs: data, recon, data, recon
        band = g[PAD + i * (16 + PAD):PAD + i * (16 + PAD) + 16, :left]
        assert (band < 128).any(), i  # a label beside every row


def test_every_curve_panel_has_a_y_label(monkeypatch, tmp_path):
    from vaelab.viz import plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or Path(path))
    rows = [{"step": s, "loss": 100.0 - s, "recon": 90.0, "kl": 10.0, "tc": 0.5, "disc_loss": 0.69, "disc_acc": 0.5,
             "p0_real": 0.5, "p0_perm": 0.5, "lr.vae": 1e-4, "lr.disc": 1e-4, "it_per_s": 13.0,
             "kl_per_dim": [1.0, 0.5, 0.0]} for s in (10, 20, 30)]
    plots.plot_curves(rows, tmp_path / "c.png")
    plots.plot_latent_kl(rows, tmp_path / "k.png")
    axes = [ax for fig in figs for ax in fig.axes]
    assert len(axes) == 10 + 2  # 8 terms, learning rates, speed; kl_per_dim over time and its last values
    missing = [ax.get_title() for ax in axes if not ax.get_ylabel()]
    assert not missing, missing
    assert {ax.get_ylabel() for ax in axes if ax.get_title() == "kl_per_dim over time"} == {"KL (nats / image)"}


def test_presets_list_has_a_header(capsys):
    assert main(["presets"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["preset", "objective/net", "dataset", "source"]


def test_progress_bars_are_off_without_a_terminal_or_under_vaelab_quiet(monkeypatch):
    import io

    from vaelab.data.prepare import progress, quiet

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("VAELAB_QUIET", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert quiet() and progress(total=3).disable
    monkeypatch.setattr(sys, "stderr", Tty())
    assert not quiet()
    monkeypatch.setenv("VAELAB_QUIET", "1")
    assert quiet()


def test_the_procedural_cache_says_what_it_writes_and_where_before_rendering(monkeypatch, tmp_path, capsys):
    from vaelab.data import procedural as P

    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    monkeypatch.delenv("VAELAB_QUIET", raising=False)
    monkeypatch.setattr(P, "COUNT", 1024)
    monkeypatch.setattr(P, "_CHECK", np.array([0, 1023]))
    vaelab.data.load("dsprites-procedural")
    err = capsys.readouterr().err.splitlines()
    path = tmp_path / "cache" / "dsprites-procedural-v1.npy"
    assert err and "rendering the 1,024 images once into" in err[0] and str(path) in err[0] and "GB" in err[0]
    vaelab.data.load("dsprites-procedural")  # cached: nothing to say
    assert capsys.readouterr().err == ""
