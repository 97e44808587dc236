"""MNIST as numpy arrays (IDX files, Keras' mnist.npz, a download, or scikit-learn's digits resampled to 28x28)."""
from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from shared.errors import DataError, UserError

# The four files by their standard names (without .gz; each may also be gzipped).
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
NPZ_NAME = "mnist.npz"  # Keras' single-file copy (keys x_train, y_train, x_test, y_test)

# Public mirrors, tried in order; the original site often refuses robots, so it comes last.
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# MD5 of the gzipped files, as published with torchvision.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

IMAGE_SIDE = 28
NUM_CLASSES = 10
IDX_UBYTE = 0x08  # the IDX dtype byte for unsigned bytes, the only one MNIST uses
IMAGE_MAGIC = 0x0803  # 2051: unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x0801  # 2049: unsigned bytes, 1 dimension
DIGITS_LOCATION = "sklearn.datasets.load_digits"


# eq=False: the generated __eq__/__hash__ would compare numpy arrays, which raises.
@dataclass(frozen=True, eq=False)
class MNISTData:
    """Train and test splits in the canonical layout: images (N, 28, 28, 1) float32 in [0, 1], labels (N,) int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # "mnist" | "sklearn-digits"
    location: str  # the folder or file read, or "sklearn.datasets.load_digits"
    note: str = ""  # how the data was altered, if it was (said in every report)

    def describe(self) -> dict:
        """What the reports print about the data (results.json "data")."""
        return {
            "source": self.source,
            "location": self.location,
            "train": int(len(self.train_images)),
            "test": int(len(self.test_images)),
            "image_shape": [int(d) for d in self.train_images.shape[1:]],
            **({"note": self.note} if self.note else {}),
        }


# ----------------------------------------------------------------------------- IDX files

def _one_line(error: BaseException) -> str:
    """An exception's text on one line (messages must never span lines)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


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
        raise DataError(path, f"cannot read the file ({_one_line(error)})") from None

    # Decide by content as well as by name: a gzip keeps its magic bytes whatever it is called.
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error, ValueError) as error:
            raise DataError(path, f"corrupt gzip file ({_one_line(error)})") from None

    if len(raw) < 4:
        raise DataError(path, f"truncated: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    ndim = raw[3]
    if raw[0] or raw[1] or raw[2] != IDX_UBYTE or ndim == 0 or (expect_ndim is not None and ndim != expect_ndim):
        raise DataError(path, f"wrong magic number {magic} (0x{magic:08X}), expected {_expected_magic(expect_ndim)}")

    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(path, f"truncated: the header of {ndim} dimensions needs {header_size} bytes, the file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    needed = math.prod(dims)
    present = len(raw) - header_size
    shape = "x".join(str(d) for d in dims)
    if present < needed:
        raise DataError(path, f"truncated: the header promises {needed} data bytes ({shape}), the file holds {present}")
    if present > needed:
        raise DataError(path, f"{present - needed} unexpected bytes after the {needed} data bytes the header describes ({shape})")
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
        with open(path, "wb") as raw_file:
            # mtime=0 so equal arrays give byte-identical files (stable checksums).
            with gzip.GzipFile(fileobj=raw_file, mode="wb", mtime=0) as gz:
                gz.write(payload)
    else:
        path.write_bytes(payload)


def find_mnist_files(data_dir: str | os.PathLike) -> dict[str, Path]:
    """The four IDX files in data_dir, flat or in torchvision's MNIST/raw/ layout, gzipped or not.

    Returns {"train_images": path, ...}. DataError names the folder and the first missing file.
    """
    data_dir = Path(data_dir).expanduser()
    if not data_dir.exists():
        raise DataError(data_dir, "no such folder")
    if not data_dir.is_dir():
        raise DataError(data_dir, "not a folder (expected the four MNIST IDX files or mnist.npz in it)")

    candidates = [data_dir, data_dir / "MNIST" / "raw", data_dir / "raw"]
    found_per_dir = []
    for folder in candidates:
        found = {}
        for key, name in MNIST_FILES.items():
            # Prefer the uncompressed file when both are there (torchvision keeps both).
            for file_name in (name, name + ".gz"):
                if (folder / file_name).is_file():
                    found[key] = folder / file_name
                    break
        found_per_dir.append((folder, found))
        if len(found) == len(MNIST_FILES):
            return found

    # Report against the folder that holds the most of them (the first one on a tie).
    folder, found = max(found_per_dir, key=lambda item: len(item[1]))
    if not found:
        folder = data_dir
    missing = next(name for key, name in MNIST_FILES.items() if key not in found)
    where = "" if found else " (looked here and in MNIST/raw/; a mnist.npz would also do)"
    raise DataError(folder, f"missing {missing} (or {missing}.gz){where}")


def _to_canonical_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    out = images.astype(np.float32)
    out /= 255.0
    return out[..., np.newaxis]  # (N, H, W, C)


def _check_images(path: Path | str, images: np.ndarray, what: str = "images") -> None:
    if images.ndim != 3:
        raise DataError(path, f"{what} have {images.ndim} dimensions, expected 3 (count, 28, 28)")
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(path, f"{what} are {images.shape[1]}x{images.shape[2]}, expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    if images.shape[0] == 0:
        raise DataError(path, f"holds no {what}")


def _check_labels(path: Path | str, labels: np.ndarray, n_images: int, images_name: str, what: str = "labels") -> None:
    if labels.ndim != 1:
        raise DataError(path, f"{what} have {labels.ndim} dimensions, expected 1")
    if len(labels) != n_images:
        raise DataError(path, f"holds {len(labels)} {what} but {images_name} holds {n_images} images")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        bad = int(np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))[0])
        raise DataError(path, f"label {labels[bad]} at index {bad} is outside 0..{NUM_CLASSES - 1}")


def _load_idx_folder(data_dir: Path) -> MNISTData:
    files = find_mnist_files(data_dir)
    arrays = {}
    for split in ("train", "test"):
        images_path, labels_path = files[f"{split}_images"], files[f"{split}_labels"]
        images = read_idx(images_path, expect_ndim=3)
        _check_images(images_path, images)
        labels = read_idx(labels_path, expect_ndim=1)
        _check_labels(labels_path, labels, len(images), images_path.name)
        arrays[f"{split}_images"] = _to_canonical_images(images)
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    return MNISTData(**arrays, source="mnist", location=str(files["train_images"].parent))


def _load_npz(path: Path) -> MNISTData:
    """Keras' mnist.npz: x_train (N, 28, 28) uint8, y_train (N,), x_test, y_test."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in npz.files]
            if missing:
                raise DataError(path, f"missing array {missing[0]!r} (expected x_train, y_train, x_test, y_test)")
            raw = {key: npz[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except DataError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError) as error:
        raise DataError(path, f"not a readable .npz file ({_one_line(error)})") from None

    arrays = {}
    for split in ("train", "test"):
        images, labels = raw[f"x_{split}"], raw[f"y_{split}"]
        _check_images(path, images, f"x_{split}")
        if images.dtype != np.uint8:
            # Keras stores uint8; other integer arrays are fine when they hold byte values.
            if not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255:
                raise DataError(path, f"x_{split} has dtype {images.dtype}, expected uint8 pixel values 0..255")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(path, f"y_{split} has dtype {labels.dtype}, expected integer labels")
        _check_labels(path, labels, len(images), f"x_{split}", f"y_{split} labels")
        arrays[f"{split}_images"] = _to_canonical_images(images)
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    return MNISTData(**arrays, source="mnist", location=str(path))


# ----------------------------------------------------------------------------- download

def default_cache_dir() -> Path:
    """~/.cache/twinnets/mnist, or $TWINNETS_CACHE/mnist when that variable is set."""
    root = os.environ.get("TWINNETS_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "twinnets") / "mnist"


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, folder: Path, name: str, timeout: float) -> tuple[Path, str]:
    """Download url into a temp file in folder; returns (temp path, md5). Network errors propagate."""
    digest = hashlib.md5()
    handle, temp_name = tempfile.mkstemp(prefix=name + ".", suffix=".part", dir=folder)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp, digest.hexdigest()


def download_mnist(
    cache_dir: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
    md5: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch the four gzipped IDX files into cache_dir (default default_cache_dir()) and return that folder.

    Mirrors are tried in order. md5 maps each .gz file name to its checksum (default MNIST_MD5;
    a name absent from it is not checked). Files already there with the right checksum are kept;
    each new file is written to a temp file and renamed, so an interrupted run leaves no half file.
    No mirror reachable: UserError saying what to do. Checksum mismatch: DataError naming the file.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    mirrors = list(DEFAULT_MIRRORS if mirrors is None else mirrors)
    checksums = dict(MNIST_MD5 if md5 is None else md5)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(folder, f"cannot create the download folder ({_one_line(error)})") from None

    for name in (base + ".gz" for base in MNIST_FILES.values()):
        target = folder / name
        expected = checksums.get(name)
        if target.is_file() and (expected is None or _md5_of(target) == expected):
            continue  # already downloaded and verified

        failures: list[str] = []
        mismatch: str | None = None
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                temp, digest = _fetch(url, folder, name, timeout)
            except (OSError, http.client.HTTPException, ValueError) as error:
                # URLError/HTTPError/timeouts are OSErrors; a malformed URL is a ValueError.
                failures.append(f"{url}: {_one_line(error)}")
                continue
            if expected is not None and digest != expected:
                temp.unlink(missing_ok=True)
                mismatch = f"MD5 checksum {digest} from {url} does not match the expected {expected}"
                continue  # another mirror may hold a good copy
            try:
                os.replace(temp, target)
            except OSError as error:
                temp.unlink(missing_ok=True)
                raise DataError(target, f"cannot write the downloaded file ({_one_line(error)})") from None
            break
        else:
            if mismatch is not None:
                raise DataError(target, mismatch)
            reasons = "; ".join(failures) or "no mirrors given"
            raise UserError(
                f"could not download {name} from any mirror ({reasons}); check your network or download "
                f"the four MNIST IDX files yourself and pass their folder with --data-dir"
            )
    return folder


# ----------------------------------------------------------------------------- embedded digits

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
        test_parts.append(rng.permutation(members)[: int(round(test_share * len(members)))])
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


# ----------------------------------------------------------------------------- entry point

def load_mnist(
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    sample_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
    md5: Mapping[str, str] | None = None,
) -> MNISTData:
    """MNIST from data_dir (IDX files or mnist.npz), from the mirrors (download=True), or else the embedded digits.

    sample_size keeps the first sample_size training images of a permutation seeded by seed
    (None keeps them all; the test split is never subsampled).
    """
    if sample_size is not None and sample_size <= 0:
        raise UserError(f"--sample-size must be positive, got {sample_size}")
    if download and data_dir is not None:
        raise UserError("--data-dir and --download exclude each other; give one of them")

    if download:
        data = _load_idx_folder(download_mnist(cache_dir=cache_dir, mirrors=mirrors, md5=md5))
    elif data_dir is not None:
        path = Path(data_dir).expanduser()
        if path.suffix == ".npz":
            if not path.is_file():
                raise DataError(path, "no such file")
            data = _load_npz(path)
        elif path.is_dir() and (path / NPZ_NAME).is_file() and not _has_idx_files(path):
            data = _load_npz(path / NPZ_NAME)
        else:
            data = _load_idx_folder(path)
    else:
        data = load_digits_28(seed=seed)

    if sample_size is not None and sample_size < len(data.train_images):
        keep = np.random.default_rng(seed).permutation(len(data.train_images))[:sample_size]
        data = MNISTData(
            train_images=data.train_images[keep],
            train_labels=data.train_labels[keep],
            test_images=data.test_images,
            test_labels=data.test_labels,
            source=data.source,
            location=data.location,
            note=data.note,
        )
    return data


def _has_idx_files(folder: Path) -> bool:
    try:
        find_mnist_files(folder)
    except DataError:
        return False
    return True


def normalize(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(images - mean) / std as float32, the same normalisation on both sides."""
    if std == 0:
        raise UserError("the normalisation std must not be 0")
    return ((np.asarray(images, dtype=np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)
