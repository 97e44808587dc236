"""Batch order drawn from numpy generators seeded by (seed, epoch), so both sides see identical batches."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def epoch_rng(seed: int, epoch: int, index: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, index): the same on both sides and in any worker."""
    return np.random.default_rng([seed, epoch, index])


def batch_indices(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """The index batches of one epoch; the last batch may be smaller (nothing is dropped)."""
    order = epoch_rng(seed, epoch).permutation(n) if shuffle else np.arange(n)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The sample order of one epoch, the concatenation of batch_indices."""
    return epoch_rng(seed, epoch).permutation(n) if shuffle else np.arange(n)


def ceil_div(n: int, size: int) -> int:
    """How many pieces of `size` cover n (the batches of an epoch, whose last one may be smaller; tiles)."""
    return -(-n // size)


def in_batches(function: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int) -> np.ndarray:
    """function applied to consecutive batches of the images, the results concatenated (bounded memory)."""
    return np.concatenate([function(images[start:start + batch_size]) for start in range(0, len(images), batch_size)])


@dataclass(frozen=True)
class LabelledImages:
    """In-memory images (N, H, W, C) float32 and their int64 labels: the digits of mlp and cnn."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)
