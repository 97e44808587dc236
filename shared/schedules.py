"""Learning-rate schedules without a framework: the step arithmetic both sides share, the per-step formula the tests
hold both sides to, and the translation of ReduceLROnPlateau's settings between Keras and PyTorch. Each side builds
its own idiomatic schedule from these (tf_impl/classifier.py: LearningRateSchedule and ReduceLROnPlateau callback;
torch_impl/classifier.py: torch.optim.lr_scheduler)."""
from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "step", "plateau")
# What decides whether a plateau has been reached: the validation loss, or the training loss without validation.
PLATEAU_MONITORS = ("val_loss", "loss")


def warmup_steps(spec, steps_per_epoch: int) -> int:
    """Optimizer steps of the linear warm-up: whole epochs of batches."""
    return spec.warmup_epochs * steps_per_epoch


def decay_steps(spec, steps_per_epoch: int, epochs: int) -> int:
    """Optimizer steps of the cosine decay: every step after the warm-up (at least 1, so it is defined)."""
    return max(epochs * steps_per_epoch - warmup_steps(spec, steps_per_epoch), 1)


def step_size(spec, steps_per_epoch: int) -> int:
    """Optimizer steps between two decays of the step schedule."""
    return spec.step_epochs * steps_per_epoch


def lr_at(spec, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The learning rate of optimizer step `step` (0 = the first update), in float64: the reference the tests hold
    both sides to. The warm-up rises linearly from lr * warmup_start; the schedule proper counts its steps from the
    warm-up's end. Plateau is constant here: its reductions depend on the validation losses (plateau_reductions)."""
    warmup = warmup_steps(spec, steps_per_epoch)
    if step < warmup:
        return spec.lr * (spec.warmup_start + (1 - spec.warmup_start) * step / warmup)
    after = step - warmup
    if spec.schedule == "cosine":
        steps = decay_steps(spec, steps_per_epoch, epochs)
        cosine = 0.5 * (1 + math.cos(math.pi * min(after, steps) / steps))
        return spec.lr * (spec.lr_floor + (1 - spec.lr_floor) * cosine)
    if spec.schedule == "step":
        return spec.lr * spec.step_gamma ** (after // step_size(spec, steps_per_epoch))
    return spec.lr


# ReduceLROnPlateau: the same name in both frameworks, two meanings of patience and cooldown. The spec's fields mean
# what Keras' mean; PyTorch is given the settings that make it reduce at the same epochs. Keras counts a bad epoch
# (wait += 1) and reduces when wait >= patience; PyTorch reduces when its count exceeds patience (>). Keras' cooldown
# decrements first and then already counts the epoch on which the counter reaches 0; PyTorch ignores every epoch of
# its cooldown. Both compare "better" as value < best - delta (PyTorch: threshold_mode="abs"; its default "rel"
# would scale the delta by the best value).

def torch_plateau_patience(spec) -> int:
    """Keras' patience p (reduce on the p-th epoch without improvement) is PyTorch's p - 1."""
    return spec.plateau_patience - 1


def torch_plateau_cooldown(spec) -> int:
    """Keras' cooldown c ignores c - 1 epochs (the c-th already counts) and PyTorch's ignores c: PyTorch's c - 1."""
    return max(spec.plateau_cooldown - 1, 0)


def plateau_reductions(spec, monitored: list[float]) -> list[int]:
    """The 1-based epochs, counted from the warm-up's end, after which the plateau rule reduces the learning rate,
    for a sequence of monitored losses, as Keras' ReduceLROnPlateau does it: the tests' reference."""
    best, wait, cooldown, reductions = math.inf, 0, 0, []
    for epoch, value in enumerate(monitored, start=1):
        if cooldown > 0:
            cooldown, wait = cooldown - 1, 0
        if value < best - spec.plateau_min_delta:
            best, wait = value, 0
        elif cooldown == 0:
            wait += 1
            if wait >= spec.plateau_patience:
                reductions.append(epoch)
                cooldown, wait = spec.plateau_cooldown, 0
    return reductions
