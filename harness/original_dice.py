"""Dice at the photos' original size (Kaggle's leaderboard metric), once per run: each validation photo's predicted
probabilities upsampled to its original size as the submission does (shared/callbacks.upsample), thresholded, and
compared with its mask as Kaggle serves it, not with the mask resized to the training size."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from shared.callbacks import upsample
from shared.data.carvana import TrainImageDataset
from shared.metrics import dice


def photo_dice(probability: np.ndarray, dataset: TrainImageDataset, index: int, threshold: float) -> float:
    """One photo's Dice at its original size: (H_out, W_out) probabilities against its full-size mask."""
    truth = dataset.original_mask(index)  # (height, width) as in train_masks/ (or a folder set's masks/)
    predicted = upsample(probability, (truth.shape[1], truth.shape[0])) > threshold
    return dice(predicted, truth)


def original_size_dice(dataset: TrainImageDataset, predict: Callable[[np.ndarray], np.ndarray], threshold: float,
                       batch_size: int) -> float:
    """Mean per-photo Dice at the original size over a (not augmented) dataset. The net predicts a batch at the
    training size, then threads upsample and score its photos (PIL and numpy release the GIL), never while the net
    runs: its own threads would wait for the cores."""
    scores: list[float] = []
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="dice") as pool:
        for start in range(0, len(dataset), batch_size):
            indices = range(start, min(start + batch_size, len(dataset)))
            probabilities = predict(np.stack([dataset.get(i)[0] for i in indices]))  # (n, H_out, W_out)
            scores += pool.map(photo_dice, probabilities, [dataset] * len(indices), indices,
                               [threshold] * len(indices))
    return float(np.mean(scores))
