"""Pictures of masks in numpy, shared by both sides' TensorBoard callbacks and the report."""
from __future__ import annotations

import numpy as np

OVERLAY_COLOR = np.array([1.0, 0.2, 0.2], np.float32)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The photo with the mask tinted red: (H, W, 3) float in [0, 1]."""
    mask = (np.asarray(mask) > 0.5)[..., None]
    return np.where(mask, (1 - alpha) * image + alpha * OVERLAY_COLOR, image).astype(np.float32)


def mask_panel(image: np.ndarray, true_mask: np.ndarray, predicted: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """image | true mask | predicted mask | overlay of the prediction, side by side: (H, 4W, 3) uint8.
    A photo larger than the masks (the original U-Net's mirrored border) is cropped to its centre."""
    height, width = true_mask.shape
    border = (image.shape[0] - height) // 2  # as wide on both axes
    image = image[border:border + height, border:border + width]
    image = np.repeat(image, 3 // image.shape[-1], -1)  # a grayscale image (H, W, 1) shown as RGB
    binary = (predicted > threshold).astype(np.float32)
    panels = [image, np.repeat(true_mask[..., None], 3, -1), np.repeat(binary[..., None], 3, -1),
              overlay(image, binary)]
    return (np.concatenate(panels, axis=1) * 255).round().astype(np.uint8)


def preview_panels(samples: list[tuple[np.ndarray, np.ndarray]], predict, threshold: float = 0.5) -> list[np.ndarray]:
    """One mask_panel per (image, true mask) sample, from the model's probabilities (predict: NHWC -> NHW)."""
    if not samples:
        return []
    probabilities = predict(np.stack([image for image, _ in samples]))
    return [mask_panel(image, mask, predicted, threshold) for (image, mask), predicted in zip(samples, probabilities)]
