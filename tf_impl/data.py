"""Shared numpy datasets as TensorFlow loaders (tf.data pipelines); twin of torch_impl/data.py.

The public names are the PyTorch side's: ArrayLoader and CarvanaLoader are tf.data pipelines here, DataLoaders
there. tf.data maps over indices, so there is no per-sample Dataset class to twin PyTorch's private ones."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from shared.data.batches import ceil_div, epoch_order


def _own_threads(dataset: tf.data.Dataset, workers: int = 0) -> tf.data.Dataset:
    """The pipeline on a thread pool of its own (its `workers`, at least one), off the inter-op pool that
    runtime.configure keeps at one thread for the train step; and without tf.data's autotuner, whose thread made
    the end of some epochs wait 1 to 8 s (measured: an epoch's iterator took up to 2 s to delete)."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = max(1, workers)
    options.autotune.enabled = False
    return dataset.with_options(options)


def to_tensor_images(images: np.ndarray) -> tf.Tensor:
    """Canonical NHWC numpy is already Keras' layout."""
    return tf.convert_to_tensor(images)


class ArrayLoader:
    """In-memory images and labels in the shared batch order; `batches(epoch)` is the epoch's tf.data pipeline."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, shuffle: bool):
        self.images = to_tensor_images(images)  # (N, H, W, C)
        self.labels = tf.convert_to_tensor(labels)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle

    def __len__(self) -> int:
        return ceil_div(self.samples, self.batch_size)

    @property
    def samples(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, epoch: int) -> tf.data.Dataset:
        # The same permutation the PyTorch sampler slices, cut into batches by tf.data.
        order = epoch_order(int(self.labels.shape[0]), self.seed, epoch, self.shuffle)
        return _own_threads(tf.data.Dataset.from_tensor_slices(order)
                            .batch(self.batch_size)
                            .map(lambda idx: (tf.gather(self.images, idx), tf.gather(self.labels, idx)),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                            .prefetch(tf.data.AUTOTUNE))

    @property
    def element_spec(self):
        images, labels = self.images, self.labels
        return (tf.TensorSpec((None, *images.shape[1:]), images.dtype), tf.TensorSpec((None,), labels.dtype))


def make_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, shuffle: bool) -> ArrayLoader:
    return ArrayLoader(images, labels, batch_size, seed, shuffle)


class CarvanaLoader:
    """The shared TrainImageDataset in the shared order as a tf.data pipeline: parallel map (numpy decode + augment,
    keyed by (epoch, index) like the PyTorch side), batch, prefetch; `batches(epoch)` is the epoch's pipeline."""

    def __init__(self, images, batch_size: int, seed: int, shuffle: bool, workers: int):
        self.images, self.batch_size, self.seed, self.shuffle = images, batch_size, seed, shuffle
        self.workers = workers
        self.failure: Exception | None = None  # a data error raised inside the pipeline, kept to re-raise as is
        image, mask = images.get(0, 0)
        self.image_shape, self.mask_shape = image.shape, mask.shape + (1,)

    def __len__(self) -> int:
        return ceil_div(len(self.images), self.batch_size)

    def batches(self, epoch: int):
        """The epoch's batches; a bad file raises its own one-line DataError, not TensorFlow's wrapper of it."""
        try:
            yield from self.pipeline(epoch)
        except tf.errors.OpError:
            if self.failure is None:
                raise
            failure, self.failure = self.failure, None
            raise failure from None

    def pipeline(self, epoch: int) -> tf.data.Dataset:
        def load(index):
            try:
                image, mask = self.images.get(int(index), epoch)
            except Exception as error:  # tf.numpy_function would turn it into an UnknownError
                self.failure = error
                raise
            return image, mask[..., None]  # (H, W, 3), (H, W, 1)

        def load_op(index):
            image, mask = tf.numpy_function(load, [index], [tf.float32, tf.float32])
            return tf.ensure_shape(image, self.image_shape), tf.ensure_shape(mask, self.mask_shape)

        order = epoch_order(len(self.images), self.seed, epoch, self.shuffle)
        parallel = {"num_parallel_calls": self.workers, "deterministic": True} if self.workers else {}
        return _own_threads(tf.data.Dataset.from_tensor_slices(order)
                            .map(load_op, **parallel)
                            .batch(self.batch_size)
                            .prefetch(tf.data.AUTOTUNE), self.workers)

    @property
    def element_spec(self):
        return (tf.TensorSpec((None, *self.image_shape), tf.float32),
                tf.TensorSpec((None, *self.mask_shape), tf.float32))


def make_image_loader(images, batch_size: int, seed: int, shuffle: bool, workers: int = 0) -> CarvanaLoader:
    """Batches of (images (N, H, W, 3), masks (N, H, W, 1)); `workers` parallel map calls decode and augment."""
    return CarvanaLoader(images, batch_size, seed, shuffle, workers)
