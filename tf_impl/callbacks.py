"""The training callbacks of the TensorFlow side: TensorBoard through tf.summary, and model saving (Keras' own
`.keras` file); twin of torch_impl/callbacks.py (PredictionsSaverCallback needs no framework: shared/callbacks.py)."""
from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_models.weights import export_weights
from shared.atomic import atomic_path
from shared.callbacks import Callback, PreviewCallback, epoch_scalars, step_scalars
from shared.weights import save_weights


class TensorboardLoggerCallback(Callback):
    """Train and validation loss and Dice per epoch, the learning rate per step, and the model graph, with
    tf.summary."""

    def __init__(self, log_dir: str | os.PathLike, model: keras.Model | None = None,
                 example: np.ndarray | None = None):
        self.log_dir, self.model, self.example = Path(log_dir), model, example
        self.writer = None

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(str(self.log_dir))
        if self.model is not None and self.example is not None:
            signature = tf.TensorSpec((None, *self.example.shape[1:]), tf.float32)
            graph = tf.function(lambda x: self.model(x, training=False)).get_concrete_function(signature).graph
            with self.writer.as_default():
                tf.summary.graph(graph)  # the static graph, as the TensorBoard Graphs tab shows it

    def on_batch_end(self, step, logs=None):
        scalars = step_scalars(logs or {})
        if scalars:  # per optimizer step: the learning rate
            with self.writer.as_default(step=step):
                for tag, value in scalars.items():
                    tf.summary.scalar(tag, value)

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default(step=epoch):
            for tag, value in epoch_scalars(logs).items():
                tf.summary.scalar(tag, value)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


class TensorboardVisualizerCallback(PreviewCallback):
    """The validation previews of shared/callbacks.py, as tf.summary images (a batch of one each)."""

    def on_epoch_end(self, epoch, logs=None):
        writer = tf.summary.create_file_writer(str(self.log_dir))
        with writer.as_default(step=epoch):
            for tag, panel in self.panels():
                tf.summary.image(tag, panel[None])
        writer.close()


class ModelSaverCallback(Callback):
    """After every epoch: the model as `<stem>.keras` and the canonical `<stem>.safetensors`, each atomically."""

    def __init__(self, model: keras.Model, path_stem: str | os.PathLike):
        self.model, self.stem = model, Path(path_stem)

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def save(self) -> dict:
        native = self.stem.with_suffix(".keras")
        with atomic_path(native, suffix=".keras") as temporary:  # Keras picks the format from the suffix
            self.model.save(temporary)
        canonical = save_weights(export_weights(self.model), self.stem.with_suffix(".safetensors"))
        return {"model": str(native), "checkpoint": str(canonical)}
