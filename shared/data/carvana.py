"""The Carvana car-mask dataset as numpy: find the files (folder or Kaggle zips), download, split by car, decode.

Real layout (Kaggle "Carvana Image Masking Challenge"): train/<car>_<angle>.jpg (1918x1280, 16
angles per car), train_masks/<car>_<angle>_mask.gif (0/1), train_masks.csv, test/*.jpg,
sample_submission.csv, the _hq variants, and the zips Kaggle serves (train.zip holds train/...).
Both framework sides wrap TrainImageDataset / TestImageDataset in their own loaders; the arrays
(images HxWx3 float32 in [0, 1], masks HxW float32 in {0, 1}) are identical on both.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import socket
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from shared.tiles import mirror_pad
from shared.data.augment import random_augment
from shared.data.batches import epoch_rng
from shared.errors import DataError, UserError

COMPETITION = "carvana-image-masking-challenge"
DEFAULT_FILES = ("train.zip", "train_masks.zip", "train_masks.csv.zip", "test.zip", "sample_submission.csv.zip")
PHOTO_SUFFIXES = (".jpg", ".jpeg")
MASK_SUFFIX = "_mask.gif"
KNOWN_ZIPS = {f"{name}.zip" for name in ("train", "train_hq", "train_masks", "test", "test_hq", "train_masks.csv",
                                         "sample_submission.csv", "metadata.csv")}
EXTRACTED = "extracted"  # the folder, next to the zips, that holds what was extracted from them
CACHE_BUDGET_BYTES = 1 << 30  # decoded, resized samples are kept in memory when they fit in this


def _one_line(text: object) -> str:
    """Collapse an exception's text to one line, for messages that must stay on one line."""
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class CarvanaLayout:
    """Where the Carvana files are, after any zip was extracted."""

    root: Path  # the folder the user gave
    train_dir: Path  # the photos: train/ or train_hq/
    mask_dir: Path  # train_masks/ (*_mask.gif)
    test_dir: Path | None = None  # test/ or test_hq/
    masks_csv: Path | None = None  # train_masks.csv (img, rle_mask)
    sample_submission: Path | None = None  # sample_submission.csv (img, rle_mask)


def _photos(folder: Path) -> list[Path]:
    """The photos directly inside a folder, sorted."""
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries
                      if e.is_file() and e.name.lower().endswith(PHOTO_SUFFIXES) and not e.name.startswith("."))


def _has_file(folder: Path, suffix: str) -> bool:
    """Whether a folder directly holds a file whose name ends with suffix (case-insensitive)."""
    try:
        with os.scandir(folder) as entries:
            return any(e.is_file() and e.name.lower().endswith(suffix) for e in entries)
    except OSError:
        return False


def _find_dir(top: Path, name: str, suffix: str) -> Path | None:
    """top/name, or the first folder below top (breadth first, 3 levels) holding *suffix files."""
    if _has_file(top / name, suffix):
        return top / name
    level = [top]
    for _ in range(3):  # a zip may hold train/..., or the files flat, or one more folder level
        for folder in level:
            if _has_file(folder, suffix):
                return folder
        level = [p for folder in level for p in sorted(folder.iterdir()) if p.is_dir()]
    return None


def _find_file(top: Path, name: str) -> Path | None:
    """The first file called name under top (breadth first, 3 levels)."""
    level = [top]
    for _ in range(3):
        for folder in level:
            if (folder / name).is_file():
                return folder / name
        level = [p for folder in level for p in sorted(folder.iterdir()) if p.is_dir()]
    return None


def _cache_root() -> Path:
    return Path(os.environ.get("TWINNETS_CACHE") or Path.home() / ".cache" / "twinnets")


def default_download_dir() -> Path:
    """Where --download puts Kaggle's zips: <cache>/carvana-download."""
    return _cache_root() / "carvana-download"


def _extract_bases(data_dir: Path) -> list[Path]:
    """Where extracted zips may live: <data_dir>/extracted, else a cache folder (data_dir read-only)."""
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return [data_dir / EXTRACTED, _cache_root() / f"carvana-{digest}" / EXTRACTED]


def _writable(folder: Path) -> bool:
    """Whether folder (or, if absent, its nearest existing parent) can be written."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return os.access(candidate, os.W_OK | os.X_OK)
    return False


def _extract(zip_path: Path, bases: Sequence[Path]) -> Path:
    """Extract a zip once into <base>/<zip name without .zip>/ and return that folder.

    A folder extracted earlier, in any base, is reused. A new one is written into a temporary
    sibling and renamed when complete, so an interrupted run never leaves a half-extracted
    folder that a later run would trust.
    """
    name = zip_path.name[:-len(".zip")]
    for base in bases:
        if (base / name).is_dir():
            return base / name
    base = next((b for b in bases if _writable(b)), None)
    if base is None:
        raise DataError(zip_path, f"cannot extract: neither {bases[0]} nor {bases[-1]} is writable; "
                                  "extract the zip yourself or set TWINNETS_CACHE to a writable folder")
    final = base / name
    partial = base / f".{name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        partial.mkdir(parents=True)
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(partial)  # extractall drops absolute paths and ".." from member names
        try:
            partial.rename(final)
        except OSError:
            if not final.is_dir():  # another process (the other framework side) may have won the race
                raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise DataError(zip_path, f"corrupt zip ({_one_line(exc)}); download it again") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DataError(final, "no space left to extract the zip; free some space or extract it yourself") from exc
        raise DataError(zip_path, f"cannot extract: {_one_line(exc)}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final


def _component_dir(search: Sequence[Path], names: Sequence[str], suffix: str,
                   bases: Sequence[Path]) -> Path | None:
    """The folder holding one part of the data: the first name found as a folder or as <name>.zip."""
    for name in names:
        for top in search:
            if _has_file(top / name, suffix):
                return top / name
            if _has_file(top / name / name, suffix):  # unzipped by hand into a folder of its own
                return top / name / name
            zip_path = top / f"{name}.zip"
            if zip_path.is_file():
                found = _find_dir(_extract(zip_path, bases), name, suffix)
                if found is None:
                    raise DataError(zip_path, f"holds no {suffix} files")
                return found
        for base in bases:  # extracted earlier, and the zip deleted since to save space
            if (base / name).is_dir():
                found = _find_dir(base / name, name, suffix)
                if found is not None:
                    return found
    return None


def _component_file(search: Sequence[Path], name: str, bases: Sequence[Path]) -> Path | None:
    """A CSV given as itself or as <name>.zip."""
    for top in search:
        if (top / name).is_file():
            return top / name
        zip_path = top / f"{name}.zip"
        if zip_path.is_file():
            found = _find_file(_extract(zip_path, bases), name)
            if found is None:
                raise DataError(zip_path, f"holds no {name}")
            return found
    return None


def resolve_carvana(data_dir: str | os.PathLike, prefer_hq: bool = False,
                    include_test: bool = True) -> CarvanaLayout:
    """Find the Carvana files in data_dir: the extracted folders, the Kaggle zips, or a mix.

    Zips are extracted once into <data_dir>/extracted/ (or, when data_dir is read-only, into a
    folder under $TWINNETS_CACHE or ~/.cache/twinnets) and reused afterwards. prefer_hq picks
    train_hq/ and test_hq/ when both sizes are there. include_test=False skips the test photos
    (test.zip is large). Raises DataError naming the folder or file that is wrong.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(root, "no such folder")
    if not any(root.iterdir()):
        raise DataError(root, "empty folder; expected Carvana's train/ and train_masks/ folders or "
                              "train.zip and train_masks.zip (--download fetches them)")
    bases = _extract_bases(root)
    search = [root]
    train_names = ("train_hq", "train") if prefer_hq else ("train", "train_hq")
    test_names = ("test_hq", "test") if prefer_hq else ("test", "test_hq")

    train_dir = _component_dir(search, train_names, ".jpg", bases)
    if train_dir is None:
        # Kaggle's all-in-one download (carvana-image-masking-challenge.zip) holds the other zips.
        for outer in sorted(root.glob("*.zip")):
            if outer.name not in KNOWN_ZIPS:
                search.append(_extract(outer, bases))
        train_dir = _component_dir(search, train_names, ".jpg", bases)
    if train_dir is None:
        raise DataError(root, "no training photos; expected train/*.jpg or train.zip")
    mask_dir = _component_dir(search, ("train_masks",), MASK_SUFFIX, bases)
    if mask_dir is None:
        raise DataError(root, "no masks; expected train_masks/*_mask.gif or train_masks.zip")

    photos = _photos(train_dir)
    with os.scandir(mask_dir) as entries:
        masks = {e.name for e in entries}
    lacking = [p for p in photos if p.stem + MASK_SUFFIX not in masks]
    if lacking:
        more = f"; {len(lacking) - 1} more photos lack masks" if len(lacking) > 1 else ""
        raise DataError(lacking[0], f"photo without a mask (expected {mask_dir / (lacking[0].stem + MASK_SUFFIX)}{more})")

    test_dir = _component_dir(search, test_names, ".jpg", bases) if include_test else None
    return CarvanaLayout(
        root=root,
        train_dir=train_dir,
        mask_dir=mask_dir,
        test_dir=test_dir,
        masks_csv=_component_file(search, "train_masks.csv", bases),
        sample_submission=_component_file(search, "sample_submission.csv", bases),
    )


# ----------------------------------------------------------------------------- download


def _have_kaggle_credentials() -> bool:
    """Whether any credential the kaggle package accepts is present, checked without importing it."""
    env = os.environ
    if env.get("KAGGLE_API_TOKEN") or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")):
        return True
    config_dir = Path(env.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    return any((config_dir / name).is_file() for name in ("kaggle.json", "access_token", "credentials.json"))


def _kaggle_client():
    """An authenticated KaggleApi; imported here because `import kaggle` authenticates at import time."""
    if not _have_kaggle_credentials():
        raise _MissingCredentials()
    # The kaggle package prints its own multi-line help and calls exit(1) when it cannot
    # authenticate; keep that off the console, the caller turns it into one sentence.
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit as exc:
            raise _MissingCredentials() from exc
    return api


class _MissingCredentials(Exception):
    """No usable Kaggle credentials."""


_NETWORK_ERROR_NAMES = {"ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError",
                        "NewConnectionError", "NameResolutionError", "ProtocolError", "SSLError", "ProxyError"}


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed request: requests' HTTPError (.response) or the older ApiException (.status)."""
    status = getattr(exc, "status", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror, socket.timeout)):
        return True
    return any(cls.__name__ in _NETWORK_ERROR_NAMES for cls in type(exc).__mro__)


class DatasetFetcher:
    """Downloads the Carvana zips from Kaggle with the official kaggle package and its API token."""

    def __init__(self, competition: str = COMPETITION, client_factory: Callable[[], object] | None = None):
        self.competition = competition
        # A factory, not a client: the real one authenticates, which tests replace with a fake.
        self.client_factory = client_factory or _kaggle_client

    def _user_error(self, exc: BaseException, file_name: str) -> UserError:
        """One sentence that says what to do, for whatever the download raised."""
        manual = "download the zips yourself and pass their folder with --data-dir"
        rules = f"https://www.kaggle.com/c/{self.competition}/rules"
        status = _http_status(exc)
        text = _one_line(exc).lower()
        if isinstance(exc, (_MissingCredentials, SystemExit)) or status == 401 or (
                status is None and ("kaggle.json" in text or "credential" in text or "authenticat" in text)):
            return UserError("Kaggle did not accept your credentials (none found, or invalid): create an API token "
                             "at kaggle.com (Account > API) and save it as ~/.kaggle/kaggle.json, or set "
                             "KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN).")
        if status == 403:
            return UserError(f"Kaggle refused {file_name} (HTTP 403): accept the competition rules at {rules}, "
                             "then retry.")
        if status == 404:
            return UserError(f"Kaggle has no {file_name} in competition {self.competition} (HTTP 404): "
                             f"check the name, or {manual}.")
        if status is not None:
            return UserError(f"Kaggle answered HTTP {status} for {file_name}: retry later, or {manual}.")
        if _is_network_error(exc):
            return UserError(f"Could not reach Kaggle to download {file_name}: check your network, or {manual}.")
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return UserError(f"No space left to download {file_name}: free some space, or {manual}.")
        if isinstance(exc, PermissionError):
            return UserError(f"Cannot write {file_name} ({_one_line(exc)}): choose a writable folder for the download.")
        return UserError(f"Downloading {file_name} from Kaggle failed ({type(exc).__name__}: {_one_line(exc)}): "
                         f"retry, or {manual}.")

    def download_dataset(self, dest_dir: str | os.PathLike, files: Iterable[str] = DEFAULT_FILES) -> Path:
        """Download the named competition files into dest_dir (those already there are kept) and return it.

        Each file arrives in dest_dir/.partial/ and is moved into place only when complete, so a
        broken download is fetched again next time. Every failure becomes a one-sentence UserError.
        """
        dest = Path(dest_dir).expanduser()
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"Cannot create the download folder {dest} ({_one_line(exc)}): "
                            "choose a writable folder.") from exc
        missing = [name for name in files if not _is_complete(dest / name)]
        if not missing:
            return dest
        try:
            client = self.client_factory()
        except (Exception, SystemExit) as exc:  # kaggle's authenticate() calls exit(1) without credentials
            raise self._user_error(exc, missing[0]) from exc
        partial = dest / ".partial"
        for name in missing:
            try:
                partial.mkdir(exist_ok=True)
                client.competition_download_file(self.competition, name, path=str(partial))
                got = partial / name
                if not got.is_file() and (partial / f"{name}.zip").is_file():
                    got = partial / f"{name}.zip"  # Kaggle wraps large files in a zip of their own
                if not _is_complete(got):
                    raise DataError(got, "download is incomplete or not a valid zip; run again to retry")
                os.replace(got, dest / got.name)
            except UserError:
                raise
            except Exception as exc:
                raise self._user_error(exc, name) from exc
        shutil.rmtree(partial, ignore_errors=True)
        return dest


def _is_complete(path: Path) -> bool:
    """A downloaded file that is there and whole: a zip must have its central directory."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    return zipfile.is_zipfile(path) if path.suffix == ".zip" else True


# ----------------------------------------------------------------------------- split


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
    if not 0 <= validation_size < 1:
        raise UserError(f"--validation-size must be in [0, 1), got {validation_size}")
    if sample_size is not None and sample_size <= 0:
        raise UserError(f"--sample-size must be positive, got {sample_size}")
    by_car: dict[str, list[Sample]] = {}
    for photo in _photos(layout.train_dir):
        sample = Sample(photo, layout.mask_dir / (photo.stem + MASK_SUFFIX), car_of(photo), photo.name)
        by_car.setdefault(sample.car, []).append(sample)
    if not by_car:
        raise DataError(layout.train_dir, "no .jpg photos")

    cars = sorted(by_car)
    order = [cars[i] for i in np.random.default_rng(seed).permutation(len(cars))]
    if sample_size is not None:
        kept, count = [], 0
        for car in order:
            if count >= sample_size:
                break
            kept.append(car)
            count += len(by_car[car])
        order = kept

    n_valid = int(round(validation_size * len(order)))
    if validation_size > 0 and n_valid == 0:
        raise UserError(f"--validation-size {validation_size} leaves no car for validation: {len(order)} cars "
                        "are used; raise it, use more images (--sample-size), or set it to 0.")
    if n_valid >= len(order):
        raise UserError(f"--validation-size {validation_size} leaves no car for training: {len(order)} cars "
                        "are used; lower it or use more images (--sample-size).")
    valid = sorted((s for car in order[:n_valid] for s in by_car[car]), key=lambda s: s.name)
    train = sorted((s for car in order[n_valid:] for s in by_car[car]), key=lambda s: s.name)
    return train, valid


def get_test_files(layout: CarvanaLayout) -> list[Path]:
    """The test photos, sorted by name."""
    if layout.test_dir is None:
        raise DataError(layout.root, "no test photos; expected test/*.jpg or test.zip")
    return _photos(layout.test_dir)


# ----------------------------------------------------------------------------- decoding


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@contextlib.contextmanager
def _decoding(path: Path, what: str):
    """Turn whatever PIL raises for a missing, truncated or corrupt file into a DataError naming it."""
    try:
        yield
    except FileNotFoundError as exc:
        raise DataError(path, "file not found") from exc
    except _DECODE_ERRORS as exc:
        raise DataError(path, f"cannot read this {what} ({_one_line(exc) or type(exc).__name__})") from exc


def original_size(path: str | os.PathLike) -> tuple[int, int]:
    """The (width, height) of an image, read from its header only."""
    path = Path(path)
    with _decoding(path, "image"), Image.open(path) as img:
        return img.size


def check_pair_sizes(samples: Sequence[Sample]) -> None:
    """Every mask has its photo's size (headers only: cheap enough to check all before training starts)."""
    for sample in samples:
        photo, mask = original_size(sample.image), original_size(sample.mask)
        if photo != mask:
            raise DataError(sample.mask, f"mask is {mask[0]}x{mask[1]} but its photo {sample.name} is {photo[0]}x{photo[1]}")


def _load_rgb(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """The photo as uint8 (H, W, 3), resized to size=(w, h) bilinearly."""
    with _decoding(path, "JPEG"), Image.open(path) as img:
        if size is not None:
            # JPEG can decode at 1/2, 1/4, 1/8 scale directly; draft picks the smallest >= size.
            img.draft("RGB", size)
        img.load()  # decode now, so a truncated file fails here, inside _decoding
        img = img.convert("RGB")
        if size is not None and img.size != tuple(size):
            img = img.resize(tuple(size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def _load_mask(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """The mask as uint8 (H, W) in {0, 1}, resized to size=(w, h) with nearest neighbour."""
    with _decoding(path, "mask"), Image.open(path) as img:
        img.load()
        values = np.asarray(img)
        if img.mode not in ("L", "P", "I", "I;16") or not _binary(values):
            # Carvana GIFs hold palette indices 0/1; other writers may need their palette applied.
            values = np.asarray(img.convert("L"))
    if not _binary(values):
        shown = np.unique(values)[:6].tolist()
        raise DataError(path, f"mask values {shown} are not 0/1 or 0/255")
    values = (values > 0).astype(np.uint8)
    if size is not None and (values.shape[1], values.shape[0]) != tuple(size):
        values = np.asarray(Image.fromarray(values, "L").resize(tuple(size), Image.NEAREST))
    return values


def _binary(values: np.ndarray) -> bool:
    """Whether an array holds only 0 and 1, or only 0 and 255."""
    if values.dtype == np.uint8:
        seen = np.flatnonzero(np.bincount(values.ravel(), minlength=256))  # faster than np.unique
    else:
        seen = np.unique(values)
    return set(seen.tolist()) <= {0, 1} or set(seen.tolist()) <= {0, 255}


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """A photo as float32 (H, W, 3) in [0, 1]; size=(w, h) resizes it bilinearly. Unreadable: DataError."""
    return _load_rgb(Path(path), size).astype(np.float32) / 255.0


def read_mask(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask (GIF, values 0/1 or 0/255) as float32 (H, W) in {0, 1}; size=(w, h) resizes with nearest."""
    return _load_mask(Path(path), size).astype(np.float32)


def _load_pair(sample: Sample, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Photo (uint8) and mask (uint8 0/1) of a sample, after checking that their sizes agree."""
    photo_size, mask_size = original_size(sample.image), original_size(sample.mask)
    if photo_size != mask_size:
        raise DataError(sample.mask, f"mask is {mask_size[0]}x{mask_size[1]} but its photo "
                                     f"{sample.image.name} is {photo_size[0]}x{photo_size[1]}")
    return _load_rgb(sample.image, size), _load_mask(sample.mask, size)


def read_pair(sample: Sample, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A sample's photo and mask as float32, checked to be the same size; size=(w, h) resizes both."""
    image, mask = _load_pair(sample, size)
    return image.astype(np.float32) / 255.0, mask.astype(np.float32)


# ----------------------------------------------------------------------------- datasets


class TrainImageDataset:
    """Training photos and masks as numpy, resized to a square, optionally augmented; framework-neutral.

    Each photo is squeezed to image_size x image_size: the aspect ratio is NOT kept (a 1918x1280
    photo becomes a square, as in the source text); the mask is resized with nearest neighbour.
    Augmentation (flip, shift/scale, HSV jitter) is drawn from epoch_rng(seed, epoch, index), so a
    sample depends only on (seed, epoch, index): the same on both sides and in any worker.
    Decoded, resized samples are cached in memory (as uint8) when they all fit in cache_bytes,
    so later epochs do not decode the JPEGs again.
    """

    def __init__(self, samples: Sequence[Sample], image_size: int, augment: bool = False, seed: int = 0,
                 cache_bytes: int = CACHE_BUDGET_BYTES, pad: int = 0):
        if image_size <= 0:
            raise UserError(f"--image-size must be positive, got {image_size}")
        self.pad = pad  # mirror border added to the photo only: the original U-Net's overlap-tile input
        self.samples = list(samples)
        self.image_size = int(image_size)
        self.augment = augment
        self.seed = seed
        per_sample = self.image_size * self.image_size * 4  # uint8 RGB + uint8 mask
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = (
            {} if per_sample * len(self.samples) <= cache_bytes else None)

    def __len__(self) -> int:
        return len(self.samples)

    def _decoded(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        pair = _load_pair(self.samples[index], (self.image_size, self.image_size))
        if self._cache is not None:
            self._cache[index] = pair
        return pair

    def get(self, index: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(image (S, S, 3) float32 in [0, 1], mask (S, S) float32 in {0, 1}) of one sample in one epoch."""
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")
        image_u8, mask_u8 = self._decoded(index)
        image = image_u8.astype(np.float32) / 255.0  # (S, S, 3)
        mask = mask_u8.astype(np.float32)  # (S, S)
        if self.augment:
            image, mask = random_augment(image, mask, epoch_rng(self.seed, epoch, index))
        if self.pad:
            image = mirror_pad(image, self.pad)  # (S + 2 pad, S + 2 pad, 3); the mask stays (S, S)
        return image, mask

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.get(index, 0)


class TestImageDataset:
    """Test photos resized to a square, with the name and original size needed to write the submission."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, paths: Sequence[str | os.PathLike], image_size: int):
        if image_size <= 0:
            raise UserError(f"--image-size must be positive, got {image_size}")
        self.paths = [Path(p) for p in paths]
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int) -> tuple[np.ndarray, str, tuple[int, int]]:
        """(image (S, S, 3) float32 in [0, 1], file name, original (width, height))."""
        path = self.paths[index]
        size = original_size(path)
        return read_image(path, (self.image_size, self.image_size)), path.name, size

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, tuple[int, int]]:
        return self.get(index)
