"""Learning-rate schedules for a fixed step budget that survive a resume with a new budget.

SpeechBrain's :class:`speechbrain.nnet.schedulers.LinearWarmupScheduler` (linear warm-up
to the peak rate, then linear decay to 0 at ``num_training_steps``) restores the budget it
was saved with, so a run resumed with a larger ``--optimizer_step_limit`` would train on
at a rate of 0. :class:`BudgetLinearWarmupScheduler` restores only the step count: the
warm-up and the end of the decay come from the YAML of the resumed run.
"""

import logging

import torch
from speechbrain.nnet.schedulers import LinearWarmupScheduler
from speechbrain.utils import checkpoints

logger = logging.getLogger(__name__)


@checkpoints.register_checkpoint_hooks
class BudgetLinearWarmupScheduler(LinearWarmupScheduler):
    """Linear warm-up to ``initial_value`` over ``num_warmup_steps``, then linear decay to 0
    at ``num_training_steps`` (SpeechBrain's ``LinearWarmupScheduler``, called after every
    optimiser step with the optimizer, saved by its own saver), whose checkpoint loader
    restores only ``current_step``.

    Parameters
    ----------
    initial_value : float
        Peak learning rate.
    num_warmup_steps : int
        Optimiser steps of the linear warm-up (from 0).
    num_training_steps : int
        The step budget: the rate reaches 0 there. On resume, this run's value is kept
        (a longer budget continues the decay from the restored step), and a change is logged.

    Example
    -------
    >>> import os, tempfile
    >>> s = BudgetLinearWarmupScheduler(1.0, 2, 10)
    >>> s.calculate_lr(1), s.calculate_lr(6), s.calculate_lr(10)
    (0.5, 0.5, 0.0)
    >>> s.current_step = 10
    >>> path = os.path.join(tempfile.mkdtemp(), "lr.ckpt")
    >>> s.save(path)
    >>> longer = BudgetLinearWarmupScheduler(1.0, 2, 18)
    >>> longer.load(path)
    >>> longer.current_step, longer.num_training_steps, longer.calculate_lr(10)
    (10, 18, 0.5)
    """

    @checkpoints.mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Restore the step count; keep this run's peak rate, warm-up and budget."""
        del end_of_epoch
        data = torch.load(path, weights_only=True)
        self.current_step = int(data["current_step"])
        for key, mine in (("initial_value", self.lr0), ("num_warmup_steps", self.num_warmup_steps),
                          ("num_training_steps", self.num_training_steps)):
            if data.get(key) != mine:
                logger.info("lr schedule resumed at step %d with %s %s (checkpoint: %s)",
                            self.current_step, key, mine, data.get(key))
