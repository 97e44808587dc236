"""The training samples split into train and validation by car (no car on both sides), and the test photos."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.data.carvana.layout import MASK_SUFFIX, CarvanaLayout, _photos
from shared.errors import DataError, UserError


@dataclass(frozen=True)
class Sample:
    """One training photo and its mask."""

    image: Path  # train/<car>_<angle>.jpg
    mask: Path  # train_masks/<car>_<angle>_mask.gif
    car: str  # <car>: the 16 angles of one car share it
    name: str  # the photo's file name, as in train_masks.csv


def car_of(photo: Path) -> str:
    """The car id of a photo named <car>_<angle>.jpg."""
    return photo.stem.rsplit("_", 1)[0]


def get_train_files(layout: CarvanaLayout, sample_size: int | None = None, validation_size: float = 0.2,
                    seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """The (train, validation) samples, split by car so no car is on both sides.

    Cars are shuffled by a generator seeded with seed. sample_size keeps the first cars of that
    order until at least sample_size photos are kept (whole cars, so it rounds up; None keeps
    all); validation_size is the share of the kept cars held out (0: no validation).
    """
    by_car: dict[str, list[Sample]] = {}
    for photo in _photos(layout.train_dir):
        sample = Sample(photo, layout.mask_dir / (photo.stem + MASK_SUFFIX), car_of(photo), photo.name)
        by_car.setdefault(sample.car, []).append(sample)
    if not by_car:
        raise DataError(layout.train_dir, "no .jpg photos")
    return split_groups(by_car, sample_size, validation_size, seed)


def split_groups(groups: dict[str, list], sample_size: int | None, validation_size: float, seed: int,
                 unit: str = "car") -> tuple[list, list]:
    """(train, validation) items (each with a .name) of groups (cars, patients, slides), no group on both sides.

    The groups are shuffled by a generator seeded with seed. sample_size keeps the first groups of that order until
    at least sample_size items are kept (whole groups, so it rounds up; None keeps all); validation_size is the
    share of the kept groups held out (0: no validation). Too few groups to split is a UserError saying the numbers.
    """
    if not 0 <= validation_size < 1:
        raise UserError(f"--validation-size must be in [0, 1), got {validation_size}")
    if sample_size is not None and sample_size <= 0:
        raise UserError(f"--sample-size must be positive, got {sample_size}")
    names = sorted(groups)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    if sample_size is not None:
        kept, count = [], 0
        for group in order:
            if count >= sample_size:
                break
            kept.append(group)
            count += len(groups[group])
        order = kept

    # int(): before numpy 2, round() of a numpy float gave a float.
    n_valid = int(round(validation_size * len(order)))  # noqa: RUF046
    used = f"{len(order)} cars are used" if unit == "car" else \
        f"{sum(len(groups[g]) for g in order)} image(s) in {len(order)} {unit}(s) are used"
    if validation_size > 0 and n_valid == 0:
        raise UserError(f"--validation-size {validation_size} leaves no {unit} for validation: {used}; raise it, "
                        "use more images (--sample-size), or set it to 0.")
    if n_valid >= len(order):
        raise UserError(f"--validation-size {validation_size} leaves no {unit} for training: {used}; lower it or "
                        "use more images (--sample-size).")
    valid = sorted((s for group in order[:n_valid] for s in groups[group]), key=lambda s: s.name)
    train = sorted((s for group in order[n_valid:] for s in groups[group]), key=lambda s: s.name)
    return train, valid


def get_test_files(layout: CarvanaLayout) -> list[Path]:
    """The test photos, sorted by name."""
    if layout.test_dir is None:
        raise DataError(layout.root, "no test photos; expected test/*.jpg or test.zip")
    return _photos(layout.test_dir)
