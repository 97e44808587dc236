"""The original U-Net's overlap-tile strategy in numpy: mirror the borders, predict tile by tile, stitch."""
from __future__ import annotations

from typing import Callable

import numpy as np

from shared.data.batches import ceil_div
from shared.tasks import image_shape_of


def mirror_pad(image: np.ndarray, pad: int) -> np.ndarray:
    """Reflect `pad` pixels at each border of an (H, W, C) image: the context the valid convolutions eat."""
    if pad == 0:
        return image
    return np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")


def tile_predict(image: np.ndarray, tile_in: int | tuple[int, int], tile_out: int | tuple[int, int],
                 predict: Callable[[np.ndarray], np.ndarray], batch_size: int = 8) -> np.ndarray:
    """Probabilities (H, W) for an (H, W, C) image of any size, from a net that maps a tile_in input to its
    tile_out centre (each N for N x N, or (height, width)). predict takes (N, *tile_in, C) and returns
    (N, *tile_out)."""
    height, width = image.shape[:2]
    (in_h, in_w), (out_h, out_w) = image_shape_of(tile_in), image_shape_of(tile_out)
    pad = (in_h - out_h) // 2  # the same along both axes
    rows, cols = ceil_div(height, out_h), ceil_div(width, out_w)
    # Mirror the border for context, and extend the far edges so the last tile is whole.
    padded = np.pad(image, ((pad, pad + rows * out_h - height), (pad, pad + cols * out_w - width), (0, 0)),
                    mode="symmetric")
    corners = [(r * out_h, c * out_w) for r in range(rows) for c in range(cols)]
    out = np.zeros((rows * out_h, cols * out_w), np.float32)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        tiles = np.stack([padded[y:y + in_h, x:x + in_w] for y, x in chunk])
        for (y, x), probabilities in zip(chunk, predict(tiles)):
            out[y:y + out_h, x:x + out_w] = probabilities
    return out[:height, :width]
