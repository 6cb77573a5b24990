"""Batch sampler and checkpoint files: unit tests."""
import json
import os
from pathlib import Path

import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.training import checkpoint
from vaelab.training.sampler import BatchSampler


def _images(n=50):
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()


def test_epoch_permutation_visits_each_index_once_and_drops_the_partial_batch():
    s = BatchSampler(_images(50), torch.arange(50), 8, seed=1)
    assert s.steps_per_epoch == 6
    seen = torch.cat([s.next_indices() for _ in range(6)])
    assert len(set(seen.tolist())) == 48  # 6 full batches, 2 indices dropped
    assert s.epoch == 1
    s.next_indices()
    assert s.epoch == 2


def test_batches_are_float_in_unit_range_and_match_the_indices():
    imgs = _images(50)
    s = BatchSampler(imgs, torch.arange(10, 50), 4, seed=0)
    st, info = s.state()
    idx = s.next_indices()
    s.load_state(st, info)
    x = s.next()
    assert x.dtype == torch.float32 and x.shape == (4, 1, 2, 2)
    assert torch.equal((x[:, 0, 0, 0] * 255).round().long(), idx)
    assert (idx >= 10).all()


def test_two_batches_per_step_and_iid_mode():
    s = BatchSampler(_images(50), torch.arange(50), 5, seed=0)
    assert s.next_indices(2).shape == (10,)
    r = BatchSampler(_images(50), torch.arange(50), 5, mode="iid", seed=0)
    assert r.next_indices(3).shape == (15,)


def test_sampler_state_round_trip_continues_identically():
    a = BatchSampler(_images(), torch.arange(50), 7, seed=3)
    for _ in range(9):
        a.next_indices()
    st, info = a.state()
    b = BatchSampler(_images(), torch.arange(50), 7, seed=99)
    b.load_state(st, info)
    for _ in range(20):
        assert torch.equal(a.next_indices(), b.next_indices())


def test_too_few_images_for_a_batch_is_a_clear_error():
    with pytest.raises(VaelabError, match="fewer than one batch"):
        BatchSampler(_images(5), torch.arange(5), 8)


def test_checkpoint_save_load_keep_and_corruption(tmp_path):
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, {"w": torch.full((3,), float(step))}, {"step": step}, keep=2)
    cks = checkpoint.list_checkpoints(tmp_path)
    assert [c.name for c in cks] == ["step-00000003", "step-00000004"]
    t, s = checkpoint.load(checkpoint.find(tmp_path))
    assert s["step"] == 4 and torch.equal(t["w"], torch.full((3,), 4.0))
    assert checkpoint.find(tmp_path, 3).name == "step-00000003"
    with pytest.raises(VaelabError, match="available steps: 3, 4"):
        checkpoint.find(tmp_path, 1)
    # a torn temporary folder from a killed process is ignored and removed
    stale = tmp_path / "checkpoints" / ".tmp-step-00000005-999999999"
    stale.mkdir()
    assert checkpoint.find(tmp_path).name == "step-00000004" and not stale.exists()
    # a damaged file is one clear error
    (cks[-1] / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(VaelabError, match="corrupt"):
        checkpoint.load(cks[-1])
    os.remove(cks[0] / "state.json")
    with pytest.raises(VaelabError, match="incomplete: state.json missing"):
        checkpoint.load(cks[0])
    os.remove(cks[0] / "tensors.safetensors")
    with pytest.raises(VaelabError, match="incomplete: tensors.safetensors, state.json missing"):
        checkpoint.load(cks[0])


def test_a_kill_while_old_checkpoints_are_deleted_leaves_only_complete_ones(tmp_path, monkeypatch):
    """Deleting removes file by file; dying half-way must not leave a step-* folder without tensors."""
    for step in (1, 2):
        checkpoint.save(tmp_path, step, {"w": torch.zeros(2)}, {"step": step}, keep=2)

    def dies_half_way(path):
        os.remove(Path(path) / "tensors.safetensors")
        raise KeyboardInterrupt  # stands in for SIGKILL between two unlinks

    monkeypatch.setattr(checkpoint, "_remove_own", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 3, {"w": torch.zeros(2)}, {"step": 3}, keep=2)
    monkeypatch.undo()
    cks = checkpoint.list_checkpoints(tmp_path)
    assert [c.name for c in cks] == ["step-00000002", "step-00000003"]
    for ck in cks:
        checkpoint.load(ck)


def test_optimizer_state_round_trip():
    p = torch.nn.Parameter(torch.randn(4))
    opt = torch.optim.Adam([p], lr=1e-3, betas=(0.5, 0.9))
    for _ in range(3):
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step()
    tensors, info = checkpoint.optimizer_to_flat("vae", opt)
    info = json.loads(json.dumps(info))
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = torch.optim.Adam([q], lr=1.0)
    checkpoint.optimizer_from_flat("vae", opt2, tensors, info)
    for o, par in ((opt, p), (opt2, q)):
        o.zero_grad()
        (par ** 2).sum().backward()
        o.step()
    assert torch.equal(p, q)
    assert opt2.param_groups[0]["lr"] == 1e-3


def test_metrics_history_torn_line_and_resume(tmp_path):
    """A torn last line is skipped; a damaged middle line is an error; a resumed logger drops the
    records past its checkpoint and the torn tail, so each step appears once and every line is whole."""
    from vaelab.training.logger import RunLogger, read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "loss": 3.0}\n{"step": 20, "loss": 2.0}\n{"step": 30, "lo')
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20]
    log = RunLogger(tmp_path, tensorboard=False, upto=10)  # resumed from the checkpoint at step 10
    log.log(20, {"loss": 2.5})
    log.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(10, 3.0), (20, 2.5)]
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 2
    path.write_text('{"step": 10, "loss": 3.0}\ngarbage\n{"step": 20, "loss": 2.0}\n')
    with pytest.raises(VaelabError, match="line 2 is not a JSON record"):
        read_metrics(tmp_path)
