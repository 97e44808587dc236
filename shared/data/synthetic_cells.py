"""A generated segmentation folder in the plain layout your own data uses (docs/data.md), for the tests and the worked
example: microscope-like images of cells and their masks.

    <root>/images/<name>.png     grayscale (or colour) 8-bit PNG, or 16-bit TIFF holding 12-bit values
    <root>/masks/<name>.png      0/255 PNG (or 0/1, or a palette GIF <name>_mask.gif)

Cells are bright, blurred, textured ellipses on a dark, uneven, noisy background (the foreground a minority of the
pixels); with majority=True a large tissue region covers most of the image instead, which is where the Dice of the
trivial all-foreground answer is high. Names are <group>_<index> (p00_000, ...), so --split-by '^(p\\d+)_' keeps a
group's images on one side. Each image is drawn from a generator seeded by (seed, index).

    python -m shared.data.synthetic_cells OUT [--images 60] [--size 128] [--majority] [--seed 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def _blur(values: np.ndarray, passes: int = 2) -> np.ndarray:
    """A cheap separable blur (a 3-tap box, `passes` times): soft edges and smooth texture."""
    for _ in range(passes):
        values = (np.roll(values, 1, 0) + values + np.roll(values, -1, 0)) / 3
        values = (np.roll(values, 1, 1) + values + np.roll(values, -1, 1)) / 3
    return values


def draw_cells(rng: np.random.Generator, height: int, width: int, majority: bool = False) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """(image float (H, W) in [0, 1], mask bool (H, W)): cells (or, with majority, one large tissue region)."""
    y, x = np.mgrid[:height, :width].astype(np.float64)
    mask = np.zeros((height, width), bool)
    if majority:  # a few large overlapping lobes: about 70% of the pixels
        for _ in range(rng.integers(2, 5)):
            cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
            ry, rx = rng.uniform(0.3, 0.5) * height, rng.uniform(0.3, 0.5) * width
            mask |= ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
    else:  # 4-14 cells of 4-12% of the side each, at any angle
        side = min(height, width)
        for _ in range(rng.integers(4, 15)):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            ry, rx, angle = rng.uniform(0.04, 0.12) * side, rng.uniform(0.04, 0.12) * side, rng.uniform(0, np.pi)
            dy, dx = y - cy, x - cx
            u, v = dy * np.cos(angle) + dx * np.sin(angle), -dy * np.sin(angle) + dx * np.cos(angle)
            mask |= (u / ry) ** 2 + (v / rx) ** 2 <= 1
    background = 0.12 + 0.08 * (x / width) + 0.06 * np.sin(y / height * np.pi)  # uneven illumination
    texture = _blur(rng.normal(0, 1, (height, width)), 3)
    foreground = rng.uniform(0.45, 0.7) + 0.25 * texture
    image = np.where(mask, foreground, background)
    image = _blur(image, 1) + rng.normal(0, 0.06, (height, width))  # soft edges, camera noise
    return np.clip(image, 0, 1), mask


def generate_cells(root: str | Path, images: int = 60, size: int | tuple[int, int] = 128, seed: int = 0,
                   majority: bool = False, groups: int = 12, image_format: str = "png", mask_format: str = "png",
                   colour: bool = False, sizes: list[tuple[int, int]] | None = None) -> Path:
    """Write the folder; size is N or (height, width), or `sizes` gives each image its own (cycled).
    image_format "png" (8-bit) or "tif" (16-bit, 12-bit values); mask_format "png" (0/255), "png01" (0/1) or "gif"
    (palette indices 0/1, named <name>_mask.gif)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    shape = (size, size) if isinstance(size, int) else tuple(size)
    for index in range(images):
        rng = np.random.default_rng([seed, index])
        height, width = sizes[index % len(sizes)] if sizes else shape
        image, mask = draw_cells(rng, height, width, majority)
        name = f"p{index % groups:02d}_{index:03d}"
        if image_format == "tif":
            Image.fromarray(np.rint(image * 4095).astype(np.uint16)).save(root / "images" / f"{name}.tif")
        else:
            pixels = np.rint(image * 255).astype(np.uint8)
            if colour:  # stained tissue: a pink-purple tint
                pixels = np.stack([pixels, (pixels * 0.55).astype(np.uint8), (pixels * 0.8).astype(np.uint8)], -1)
            Image.fromarray(pixels).save(root / "images" / f"{name}.png")
        bits = mask.astype(np.uint8)
        if mask_format == "gif":
            Image.fromarray(bits, "L").save(root / "masks" / f"{name}_mask.gif")  # palette indices 0/1
        else:
            Image.fromarray(bits if mask_format == "png01" else bits * 255, "L").save(root / "masks" / f"{name}.png")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.data.synthetic_cells", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--majority", action="store_true", help="a large tissue region covers most of each image")
    args = parser.parse_args(argv)
    generate_cells(args.out, args.images, args.size, args.seed, args.majority)
    print(f"wrote {args.images} images and masks into {args.out}/images and {args.out}/masks")


if __name__ == "__main__":
    main()
