"""Batch sampler: random indices into a uint8 image tensor, one gather per step.

No per-item Python work and no DataLoader: the images stay as uint8 (on the training device
when they fit, else memory-mapped on the host) and a batch is ``images[idx]``.
Two modes (docs/conventions.md#training-conventions): ``epoch_permutation`` walks a fresh permutation of the training indices
and drops the last partial batch (static shapes); ``iid`` draws uniformly with replacement (dlib).
The sampler owns its own torch.Generator, so its state is saved and restored by checkpoints.
A dataset's image view (``view``: noise that is not a factor, :mod:`vaelab.data.views`) maps the
gather to the shown images on the images' device, drawing from that device's default generator:
the torch RNG the trainer checkpoints.
Under torchrun (``rank``/``world``) every process draws the same global batch and keeps its slice
of ``batch_size / world`` images, so the sampler's state is the same on every rank.
"""
from __future__ import annotations

import torch

from ..data.views import show


class BatchSampler:
    def __init__(self, images: torch.Tensor, indices: torch.Tensor, batch_size: int, *,
                 mode: str = "epoch_permutation", seed: int = 0, device: torch.device | str = "cpu",
                 rank: int = 0, world: int = 1, view=None):
        self.images = images
        self.view = view
        self.rank, self.world = int(rank), int(world)
        self.indices = indices.to(torch.int64).cpu()
        self.batch_size = int(batch_size)
        self.mode = mode
        self.device = torch.device(device)
        if len(self.indices) < self.batch_size:
            from ..errors import VaelabError

            raise VaelabError(f"the training split has {len(self.indices)} images, fewer than one batch "
                              f"of {self.batch_size}; lower train.batch_size")
        if self.batch_size % self.world:
            from ..errors import VaelabError

            raise VaelabError(f"train.batch_size {self.batch_size} does not divide among {self.world} "
                              f"processes; choose a multiple of {self.world}")
        self.generator = torch.Generator().manual_seed(int(seed))
        self.perm = torch.empty(0, dtype=torch.int64)
        self.pos = 0
        self.epoch = 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.indices) // self.batch_size

    def next_indices(self, n_batches: int = 1) -> torch.Tensor:
        """Indices of ``n_batches`` consecutive batches (FactorVAE draws two per iteration)."""
        n = self.batch_size * n_batches
        if self.mode == "iid":
            pick = torch.randint(len(self.indices), (n,), generator=self.generator)
            return self.indices[pick]
        out = []
        while n > 0:
            if self.pos + self.batch_size > len(self.perm):  # drop the last partial batch
                self.perm = self.indices[torch.randperm(len(self.indices), generator=self.generator)]
                self.pos = 0
                self.epoch += 1
            out.append(self.perm[self.pos:self.pos + self.batch_size])
            self.pos += self.batch_size
            n -= self.batch_size
        return out[0] if len(out) == 1 else torch.cat(out)

    def local(self, idx: torch.Tensor, n_batches: int = 1) -> torch.Tensor:
        """This rank's slice of each of ``n_batches`` global batches (all of them alone)."""
        if self.world == 1:
            return idx
        b = self.batch_size // self.world
        return idx.view(n_batches, self.batch_size)[:, self.rank * b:(self.rank + 1) * b].reshape(-1)

    def next(self, n_batches: int = 1) -> torch.Tensor:
        """The next batch (this rank's slice of it) as float in [0, 1] on the training device."""
        idx = self.local(self.next_indices(n_batches), n_batches)
        if self.images.device != idx.device:
            idx = idx.to(self.images.device)
        batch = show(self.images[idx], self.view)
        return batch.to(self.device, non_blocking=True).float().div_(255.0)

    # ------------------------------------------------------------------ state
    def state(self) -> tuple[dict, dict]:
        """(tensors, json) describing the sampler's position."""
        return ({"sampler.generator": self.generator.get_state(), "sampler.perm": self.perm.clone()},
                {"pos": self.pos, "epoch": self.epoch, "mode": self.mode})

    def load_state(self, tensors: dict, info: dict):
        self.generator.set_state(tensors["sampler.generator"])
        self.perm = tensors["sampler.perm"].to(torch.int64)
        self.pos = int(info["pos"])
        self.epoch = int(info["epoch"])
