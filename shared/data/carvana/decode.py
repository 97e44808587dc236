"""Decoding Carvana's photos (JPEG) and masks (GIF) into arrays; an unreadable file is a DataError naming it."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from shared.data.carvana.split import Sample
from shared.errors import DataError, one_line

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@contextlib.contextmanager
def _decoding(path: Path, what: str):
    """Turn whatever PIL raises for a missing, truncated or corrupt file into a DataError naming it."""
    try:
        yield
    except FileNotFoundError as exc:
        raise DataError(path, "file not found") from exc
    except _DECODE_ERRORS as exc:
        raise DataError(path, f"cannot read this {what} ({one_line(exc, name_if_empty=True)})") from exc


def original_size(path: str | os.PathLike) -> tuple[int, int]:
    """The (width, height) of an image, read from its header only."""
    path = Path(path)
    with _decoding(path, "image"), Image.open(path) as img:
        return img.size


def check_pair_sizes(samples: Sequence[Sample]) -> None:
    """Every mask has its photo's size (headers only: cheap enough to check all before training starts)."""
    for sample in samples:
        photo, mask = original_size(sample.image), original_size(sample.mask)
        if photo != mask:
            raise DataError(sample.mask, f"mask is {mask[0]}x{mask[1]} but its photo {sample.name} "
                                         f"is {photo[0]}x{photo[1]}")


def _load_rgb(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """The photo as uint8 (H, W, 3), resized to size=(w, h) bilinearly."""
    with _decoding(path, "JPEG"), Image.open(path) as img:
        if size is not None:
            # JPEG can decode at 1/2, 1/4, 1/8 scale directly; draft picks the smallest >= size.
            img.draft("RGB", size)
        img.load()  # decode now, so a truncated file fails here, inside _decoding
        img = img.convert("RGB")
        if size is not None and img.size != tuple(size):
            img = img.resize(tuple(size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def _load_mask(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """The mask as uint8 (H, W) in {0, 1}, resized to size=(w, h) with nearest neighbour."""
    with _decoding(path, "mask"), Image.open(path) as img:
        img.load()
        values = np.asarray(img)
        binary = img.mode in ("L", "P", "I", "I;16") and _binary(values)
        if not binary:
            # Carvana GIFs hold palette indices 0/1; other writers may need their palette applied.
            values = np.asarray(img.convert("L"))
            binary = _binary(values)
    if not binary:
        shown = np.unique(values)[:6].tolist()
        raise DataError(path, f"mask values {shown} are not 0/1 or 0/255")
    values = (values > 0).astype(np.uint8)
    if size is not None and (values.shape[1], values.shape[0]) != tuple(size):
        values = np.asarray(Image.fromarray(values, "L").resize(tuple(size), Image.NEAREST))
    return values


def _binary(values: np.ndarray) -> bool:
    """Whether an array holds only 0 and 1, or only 0 and 255."""
    if values.dtype == np.uint8:
        if values.size == 0 or values.max() <= 1:  # Carvana's 0/1 GIFs: one pass, not a histogram
            return True
        seen = np.flatnonzero(np.bincount(values.ravel(), minlength=256))  # faster than np.unique
    else:
        seen = np.unique(values)
    return set(seen.tolist()) <= {0, 1} or set(seen.tolist()) <= {0, 255}


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """A photo as float32 (H, W, 3) in [0, 1]; size=(w, h) resizes it bilinearly. Unreadable: DataError."""
    return _load_rgb(Path(path), size).astype(np.float32) / 255.0


def read_photo(path: str | os.PathLike, size: tuple[int, int] | None = None, mode: str = "RGB",
               upright: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
    """Any photo PIL reads (JPEG, PNG, TIFF, ...), for prediction: uint8 (H, W, 3) ("RGB") or (H, W) ("L"), turned
    upright as its EXIF orientation says (unless upright=False: a training image, whose mask was drawn on the stored
    pixels), 16-bit and float images stretched onto 0..255 (_eight_bit), resized to size=(w, h) the way read_image
    does (JPEG draft, then bilinear); and its upright (width, height), the size its mask is predicted at. Unreadable:
    DataError naming it."""
    path = Path(path)
    with _decoding(path, "photo"), Image.open(path) as img:
        width, height = img.size
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1) if upright else 1
        if size is not None:
            img.draft(mode, size)
        img.load()  # decode now, so a truncated file fails here, inside _decoding
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
        img = _eight_bit(img).convert(mode)
        if size is not None and img.size != tuple(size):
            img = img.resize(tuple(size), Image.BILINEAR)
        upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)  # turned by 90 degrees
        return np.asarray(img, dtype=np.uint8), upright


def _eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grayscale image stretched from its own darkest to its brightest value onto 0..255
    (Pillow's convert would clip at 255, and a microscope's 12 bits in a 16-bit file would look black); others as
    they are."""
    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return img
    values = np.asarray(img, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")


_EXIF_ORIENTATION = 0x0112  # the EXIF tag of how the camera was held


def read_mask(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask (GIF, values 0/1 or 0/255) as float32 (H, W) in {0, 1}; size=(w, h) resizes with nearest."""
    return _load_mask(Path(path), size).astype(np.float32)


def read_mask_bits(path: str | os.PathLike) -> np.ndarray:
    """A mask at its own size as uint8 (H, W) in {0, 1}: what read_mask holds, in a quarter of the memory."""
    return _load_mask(Path(path), None)


def _load_pair(sample: Sample, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Photo (uint8) and mask (uint8 0/1) of a sample, after checking that their sizes agree."""
    photo_size, mask_size = original_size(sample.image), original_size(sample.mask)
    if photo_size != mask_size:
        raise DataError(sample.mask, f"mask is {mask_size[0]}x{mask_size[1]} but its photo "
                                     f"{sample.image.name} is {photo_size[0]}x{photo_size[1]}")
    return _load_rgb(sample.image, size), _load_mask(sample.mask, size)


def read_pair(sample: Sample, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A sample's photo and mask as float32, checked to be the same size; size=(w, h) resizes both."""
    image, mask = _load_pair(sample, size)
    return image.astype(np.float32) / 255.0, mask.astype(np.float32)
