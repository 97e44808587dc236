"""The decoded, resized photos and masks of a photo set, kept in one file under the cache folder: the next process
that reads the same set at the same size (the other side, its control, the next run) loads that file instead of
decoding every JPEG and GIF again (at 1918x1280, a GIF mask alone takes about 20 ms)."""
from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shared.atomic import atomic_path
from shared.data.carvana.layout import _cache_root
from shared.data.carvana.split import Sample

FORMAT = 2  # bump when what a file holds changes, so older files are never read as the new kind (2: upright photos,
# masks read by their palette's colours or their alpha)


def decoded_path(samples: Sequence[Sample], shape: tuple[int, int], kind: str = "") -> Path | None:
    """Where the set's decoded samples at (height, width) `shape` are kept: named by a digest of the shape and of
    every photo's and mask's path, size and modification time, so an edited or replaced file is decoded again; and
    by `kind` (a folder set's mode and mask threshold: the same files read otherwise). None when a file cannot be
    read (decoding it raises the one-line error)."""
    digest = hashlib.sha256(f"{FORMAT} {shape}{f' {kind}' if kind else ''}".encode())
    try:
        for sample in samples:
            for path in (sample.image, sample.mask):
                stat = os.stat(path)
                digest.update(f"\n{Path(path).resolve()} {stat.st_size} {stat.st_mtime_ns}".encode())
    except OSError:
        return None
    return _cache_root() / "decoded" / f"{digest.hexdigest()[:24]}.npz"


def load_decoded(path: Path | None, count: int, shape: tuple[int, int],
                 channels: int = 3) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The samples kept at `path` by index ({} when there is no such file, or it is unreadable or of another set:
    the photos are then decoded again)."""
    if path is None or not path.is_file():
        return {}
    try:
        with np.load(path) as kept:
            photos, masks = kept["photos"], kept["masks"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return {}
    if photos.shape != (count, *shape, channels) or masks.shape != (count, *shape) or photos.dtype != np.uint8:
        return {}
    return {index: (photos[index], masks[index]) for index in range(count)}


def save_decoded(path: Path | None, decoded: dict[int, tuple[np.ndarray, np.ndarray]], count: int) -> None:
    """Keep a whole set's decoded samples (uint8 photos (N, H, W, C), masks (N, H, W)) at `path`, written under a
    temporary name and renamed; a read-only or full cache folder only means decoding again next time."""
    if path is None or len(decoded) != count:
        return
    try:
        with atomic_path(path, ".npz") as temporary:
            np.savez(temporary, photos=np.stack([decoded[i][0] for i in range(count)]),
                     masks=np.stack([decoded[i][1] for i in range(count)]))
    except OSError:
        pass
