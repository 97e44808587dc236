"""Finding the four MNIST IDX files in a folder: flat, or in torchvision's MNIST/raw/ layout, gzipped or not."""
from __future__ import annotations

import os
from pathlib import Path

from shared.errors import DataError

# The four files by their standard names (without .gz; each may also be gzipped).
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
NPZ_NAME = "mnist.npz"  # Keras' single-file copy (keys x_train, y_train, x_test, y_test)


def find_mnist_files(data_dir: str | os.PathLike) -> dict[str, Path]:
    """The four IDX files in data_dir, flat or in torchvision's MNIST/raw/ layout, gzipped or not.

    Returns {"train_images": path, ...}. DataError names the folder and the first missing file.
    """
    data_dir = Path(data_dir).expanduser()
    if not data_dir.exists():
        raise DataError(data_dir, "no such folder")
    if not data_dir.is_dir():
        raise DataError(data_dir, "not a folder (expected the four MNIST IDX files or mnist.npz in it)")

    candidates = [data_dir, data_dir / "MNIST" / "raw", data_dir / "raw"]
    found_per_dir = []
    for folder in candidates:
        found = {}
        for key, name in MNIST_FILES.items():
            # Prefer the uncompressed file when both are there (torchvision keeps both).
            for file_name in (name, name + ".gz"):
                if (folder / file_name).is_file():
                    found[key] = folder / file_name
                    break
        found_per_dir.append((folder, found))
        if len(found) == len(MNIST_FILES):
            return found

    # Report against the folder that holds the most of them (the first one on a tie).
    folder, found = max(found_per_dir, key=lambda item: len(item[1]))
    if not found:
        folder = data_dir
    missing = next(name for key, name in MNIST_FILES.items() if key not in found)
    where = "" if found else " (looked here and in MNIST/raw/; a mnist.npz would also do)"
    raise DataError(folder, f"missing {missing} (or {missing}.gz){where}")


def _has_idx_files(folder: Path) -> bool:
    """Whether folder holds all four IDX files (they win over a mnist.npz beside them)."""
    try:
        find_mnist_files(folder)
    except DataError:
        return False
    return True
