"""The Carvana car-mask dataset as numpy: find the files (folder or Kaggle zips), download, split by car, decode.

Real layout (Kaggle "Carvana Image Masking Challenge"): train/<car>_<angle>.jpg (1918x1280, 16
angles per car), train_masks/<car>_<angle>_mask.gif (0/1), train_masks.csv, test/*.jpg,
sample_submission.csv, the _hq variants, and the zips Kaggle serves (train.zip holds train/...).
Both framework sides wrap TrainImageDataset / TestImageDataset in their own loaders; the arrays
(images HxWx3 float32 in [0, 1], masks HxW float32 in {0, 1}) are identical on both.

The modules: layout (resolve_carvana), download (DatasetFetcher), split (get_train_files),
decode (read_pair), datasets (TrainImageDataset); every public name is re-exported here.
"""
from __future__ import annotations

from shared.data.carvana.datasets import CACHE_BUDGET_BYTES, TestImageDataset, TrainImageDataset, resize_description
from shared.data.carvana.decode import (
    check_pair_sizes,
    original_size,
    read_image,
    read_mask,
    read_mask_bits,
    read_pair,
)
from shared.data.carvana.download import COMPETITION, DEFAULT_FILES, DatasetFetcher, default_download_dir
from shared.data.carvana.layout import (
    EXTRACTED,
    KNOWN_ZIPS,
    MASK_SUFFIX,
    PHOTO_SUFFIXES,
    CarvanaLayout,
    resolve_carvana,
)
from shared.data.carvana.split import Sample, car_of, get_test_files, get_train_files

__all__ = [
    "CACHE_BUDGET_BYTES",
    "COMPETITION",
    "DEFAULT_FILES",
    "EXTRACTED",
    "KNOWN_ZIPS",
    "MASK_SUFFIX",
    "PHOTO_SUFFIXES",
    "CarvanaLayout",
    "DatasetFetcher",
    "Sample",
    "TestImageDataset",
    "TrainImageDataset",
    "car_of",
    "check_pair_sizes",
    "default_download_dir",
    "get_test_files",
    "get_train_files",
    "original_size",
    "read_image",
    "read_mask",
    "read_mask_bits",
    "read_pair",
    "resize_description",
    "resolve_carvana",
]
