"""Metrics in numpy, computed the same way for both sides: accuracy, confusion matrix, Dice, mask agreement."""
from __future__ import annotations

import numpy as np


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted) == np.asarray(labels)))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """Rows: true class; columns: predicted class (scikit-learn's, every class 0..classes-1 shown)."""
    # Imported here, not at the top: scikit-learn's metrics take 0.8 s to import, and the PyTorch worker imports this
    # module for BatchAverage and sigmoid only; the digit tasks' evaluation is the one caller.
    from sklearn import metrics

    return metrics.confusion_matrix(labels, predicted, labels=np.arange(classes)).astype(np.int64)


def dice(predicted: np.ndarray, truth: np.ndarray, smooth: float = 0.0) -> float:
    """2|A n B| / (|A| + |B|) over binary masks; two empty masks agree perfectly (1.0)."""
    predicted, truth = np.asarray(predicted) > 0.5, np.asarray(truth) > 0.5
    total = np.count_nonzero(predicted) + np.count_nonzero(truth)  # counts, not sums: fast on 1918x1280 masks
    if total == 0:
        return 1.0
    return float((2.0 * np.count_nonzero(predicted & truth) + smooth) / (total + smooth))


def mean_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice per image (first axis), averaged: Kaggle's Carvana metric."""
    return float(np.mean([dice(p, t) for p, t in zip(predicted, truth)]))


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels on which two binary masks agree."""
    return float(np.mean((np.asarray(a) > 0.5) == (np.asarray(b) > 0.5)))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (no overflow for large negative logits)."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64))).astype(np.float32)


class BatchAverage:
    """Per-image averages of per-batch means: a smaller last batch weighs by its size, as one pass over all
    images would (validation loss and Dice on both sides, one process or several)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, count: int, **means: float) -> None:
        for name, value in means.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value) * count
        self.count += count

    def result(self) -> dict[str, float]:
        return {name: total / self.count for name, total in self.sums.items()}
