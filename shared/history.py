"""The bookkeeping every training loop needs and no framework provides: step timing, per-batch losses,
the progress bar and log lines, per-epoch history and the callbacks. Both sides' loops call it the same
way, so the loops themselves show only what differs: the framework's dialect."""
from __future__ import annotations

import math
import time

import numpy as np

from shared.callbacks import CallbackList
from shared.errors import TrainingDiverged, UserError
from shared.progress import Progress, train_log_line
from shared.timing import StepTimer


class TrainingLog:
    """Used as: begin_epoch; per batch `with log.timer.step(n): ...` then end_batch; end_epoch; result."""

    def __init__(self, side: str, epochs: int, batches: int, callbacks=None, verbose: bool = True,
                 log_interval: int = 0, batch_size: int = 0, samples: int = 0, seed: int = 0):
        self.side, self.epochs, self.batches = side, epochs, batches
        self.seed = seed  # of the data order and augmentation: a checkpoint only continues the same sequence
        self.callbacks = CallbackList(callbacks)
        self.progress = Progress(verbose, side)
        self.timer = StepTimer()
        # The source text's "Train Epoch: ..." line every log_interval batches (0: none).
        self.log_interval, self.batch_size, self.samples = log_interval, batch_size, samples
        self.history: list[dict] = []
        self.batch_losses: list[float] = []
        self.batch_lrs: list[float] = []  # the learning rate of every step, where the loop reports it
        self.train_s = 0.0
        self._epoch_metrics: list[dict] = []
        self._epoch_sizes: list[int] = []
        self._epoch_start = 0.0
        self.callbacks.on_train_begin()

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    def state(self) -> dict:
        """What a checkpoint keeps of the log, to continue it after a restart."""
        return {"seed": self.seed, "history": self.history, "batch_losses": self.batch_losses, "train_s": self.train_s,
                "step_times": self.timer.times, "step_samples": self.timer.samples, "batch_lrs": self.batch_lrs}

    def restore(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise UserError(f"the checkpoint was made with --seed {state['seed']}, not {self.seed}: "
                            "its batches would not continue this run's")
        self.history, self.batch_losses = list(state["history"]), list(state["batch_losses"])
        self.batch_lrs = list(state.get("batch_lrs", []))  # absent from checkpoints older than the schedules
        self.train_s = state["train_s"]
        self.timer.times, self.timer.samples = list(state["step_times"]), list(state["step_samples"])

    def begin_epoch(self, epoch: int) -> None:
        self.progress.start_epoch(epoch, self.epochs, self.batches)
        self.callbacks.on_epoch_begin(epoch)
        self._epoch_metrics, self._epoch_sizes = [], []
        self._epoch_start = time.perf_counter()

    def end_batch(self, epoch: int, batch_index: int, size: int, learning_rate: float | None = None,
                  **metrics: float) -> None:
        """Record one batch's metrics (plain floats; `loss` required) and the learning rate its step used (not
        averaged: the epoch's entry is its last step's); a non-finite loss stops training."""
        if not math.isfinite(metrics["loss"]):
            last = next((loss for loss in reversed(self.batch_losses) if math.isfinite(loss)), None)
            raise TrainingDiverged(
                f"{self.side}: the loss became {metrics['loss']} at step {len(self.batch_losses) + 1} (epoch {epoch}, "
                f"batch {batch_index + 1}); the last finite loss was {last}; try a lower --lr")
        self._epoch_metrics.append(metrics)
        self._epoch_sizes.append(size)
        self.batch_losses.append(metrics["loss"])
        if learning_rate is not None:
            self.batch_lrs.append(learning_rate)
        self.progress.update(**metrics)
        self.callbacks.on_batch_end(len(self.batch_losses),
                                    metrics if learning_rate is None else {**metrics, "lr": learning_rate})
        if self.log_interval and batch_index % self.log_interval == 0:
            self.progress.write(train_log_line(epoch, batch_index * self.batch_size, self.samples, batch_index,
                                               self.batches, metrics["loss"]))

    def end_epoch(self, epoch: int, evaluation: dict | None = None, line: str | None = None) -> dict:
        """Close the epoch: training time, batch metrics averaged per sample, plus `evaluation`
        (validation or test metrics); prints `line`, or a summary of the epoch."""
        self.train_s += time.perf_counter() - self._epoch_start
        self.progress.end_epoch()
        logs = {"epoch": epoch}
        for key in self._epoch_metrics[0]:
            logs[key] = float(np.average([m[key] for m in self._epoch_metrics], weights=self._epoch_sizes))
        if len(self.batch_lrs) == len(self.batch_losses) and self.batch_lrs:
            logs["lr"] = self.batch_lrs[-1]  # the epoch's last step's
        logs.update(evaluation or {})
        self.progress.write(line or f"{self.side} epoch {epoch}: "
                            + ", ".join(f"{k} {v:.3g}" if k == "lr" else f"{k} {v:.4f}"
                                        for k, v in logs.items() if k != "epoch"))
        self.history.append(logs)
        self.callbacks.on_epoch_end(epoch, logs)
        return logs

    def result(self) -> dict:
        """history, batch_losses and timing; tells the callbacks that training ended."""
        self.callbacks.on_train_end({"history": self.history})
        return {"history": self.history, "batch_losses": self.batch_losses, "batch_lrs": self.batch_lrs,
                "timing": self.timer.summary(self.train_s)}
