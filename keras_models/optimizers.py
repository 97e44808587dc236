"""The U-Net's optimizer and learning-rate schedules as Keras objects; a schedule is a function of the optimizer's
own step counter (iterations) written with keras.ops. One definition serves the hand-written TensorFlow step
(tf_impl/classifier.py) and Keras' own loop on every engine (keras_fit/classifier.py); PyTorch's twin is
torch_impl/optimizers.py."""
from __future__ import annotations

import keras
from keras import ops

from shared import schedules
from shared.tasks import UNetSpec


def make_optimizer(model: keras.Model, spec: UNetSpec) -> keras.optimizers.Optimizer:
    if spec.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=spec.lr, epsilon=spec.adam_eps)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=spec.lr, momentum=spec.momentum)
    optimizer.build(model.trainable_variables)  # its slots now: created inside the first trace, they force a second
    return optimizer


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """lr * start rising linearly to lr over `steps` optimizer steps, then `after` counted from the warm-up's end
    (None: lr stays): what PyTorch writes as LinearLR followed, in a SequentialLR, by the schedule proper."""

    def __init__(self, lr: float, steps: int, start: float, after=None):
        self.lr, self.steps, self.start, self.after = lr, steps, start, after

    def __call__(self, step):
        step = ops.cast(step, "float32")
        ramp = self.lr * (self.start + (1 - self.start) * step / self.steps)
        rest = self.lr if self.after is None else self.after(ops.maximum(step - self.steps, 0.0))
        return ops.where(step < self.steps, ramp, rest)

    def get_config(self) -> dict:
        return {"lr": self.lr, "steps": self.steps, "start": self.start,
                "after": None if self.after is None else keras.optimizers.schedules.serialize(self.after)}


def make_schedule(optimizer: keras.optimizers.Optimizer, spec: UNetSpec, steps_per_epoch: int, epochs: int):
    """The Keras schedule of the optimizer's learning rate: a function of its own step counter (iterations), which
    it evaluates at every apply_gradients, set as its learning_rate here (before a train step is traced: the graph
    evaluates it); None for a constant lr. Plateau: the warm-up alone, if any, not set: ReduceLROnPlateau sets the
    rate itself, as a number, which a schedule object cannot take."""
    warmup = schedules.warmup_steps(spec, steps_per_epoch)
    after = None
    if spec.schedule == "cosine":
        after = keras.optimizers.schedules.CosineDecay(
            spec.lr, schedules.decay_steps(spec, steps_per_epoch, epochs), alpha=spec.lr_floor)
    elif spec.schedule == "step":
        after = keras.optimizers.schedules.ExponentialDecay(
            spec.lr, schedules.step_size(spec, steps_per_epoch), spec.step_gamma, staircase=True)
    schedule = LinearWarmup(spec.lr, warmup, spec.warmup_start, after) if warmup else after
    if schedule is not None and spec.schedule != "plateau":
        optimizer.learning_rate = schedule
    return schedule
