"""The loop's schedule: after which iterations the bookkeeping is due.

One answer for every loop that trains (the :class:`~vaelab.training.trainer.Trainer` and the vmapped
sweep, :class:`~vaelab.training.vmap.VmapSweep`), read from ``[train]``:

* log (scalars to metrics.jsonl and TensorBoard): every ``log_every`` steps and at the last step;
* validate (the validation terms; they drive the ``plateau`` learning-rate schedule): every ``val_every``
  steps and at the last step, when ``val_every`` > 0 (and the run has validation images:
  ``data.val_fraction`` > 0, or a k-fold run);
* pictures (reconstructions and traversals to images/ and TensorBoard): every ``image_every`` steps,
  and always at the last step;
* checkpoint: every ``checkpoint_every`` steps, and always at the last step.

A step here counts the iterations done: ``due(s)`` is asked right after the s-th iteration.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Due", "LoopSchedule"]


@dataclass(frozen=True)
class Due:
    """What is due after an iteration (in the order the loop does it)."""

    log: bool
    validate: bool
    pictures: bool
    checkpoint: bool


class LoopSchedule:
    """When the loop logs, validates, draws pictures and saves checkpoints.

    Parameters
    ----------
    train : vaelab.config.TrainConfig
        ``steps`` (the last step; epochs already resolved to steps), ``log_every``, ``val_every``,
        ``image_every``, ``checkpoint_every`` (0: never, except at the last step where the module
        docstring says so). The values are copied: a later change to the config does not move the
        schedule.

    Examples
    --------
    >>> from vaelab.config import TrainConfig
    >>> s = LoopSchedule(TrainConfig(steps=10, log_every=4, checkpoint_every=0))
    >>> [step for step in range(1, 11) if s.due(step).log]
    [4, 8, 10]
    >>> s.due(10).checkpoint, s.due(8).checkpoint
    (True, False)
    """

    def __init__(self, train):
        self.steps = int(train.steps)
        self.log_every = int(train.log_every)
        self.val_every = int(train.val_every)
        self.image_every = int(train.image_every)
        self.checkpoint_every = int(train.checkpoint_every)

    def done(self, step: int) -> bool:
        """Whether ``step`` is the last step."""
        return step == self.steps

    def is_log_step(self, step: int) -> bool:
        """Whether ``step`` is a multiple of ``log_every`` (where torchrun's ranks agree on a stop)."""
        return step % self.log_every == 0

    def due(self, step: int) -> Due:
        """What is due after the ``step``-th iteration."""
        last = self.done(step)
        return Due(log=self.is_log_step(step) or last,
                   validate=bool(self.val_every) and (step % self.val_every == 0 or last),
                   pictures=bool(self.image_every and step % self.image_every == 0) or last,
                   checkpoint=bool(self.checkpoint_every and step % self.checkpoint_every == 0) or last)
