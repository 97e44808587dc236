"""The training callbacks that need PyTorch: TensorBoard through torch.utils.tensorboard, and model saving;
twin of tf_impl/callbacks.py (PredictionsSaverCallback needs no framework: shared/callbacks.py)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from shared.atomic import atomic_path
from shared.callbacks import Callback, PreviewCallback, epoch_scalars, step_scalars
from shared.weights import save_weights
from torch_impl.data import to_tensor_images
from torch_impl.weights import export_weights


class TensorboardLoggerCallback(Callback):
    """Train and validation loss and Dice per epoch, the learning rate per step, and the model graph, with
    PyTorch's SummaryWriter."""

    def __init__(self, log_dir: str | os.PathLike, model: torch.nn.Module | None = None,
                 example: np.ndarray | None = None):
        self.log_dir, self.model, self.example = Path(log_dir), model, example
        self.writer: SummaryWriter | None = None

    def on_train_begin(self, logs=None):
        self.writer = SummaryWriter(str(self.log_dir))
        if self.model is not None and self.example is not None:
            self.model.eval()
            with warnings.catch_warnings():  # add_graph traces with torch.jit, which warns that it is deprecated
                warnings.simplefilter("ignore", FutureWarning)
                device = next(self.model.parameters()).device
                self.writer.add_graph(self.model, to_tensor_images(self.example).to(device))

    def on_batch_end(self, step, logs=None):
        for tag, value in step_scalars(logs or {}).items():  # per optimizer step: the learning rate
            self.writer.add_scalar(tag, value, step)

    def on_epoch_end(self, epoch, logs=None):
        for tag, value in epoch_scalars(logs).items():
            self.writer.add_scalar(tag, value, epoch)  # not add_scalars: it would make a run folder per split
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


class TensorboardVisualizerCallback(PreviewCallback):
    """The validation previews of shared/callbacks.py, as SummaryWriter images (height, width, channels)."""

    def on_epoch_end(self, epoch, logs=None):
        with SummaryWriter(str(self.log_dir)) as writer:
            for tag, panel in self.panels():
                writer.add_image(tag, panel, epoch, dataformats="HWC")


class ModelSaverCallback(Callback):
    """After every epoch: the state_dict as `<stem>.pt` and the canonical `<stem>.safetensors`, each atomically."""

    def __init__(self, model: torch.nn.Module, path_stem: str | os.PathLike):
        self.model, self.stem = model, Path(path_stem)

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def save(self) -> dict:
        native = self.stem.with_suffix(".pt")
        with atomic_path(native) as temporary:
            torch.save(self.model.state_dict(), temporary)
        canonical = save_weights(export_weights(self.model), self.stem.with_suffix(".safetensors"))
        return {"model": str(native), "checkpoint": str(canonical)}
