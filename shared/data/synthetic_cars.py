"""The embedded Carvana stand-in: generated car photos and masks in exactly the Kaggle Carvana layout and formats.

    <root>/train/<car>_<angle>.jpg              16 angles ("01".."16") per car, car ids of 12 hex digits
    <root>/train_masks/<car>_<angle>_mask.gif   palette GIF, values 0/1 (1 = car, shadow excluded)
    <root>/train_masks.csv                      img,rle_mask (run-length text of each mask, shared/rle.py)
    <root>/test/<car>_<angle>.jpg
    <root>/sample_submission.csv                img,rle_mask with the placeholder "1 1" for every test image

Each photo and mask is drawn by shared/data/car_render.py from a numpy generator seeded by
(seed, split, car, angle).
"""
from __future__ import annotations

import os
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from shared.data.car_design import Car, design_car
from shared.data.car_render import ANGLES, render
from shared.errors import UserError
from shared.rle import rle_encode

SOURCE_NAME = "synthetic-carvana"
DEFAULT_SIZE = (1918, 1280)  # (width, height) of Kaggle's Carvana photos
TRAIN_DIR, MASK_DIR, TEST_DIR = "train", "train_masks", "test"
MASKS_CSV, SAMPLE_SUBMISSION_CSV = "train_masks.csv", "sample_submission.csv"
PLACEHOLDER_RLE = "1 1"  # what Kaggle's sample_submission.csv holds for every image
JPEG_QUALITY = 90
MIN_SIDE = 32  # below this the wheels and windows vanish


# ----------------------------------------------------------------------------- the dataset

def _car_ids(seed: int, count: int) -> list[str]:
    """`count` distinct ids of 12 hex digits, like Kaggle's "00087a6bd4dc"."""
    rng = np.random.default_rng([seed, 2])
    ids: list[str] = []
    while len(ids) < count:
        car_id = rng.bytes(6).hex()
        if car_id not in ids:
            ids.append(car_id)
    return ids


def _write_car(root: Path, car: Car, split: int, index: int, size: tuple[int, int],
               seed: int) -> list[tuple[str, str]]:
    """Write one car's 16 photos (and for training cars its masks); return its (img, rle_mask) rows."""
    rows = []
    for angle_index, angle in enumerate(ANGLES):
        photo, mask = render(car, angle_index, size, np.random.default_rng([seed, split, index, angle_index]))
        name = f"{car.car_id}_{angle}.jpg"
        photo.save(root / (TRAIN_DIR if split == 0 else TEST_DIR) / name, quality=JPEG_QUALITY)
        if split == 0:
            mask.save(root / MASK_DIR / f"{car.car_id}_{angle}_mask.gif")
            rows.append((name, rle_encode(np.asarray(mask))))
        else:
            rows.append((name, PLACEHOLDER_RLE))
    return rows


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("img,rle_mask\n")
        handle.writelines(f"{name},{rle}\n" for name, rle in sorted(rows))


def _check_arguments(n_cars: int, n_test_cars: int, size: tuple[int, int], seed: int) -> tuple[int, int]:
    if int(n_cars) < 1 or int(n_test_cars) < 0:
        raise UserError(f"synthetic Carvana needs n_cars >= 1 and n_test_cars >= 0, got {n_cars} and {n_test_cars}")
    if int(seed) < 0:
        raise UserError(f"the seed must be non-negative, got {seed}")
    if len(size) != 2 or min(int(s) for s in size) < MIN_SIDE:
        raise UserError(f"synthetic Carvana images must be at least {MIN_SIDE}x{MIN_SIDE} (width, height), got {size}")
    return int(size[0]), int(size[1])


def generate_synthetic_carvana(root: str | os.PathLike, n_cars: int = 16, n_test_cars: int = 2,
                               size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0,
                               workers: int | None = None) -> Path:
    """Generate the dataset at `root` (which must not exist or be empty) and return root.

    Files are written into a temporary sibling folder renamed to `root` when complete, so an interrupted
    run leaves nothing half-written at root. The result depends only on (n_cars, n_test_cars, size,
    seed), not on `workers` (threads; default: up to 8, one per CPU).
    """
    size = _check_arguments(n_cars, n_test_cars, size, seed)
    root = Path(root).expanduser()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"{root} already exists and is not empty; remove it or choose another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    temp = root.parent / f".{root.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        for folder in (TRAIN_DIR, MASK_DIR, TEST_DIR):
            (temp / folder).mkdir(parents=True)
        ids = _car_ids(seed, n_cars + n_test_cars)
        jobs = [(0, i, ids[i]) for i in range(n_cars)] + [(1, i, ids[n_cars + i]) for i in range(n_test_cars)]

        def one(job: tuple[int, int, str]) -> tuple[int, list[tuple[str, str]]]:
            split, index, car_id = job
            car = design_car(car_id, np.random.default_rng([seed, split, index]))
            return split, _write_car(temp, car, split, index, size, seed)

        workers = workers or min(8, os.cpu_count() or 1)
        pool = ThreadPoolExecutor(max_workers=workers)  # PIL releases the GIL while resizing and encoding
        try:
            results = list(pool.map(one, jobs))
        finally:
            pool.shutdown(cancel_futures=True)  # on Ctrl-C, stop after the cars in progress
        _write_csv(temp / MASKS_CSV, [row for split, rows in results if split == 0 for row in rows])
        _write_csv(temp / SAMPLE_SUBMISSION_CSV, [row for split, rows in results if split == 1 for row in rows])
        if root.is_dir():
            root.rmdir()  # empty (checked above); rename cannot replace a folder on every platform
        os.rename(temp, root)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return root


def default_cache_dir() -> Path:
    """$TWINNETS_CACHE, or ~/.cache/twinnets."""
    cache = os.environ.get("TWINNETS_CACHE")
    return Path(cache).expanduser() if cache else Path.home() / ".cache" / "twinnets"


def _is_complete(root: Path, n_cars: int, n_test_cars: int) -> bool:
    """Whether root holds a whole generated dataset (only a finished generation is ever renamed to root)."""
    try:
        return ((root / MASKS_CSV).is_file() and (root / SAMPLE_SUBMISSION_CSV).is_file()
                and len(list((root / TRAIN_DIR).glob("*.jpg"))) == n_cars * len(ANGLES)
                and len(list((root / MASK_DIR).glob("*_mask.gif"))) == n_cars * len(ANGLES)
                and len(list((root / TEST_DIR).glob("*.jpg"))) == n_test_cars * len(ANGLES))
    except OSError:
        return False


def synthetic_carvana(cache_dir: str | os.PathLike | None = None, n_cars: int = 16, n_test_cars: int = 2,
                      size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0, workers: int | None = None) -> Path:
    """The cached dataset folder <cache>/synthetic-carvana-<n_cars>-<n_test_cars>-<w>x<h>-s<seed>, generated once."""
    width, height = _check_arguments(n_cars, n_test_cars, size, seed)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = cache / f"{SOURCE_NAME}-{n_cars}-{n_test_cars}-{width}x{height}-s{seed}"
    if _is_complete(root, n_cars, n_test_cars):
        return root
    if root.exists():  # damaged by hand (a finished generation is complete): make it again
        shutil.rmtree(root)
    try:
        return generate_synthetic_carvana(root, n_cars, n_test_cars, (width, height), seed, workers)
    except (UserError, OSError):
        if _is_complete(root, n_cars, n_test_cars):  # another process finished the same folder first
            return root
        raise
