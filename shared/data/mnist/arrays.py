"""MNISTData, the canonical arrays both framework sides train on, and their normalisation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.errors import UserError

IMAGE_SIDE = 28
NUM_CLASSES = 10


# eq=False: the generated __eq__/__hash__ would compare numpy arrays, which raises.
@dataclass(frozen=True, eq=False)
class MNISTData:
    """Train and test splits in the canonical layout: images (N, 28, 28, 1) float32 in [0, 1], labels (N,) int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # "mnist" | "sklearn-digits"
    location: str  # the folder or file read, or "sklearn.datasets.load_digits"
    note: str = ""  # how the data was altered, if it was (said in every report)

    def describe(self) -> dict:
        """What the reports print about the data (results.json "data")."""
        return {
            "source": self.source,
            "location": self.location,
            "train": len(self.train_images),
            "test": len(self.test_images),
            "image_shape": [int(d) for d in self.train_images.shape[1:]],
            **({"note": self.note} if self.note else {}),
        }


def normalize(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(images - mean) / std as float32, the same normalisation on both sides."""
    if std == 0:
        raise UserError("the normalisation std must not be 0")
    return ((np.asarray(images, dtype=np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)
