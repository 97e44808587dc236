"""The U-Net's optimizer and learning-rate schedulers as PyTorch objects; a scheduler is stepped after every
optimizer step. Twin of keras_models/optimizers.py (Keras schedules, functions of the optimizer's step counter)."""
from __future__ import annotations

import torch
from torch import nn
from torch.optim import lr_scheduler

from shared import schedules
from shared.tasks import UNetSpec


def make_optimizer(model: nn.Module, spec: UNetSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr, eps=spec.adam_eps)
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)


class LinearWarmup(lr_scheduler.SequentialLR):
    """LinearLR from lr * start up to lr over `steps` optimizer steps, then `after` counted from the warm-up's end
    (None: lr stays): what Keras writes as one LearningRateSchedule of the step."""

    def __init__(self, optimizer: torch.optim.Optimizer, steps: int, start: float,
                 after: lr_scheduler.LRScheduler | None = None):
        self.steps = steps
        warmup = lr_scheduler.LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=steps)
        super().__init__(optimizer, [warmup] if after is None else [warmup, after], [] if after is None else [steps])


def make_schedule(optimizer: torch.optim.Optimizer, spec: UNetSpec, steps_per_epoch: int,
                  epochs: int) -> lr_scheduler.LRScheduler | None:
    """The PyTorch scheduler of the learning rate, advanced by step() after every optimizer step (so its "epochs"
    are steps here); None for a constant lr (plateau: the warm-up alone, if any)."""
    warmup = schedules.warmup_steps(spec, steps_per_epoch)
    after = None
    if spec.schedule == "cosine":
        after = lr_scheduler.CosineAnnealingLR(optimizer, schedules.decay_steps(spec, steps_per_epoch, epochs),
                                               eta_min=spec.lr * spec.lr_floor)
    elif spec.schedule == "step":
        after = lr_scheduler.StepLR(optimizer, schedules.step_size(spec, steps_per_epoch), spec.step_gamma)
    return LinearWarmup(optimizer, warmup, spec.warmup_start, after) if warmup else after
