"""TrainImageDataset and TestImageDataset: framework-neutral numpy samples that both sides wrap in loaders."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shared.data.augment import random_augment
from shared.data.batches import epoch_rng
from shared.data.carvana.decode import _load_pair, original_size, read_image
from shared.data.carvana.split import Sample
from shared.errors import UserError
from shared.tiles import mirror_pad

CACHE_BUDGET_BYTES = 1 << 30  # decoded, resized samples are kept in memory when they fit in this


class TrainImageDataset:
    """Training photos and masks as numpy, resized to a square, optionally augmented; framework-neutral.

    Each photo is squeezed to image_size x image_size: the aspect ratio is NOT kept (a 1918x1280
    photo becomes a square, as in the source text); the mask is resized with nearest neighbour.
    Augmentation (flip, shift/scale, HSV jitter) is drawn from epoch_rng(seed, epoch, index), so a
    sample depends only on (seed, epoch, index): the same on both sides and in any worker.
    Decoded, resized samples are cached in memory (as uint8) when they all fit in cache_bytes,
    so later epochs do not decode the JPEGs again.
    """

    def __init__(self, samples: Sequence[Sample], image_size: int, augment: bool = False, seed: int = 0,
                 cache_bytes: int = CACHE_BUDGET_BYTES, pad: int = 0):
        if image_size <= 0:
            raise UserError(f"--image-size must be positive, got {image_size}")
        self.pad = pad  # mirror border added to the photo only: the original U-Net's overlap-tile input
        self.samples = list(samples)
        self.image_size = int(image_size)
        self.augment = augment
        self.seed = seed
        per_sample = self.image_size * self.image_size * 4  # uint8 RGB + uint8 mask
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = (
            {} if per_sample * len(self.samples) <= cache_bytes else None)

    def __len__(self) -> int:
        return len(self.samples)

    def _decoded(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        pair = _load_pair(self.samples[index], (self.image_size, self.image_size))
        if self._cache is not None:
            self._cache[index] = pair
        return pair

    def get(self, index: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(image (S, S, 3) float32 in [0, 1], mask (S, S) float32 in {0, 1}) of one sample in one epoch."""
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")
        image_u8, mask_u8 = self._decoded(index)
        image = image_u8.astype(np.float32) / 255.0  # (S, S, 3)
        mask = mask_u8.astype(np.float32)  # (S, S)
        if self.augment:
            image, mask = random_augment(image, mask, epoch_rng(self.seed, epoch, index))
        if self.pad:
            image = mirror_pad(image, self.pad)  # (S + 2 pad, S + 2 pad, 3); the mask stays (S, S)
        return image, mask

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.get(index, 0)


class TestImageDataset:
    """Test photos resized to a square, with the name and original size needed to write the submission."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, paths: Sequence[str | os.PathLike], image_size: int):
        if image_size <= 0:
            raise UserError(f"--image-size must be positive, got {image_size}")
        self.paths = [Path(p) for p in paths]
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int) -> tuple[np.ndarray, str, tuple[int, int]]:
        """(image (S, S, 3) float32 in [0, 1], file name, original (width, height))."""
        path = self.paths[index]
        size = original_size(path)
        return read_image(path, (self.image_size, self.image_size)), path.name, size

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, tuple[int, int]]:
        return self.get(index)
