"""Shared numpy datasets wrapped the TensorFlow way (tf.data pipelines); twin of torch_impl/data.py."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from shared.data.batches import epoch_order


def to_tensor_images(images: np.ndarray) -> tf.Tensor:
    """Canonical NHWC numpy is already Keras' layout."""
    return tf.convert_to_tensor(images)


class ArrayDataset:
    """In-memory images and labels; `batches(epoch)` is the epoch's tf.data pipeline in the shared order."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, shuffle: bool):
        self.images = to_tensor_images(images)  # (N, H, W, C)
        self.labels = tf.convert_to_tensor(labels)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle

    def __len__(self) -> int:
        return -(-int(self.labels.shape[0]) // self.batch_size)

    def batches(self, epoch: int) -> tf.data.Dataset:
        # The same permutation the PyTorch sampler slices, cut into batches by tf.data.
        order = epoch_order(int(self.labels.shape[0]), self.seed, epoch, self.shuffle)
        return (tf.data.Dataset.from_tensor_slices(order)
                .batch(self.batch_size)
                .map(lambda idx: (tf.gather(self.images, idx), tf.gather(self.labels, idx)),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .prefetch(tf.data.AUTOTUNE))

    @property
    def element_spec(self):
        images, labels = self.images, self.labels
        return (tf.TensorSpec((None, *images.shape[1:]), images.dtype), tf.TensorSpec((None,), labels.dtype))


def make_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, shuffle: bool) -> ArrayDataset:
    return ArrayDataset(images, labels, batch_size, seed, shuffle)
