"""The callback protocol both sides' training loops call, and the callbacks that need no framework."""
from __future__ import annotations


class Callback:
    """Hooks a training loop calls; `logs` holds plain Python floats (loss, dice, accuracy, ...)."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_batch_end(self, step: int, logs: dict | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_train_end(self, logs: dict | None = None) -> None:
        pass


class CallbackList(Callback):
    """Calls each callback in order."""

    def __init__(self, callbacks=None):
        self.callbacks = list(callbacks or [])

    def on_train_begin(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, logs)

    def on_batch_end(self, step, logs=None):
        for callback in self.callbacks:
            callback.on_batch_end(step, logs)

    def on_epoch_end(self, epoch, logs=None):
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_end(logs)
