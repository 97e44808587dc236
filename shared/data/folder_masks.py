"""The masks of your own folder set, read by what they show: gray levels, a colour mask's brightest channel, a palette
mask's colours, a shape drawn in alpha; thresholded to {0, 1}; and a set with nothing to learn refused."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from shared.data.carvana.decode import check_finite, upright
from shared.errors import DataError

RANGE_READ = 8  # masks read again, only to refuse a --mask-threshold, for the range of values it missed


def mask_values(path: Path) -> np.ndarray:
    """A mask's values (H, W), upright as its image is read: gray levels, 16-bit or float values (a NaN or infinite one
    is a DataError); a colour mask's brightest channel; a palette mask's colours (not its indices: a palette may put
    white at index 0). With an alpha channel: the alpha when the colour is one colour throughout (the shape drawn in
    transparency), else the colour."""
    with upright(path, "mask") as (img, _):
        if img.mode in ("P", "PA"):
            img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
        if img.mode in ("LA", "La", "RGBA", "RGBa"):
            values = np.asarray(img if img.mode == "LA" else img.convert("RGBA"))
            colour, alpha = values[..., :-1].max(axis=2), values[..., -1]
            single = colour.min() == colour.max()
            return alpha if single and alpha.min() != alpha.max() else colour
        if img.mode in ("RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
            return np.asarray(img.convert("RGB")).max(axis=2)
        values = np.asarray(img.convert("L") if img.mode == "1" else img)
    check_finite(values, path, "mask")
    return values


def distinct(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return np.flatnonzero(np.bincount(values.ravel(), minlength=256))  # faster than np.unique
    return np.unique(values)


def read_folder_mask(path: Path, threshold: float | None, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask as uint8 (H, W) in {0, 1}, resized to size=(w, h) by nearest neighbour: foreground where the value is
    non-zero (at most two values, one of them 0), or where it is at least `threshold` (--mask-threshold)."""
    values = mask_values(path)
    if threshold is not None:
        binary = values >= threshold
    else:
        found = distinct(values)
        if len(found) > 2 or (len(found) == 2 and found[0] != 0):
            shown = ", ".join(f"{v:g}" for v in found[:6].tolist()) + (", ..." if len(found) > 6 else "")
            raise DataError(path, f"mask holds {len(found)} values ({shown}), not background 0 and one foreground "
                                  "value; pass --mask-threshold T to make values >= T foreground (instance labels "
                                  "0, 1, 2, ...: --mask-threshold 1; a JPEG mask's 0/255 with noise: 128)")
        binary = values != 0
    binary = binary.astype(np.uint8)
    if size is not None and (binary.shape[1], binary.shape[0]) != tuple(size):
        binary = np.asarray(Image.fromarray(binary, "L").resize(tuple(size), Image.NEAREST))
    return binary


def check_foreground(mask_dir: Path, mask_files: Sequence[Path], masks: Sequence[np.ndarray],
                     threshold: float | None) -> None:
    """Refuse a set whose masks, as decoded for training (mask_files: each one's file, in the same order), are all
    empty or all full: there is nothing to learn, and Dice scores an empty prediction of an empty mask 1. A
    --mask-threshold that does it names the range of the masks' values (of the first RANGE_READ masks: they are read
    again only for this message)."""
    if not masks or (any(m.any() for m in masks) and not all(m.all() for m in masks)):
        return
    state = "empty (no foreground pixel)" if not any(m.any() for m in masks) else "full (every pixel foreground)"
    shape = "x".join(map(str, masks[0].shape))
    if threshold is None:
        raise DataError(mask_dir, f"all {len(masks)} masks are {state} at the training size {shape} "
                                         "(height x width): nothing to learn")
    read = [mask_values(path) for path in mask_files[:RANGE_READ]]
    low, high = min(float(v.min()) for v in read), max(float(v.max()) for v in read)
    where = "the masks'" if len(read) == len(masks) else f"the first {len(read)} masks'"
    raise DataError(mask_dir, f"--mask-threshold {threshold:g} makes all {len(masks)} masks {state}: "
                                     f"{where} values run from {low:g} to {high:g}")
