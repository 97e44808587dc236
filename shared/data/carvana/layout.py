"""Where the Carvana files are: the Kaggle folders, or their zips extracted once and reused."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.errors import DataError, one_line

PHOTO_SUFFIXES = (".jpg", ".jpeg")
MASK_SUFFIX = "_mask.gif"
KNOWN_ZIPS = {f"{name}.zip" for name in ("train", "train_hq", "train_masks", "test", "test_hq", "train_masks.csv",
                                         "sample_submission.csv", "metadata.csv")}
# Kaggle's download of the whole competition, which holds the zips above: the one other zip ever extracted.
ALL_IN_ONE = "carvana-image-masking-challenge.zip"
EXTRACTED = "extracted"  # the folder, next to the zips, that holds what was extracted from them


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
    """$TWINNETS_CACHE, else ~/.cache/twinnets: the extracted zips and the download share it."""
    return Path(os.environ.get("TWINNETS_CACHE") or Path.home() / ".cache" / "twinnets")


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
        raise DataError(zip_path, f"corrupt zip ({one_line(exc)}); download it again") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DataError(final, "no space left to extract the zip; free some space or extract it yourself") from exc
        raise DataError(zip_path, f"cannot extract: {one_line(exc)}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final


def all_in_one_zips(root: Path) -> list[Path]:
    """Kaggle's all-in-one download in root (its name, in any letter case); any other zip (a user's backup.zip) is
    never opened."""
    return sorted(p for p in root.glob("*.zip") if p.name.lower() == ALL_IN_ONE and p.is_file())


def _present(root: Path, names: Sequence[str], suffix: str, bases: Sequence[Path]) -> bool:
    """Whether one part of the data is in root, found without extracting anything: as a folder of *suffix files, as
    Kaggle's <name>.zip, or extracted earlier."""
    return any(_has_file(root / name, suffix) or _has_file(root / name / name, suffix)
               or (root / f"{name}.zip").is_file() or any((base / name).is_dir() for base in bases) for name in names)


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

    # Nothing is extracted before the folder is known to be Carvana's: its photos and its masks are there (as folders
    # or Kaggle's zips), or Kaggle's all-in-one download is.
    outer = all_in_one_zips(root)
    if not outer and not _present(root, train_names, ".jpg", bases):
        raise DataError(root, "no training photos; expected Carvana's train/*.jpg or train.zip (or your own images/ "
                              "and masks/ folders)")
    if not outer and not _present(root, ("train_masks",), MASK_SUFFIX, bases):
        raise DataError(root, "no masks; expected train_masks/*_mask.gif or train_masks.zip")
    train_dir = _component_dir(search, train_names, ".jpg", bases)
    if train_dir is None and outer:  # the all-in-one download holds the other zips
        search += [_extract(zip_path, bases) for zip_path in outer]
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
        expected = mask_dir / (lacking[0].stem + MASK_SUFFIX)
        raise DataError(lacking[0], f"photo without a mask (expected {expected}{more})")

    test_dir = _component_dir(search, test_names, ".jpg", bases) if include_test else None
    return CarvanaLayout(
        root=root,
        train_dir=train_dir,
        mask_dir=mask_dir,
        test_dir=test_dir,
        masks_csv=_component_file(search, "train_masks.csv", bases),
        sample_submission=_component_file(search, "sample_submission.csv", bases),
    )
