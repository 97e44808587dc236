"""load_mnist: MNIST from an IDX folder, Keras' mnist.npz, a download or the embedded digits, checked and subsampled."""
from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from shared.data.mnist.arrays import IMAGE_SIDE, NUM_CLASSES, MNISTData
from shared.data.mnist.digits import load_digits_28
from shared.data.mnist.discovery import NPZ_NAME, _has_idx_files, find_mnist_files
from shared.data.mnist.download import download_mnist
from shared.data.mnist.idx import read_idx
from shared.errors import DataError, UserError, one_line


def _to_canonical_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    out = images.astype(np.float32)
    out /= 255.0
    return out[..., np.newaxis]  # (N, H, W, C)


def _check_images(path: Path | str, images: np.ndarray, what: str = "images") -> None:
    if images.ndim != 3:
        raise DataError(path, f"{what} have {images.ndim} dimensions, expected 3 (count, 28, 28)")
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(path, f"{what} are {images.shape[1]}x{images.shape[2]}, expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    if images.shape[0] == 0:
        raise DataError(path, f"holds no {what}")


def _check_labels(path: Path | str, labels: np.ndarray, n_images: int, images_name: str, what: str = "labels") -> None:
    if labels.ndim != 1:
        raise DataError(path, f"{what} have {labels.ndim} dimensions, expected 1")
    if len(labels) != n_images:
        raise DataError(path, f"holds {len(labels)} {what} but {images_name} holds {n_images} images")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        bad = int(np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))[0])
        raise DataError(path, f"label {labels[bad]} at index {bad} is outside 0..{NUM_CLASSES - 1}")


def _load_idx_folder(data_dir: Path) -> MNISTData:
    files = find_mnist_files(data_dir)
    arrays = {}
    for split in ("train", "test"):
        images_path, labels_path = files[f"{split}_images"], files[f"{split}_labels"]
        images = read_idx(images_path, expect_ndim=3)
        _check_images(images_path, images)
        labels = read_idx(labels_path, expect_ndim=1)
        _check_labels(labels_path, labels, len(images), images_path.name)
        arrays[f"{split}_images"] = _to_canonical_images(images)
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    return MNISTData(**arrays, source="mnist", location=str(files["train_images"].parent))


def _load_npz(path: Path) -> MNISTData:
    """Keras' mnist.npz: x_train (N, 28, 28) uint8, y_train (N,), x_test, y_test."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in npz.files]
            if missing:
                raise DataError(path, f"missing array {missing[0]!r} (expected x_train, y_train, x_test, y_test)")
            raw = {key: npz[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except DataError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError) as error:
        raise DataError(path, f"not a readable .npz file ({one_line(error, name_if_empty=True)})") from None

    arrays = {}
    for split in ("train", "test"):
        images, labels = raw[f"x_{split}"], raw[f"y_{split}"]
        _check_images(path, images, f"x_{split}")
        # Keras stores uint8; other integer arrays are fine when they hold byte values.
        if images.dtype != np.uint8 and (
                not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255):
            raise DataError(path, f"x_{split} has dtype {images.dtype}, expected uint8 pixel values 0..255")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(path, f"y_{split} has dtype {labels.dtype}, expected integer labels")
        _check_labels(path, labels, len(images), f"x_{split}", f"y_{split} labels")
        arrays[f"{split}_images"] = _to_canonical_images(images)
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    return MNISTData(**arrays, source="mnist", location=str(path))


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    sample_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
    md5: Mapping[str, str] | None = None,
) -> MNISTData:
    """MNIST from data_dir (IDX files or mnist.npz), from the mirrors (download=True), or else the embedded digits.

    sample_size keeps the first sample_size training images of a permutation seeded by seed
    (None keeps them all; the test split is never subsampled).
    """
    if sample_size is not None and sample_size <= 0:
        raise UserError(f"--sample-size must be positive, got {sample_size}")
    if download and data_dir is not None:
        raise UserError("--data-dir and --download exclude each other; give one of them")

    if download:
        data = _load_idx_folder(download_mnist(cache_dir=cache_dir, mirrors=mirrors, md5=md5))
    elif data_dir is not None:
        path = Path(data_dir).expanduser()
        if path.suffix == ".npz":
            if not path.is_file():
                raise DataError(path, "no such file")
            data = _load_npz(path)
        elif path.is_dir() and (path / NPZ_NAME).is_file() and not _has_idx_files(path):
            data = _load_npz(path / NPZ_NAME)
        else:
            data = _load_idx_folder(path)
    else:
        data = load_digits_28(seed=seed)

    if sample_size is not None and sample_size < len(data.train_images):
        keep = np.random.default_rng(seed).permutation(len(data.train_images))[:sample_size]
        data = MNISTData(
            train_images=data.train_images[keep],
            train_labels=data.train_labels[keep],
            test_images=data.test_images,
            test_labels=data.test_labels,
            source=data.source,
            location=data.location,
            note=data.note,
        )
    return data
