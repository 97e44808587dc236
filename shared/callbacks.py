"""The callback protocol both sides' training loops call, and the callbacks that need no framework."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from shared.atomic import write_json
from shared.rle import RLEWriter
from shared.tiles import tile_predict
from shared.visualize import preview_panels


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


# The TensorBoard tag of each epoch log entry, the same on both sides: with each side in its own run folder,
# `tensorboard --logdir RUN_DIR` draws the two sides' curves on one chart per tag.
SCALAR_TAGS = {"loss": "loss/train", "val_loss": "loss/valid", "dice": "dice/train", "val_dice": "dice/valid",
               "test_loss": "loss/test", "test_accuracy": "accuracy/test"}


# Written per optimizer step rather than per epoch (the x axis of its chart is the step).
STEP_SCALAR_TAGS = {"lr": "learning_rate"}


def step_scalars(logs: dict) -> dict[str, float]:
    """What both TensorBoard loggers write per step: {"learning_rate": ...} where the loop reports it."""
    return {tag: float(logs[name]) for name, tag in STEP_SCALAR_TAGS.items() if name in logs}


def epoch_scalars(logs: dict) -> dict[str, float]:
    """What both TensorBoard loggers write per epoch: {"loss/train": ..., "dice/valid": ...}, each tag only where
    the epoch's logs have its entry."""
    return {tag: float(logs[name]) for name, tag in SCALAR_TAGS.items() if name in logs}


class PreviewCallback(Callback):
    """Per epoch, a few validation photos with the true mask, the predicted mask and an overlay: the panels, which
    need no framework; each side's TensorboardVisualizerCallback writes them."""

    def __init__(self, log_dir: str | os.PathLike, samples: list[tuple[np.ndarray, np.ndarray]], predict,
                 threshold: float = 0.5):
        self.log_dir, self.samples, self.predict, self.threshold = Path(log_dir), samples, predict, threshold

    def panels(self) -> list[tuple[str, np.ndarray]]:
        """(tag, (H, 4W, 3) uint8 panel) per sample, from the model's current predictions."""
        return [(f"validation/{i}: photo | true | predicted | overlay", panel)
                for i, panel in enumerate(preview_panels(self.samples, self.predict, self.threshold))]


class BestModelSaverCallback(Callback):
    """--save-best: after an epoch that beats every earlier one by `monitor` (val_dice: highest; val_loss: lowest),
    the side's ModelSaverCallback for `<stem>` saves the model in both formats, and `<stem>.json` records the epoch,
    so a resumed run still knows the best of the epochs before its restart."""

    def __init__(self, saver, monitor: str):
        self.saver, self.monitor = saver, monitor
        self.path = Path(saver.stem).with_suffix(".json")
        self.record = json.loads(self.path.read_text()) if self.path.is_file() else None

    def improved(self, logs: dict) -> bool:
        if self.record is None:
            return True
        value, best = logs[self.monitor], self.record["value"]
        return value > best if self.monitor == "val_dice" else value < best

    def on_epoch_end(self, epoch, logs=None):
        if self.improved(logs):
            files = self.saver.save()
            self.record = {"epoch": epoch, "monitor": self.monitor, "value": float(logs[self.monitor]), **files}
            write_json(self.path, self.record)


def best_model_entry(path_stem: str | os.PathLike) -> dict:
    """The result entry's part for --save-best: the best epoch and its files, {} when none was kept."""
    path = Path(path_stem).with_suffix(".json")
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    return {"best": {key: record[key] for key in ("epoch", "monitor", "value")},
            "best_artifacts": {"best_model": record["model"], "best_checkpoint": record["checkpoint"]}}


class PredictionsSaverCallback(Callback):
    """At the end of training: predicts every test photo, upsamples the probabilities to the photo's
    original size, thresholds, run-length encodes, and streams the rows into a gzip CSV (never holding
    all predictions in memory). `predict` maps (N, H, W, 3) images to (N, H_out, W_out) probabilities; tile_in
    and tile_out (N or (height, width)) are the original net's tile and its output, which the photos are resized to."""

    def __init__(self, path, test_images, predict, threshold: float = 0.5, tile_in: int | None = None,
                 tile_out: int | None = None, batch_size: int = 8):
        self.path, self.test_images, self.predict = path, test_images, predict
        self.threshold, self.batch_size = threshold, batch_size
        self.tile_in, self.tile_out = tile_in, tile_out
        self.rows = 0

    def on_train_end(self, logs=None):
        self.save()

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        if self.tile_in is None or self.tile_in == self.tile_out:
            return self.predict(images)
        return np.stack([tile_predict(image, self.tile_in, self.tile_out, self.predict) for image in images])

    def save(self):
        with RLEWriter(self.path) as writer:
            for start in range(0, len(self.test_images), self.batch_size):
                stop = min(start + self.batch_size, len(self.test_images))
                batch = [self.test_images.get(i) for i in range(start, stop)]
                probabilities = self._probabilities(np.stack([image for image, _, _ in batch]))
                for (_, name, size), probability in zip(batch, probabilities):
                    writer.write(name, upsample(probability, size) > self.threshold)
            self.rows = writer.rows
        return self.path


def upsample(probability: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (h, w) probability map to the photo's original (width, height)."""
    image = Image.fromarray(np.asarray(probability, np.float32))  # float32 -> mode "F"
    return np.asarray(image.resize(size, Image.BILINEAR))
