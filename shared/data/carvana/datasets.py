"""TrainImageDataset and TestImageDataset: framework-neutral numpy samples that both sides wrap in loaders."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shared.data.augment import random_augment
from shared.data.batches import epoch_rng
from shared.data.carvana.decode import _load_pair, original_size, read_image, read_mask_bits
from shared.data.carvana.decoded import decoded_path, load_decoded, save_decoded
from shared.data.carvana.split import Sample
from shared.errors import UserError
from shared.tasks import image_shape_of, shape_text
from shared.tiles import mirror_pad

CACHE_BUDGET_BYTES = 1 << 30  # decoded, resized samples are kept in memory when they fit in this
ASPECT_TOLERANCE = 0.01  # Kaggle's 1918x1280 is 2:3 within 0.1%, so a 2:3 size keeps the photos' shape


def resize_description(photo_size: tuple[int, int], shape: tuple[int, int], pad: int = 0) -> str:
    """What resizing a (width, height) photo to (height, width) `shape` does to it: kept or squeezed; and the
    original net's mirrored border."""
    width, height = photo_size
    kept = abs((shape[1] / shape[0]) / (width / height) - 1) <= ASPECT_TOLERANCE
    how = "aspect ratio kept" if kept else "squeezed: aspect ratio NOT kept"
    border = (f", then mirror-padded by {pad} pixels to the {shape[0] + 2 * pad}x{shape[1] + 2 * pad} tile"
              if pad else "")
    return (f"photos resized from {width}x{height} (width x height) to {shape_text(shape)} (height x width), "
            f"{how}{border}; masks by nearest neighbour")


def _checked_shape(image_size: int | tuple[int, int]) -> tuple[int, int]:
    shape = image_shape_of(image_size)
    if min(shape) <= 0:
        raise UserError(f"--image-size must be positive, got {shape_text(shape)}")
    return shape


class TrainImageDataset:
    """Training photos and masks as numpy, resized to image_size, optionally augmented; framework-neutral.

    image_size is N (N x N, as in the source text) or (height, width). Each photo is resized bilinearly to it,
    squeezed unless it has the photo's aspect ratio (128x192 keeps a 1918x1280 photo's 2:3, 64 squeezes it);
    the mask is resized with nearest neighbour.
    Augmentation (flip, shift/scale, HSV jitter) is drawn from epoch_rng(seed, epoch, index), so a
    sample depends only on (seed, epoch, index): the same on both sides and in any worker.
    Decoded, resized samples are cached in memory (as uint8) when they all fit in cache_bytes,
    so later epochs do not decode the JPEGs again; once all are decoded they are also kept on disk
    (shared/data/carvana/decoded.py), so the next process reading this set at this size loads one file.
    """

    channels = 3  # of the images: RGB photos (a grayscale folder set's are 1)

    def __init__(self, samples: Sequence[Sample], image_size: int | tuple[int, int], augment: bool = False,
                 seed: int = 0, cache_bytes: int = CACHE_BUDGET_BYTES, pad: int = 0):
        self.shape = _checked_shape(image_size)  # (H, W) of the resized photo and of its mask
        self.pad = pad  # mirror border added to the photo only: the original U-Net's overlap-tile input
        self.samples = list(samples)
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        per_sample = self.shape[0] * self.shape[1] * (self.channels + 1)  # uint8 image + uint8 mask
        fits = per_sample * len(self.samples) <= cache_bytes
        self._kept_at = decoded_path(self.samples, self.shape, self.kind()) if fits else None  # None: not on disk
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = (
            load_decoded(self._kept_at, len(self.samples), self.shape, self.channels) if fits else None)

    def __len__(self) -> int:
        return len(self.samples)

    def kind(self) -> str:
        """What else, besides the files and the size, the decoded arrays depend on (part of the cache's name)."""
        return ""

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """One sample decoded and resized: image uint8 (H, W, C), mask uint8 (H, W) in {0, 1}."""
        return _load_pair(self.samples[index], self.shape[::-1])  # PIL sizes are (width, height)

    def original_mask(self, index: int) -> np.ndarray:
        """A sample's mask at its own size, uint8 (height, width) in {0, 1} (Dice at the original size)."""
        return read_mask_bits(self.samples[index].mask)

    def _decoded(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        pair = self.load(index)
        if self._cache is not None:
            self._cache[index] = pair
            if len(self._cache) == len(self.samples):  # the whole set decoded: keep it for the next process
                save_decoded(self._kept_at, self._cache, len(self.samples))
        return pair

    def decode_all(self) -> list[np.ndarray]:
        """Decode every sample now (an unreadable file fails here, in one line), kept as the cache allows; the masks
        (uint8 (H, W) in {0, 1}), in order."""
        return [self._decoded(index)[1] for index in range(len(self.samples))]

    def get(self, index: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, C) float32 in [0, 1], mask (H, W) float32 in {0, 1}) of one sample in one epoch."""
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")
        image_u8, mask_u8 = self._decoded(index)
        image = image_u8.astype(np.float32) / 255.0  # (H, W, C)
        mask = mask_u8.astype(np.float32)  # (H, W)
        if self.augment:
            image, mask = random_augment(image, mask, epoch_rng(self.seed, epoch, index))
        if self.pad:
            image = mirror_pad(image, self.pad)  # (H + 2 pad, W + 2 pad, C); the mask stays (H, W)
        return image, mask

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.get(index, 0)


class TestImageDataset:
    """Test photos resized to image_size (N or (height, width)) as the training photos are, with the name and
    original size needed to write the submission."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, paths: Sequence[str | os.PathLike], image_size: int | tuple[int, int]):
        self.shape = _checked_shape(image_size)  # (H, W)
        self.paths = [Path(p) for p in paths]
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int) -> tuple[np.ndarray, str, tuple[int, int]]:
        """(image (H, W, 3) float32 in [0, 1], file name, original (width, height))."""
        path = self.paths[index]
        size = original_size(path)
        return read_image(path, self.shape[::-1]), path.name, size

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, tuple[int, int]]:
        return self.get(index)
