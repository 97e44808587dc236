"""The original U-Net's overlap-tile strategy in numpy: mirror the borders, predict tile by tile, stitch."""
from __future__ import annotations

from typing import Callable

import numpy as np

from shared.data.batches import ceil_div


def mirror_pad(image: np.ndarray, pad: int) -> np.ndarray:
    """Reflect `pad` pixels at each border of an (H, W, C) image: the context the valid convolutions eat."""
    if pad == 0:
        return image
    return np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")


def tile_predict(image: np.ndarray, tile_in: int, tile_out: int,
                 predict: Callable[[np.ndarray], np.ndarray], batch_size: int = 8) -> np.ndarray:
    """Probabilities (H, W) for an (H, W, C) image of any size, from a net that maps a tile_in x tile_in
    input to the tile_out x tile_out centre. predict takes (N, tile_in, tile_in, C) and returns
    (N, tile_out, tile_out)."""
    height, width = image.shape[:2]
    pad = (tile_in - tile_out) // 2
    rows, cols = ceil_div(height, tile_out), ceil_div(width, tile_out)
    # Mirror the border for context, and extend the far edges so the last tile is whole.
    padded = np.pad(image, ((pad, pad + rows * tile_out - height), (pad, pad + cols * tile_out - width), (0, 0)),
                    mode="symmetric")
    corners = [(r * tile_out, c * tile_out) for r in range(rows) for c in range(cols)]
    out = np.zeros((rows * tile_out, cols * tile_out), np.float32)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        tiles = np.stack([padded[y:y + tile_in, x:x + tile_in] for y, x in chunk])
        for (y, x), probabilities in zip(chunk, predict(tiles)):
            out[y:y + tile_out, x:x + tile_out] = probabilities
    return out[:height, :width]
