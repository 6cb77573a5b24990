"""The fast path (training/fast.py): eager / compile / CUDA-graph steps, the device sampler, capturable Adam."""
import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.models import build_model
from vaelab.training.fast import DeviceSampler, make_capturable, make_step, resolve_mode
from vaelab.training.sampler import BatchSampler

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


def _images(n=64, seed=0, device="cpu"):
    rng = np.random.default_rng(seed)
    return torch.from_numpy((rng.random((n, 1, 64, 64)) < 0.2).astype(np.uint8) * 255).to(device)


def _setup(objective, images, device="cpu", seed=0, sampler="host", **model_kw):
    torch.manual_seed(seed)
    model = build_model({"objective": objective, "net": "burgess64", **model_kw}, (1, 64, 64),
                        num_train=len(images)).to(device)
    lrs = {"vae": 1e-3, "disc": 1e-4}
    opts = {g: torch.optim.Adam(p, lr=lrs[g]) for g, p in model.param_groups().items()}
    if sampler == "host":
        s = BatchSampler(images, torch.arange(len(images)), 8, seed=1, device=device)
    else:
        s = DeviceSampler(images, None, 8, n_batches=model.batches_per_step, seed=1)
    return model, opts, s


def _plain(objective, images, steps, **kw):
    model, opts, s = _setup(objective, images, **kw)
    torch.manual_seed(123)
    step_t = torch.zeros((), dtype=torch.int64)
    out = []
    for i in range(steps):
        step_t.fill_(i)
        out.append(float(model.update(s.next(model.batches_per_step), step_t, opts)["loss"]))
    return out, model


def _fast(objective, images, steps, mode, device="cpu", sampler="host", **kw):
    model, opts, s = _setup(objective, images, device=device, sampler=sampler)
    torch.manual_seed(123)
    fn = make_step(model, opts, s, mode, device, **kw)
    out = []
    for i in range(steps):
        fn.step_t.fill_(i)
        out.append(float(fn(fn.step_t)["loss"]))
    return out, model, fn


@pytest.mark.parametrize("objective", ["betavae", "factorvae"])
def test_off_and_compile_follow_plain_update(objective):
    images = _images()
    ref, ref_model = _plain(objective, images, 5)
    off, off_model, fn = _fast(objective, images, 5, "off")
    assert fn.mode == "off" and fn.note is None
    assert off == ref  # the same computation, bit for bit
    for a, b in zip(ref_model.parameters(), off_model.parameters()):
        assert torch.equal(a, b)
    comp, _, fn = _fast(objective, images, 5, "compile", compile_backend="eager")
    assert fn.mode == "compile"
    np.testing.assert_allclose(comp, ref, rtol=1e-5)
    assert fn.term_names and fn.first_bad.tolist() == [-1] * len(fn.term_names)


def test_auto_is_off_on_the_cpu_and_cuda_graph_falls_back_with_a_note():
    assert resolve_mode("auto", "cpu") == ("off", None)
    mode, note = resolve_mode("cuda-graph", "cpu")
    assert mode == "off" and "CUDA" in note
    images = _images(32)
    model, opts, s = _setup("betavae", images)
    fn = make_step(model, opts, s, "auto", "cpu")
    assert fn.mode == "off" and fn.note is None and fn.sampler is s
    fn = make_step(model, opts, s, "cuda-graph", "cpu")
    assert fn.mode == "off" and "cuda-graph" in fn.note
    with pytest.raises(Exception, match="unknown fast mode"):
        make_step(model, opts, s, "turbo", "cpu")


def test_int_step_and_foreign_step_tensor_are_accepted():
    images = _images(32)
    ref, _ = _plain("annealedvae", images, 3)
    model, opts, s = _setup("annealedvae", images)
    torch.manual_seed(123)
    fn = make_step(model, opts, s, "off", "cpu")
    out = [float(fn(0)["loss"]), float(fn(torch.tensor(1))["loss"])]
    fn.step_t.fill_(2)
    out.append(float(fn(fn.step_t)["loss"]))
    assert out == ref


def test_bf16_autocast_runs_the_networks_in_bf16_and_the_terms_in_fp32():
    images = _images(32)
    ref, _ = _plain("factorvae", images, 3)
    out, model, fn = _fast("factorvae", images, 3, "off", bf16=True)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref, rtol=2e-2)
    x = images[:8].float() / 255
    terms = model.loss(torch.cat([x, x]))
    assert all(v.dtype == torch.float32 for v in terms.values())
    fn.close()
    assert "_vae_terms" not in model.__dict__


def test_device_sampler_walks_epochs_resumes_and_speaks_the_host_format():
    images = _images(40)
    idx = torch.arange(3, 40)  # 37 training images, batch 4 x 2 -> 4 steps per epoch, 5 dropped
    s = DeviceSampler(images, idx, 4, n_batches=2, seed=5)
    assert s.steps_per_epoch == 4
    seen = []
    for _ in range(4):
        s.advance()
        seen.append(s.buf[int(s.offset):int(s.offset) + 8].clone())
    allseen = torch.cat(seen)
    assert s.epoch == 1 and len(set(allseen.tolist())) == 32 and set(allseen.tolist()) <= set(idx.tolist())
    x = s.gather()
    assert x.shape == (8, 1, 64, 64) and x.dtype == torch.float32
    # resume: a fresh sampler loaded from the state draws the same next batches
    tensors, info = s.state()
    nxt = [s.next(2) for _ in range(3)]
    r = DeviceSampler(images, idx, 4, n_batches=2, seed=5)
    r.load_state(tensors, info)
    for a in nxt:
        assert torch.equal(r.next(2), a)
    assert r.epoch == s.epoch == 2
    # the host sampler reads the state (same epoch, position and permutation)
    h = BatchSampler(images, idx, 4, seed=5)
    h.load_state(tensors, info)
    assert h.pos == info["pos"] and h.epoch == info["epoch"] and torch.equal(h.perm, tensors["sampler.perm"])
    # and a device sampler continues a host one where it stands
    h = BatchSampler(images, idx, 4, seed=5)
    for _ in range(3):
        h.next()
    d = DeviceSampler.from_host(h, n_batches=1)
    assert torch.equal(d.next(), h.next())
    # iid blocks
    s = DeviceSampler(images, idx, 4, mode="iid", seed=1)
    s.advance()
    assert len(s.buf) == 36 and set(s.buf.tolist()) <= set(idx.tolist())


def test_make_capturable_keeps_the_state_and_initialises_missing_state():
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([p, q], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    before = copy.deepcopy(opt.state[p])
    make_capturable(opt)
    assert opt.param_groups[0]["capturable"] is True
    st = opt.state[p]
    assert st["step"].dtype == torch.float32 and st["step"].device == p.device and float(st["step"]) == 1
    assert torch.equal(st["exp_avg"], before["exp_avg"]) and torch.equal(st["exp_avg_sq"], before["exp_avg_sq"])
    assert float(opt.state[q]["step"]) == 0 and torch.equal(opt.state[q]["exp_avg"], torch.zeros(2))


def test_throughput_benchmark_runs_small():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
    spec = importlib.util.spec_from_file_location("bench_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--small", "--objectives", "betavae", "--n-images", "64", "--steps", "1", "--warmup", "0",
                    "--batch-sizes", "8", "--sweep-sizes", "2", "--device", "cpu", "--repeats", "1"])
    assert out["rows"][0]["fast_mode"] == "off" and out["sweep"][0]["M"] == 2
    assert all(v > 0 for v in (out["rows"][0]["eager"], out["rows"][0]["dataloader"], out["sweep"][0]["vmapped"]))


# ---------------------------------------------------------------------------------------- CUDA only
@cuda
@pytest.mark.parametrize("objective", ["betavae", "annealedvae", "factorvae", "btcvae", "dipvae"])
def test_cuda_graph_follows_the_eager_step(objective):
    images = _images(256, device="cuda")
    steps = 6
    ref, ref_model, fn_ref = _fast(objective, images, steps, "off", device="cuda", sampler="device")
    out, model, fn = _fast(objective, images, steps, "cuda-graph", device="cuda", sampler="device")
    assert fn.mode == "cuda-graph", fn.note
    np.testing.assert_allclose(out, ref, rtol=1e-3)
    for a, b in zip(ref_model.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=2 * 1e-3 * steps)
    # checkpoints see a plain Adam (lr floats, capturable off) with the state on the device
    sd = fn.optimizers["vae"].state_dict()
    assert sd["param_groups"][0]["capturable"] is False and isinstance(sd["param_groups"][0]["lr"], float)
    assert float(next(iter(sd["state"].values()))["step"]) == steps
    assert fn.first_bad.tolist() == [-1] * len(fn.term_names)


@cuda
def test_cuda_graph_reads_lr_changes_and_host_sampler_conversion():
    images = _images(256, device="cuda")
    model, opts, s = _setup("betavae", images, device="cuda")
    fn = make_step(model, opts, s, "cuda-graph", "cuda")
    assert fn.mode == "cuda-graph" and isinstance(fn.sampler, DeviceSampler)
    before = [p.detach().clone() for p in model.parameters()]
    for pg in opts["vae"].param_groups:
        pg["lr"] = 0.0  # a schedule's float: the graph must see it
    fn.step_t.fill_(0)
    fn(fn.step_t)
    torch.cuda.synchronize()
    for a, p in zip(before, model.parameters()):
        assert torch.equal(a, p)


@cuda
def test_uncapturable_step_falls_back_with_a_note():
    from vaelab.models.vae import BetaVAE

    class Syncing(BetaVAE):
        def loss(self, x, step=0):
            terms = super().loss(x, step)
            if terms["loss"].item() > -1:  # a host sync: not capturable
                return terms
            return terms

    images = _images(64, device="cuda")
    torch.manual_seed(0)
    model = Syncing((1, 64, 64), 10, net="burgess64").cuda()
    opts = {"vae": torch.optim.Adam(model.parameters(), lr=1e-3)}
    s = BatchSampler(images, torch.arange(64), 8, seed=1, device="cuda")
    fn = make_step(model, opts, s, "cuda-graph", "cuda")
    assert fn.mode == "off" and "cuda-graph failed" in fn.note
    fn.step_t.fill_(0)
    assert torch.isfinite(fn(fn.step_t)["loss"])
