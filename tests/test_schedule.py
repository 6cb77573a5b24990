"""The loop schedule (training/schedule.py), the training-pictures hook (vaelab/hooks.py) and the trainer's
own copy of its config."""
import subprocess
import sys

import numpy as np
import pytest

from vaelab.config import TrainConfig, resolve
from vaelab.data import FactorDataset
from vaelab.training.schedule import LoopSchedule
from vaelab.training.trainer import Trainer


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    return FactorDataset.from_arrays((rng.random((32, 1, 64, 64)) < 0.2).astype(np.uint8) * 255)


def _cfg(**train):
    return resolve({"name": "t", "model": {"objective": "betavae", "net": "burgess64"}, "optim": {"vae": {"lr": 1e-3}},
                    "train": {"steps": 3, "batch_size": 8, "log_every": 1, "checkpoint_every": 0, "image_every": 0,
                              "tensorboard": False, "device": "cpu", **train}})


def test_schedule_answers_what_is_due():
    s = LoopSchedule(TrainConfig(steps=12, log_every=4, val_every=6, image_every=0, checkpoint_every=5))
    due = {step: s.due(step) for step in range(1, 13)}
    assert [k for k, d in due.items() if d.log] == [4, 8, 12]
    assert [k for k, d in due.items() if d.validate] == [6, 12]
    assert [k for k, d in due.items() if d.pictures] == [12]  # image_every 0: only at the end
    assert [k for k, d in due.items() if d.checkpoint] == [5, 10, 12]
    assert not any(LoopSchedule(TrainConfig(steps=4, val_every=0)).due(k).validate for k in range(1, 5))
    assert s.is_log_step(0) and not s.is_log_step(5)


def test_schedule_keeps_its_values():
    tc = TrainConfig(steps=10, log_every=5)
    s = LoopSchedule(tc)
    tc.steps, tc.log_every = 20, 7
    assert s.steps == 10 and s.due(5).log and s.due(10).log


def test_trainer_leaves_the_callers_config_alone(tmp_path, dataset):
    cfg = _cfg(steps=0, epochs=1.0)  # epochs: the trainer resolves them to steps in its own copy
    before = cfg.to_dict()
    tr = Trainer(cfg, run_dir=tmp_path / "run", quiet=True, dataset=dataset)
    try:
        assert tr.cfg is not cfg and tr.cfg.train.steps == 4 and tr.cfg.train.epochs == 0.0
        assert cfg.to_dict() == before
    finally:
        tr.close()


def test_pictures_come_from_the_hook(tmp_path, dataset):
    seen = []

    def probe(model, images_uint8, device):
        seen.append(tuple(images_uint8.shape))
        return {"probe": np.full((4, 6, 3), 7, dtype=np.uint8)}

    Trainer(_cfg(image_every=2, steps=4), run_dir=tmp_path / "a", quiet=True, dataset=dataset, pictures=probe).fit()
    assert sorted(p.name for p in (tmp_path / "a" / "images").iterdir()) == ["probe_step00000002.png",
                                                                            "probe_step00000004.png"]
    assert seen == [(8, 1, 64, 64)] * 2
    Trainer(_cfg(), run_dir=tmp_path / "b", quiet=True, dataset=dataset, pictures=None).fit()
    assert not (tmp_path / "b" / "images").exists()
    Trainer(_cfg(), run_dir=tmp_path / "c", quiet=True, dataset=dataset).fit()  # the registered ones (vaelab.viz)
    assert sorted(p.name for p in (tmp_path / "c" / "images").iterdir()) == ["reconstruction_step00000003.png",
                                                                            "traversal_step00000003.png"]


def test_training_does_not_import_viz():
    code = ("import sys, vaelab.training, vaelab.training.sweep, vaelab.training.folds, vaelab.training.vmap; "
            "print(sorted(m for m in sys.modules if m.startswith('vaelab.viz')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
