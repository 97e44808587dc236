"""Kaggle Carvana run-length encoding: masks to and from "start length ..." text, and the img,rle_mask CSV files.

The format of the Carvana Image Masking Challenge (train_masks.csv, sample_submission.csv, submissions):
the mask is flattened row by row (numpy C order), and each run of ones is written as its 1-indexed start
and its length, all space separated; an empty mask is the empty string.
"""
from __future__ import annotations

import csv
import gzip
import io
import os
import re
import secrets
import zlib
from pathlib import Path
from types import TracebackType

import numpy as np

from shared.errors import DataError

CSV_HEADER = ("img", "rle_mask")
# Only ASCII digits and single spaces between them; int() alone would also take "+3", "1_0" and non-ASCII digits.
_RLE_TEXT = re.compile(r"[0-9]+(?: [0-9]+)*|", re.ASCII)


def rle_encode(mask: np.ndarray) -> str:
    """The run-length text of a 2-D mask (any dtype, nonzero = 1), runs over the row-major flattened mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    pixels = np.zeros(mask.size + 2, dtype=np.int8)  # a zero at each end closes the first and last run
    pixels[1:-1] = mask.reshape(-1) != 0
    edges = np.nonzero(np.diff(pixels))[0] + 1  # 1-indexed starts and one-past-the-ends, alternating
    edges[1::2] -= edges[::2]  # ends become lengths
    return " ".join(map(str, edges.tolist()))


def _check_syntax(rle: str) -> str:
    """The text with single spaces, if it is pairs of non-negative integers; else ValueError (cheap: no parsing)."""
    if not isinstance(rle, str):  # e.g. NaN where pandas read an empty cell
        raise ValueError(f"run-length text must be a string, got {type(rle).__name__}")
    text = rle.strip()
    if not _RLE_TEXT.fullmatch(text):
        text = " ".join(text.split())  # tolerate tabs, newlines and repeated spaces, nothing else
        if not _RLE_TEXT.fullmatch(text):
            bad = next(t for t in text.split() if not (t.isascii() and t.isdigit()))
            raise ValueError(f"run-length text holds {bad[:20]!r}, not a non-negative integer")
    count = text.count(" ") + 1 if text else 0
    if count % 2:
        raise ValueError(f"run-length text has an odd number of integers ({count}); it must be start/length pairs")
    return text


def _parse_runs(rle: str) -> np.ndarray:
    """The (starts, lengths) pairs of a run-length text as an (n, 2) int64 array; bad syntax raises ValueError."""
    tokens = _check_syntax(rle).split()
    if any(len(t) > 18 for t in tokens):  # beyond int64, and beyond any image
        raise ValueError("run-length text holds an integer too large for any image")
    return np.array(tokens, dtype=np.int64).reshape(-1, 2)


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """The uint8 (H, W) mask in {0, 1} of a run-length text; invalid text raises ValueError (one line)."""
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) with positive sides, got {tuple(shape)}")
    height, width = (int(s) for s in shape)
    size = height * width
    runs = _parse_runs(rle)
    starts, lengths = runs[:, 0], runs[:, 1]
    ends = starts + lengths  # 1-indexed, one past the last pixel of each run
    if len(runs):
        for check, problem in (
            (starts < 1, "start {start} is below 1"),
            (lengths < 1, "length {length} is below 1"),
            (ends > size + 1, f"run {{start}} {{length}} runs past the end of a {height}x{width} mask ({size} pixels)"),
        ):
            if check.any():
                i = int(np.argmax(check))
                raise ValueError(f"run {i + 1}: " + problem.format(start=starts[i], length=lengths[i]))
        overlap = starts[1:] < ends[:-1]  # touching runs are allowed, overlapping or unsorted ones are not
        if overlap.any():
            i = int(np.argmax(overlap)) + 1
            raise ValueError(
                f"run {i + 1}: start {starts[i]} is not after the previous run "
                f"({starts[i - 1]} {lengths[i - 1]}); runs must be sorted and must not overlap"
            )
    # +1 at each start, -1 one past each end; the running sum is the mask.
    steps = np.zeros(size + 1, dtype=np.int8)
    steps[starts - 1] += 1
    steps[ends - 1] -= 1  # a separate statement: an end may coincide with the next start
    return np.cumsum(steps[:-1], dtype=np.int8).astype(np.uint8).reshape(height, width)


def _open_text(path: Path):
    """The file as text, gunzipped when it starts with the gzip magic bytes."""
    raw = open(path, "rb")
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8", newline="")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def read_rle_csv(path: str | os.PathLike) -> dict[str, str]:
    """{img: rle_mask} of an img,rle_mask CSV (plain or gzipped, header required); bad content raises DataError.

    Row numbers in messages count the lines of the file, the header being row 1. The run-length texts
    are checked for syntax only; their bounds depend on the image size, which rle_decode checks.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    rows: dict[str, str] = {}
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataError(path, "file is empty; expected the header img,rle_mask")
            if [h.strip().lstrip("\ufeff") for h in header] != list(CSV_HEADER):
                raise DataError(path, f"row 1: header is {','.join(header)!r}, expected 'img,rle_mask'")
            for fields in reader:
                row = reader.line_num
                if not fields:
                    continue  # a blank line, e.g. at the end
                if len(fields) != 2:
                    raise DataError(path, f"row {row}: expected 2 fields (img,rle_mask), got {len(fields)}")
                name, rle = fields[0].strip(), fields[1].strip()
                if not name:
                    raise DataError(path, f"row {row}: img is empty")
                if name in rows:
                    raise DataError(path, f"row {row}: img {name!r} appears twice")
                try:
                    _check_syntax(rle)
                except ValueError as error:
                    raise DataError(path, f"row {row}: {name}: {error}") from None
                rows[name] = rle
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as error:
        problem = " ".join(str(error).split()) or type(error).__name__
        raise DataError(path, f"cannot read: {problem}") from None
    return rows


class RLEWriter:
    """Streams img,rle_mask rows into a gzipped CSV (e.g. submit.csv.gz), replacing the file only on success.

    Rows go to a temporary file in the same folder, renamed over `path` when the with-block ends
    normally; if it raises, the temporary file is removed and any earlier file at `path` is untouched.

        with RLEWriter(out / "submit.csv.gz") as writer:
            writer.write("0004d4463b50_01.jpg", mask)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.rows = 0
        self._temp: Path | None = None
        self._raw = None
        self._gzip: gzip.GzipFile | None = None
        self._text: io.TextIOWrapper | None = None
        self._csv = None

    def __enter__(self) -> "RLEWriter":
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        """Create the temporary file and write the header."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        self._temp = folder / f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        # os.open rather than tempfile: the final file gets the usual umask permissions, not 0600.
        raw = os.fdopen(os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")
        inner_name = self.path.name[:-3] if self.path.name.endswith(".gz") else self.path.name
        # mtime=0: the same rows give the same bytes.
        self._raw = raw
        self._gzip = gzip.GzipFile(filename=inner_name, mode="wb", fileobj=raw, mtime=0)
        self._text = io.TextIOWrapper(self._gzip, encoding="utf-8", newline="")
        self._csv = csv.writer(self._text, lineterminator="\n")
        self._csv.writerow(CSV_HEADER)

    def write(self, name: str, mask: np.ndarray) -> None:
        """Append one row: the image file name and the run-length text of its (H, W) mask (nonzero = 1)."""
        self.write_rle(name, rle_encode(mask))

    def write_rle(self, name: str, rle: str) -> None:
        """Append one row with an already encoded run-length text (syntax checked, ValueError if bad)."""
        if self._csv is None:
            raise ValueError("RLEWriter is not open; use it as a context manager")
        self._csv.writerow((name, _check_syntax(rle)))
        self.rows += 1

    def close(self) -> None:
        """Finish the gzip stream, flush it to disk and rename the temporary file over the target."""
        if self._text is None:
            return
        try:
            self._text.close()  # closes the gzip stream but not the raw file it was given
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
            os.replace(self._temp, self.path)
        except BaseException:
            self.abort()
            raise
        self._text = self._gzip = self._csv = self._raw = self._temp = None

    def abort(self) -> None:
        """Drop the temporary file; the target keeps whatever it held before."""
        for stream in (self._text, self._raw):
            try:
                if stream is not None:
                    stream.close()
            except Exception:
                pass  # the file is discarded anyway
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
        self._text = self._gzip = self._csv = self._raw = None
