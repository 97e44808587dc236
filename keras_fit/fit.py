"""What Keras' own training loop needs to be one of the twins: the loss of each step (Keras' metrics average over
the epoch so far), the bridge from model.fit's callbacks to the log every side keeps (timing, history, checkpoints,
twinnets' callbacks), and the gradients of one batch, which Keras leaves to each engine's own autodiff."""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np
from keras import ops

from keras_fit.backend import engine
from shared.checkpoint import Checkpointer
from shared.history import TrainingLog


class BatchMean(keras.metrics.Metric):
    """The mean of fn(outputs, targets) over the last batch alone: the twins compare the loss of every step, while
    Keras' own loss and metrics report the mean of the epoch so far."""

    def __init__(self, fn: Callable, name: str):
        super().__init__(name=name)
        self.fn = fn
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.value.assign(ops.mean(self.fn(ops.cast(y_pred, "float32"), y_true)))

    def result(self):
        return ops.convert_to_tensor(self.value)  # a value, not the variable (JAX traces result())

    def reset_state(self):
        self.value.assign(0.0)


class FitLog(keras.callbacks.Callback):
    """model.fit's callbacks driving the TrainingLog the hand-written loops drive themselves: the epoch's batch
    order, each step timed from its start to its loss on the host, the per-step metrics (BatchMean's) and learning
    rate (learning_rate(step); None: not logged), the evaluation at the epoch's end, a checkpoint after every epoch."""

    def __init__(self, log: TrainingLog, loader, saved: Checkpointer, step_metrics: dict[str, str],
                 evaluation: Callable[[dict], tuple[dict, str | None]],
                 learning_rate: Callable[[int], float] | None = None):
        super().__init__()
        self.log, self.loader, self.saved = log, loader, saved
        self.step_metrics = step_metrics  # the log's name -> Keras' logs key
        self.evaluation, self.learning_rate = evaluation, learning_rate
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1  # Keras counts epochs from 0, the twins from 1
        self.loader.epoch = self.epoch
        self.log.begin_epoch(self.epoch)

    def on_train_batch_begin(self, batch, logs=None):
        self.log.timer.begin()

    def on_train_batch_end(self, batch, logs=None):
        metrics = {name: float(logs[key]) for name, key in self.step_metrics.items()}  # waits for the step
        size = min(self.loader.batch_size, self.loader.samples - batch * self.loader.batch_size)
        self.log.timer.end(size)
        step = len(self.log.batch_losses)
        self.model  # noqa: B018 - on JAX, reading the model puts the step's weights back in it (the drift recorder's)
        learning_rate = None if self.learning_rate is None else self.learning_rate(step)
        self.log.end_batch(self.epoch, batch, size, learning_rate, **metrics)

    def on_epoch_end(self, epoch, logs=None):
        self.model  # noqa: B018 - the weights on the model, as above, for the checkpoint and the callbacks
        evaluation, line = self.evaluation(logs or {})
        self.log.end_epoch(self.epoch, evaluation, line)
        self.saved.save(self.epoch, self.log)


def fit(model: keras.Model, train_loader, valid_loader, log: TrainingLog, fit_log: FitLog, epochs: int,
        callbacks: list | None = None) -> None:
    """Keras' own loop from where the checkpoint left off; its progress bar is off, the log prints the lines every
    side prints."""
    if log.epochs_done < epochs:
        model.fit(train_loader, validation_data=valid_loader, epochs=epochs, initial_epoch=log.epochs_done,
                  callbacks=[fit_log, *(callbacks or [])], verbose=0, shuffle=False)


def gradients(model: keras.Model, loss: Callable, images: np.ndarray, targets: np.ndarray) -> tuple[float, list]:
    """The loss of one batch in training mode and its gradient for each of model.trainable_variables, in their
    order, as numpy: Keras 3 has no portable gradient, so each engine's own autodiff computes it (keras_fit/backend/:
    a GradientTape, jax.value_and_grad, torch.autograd.grad)."""
    value, grads = engine.gradients(model, loss, images, targets)
    return float(ops.convert_to_numpy(value)), [ops.convert_to_numpy(grad) for grad in grads]
