"""Training: the one loop (trainer), batch sampler, checkpoints, logging, k-fold runs."""
from .run import Run, load_run
from .trainer import Trainer, train

__all__ = ["Run", "Trainer", "load_run", "train"]
