"""Reading and writing IDX files (gzipped or not), every malformed header or size a DataError naming the file."""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from shared.errors import DataError, one_line

IDX_UBYTE = 0x08  # the IDX dtype byte for unsigned bytes, the only one MNIST uses
IMAGE_MAGIC = 0x0803  # 2051: unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x0801  # 2049: unsigned bytes, 1 dimension


def _expected_magic(expect_ndim: int | None) -> str:
    if expect_ndim == 3:
        return f"{IMAGE_MAGIC} (an IDX image file)"
    if expect_ndim == 1:
        return f"{LABEL_MAGIC} (an IDX label file)"
    return "0x000008NN (unsigned bytes, NN dimensions)"


def read_idx(path: str | os.PathLike, expect_ndim: int | None = None) -> np.ndarray:
    """The uint8 array stored in an IDX file (gzipped or not), validated against its header.

    expect_ndim=3 accepts only image files (magic 2051), 1 only label files (magic 2049).
    Every problem raises DataError naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except OSError as error:
        raise DataError(path, f"cannot read the file ({one_line(error, name_if_empty=True)})") from None

    # Decide by content as well as by name: a gzip keeps its magic bytes whatever it is called.
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error, ValueError) as error:
            raise DataError(path, f"corrupt gzip file ({one_line(error, name_if_empty=True)})") from None

    if len(raw) < 4:
        raise DataError(path, f"truncated: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    ndim = raw[3]
    if raw[0] or raw[1] or raw[2] != IDX_UBYTE or ndim == 0 or (expect_ndim is not None and ndim != expect_ndim):
        raise DataError(path, f"wrong magic number {magic} (0x{magic:08X}), expected {_expected_magic(expect_ndim)}")

    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(path, f"truncated: the header of {ndim} dimensions needs {header_size} bytes, "
                              f"the file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    needed = math.prod(dims)
    present = len(raw) - header_size
    shape = "x".join(str(d) for d in dims)
    if present < needed:
        raise DataError(path, f"truncated: the header promises {needed} data bytes ({shape}), the file holds {present}")
    if present > needed:
        raise DataError(path, f"{present - needed} unexpected bytes after the {needed} data bytes "
                              f"the header describes ({shape})")
    # frombuffer over bytes is read-only; copy so callers get an ordinary array.
    return np.frombuffer(raw, dtype=np.uint8, count=needed, offset=header_size).reshape(dims).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array of unsigned bytes as an IDX file (gzipped when the name ends in .gz)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer) or (array.size and (array.min() < 0 or array.max() > 255)):
            raise ValueError(f"IDX files written here hold unsigned bytes; got dtype {array.dtype}")
        array = array.astype(np.uint8)
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"an IDX array needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        # mtime=0 so equal arrays give byte-identical files (stable checksums).
        with open(path, "wb") as raw_file, gzip.GzipFile(fileobj=raw_file, mode="wb", mtime=0) as gz:
            gz.write(payload)
    else:
        path.write_bytes(payload)
