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


_EXIF_ORIENTATION = 0x0112  # the EXIF tag of how the camera was held
TURNED = (5, 6, 7, 8)  # the EXIF orientations that turn the picture by 90 degrees: width and height swap


def _orientation(img: Image.Image) -> int:
    """An opened image's EXIF orientation (1: as stored), from its header. Image.Image.getexif, not PNG's own, which
    decodes the whole file to look for EXIF after the pixels; ImageOps.exif_transpose then reuses what this read."""
    return Image.Image.getexif(img).get(_EXIF_ORIENTATION, 1)


def upright_size(img: Image.Image) -> tuple[int, int]:
    """An opened image's (width, height) as upright() turns it, from its header only."""
    width, height = img.size
    return (height, width) if _orientation(img) in TURNED else (width, height)


@contextlib.contextmanager
def upright(path: Path, what: str, draft: tuple[str, tuple[int, int]] | None = None):
    """The one reader of every photo and mask (training, validation, prediction, and the size a predicted mask is
    written at): the image decoded now (a truncated file fails here, inside _decoding) and turned as its EXIF
    orientation says (Pillow's ImageOps.exif_transpose), as an image viewer shows it; with its upright (width,
    height) at full scale. draft=(mode, (w, h)): a JPEG may decode at 1/2, 1/4, 1/8 scale, never below the upright
    (w, h)."""
    with _decoding(path, what), Image.open(path) as img:
        orientation, size = _orientation(img), upright_size(img)
        if draft is not None:
            mode, (width, height) = draft
            img.draft(mode, (height, width) if orientation in TURNED else (width, height))
        img.load()
        yield (ImageOps.exif_transpose(img) if orientation != 1 else img), size


def original_size(path: str | os.PathLike) -> tuple[int, int]:
    """The upright (width, height) of an image (as upright() reads it), from its header only."""
    path = Path(path)
    with _decoding(path, "image"), Image.open(path) as img:
        return upright_size(img)


def check_pair_sizes(samples: Sequence[Sample]) -> None:
    """Every mask has its photo's size (headers only: cheap enough to check all before training starts)."""
    for sample in samples:
        photo, mask = original_size(sample.image), original_size(sample.mask)
        if photo != mask:
            raise DataError(sample.mask, f"mask is {mask[0]}x{mask[1]} but its photo {sample.name} "
                                         f"is {photo[0]}x{photo[1]}")


def _load_rgb(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """The photo as uint8 (H, W, 3), resized to size=(w, h) bilinearly."""
    # JPEG can decode at 1/2, 1/4, 1/8 scale directly; draft picks the smallest >= size.
    with upright(path, "JPEG", None if size is None else ("RGB", size)) as (img, _):
        img = img.convert("RGB")
        if size is not None and img.size != tuple(size):
            img = img.resize(tuple(size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def _load_mask(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """The mask as uint8 (H, W) in {0, 1}, resized to size=(w, h) with nearest neighbour."""
    with upright(path, "mask") as (img, _):
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


def read_photo(path: str | os.PathLike, size: tuple[int, int] | None = None,
               mode: str = "RGB") -> tuple[np.ndarray, tuple[int, int]]:
    """Any photo PIL reads (JPEG, PNG, TIFF, ...), for training a folder set and for prediction alike: uint8 (H, W, 3)
    ("RGB") or (H, W) ("L"), upright as its EXIF orientation says (upright()), 16-bit and float images stretched onto
    0..255 (_eight_bit), resized to size=(w, h) the way read_image does (JPEG draft, then bilinear); and its upright
    (width, height), the size its mask is predicted at. Unreadable, or a NaN or infinite pixel: DataError naming it."""
    path = Path(path)
    with upright(path, "photo", None if size is None else (mode, size)) as (img, full_size):
        img = _eight_bit(img, path).convert(mode)
        if size is not None and img.size != tuple(size):
            img = img.resize(tuple(size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8), full_size


def _eight_bit(img: Image.Image, path: Path) -> Image.Image:
    """A 16-bit, 32-bit or float grayscale image stretched from its own darkest to its brightest value onto 0..255
    (Pillow's convert would clip at 255, and a microscope's 12 bits in a 16-bit file would look black); others as
    they are. A NaN or infinite pixel (it would make the whole image black) is a DataError naming the file."""
    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return img
    values = np.asarray(img, dtype=np.float64)
    check_finite(values, path, "image")
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")


def check_finite(values: np.ndarray, path: Path, what: str) -> None:
    """A float image's or mask's values are all finite numbers, or a DataError naming the file."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise DataError(path, f"{what} holds {bad} NaN or infinite pixel value(s); fix or remove the file")


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
