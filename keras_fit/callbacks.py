"""The training callbacks of the portable Keras arms: TensorBoard events written with TensorBoard's own event
writer (tf.summary needs TensorFlow, which a keras-jax process never loads), and model saving; twin of
tf_impl/callbacks.py and torch_impl/callbacks.py (PredictionsSaverCallback needs no framework: shared/callbacks.py).
No graph is written: what each engine traces or records is the engine lesson (keras_fit/engines.py)."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import keras
import numpy as np
from PIL import Image
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from keras_models.weights import export_weights
from shared.atomic import atomic_path
from shared.callbacks import Callback, PreviewCallback, epoch_scalars, step_scalars
from shared.weights import save_weights


def _write(writer: EventFileWriter, step: int, values: list[Summary.Value]) -> None:
    writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))


class TensorboardLoggerCallback(Callback):
    """Train and validation loss and Dice per epoch and the learning rate per step, as TensorBoard scalars."""

    def __init__(self, log_dir: str | os.PathLike, model: keras.Model | None = None,
                 example: np.ndarray | None = None):
        self.log_dir = Path(log_dir)
        self.writer: EventFileWriter | None = None

    def on_train_begin(self, logs=None):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = EventFileWriter(str(self.log_dir))

    def on_batch_end(self, step, logs=None):
        scalars = step_scalars(logs or {})
        if scalars:  # per optimizer step: the learning rate
            _write(self.writer, step, [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()])

    def on_epoch_end(self, epoch, logs=None):
        _write(self.writer, epoch, [Summary.Value(tag=tag, simple_value=value)
                                    for tag, value in epoch_scalars(logs).items()])
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


class TensorboardVisualizerCallback(PreviewCallback):
    """The validation previews of shared/callbacks.py, as TensorBoard images (PNG)."""

    def on_epoch_end(self, epoch, logs=None):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        writer = EventFileWriter(str(self.log_dir))
        values = []
        for tag, panel in self.panels():
            encoded = io.BytesIO()
            Image.fromarray(panel).save(encoded, format="PNG")
            image = Summary.Image(height=panel.shape[0], width=panel.shape[1], colorspace=3,
                                  encoded_image_string=encoded.getvalue())
            values.append(Summary.Value(tag=tag, image=image))
        _write(writer, epoch, values)
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
            _architecture_and_weights(self.model).save(temporary)
        canonical = save_weights(export_weights(self.model), self.stem.with_suffix(".safetensors"))
        return {"model": str(native), "checkpoint": str(canonical)}


def _architecture_and_weights(model: keras.Model) -> keras.Model:
    """The model without its training setup: a compiled arm's loss and metrics are closures over the spec, which a
    .keras file cannot hold; like the tf side's never-compiled model, the file keeps the architecture and weights."""
    if not model.compiled:
        return model
    copy = model.__class__.from_config(model.get_config())
    shape = model.get_build_config()["input_shape"]  # of its first call: (N, H, W, C)
    copy(np.zeros((1, *shape[1:]), np.float32))  # Keras creates the weights on the first call
    copy.set_weights(model.get_weights())
    return copy
