"""Joint image/mask augmentation in numpy (flip, shift/scale, HSV jitter), the same on both framework sides.

Images are HxWxC float32 in [0, 1] (C = 3, or 1 for grayscale) and masks HxW float32 in {0, 1}, in and out. Every random
choice comes from the numpy generator passed in, which the datasets seed by (seed, epoch, index),
so an augmented sample is identical in TensorFlow and PyTorch and in any data-loading worker.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentRanges:
    """The ranges random_augment draws from (uniformly, except the flip)."""

    flip_p: float = 0.5  # probability of a horizontal flip
    shift: float = 0.0625  # largest shift, as a share of the side (both axes, both directions)
    scale_min: float = 0.9  # zoom range about the centre
    scale_max: float = 1.1
    hue: float = 0.05  # largest hue rotation, in turns (1.0 = 360 degrees)
    saturation: float = 0.15  # largest relative saturation change
    value: float = 0.15  # largest relative brightness change


DEFAULT_RANGES = AugmentRanges()


def hflip(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the image (H, W, C) and its mask (H, W) left to right."""
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])


def _source_coords(n: int, shift: float, scale: float) -> np.ndarray:
    """For each output pixel along one axis, the source coordinate: zoom about the centre, then shift."""
    centre = (n - 1) / 2.0
    return (np.arange(n, dtype=np.float64) - centre - shift) / scale + centre


def _linear_weights(coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of 1-D linear interpolation; outside [0, n-1] the samples blend into 0."""
    low = np.floor(coords).astype(np.int64)
    frac = (coords - low).astype(np.float32)
    high = low + 1
    # A neighbour outside the picture contributes 0 (constant border), so weights go to zero there.
    w_low = np.where((low >= 0) & (low < n), 1.0 - frac, 0.0).astype(np.float32)
    w_high = np.where((high >= 0) & (high < n), frac, 0.0).astype(np.float32)
    return np.clip(low, 0, n - 1), np.clip(high, 0, n - 1), w_low, w_high


def shift_scale(image: np.ndarray, mask: np.ndarray, dx: float, dy: float,
                scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Zoom by `scale` about the centre, then move by (dx, dy) pixels; the same affine for image and mask.

    The border is constant 0 (black photo, background mask): what comes into view is not car.
    The image is resampled bilinearly, the mask with nearest neighbour, so it stays exactly {0, 1}.
    The transform has no rotation, so it is separable: rows and columns are resampled in turn.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    h, w = mask.shape
    ys = _source_coords(h, dy, scale)
    xs = _source_coords(w, dx, scale)

    y0, y1, wy0, wy1 = _linear_weights(ys, h)
    x0, x1, wx0, wx1 = _linear_weights(xs, w)
    rows = image[y0] * wy0[:, None, None] + image[y1] * wy1[:, None, None]  # (H, W, C)
    out = rows[:, x0] * wx0[None, :, None] + rows[:, x1] * wx1[None, :, None]  # (H, W, C)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)

    iy = np.rint(ys).astype(np.int64)
    ix = np.rint(xs).astype(np.int64)
    inside = ((iy >= 0) & (iy < h))[:, None] & ((ix >= 0) & (ix < w))[None, :]
    new_mask = mask[np.clip(iy, 0, h - 1)][:, np.clip(ix, 0, w - 1)]
    new_mask = np.where(inside, new_mask, 0).astype(np.float32)
    return out, new_mask


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] to HSV, each channel in [0, 1] (hue in turns), vectorised over any leading shape."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = np.maximum(np.maximum(r, g), b)
    delta = maxc - np.minimum(np.minimum(r, g), b)
    # Grey pixels have no hue: divide by 1 there. (Dividing, not multiplying by 1/delta, which
    # overflows to inf for denormal deltas and turns 0 * inf into NaN.)
    safe = np.where(delta > 0, delta, 1.0)
    hue = np.where(maxc == r, (g - b) / safe,
                   np.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = np.where(delta > 0, (hue * (1.0 / 6.0)) % 1.0, 0.0)
    sat = delta / np.where(maxc > 0, maxc, 1.0)  # delta is 0 wherever maxc is 0
    return np.stack([hue, sat, maxc], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV (each in [0, 1]) back to RGB in [0, 1], vectorised over any leading shape."""
    h6, s, v = hsv[..., 0] * 6.0, hsv[..., 1], hsv[..., 2]
    vs = v * s
    # The closed form of the six hue sectors: channel c = v - v s clip(min(k, 4 - k), 0, 1),
    # with k = (n + 6 h) mod 6 and n = 5, 3, 1 for red, green, blue.
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (n + h6) % 6.0
        channels.append(v - vs * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.stack(channels, axis=-1)


def hsv_jitter(image: np.ndarray, dh: float, ds: float, dv: float) -> np.ndarray:
    """Rotate the hue by dh turns and scale saturation by (1 + ds) and brightness by (1 + dv), clipped to [0, 1]."""
    hsv = rgb_to_hsv(image.astype(np.float32))
    hsv[..., 0] = (hsv[..., 0] + dh) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * (1.0 + ds), 0.0, 1.0)
    hsv[..., 2] = np.clip(hsv[..., 2] * (1.0 + dv), 0.0, 1.0)
    return np.clip(hsv_to_rgb(hsv), 0.0, 1.0).astype(np.float32)


def random_augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                   ranges: AugmentRanges = DEFAULT_RANGES) -> tuple[np.ndarray, np.ndarray]:
    """Flip, shift/scale (image and mask together) and HSV jitter (image only; brightness alone for grayscale), all
    drawn from rng.

    Every parameter is drawn, in a fixed order, whether or not it ends up changing anything,
    so the generator's stream, and thus the result, depends only on how rng was seeded.
    """
    h, w = mask.shape
    flip = rng.random() < ranges.flip_p
    dx = rng.uniform(-ranges.shift, ranges.shift) * w
    dy = rng.uniform(-ranges.shift, ranges.shift) * h
    scale = rng.uniform(ranges.scale_min, ranges.scale_max)
    dh = rng.uniform(-ranges.hue, ranges.hue)
    ds = rng.uniform(-ranges.saturation, ranges.saturation)
    dv = rng.uniform(-ranges.value, ranges.value)

    if flip:
        image, mask = hflip(image, mask)
    image, mask = shift_scale(image, mask, dx, dy, scale)
    if image.shape[-1] == 3:
        image = hsv_jitter(image, dh, ds, dv)
    else:  # a grey pixel has no hue and no saturation: HSV jitter of its RGB copy only scales its brightness
        image = np.clip(image * np.float32(1.0 + dv), 0.0, 1.0).astype(np.float32)
    return image, mask
