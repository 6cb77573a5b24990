"""Run under torchrun (or alone) by test_distributed.py: a few β-VAE steps without sampling noise.

With the reparameterisation noise switched off, the loss is a mean over the batch of per-image
terms, so N processes that each take their slice of the same global batch and average their
gradients must end where one process on the whole batch ends (up to float rounding).
"""
import sys

import numpy as np
import torch

from vaelab.data import FactorDataset
from vaelab.models.base import VAE
from vaelab.training.trainer import train

VAE.reparameterize = staticmethod(lambda mu, logvar: mu)  # no noise: a deterministic objective

out = sys.argv[1]
rng = np.random.default_rng(0)
images = (rng.random((64, 1, 64, 64)) < 0.2).astype(np.uint8) * 255
torch.set_num_threads(1)

import vaelab.training.trainer as trainer_module  # noqa: E402

trainer_module.load_dataset = lambda cfg: FactorDataset.from_arrays(images)
cfg = {"name": "dist", "data": {"name": "dsprites-procedural"},
       "model": {"objective": "betavae", "net": "burgess64", "beta": 4.0},
       "optim": {"vae": {"lr": 1.0, "eps": 1e4}},  # eps >> sqrt(v): SGD-like, so the gradient's scale counts
       "train": {"steps": 6, "batch_size": 16, "log_every": 1, "checkpoint_every": 0, "image_every": 0,
                 "tensorboard": False, "device": "cpu", "seed": 3}}
train(cfg, run_dir=out, quiet=True)
