"""Shared numpy datasets as PyTorch loaders (Dataset, Sampler, DataLoader); twin of tf_impl/data.py.

The public names are the TensorFlow side's: ArrayLoader and CarvanaLoader are DataLoaders here, tf.data pipelines
there. The per-sample Datasets and the Samplers they read through are PyTorch's own machinery, kept private."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from shared.data.batches import batch_indices, ceil_div, epoch_order


def to_tensor_images(images: np.ndarray) -> torch.Tensor:
    """Canonical NHWC numpy -> PyTorch's NCHW tensor."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


class _ArrayDataset(Dataset):
    """In-memory images and labels, indexed by a whole batch of indices at once (no per-sample collate)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = to_tensor_images(images)  # (N, C, H, W)
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        indices = torch.as_tensor(indices)
        return self.images[indices], self.labels[indices]


class _SharedOrderSampler(Sampler):
    """Yields the batches of shared.data.batches for the current epoch: the TensorFlow side sees the same."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(batch_indices(self.n, self.batch_size, self.seed, self.epoch, self.shuffle))

    def __len__(self) -> int:
        return ceil_div(self.n, self.batch_size)


class ArrayLoader(DataLoader):
    """In-memory images and labels in the shared batch order; `sampler.set_epoch(epoch)` picks the epoch's order."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, shuffle: bool):
        # batch_size=None: the sampler already yields whole batches, which the dataset indexes in one go.
        sampler = _SharedOrderSampler(len(labels), batch_size, seed, shuffle)
        super().__init__(_ArrayDataset(images, labels), sampler=sampler, batch_size=None)


def make_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, shuffle: bool) -> ArrayLoader:
    return ArrayLoader(images, labels, batch_size, seed, shuffle)


class _CarvanaDataset(Dataset):
    """The shared TrainImageDataset as a torch Dataset; items are addressed by (epoch, index), so the
    augmentation of a sample is the same in any worker process and on the TensorFlow side."""

    def __init__(self, images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        image, mask = self.images.get(index, epoch)
        return torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(mask[None])  # (3,H,W), (1,H,W)


class _EpochSampler(Sampler):
    """(epoch, index) keys in the shared numpy order of each epoch. It takes the place of RandomSampler /
    SequentialSampler, whose torch-generated order the TensorFlow side could not reproduce."""

    def __init__(self, n: int, seed: int, shuffle: bool):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter([(self.epoch, int(index)) for index in epoch_order(self.n, self.seed, self.epoch, self.shuffle)])

    def __len__(self) -> int:
        return self.n


class CarvanaLoader(DataLoader):
    """The shared TrainImageDataset in the shared order, batched by the DataLoader: `workers` processes decode and
    augment (keyed by (epoch, index) like the TensorFlow side); `sampler.set_epoch(epoch)` picks the epoch."""

    def __init__(self, images, batch_size: int, seed: int, shuffle: bool, workers: int):
        super().__init__(_CarvanaDataset(images), batch_size=batch_size,
                         sampler=_EpochSampler(len(images), seed, shuffle), num_workers=workers,
                         pin_memory=torch.cuda.is_available(), persistent_workers=False)


def make_image_loader(images, batch_size: int, seed: int, shuffle: bool, workers: int = 0) -> CarvanaLoader:
    """Batches of (images (N, 3, H, W), masks (N, 1, H, W)); workers decode and augment in parallel."""
    return CarvanaLoader(images, batch_size, seed, shuffle, workers)
