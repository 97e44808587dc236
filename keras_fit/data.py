"""Shared numpy datasets as keras.utils.PyDataset, the loader Keras' own model.fit reads on every engine; twin of
tf_impl/data.py (tf.data) and torch_impl/data.py (DataLoader).

A PyDataset is a list of batches: `dataset[i]` is batch i of the current epoch, in the order shared/data/batches.py
gives every side; `epoch` is set by the fit loop's callback at the start of each epoch (keras_fit/fit.py)."""
from __future__ import annotations

import keras
import numpy as np

from shared.data.batches import batch_indices, ceil_div


class ArrayLoader(keras.utils.PyDataset):
    """In-memory images (N, H, W, C) and labels, batch i of `epoch` in the shared order."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, shuffle: bool):
        super().__init__()
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.epoch = 1

    def __len__(self) -> int:
        return ceil_div(self.samples, self.batch_size)

    @property
    def samples(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        indices = batch_indices(self.samples, self.batch_size, self.seed, self.epoch, self.shuffle)[index]
        return self.images[indices], self.labels[indices]


def make_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, shuffle: bool) -> ArrayLoader:
    return ArrayLoader(images, labels, batch_size, seed, shuffle)


class CarvanaLoader(keras.utils.PyDataset):
    """The shared TrainImageDataset: batch i of `epoch` decoded and augmented by (epoch, index), as on the other
    sides. Made in the fit loop's own thread: Keras' worker threads would read ahead into the next epoch before
    the callback sets it (`workers` is accepted for the surface and not used)."""

    def __init__(self, images, batch_size: int, seed: int, shuffle: bool, workers: int):
        super().__init__()
        self.images, self.batch_size, self.seed, self.shuffle = images, batch_size, seed, shuffle
        self.epoch = 1

    def __len__(self) -> int:
        return ceil_div(self.samples, self.batch_size)

    @property
    def samples(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        indices = batch_indices(len(self.images), self.batch_size, self.seed, self.epoch, self.shuffle)[index]
        pairs = [self.images.get(int(i), self.epoch) for i in indices]
        return np.stack([image for image, _ in pairs]), np.stack([mask for _, mask in pairs])[..., None]


def make_image_loader(images, batch_size: int, seed: int, shuffle: bool, workers: int = 0) -> CarvanaLoader:
    """Batches of (images (N, H, W, 3), masks (N, H, W, 1))."""
    return CarvanaLoader(images, batch_size, seed, shuffle, workers)
