"""The embedded default: scikit-learn's 8x8 digits resampled to 28x28 the MNIST way, the training ones jittered."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from shared.data.mnist.arrays import IMAGE_SIDE, NUM_CLASSES, MNISTData
from shared.errors import UserError

DIGITS_LOCATION = "sklearn.datasets.load_digits"


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of bilinear resampling with pixel centres aligned (as PIL and OpenCV do)."""
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        low = int(np.floor(src))
        high = min(low + 1, n_in - 1)
        weights[i, low] += 1.0 - (src - low)
        weights[i, high] += src - low
    return weights


@lru_cache(maxsize=1)
def _digits_28() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits resampled the MNIST way: (N, 28, 28) float32 in [0, 1], labels int64."""
    from sklearn.datasets import load_digits  # late: only the embedded default needs scikit-learn

    digits = load_digits()
    small = digits.images / 16.0  # (N, 8, 8), values 0..16 -> [0, 1]
    box = 20  # MNIST fits each digit into a 20x20 box ...
    resize = _bilinear_matrix(small.shape[1], box)
    boxed = np.clip(np.einsum("oi,nij,pj->nop", resize, small, resize), 0.0, 1.0)  # (N, 20, 20)

    # ... and centres it in 28x28 by its centre of mass.
    canvas = np.zeros((len(boxed), IMAGE_SIDE, IMAGE_SIDE), np.float32)
    coords = np.arange(box)
    centre = (IMAGE_SIDE - 1) / 2.0
    for n, image in enumerate(boxed):
        mass = image.sum()
        cy = (image.sum(axis=1) @ coords) / mass if mass > 0 else (box - 1) / 2.0
        cx = (image.sum(axis=0) @ coords) / mass if mass > 0 else (box - 1) / 2.0
        top = int(np.clip(round(centre - cy), 0, IMAGE_SIDE - box))
        left = int(np.clip(round(centre - cx), 0, IMAGE_SIDE - box))
        canvas[n, top:top + box, left:left + box] = image
    return canvas, digits.target.astype(np.int64)


def jitter(images: np.ndarray, rng: np.random.Generator, max_degrees: float = 12.0, max_zoom: float = 0.1,
           max_shift: float = 1.5) -> np.ndarray:
    """A random small rotation, zoom and shift of each (N, 28, 28, 1) image about its centre,
    bilinear, zero outside: a handwritten digit written again a little differently."""
    n, height, width = images.shape[:3]
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, n))
    zoom = rng.uniform(1 - max_zoom, 1 + max_zoom, n)
    shift = rng.uniform(-max_shift, max_shift, (n, 2))
    ys, xs = np.meshgrid(np.arange(height) - (height - 1) / 2, np.arange(width) - (width - 1) / 2, indexing="ij")
    cos, sin = (np.cos(angle) / zoom)[:, None, None], (np.sin(angle) / zoom)[:, None, None]
    # Where each output pixel comes from in the source image (inverse mapping).
    src_y = cos * ys - sin * xs + (height - 1) / 2 + shift[:, 0, None, None]
    src_x = sin * ys + cos * xs + (width - 1) / 2 + shift[:, 1, None, None]
    y0, x0 = np.floor(src_y).astype(int), np.floor(src_x).astype(int)
    fy, fx = src_y - y0, src_x - x0
    padded = np.pad(images[..., 0], ((0, 0), (1, 2), (1, 2)))  # zeros outside, safe corner reads
    index = np.arange(n)[:, None, None]

    def at(y, x):
        return padded[index, np.clip(y + 1, 0, height + 2), np.clip(x + 1, 0, width + 2)]

    out = ((1 - fy) * (1 - fx) * at(y0, x0) + (1 - fy) * fx * at(y0, x0 + 1)
           + fy * (1 - fx) * at(y0 + 1, x0) + fy * fx * at(y0 + 1, x0 + 1))
    return np.clip(out, 0.0, 1.0).astype(np.float32)[..., np.newaxis]


# 1,438 training digits are too few for 10 epochs of batch 200 to reach MNIST-like accuracy; each is
# also kept as this many jittered copies (the test digits are never altered).
DIGITS_TRAIN_COPIES = 8


def load_digits_28(seed: int = 0, test_share: float = 0.2, train_copies: int = DIGITS_TRAIN_COPIES) -> MNISTData:
    """The embedded default: scikit-learn's digits at 28x28, split train/test per class, seeded;
    the training split gets `train_copies` jittered copies of each digit."""
    if not 0.0 < test_share < 1.0:
        raise UserError(f"the test share must lie strictly between 0 and 1, got {test_share}")
    images, labels = _digits_28()
    rng = np.random.default_rng(seed)
    test_parts = []
    for digit in range(NUM_CLASSES):  # stratified: the same share of every class in test
        members = np.flatnonzero(labels == digit)
        # int(): before numpy 2, round() of a numpy float gave a float.
        test_parts.append(rng.permutation(members)[: int(round(test_share * len(members)))])  # noqa: RUF046
    test_index = np.sort(np.concatenate(test_parts))
    train_index = np.setdiff1d(np.arange(len(labels)), test_index)
    train_images = images[train_index, ..., np.newaxis]  # (N, 28, 28, 1)
    copies = [jitter(train_images, rng) for _ in range(train_copies)]
    note = (f"{len(train_index)} training digits, each also as {train_copies} jittered copies "
            "(rotation up to 12 degrees, zoom 0.9-1.1, shift up to 1.5 px); test digits unaltered") if copies else ""
    return MNISTData(
        train_images=np.concatenate([train_images, *copies]),
        train_labels=np.tile(labels[train_index], 1 + train_copies),
        test_images=images[test_index, ..., np.newaxis],
        test_labels=labels[test_index],
        source="sklearn-digits",
        location=DIGITS_LOCATION,
        note=note,
    )
