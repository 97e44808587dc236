"""MNIST as numpy arrays (IDX files, Keras' mnist.npz, a download, or scikit-learn's digits resampled to 28x28).

The modules: arrays (MNISTData, normalize), idx (read_idx, write_idx), discovery (find_mnist_files),
download (download_mnist), digits (load_digits_28), load (load_mnist); every public name is re-exported here.
"""
from __future__ import annotations

from shared.data.mnist.arrays import IMAGE_SIDE, NUM_CLASSES, MNISTData, normalize
from shared.data.mnist.digits import DIGITS_LOCATION, DIGITS_TRAIN_COPIES, jitter, load_digits_28
from shared.data.mnist.discovery import MNIST_FILES, NPZ_NAME, find_mnist_files
from shared.data.mnist.download import DEFAULT_MIRRORS, MNIST_MD5, default_cache_dir, download_mnist
from shared.data.mnist.idx import IDX_UBYTE, IMAGE_MAGIC, LABEL_MAGIC, read_idx, write_idx
from shared.data.mnist.load import load_mnist

__all__ = [
    "DEFAULT_MIRRORS",
    "DIGITS_LOCATION",
    "DIGITS_TRAIN_COPIES",
    "IDX_UBYTE",
    "IMAGE_MAGIC",
    "IMAGE_SIDE",
    "LABEL_MAGIC",
    "MNIST_FILES",
    "MNIST_MD5",
    "NPZ_NAME",
    "NUM_CLASSES",
    "MNISTData",
    "default_cache_dir",
    "download_mnist",
    "find_mnist_files",
    "jitter",
    "load_digits_28",
    "load_mnist",
    "normalize",
    "read_idx",
    "write_idx",
]
