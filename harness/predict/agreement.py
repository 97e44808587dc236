"""How far the two sides' submissions agree, read back from the files row by row (never all masks at once): the share
of pixels on which their masks agree at each photo's original size, per photo (agreement.csv) and overall, the photos
with the lowest agreement, and how many rows are identical. The overlap of two masks is computed on their runs, so a
1918x1280 mask is never unpacked."""
from __future__ import annotations

import csv
import gzip
import heapq
import io
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from shared.atomic import atomic_path
from shared.data.carvana.decode import original_size
from shared.errors import DataError

LOWEST = 10  # photos listed with the lowest agreement
FIELD_LIMIT = 1 << 30  # a speckled 1918x1280 mask runs past the csv module's default 131,072 characters


def runs_of(rle: str) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of a run-length text, 0-indexed, ends exclusive, over the row-major flattened mask."""
    values = np.array(rle.split(), dtype=np.int64).reshape(-1, 2)
    starts = values[:, 0] - 1
    return starts, starts + values[:, 1]


def overlap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> int:
    """Pixels in both masks, from their sorted, disjoint runs: for each run of a, the length of b's runs inside it,
    read off b's cumulative lengths at the run's two ends."""
    b_starts, b_ends = b
    if not len(a[0]) or not len(b_starts):
        return 0
    before = np.concatenate([[0], np.cumsum(b_ends - b_starts)])  # length of b's runs before run j

    def covered(x: np.ndarray) -> np.ndarray:  # length of b inside [0, x)
        j = np.searchsorted(b_starts, x, side="right")  # runs of b that start at or before x
        last = np.maximum(j - 1, 0)
        partial = np.minimum(x, b_ends[last]) - b_starts[last]
        return np.where(j > 0, before[last] + partial, 0)

    return int(np.sum(covered(a[1]) - covered(a[0])))


def open_rows(path: Path):
    """A submission's rows after the header, gzipped or plain."""
    raw = open(path, "rb")
    text = gzip.open(raw, "rt", encoding="utf-8", newline="") if raw.peek(2)[:2] == b"\x1f\x8b" else \
        io.TextIOWrapper(raw, encoding="utf-8", newline="")
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    rows = csv.reader(text)
    next(rows, None)
    return text, rows


def photo_sizes(photos: list[str]):
    """A cursor over the photo list: the path of the next photo of a name (the rows keep the list's order; photos
    skipped as unreadable have no row)."""
    position = 0

    def find(name: str) -> str:
        nonlocal position
        while position < len(photos) and Path(photos[position]).name != name:
            position += 1
        if position == len(photos):
            raise DataError(name, "a row of the submission names no photo of the prediction")
        position += 1
        return photos[position - 1]

    return find


def mask_agreement(out: Path, sides: list[str], photos_file: Path) -> dict:
    """Both sides' submit.csv.gz compared row by row; agreement.csv gets one line per photo."""
    photos = photos_file.read_text().splitlines()
    find = photo_sizes(photos)
    (text_a, rows_a), (text_b, rows_b) = (open_rows(out / side / "submit.csv.gz") for side in sides)
    lowest: list[tuple[float, str]] = []
    pixels = agreeing = identical = count = 0
    target = out / "agreement.csv"
    try:
        with atomic_path(target, suffix=".csv") as temporary, open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["img", "width", "height", "agreement", *(f"{side}_pixels" for side in sides),
                             "identical_rle"])
            bar = tqdm(total=len(photos), unit=" photos", desc="agreement", disable=None, dynamic_ncols=True)
            for (name, rle_a), (name_b, rle_b) in zip(rows_a, rows_b):
                bar.update(1)
                if name != name_b:
                    raise DataError(out / sides[1] / "submit.csv.gz", f"row {count + 2} is {name_b}, but "
                                                                      f"{sides[0]}'s is {name}")
                width, height = original_size(find(name))
                a, b = runs_of(rle_a), runs_of(rle_b)
                in_a, in_b = int(np.sum(a[1] - a[0])), int(np.sum(b[1] - b[0]))
                size = width * height
                agree = size - (in_a + in_b - 2 * overlap(a, b))  # pixels in neither mask or in both
                share = agree / size
                writer.writerow([name, width, height, f"{share:.6f}", in_a, in_b, int(rle_a == rle_b)])
                pixels, agreeing, count = pixels + size, agreeing + agree, count + 1
                identical += rle_a == rle_b
                heapq.heappush(lowest, (-share, name))  # the largest share on top: popped when there are too many
                if len(lowest) > LOWEST:
                    heapq.heappop(lowest)
            bar.close()
            for side, rows in zip(sides, (rows_a, rows_b)):
                if next(rows, None) is not None:
                    raise DataError(out / side / "submit.csv.gz", f"has more rows than the other side's ({count})")
    finally:
        text_a.close()
        text_b.close()
    return {"kind": "pixels", "photos": count, "pixels": pixels, "agreeing_pixels": agreeing,
            "agreement": agreeing / pixels if pixels else None, "identical_rows": identical, "rows": count,
            "lowest": [{"img": name, "agreement": -share} for share, name in sorted(lowest, reverse=True)],
            "per_photo": str(target)}
