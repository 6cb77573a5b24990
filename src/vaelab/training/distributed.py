"""One run on several processes (``torchrun``): data parallel with gradients averaged in each
optimiser step.

``torchrun --nproc_per_node=N -m vaelab train PRESET`` runs the same config in N processes. All of
them draw the same global batch of ``train.batch_size`` images (one sampler, the same seed) and each
takes its slice of ``batch_size / N`` images; before every optimiser step the gradients of that
optimiser's parameters are averaged across the processes (one all-reduce of one flat buffer, from
a step pre-hook). For losses that are means over the batch (reconstruction, KL, capacity, DIP-VAE's
moments aside) the update is then the single-process update on the same global batch, so the
published recipe's batch size keeps its meaning. Terms that couple the items of a batch see the
per-process slice: FactorVAE's permutation and discriminator batch, β-TCVAE's minibatch estimators,
DIP-VAE's covariance, UG-VAE's per-batch global latent.

Why not ``DistributedDataParallel``: a vaelab model owns its whole iteration (``update``, e.g.
FactorVAE's two optimisers in the order given in docs/objectives.md#factorvae) and calls its own methods, not a wrapper's ``forward``,
so DDP's forward/backward hooks would see nothing. Averaging in the optimiser step is the same
arithmetic (DDP also averages gradients with one all-reduce per bucket); what is given up is the
overlap of the all-reduce with the backward pass, which is negligible at these model sizes.

Rank 0 writes everything (config, metrics, images, checkpoints); the others write nothing. Every
rank starts from rank 0's weights; rank 0 keeps the noise stream a single-process run would have,
ranks ≥ 1 draw theirs from a seed derived from (seed, rank, step). Logged terms are the mean over
ranks, and every log step checks that the ranks' weights are still identical.

``sweep`` uses the same environment differently: each rank trains its share of the runs
(:func:`shard`), no process group needed for the training itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import VaelabError

__all__ = ["Context", "from_env", "setup", "shard", "noise_seed"]


@dataclass(frozen=True)
class Context:
    """This process's place among ``world`` processes (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    # ------------------------------------------------------------------ collectives (no-ops alone)
    def broadcast_module(self, module: torch.nn.Module):
        """Every parameter and buffer of ``module`` set to rank 0's values."""
        if not self.active:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def broadcast_float(self, value: float, device) -> float:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        return float(t)

    def any_rank(self, flag: bool, device) -> bool:
        """True on every rank when ``flag`` is true on any (a stop asked for by a signal to one rank)."""
        if not self.active:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float32, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def mean_terms(self, terms: dict) -> dict:
        """Tensor terms averaged over ranks (one all-reduce); other entries unchanged."""
        if not self.active:
            return terms
        import torch.distributed as dist

        keys = [k for k, v in terms.items() if isinstance(v, torch.Tensor)]
        if not keys:
            return terms
        flat = torch.cat([terms[k].detach().float().reshape(-1) for k in keys])
        dist.all_reduce(flat)
        flat /= self.world
        out, pos = dict(terms), 0
        for k in keys:
            n = terms[k].numel()
            out[k] = flat[pos:pos + n].reshape(terms[k].shape)
            pos += n
        return out

    def first_bad_steps(self, bad: torch.Tensor) -> torch.Tensor:
        """Per term, the earliest non-finite step on any rank (-1: none)."""
        if not self.active:
            return bad
        import torch.distributed as dist

        big = torch.iinfo(torch.int64).max
        t = torch.where(bad < 0, torch.full_like(bad, big), bad)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return torch.where(t == big, torch.full_like(t, -1), t)

    def check_in_sync(self, module: torch.nn.Module, step: int):
        """Raise if the ranks' weights differ (they must be identical after every step)."""
        if not self.active:
            return
        import torch.distributed as dist

        with torch.no_grad():
            sig = torch.stack([torch.cat([p.detach().double().reshape(-1) for p in module.parameters()]).sum(),
                               torch.cat([p.detach().double().abs().reshape(-1) for p in module.parameters()]).sum()])
        lo, hi = sig.clone(), sig.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if not torch.equal(lo, hi):
            raise VaelabError(f"the {self.world} processes' weights differ at step {step} (rank checksums "
                              f"{lo.tolist()} vs {hi.tolist()}): a nondeterministic step or a rank that "
                              f"skipped an update; restart from the last checkpoint")

    def barrier(self):
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def average_gradients(self, optimizer: torch.optim.Optimizer):
        """Register a step pre-hook on ``optimizer``: its parameters' gradients are averaged over
        ranks (one flat all-reduce; a missing gradient counts as zero) just before each step."""
        if not self.active:
            return None
        import torch.distributed as dist

        world = self.world

        def hook(opt, args, kwargs):
            params = [p for g in opt.param_groups for p in g["params"]]
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= world
            pos = 0
            for p in params:
                n = p.numel()
                p.grad = flat[pos:pos + n].view_as(p)
                pos += n

        return optimizer.register_step_pre_hook(hook)


def from_env(environ=None) -> Context:
    """The context ``torchrun`` describes in WORLD_SIZE / RANK / LOCAL_RANK (none: one process)."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise VaelabError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (they are set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise VaelabError(f"bad torchrun environment: RANK {rank} of WORLD_SIZE {world}")
    return Context(rank=rank, world=world, local_rank=local)


def device_for(ctx: Context, name: str) -> str:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` when the config says auto or cuda."""
    if not ctx.active:
        return name
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ctx.local_rank % torch.cuda.device_count()}"
    if name == "auto":
        return "cpu"
    return name


def setup(ctx: Context, device: torch.device, timeout_hours: float | None = None) -> bool:
    """Join the process group (NCCL on CUDA, gloo on the CPU); True when this call created it.
    ``timeout_hours``: how long a collective may wait (a sweep's final barrier waits for runs)."""
    if not ctx.active:
        return False
    import datetime

    import torch.distributed as dist

    if dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs = {} if timeout_hours is None else {"timeout": datetime.timedelta(hours=timeout_hours)}
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", **kwargs)
    return True


def teardown(created: bool):
    if created:
        import torch.distributed as dist

        dist.destroy_process_group()


def noise_seed(seed: int, rank: int, step: int) -> int:
    """The seed of rank ``rank``'s noise stream from ``step`` on (ranks ≥ 1; rank 0 keeps the run's)."""
    return (int(seed) * 1_000_003 + int(rank) * 7_919 + int(step) * 104_729) % (2 ** 63 - 1)


def shard(items: list, ctx: Context) -> list:
    """This rank's share of ``items`` (round robin)."""
    return list(items)[ctx.rank::ctx.world]
