"""Your own segmentation set in plain folders, as numpy: DIR/images/ (or imgs/) and DIR/masks/ (or labels/), an image
and its mask matched by file stem (the mask's may end in _mask, _segmentation, ...), in any format Pillow reads (PNG,
JPEG, TIFF, GIF, BMP), 8 or 16 bits, grayscale or colour. A mask is foreground where non-zero, or at and above
--mask-threshold. Framework-free; FolderDataset offers TrainImageDataset's interface, so both sides' loaders take it
as it is."""
from __future__ import annotations

import errno
import os
import re
import signal
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shared.data.carvana.datasets import CACHE_BUDGET_BYTES, TrainImageDataset
from shared.data.carvana.decode import TURNED, _decoding, _orientation, read_photo, upright_size
from shared.data.carvana.split import split_groups
from shared.data.folder_masks import read_folder_mask
from shared.errors import DataError
from shared.tasks import UNetSpec

SOURCE_NAME = "folder"  # results.json data.source of such a set
IMAGE_DIRS, MASK_DIRS = ("images", "imgs"), ("masks", "labels")
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
# What may follow the image's stem in its mask's (p01_a_mask.png, ISIC's ISIC_0000000_segmentation.png).
MASK_SUFFIXES = ("_mask", "-mask", "_segmentation", "_seg", "_label", "_gt")
MODES = {1: "L", 3: "RGB"}  # the Pillow mode each input channel count reads images as
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
SHOWN = 3  # names listed in a refusal
SPLIT_BY_SECONDS = 1.0  # the most --split-by may take on one file name


@dataclass(frozen=True)
class FolderLayout:
    """Where a folder set's files are."""

    root: Path  # the folder the user gave
    image_dir: Path  # images/ or imgs/
    mask_dir: Path | None  # masks/ or labels/; None in a folder of images to predict


@dataclass(frozen=True)
class Pair:
    """One image and its mask."""

    image: Path
    mask: Path
    name: str  # the image's file name
    group: str  # what the split keeps on one side: the file's stem, or what --split-by found in its name


def symlink_loop(path: Path) -> DataError:
    return DataError(path, "symlink loop: the link leads back to itself, never to a file or folder")


def _entry_is(entry: os.DirEntry, kind: str, wanted: bool) -> bool:
    """Whether a folder entry is a "dir" or a "file"; a symlink loop is not, or, if it is a wanted name, a DataError
    naming it."""
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError as error:
        if error.errno == errno.ELOOP and wanted:
            raise symlink_loop(Path(entry.path)) from None
        return False


def _subfolder(root: Path, names: Sequence[str]) -> Path | None:
    """root/<name> for the first of names found as a folder, in any letter case."""
    try:
        with os.scandir(root) as entries:
            found = {e.name.lower(): Path(e.path) for e in entries if _entry_is(e, "dir", e.name.lower() in names)}
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise symlink_loop(root) from None
        return None
    return next((found[name] for name in names if name in found), None)


def find_folder_set(data_dir: str | os.PathLike | None, masks: bool = True) -> FolderLayout | None:
    """The layout when data_dir holds images/ (or imgs/) and, unless masks=False, masks/ (or labels/); None when it
    holds neither (another layout, Carvana's); one of them alone is a DataError."""
    if data_dir is None:
        return None
    root = Path(data_dir).expanduser()
    image_dir, mask_dir = _subfolder(root, IMAGE_DIRS), _subfolder(root, MASK_DIRS) if masks else None
    if image_dir is None and (mask_dir is None or not masks):
        return None
    if image_dir is None:
        raise DataError(root, f"has {mask_dir.name}/ but no images/ (or imgs/) folder beside it")
    if mask_dir is None and masks:
        raise DataError(root, f"has {image_dir.name}/ but no masks/ (or labels/) folder beside it")
    return FolderLayout(root, image_dir, mask_dir if masks else None)


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside a folder, by name (hidden files and other suffixes ignored)."""
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if not e.name.startswith(".") and e.name.lower().endswith(SUFFIXES)
                      and _entry_is(e, "file", True))


def _by_stem(files: list[Path], what: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in files:
        if path.stem in found:  # their masks (and predicted masks, <stem>.png) would be one file
            raise DataError(path, f"two {what} named {path.stem}: {found[path.stem].name} and {path.name}")
        found[path.stem] = path
    return found


def _listed(names: list[str], what: str) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{len(names)} {what}: {', '.join(names[:SHOWN])}{more}"


def match_pairs(layout: FolderLayout, split_by: str | None = None) -> list[Pair]:
    """Every image with its mask (the same stem, or the stem and _mask, or another of MASK_SUFFIXES), by image name;
    an image without a mask or a mask without an image is a DataError naming the first three."""
    images = _by_stem(image_files(layout.image_dir), "images")
    if not images:
        raise DataError(layout.image_dir, "no images (PNG, JPEG, TIFF, GIF or BMP files)")
    masks: dict[str, Path] = {}
    strays = []
    for stem, path in _by_stem(image_files(layout.mask_dir), "masks").items():
        key = stem if stem in images else next((stem[:-len(end)] for end in MASK_SUFFIXES
                                                if stem.lower().endswith(end) and stem[:-len(end)] in images), stem)
        if key not in images:
            strays.append(path.name)
        elif key in masks:
            raise DataError(path, f"two masks for the image {images[key].name}: {masks[key].name} and {path.name}")
        else:
            masks[key] = path
    if strays:
        raise DataError(layout.mask_dir, _listed(strays, f"masks without an image in {layout.image_dir}"))
    lacking = [images[stem].name for stem in images if stem not in masks]
    if lacking:
        raise DataError(layout.image_dir, _listed(lacking, f"images without a mask in {layout.mask_dir} (a mask "
                                                           "has the image's stem, or the stem and _mask)"))
    pattern = re.compile(split_by) if split_by else None
    return [Pair(path, masks[stem], path.name, group_of(path, pattern)) for stem, path in images.items()]


def group_of(image: Path, pattern: re.Pattern | None) -> str:
    """The group of an image: its stem, or the part of its file name that --split-by matches (its first group, when
    the expression has one)."""
    if pattern is None:
        return image.stem
    found = _search(pattern, image.name, image)
    if found is None:
        raise DataError(image, f"--split-by {pattern.pattern!r} finds no group in this file name")
    return found.group(1) if pattern.groups and found.group(1) is not None else found.group(0)


class _Overran(Exception):
    """--split-by's time on one name ran out."""


def _search(pattern: re.Pattern, name: str, path: Path) -> re.Match | None:
    """pattern.search(name), stopped after SPLIT_BY_SECONDS (catastrophic backtracking, (a+)+$ on 'aaa...ab', takes
    hours) by a DataError naming the pattern and the name. Python's re has no timeout, but its matching loop checks
    for signals, so an interval timer (SIGALRM) raises inside it; that needs the main thread (where the parent checks
    every name before any side starts) and an interval timer no one else set: elsewhere the match runs without limit.
    (A thread cannot be stopped, a process per name costs more than the match, and the regex module reads patterns
    otherwise than shared/tasks.py's re.compile checked them.)"""
    if (not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread()
            or signal.getitimer(signal.ITIMER_REAL)[0] or signal.getsignal(signal.SIGALRM) is None):
        return pattern.search(name)

    def overran(signum, frame):
        raise _Overran

    previous = signal.signal(signal.SIGALRM, overran)
    try:
        signal.setitimer(signal.ITIMER_REAL, SPLIT_BY_SECONDS)
        try:
            return pattern.search(name)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Overran:
        raise DataError(path, f"--split-by {pattern.pattern!r} ran more than {SPLIT_BY_SECONDS:g} s on the name "
                              f"{name!r} (catastrophic backtracking, such as nested repeats); simplify the "
                              "expression") from None
    finally:
        signal.signal(signal.SIGALRM, previous)


def split_pairs(pairs: list[Pair], sample_size: int | None, validation_size: float,
                seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, validation), split by group (seeded), so no group is on both sides."""
    groups: dict[str, list[Pair]] = {}
    for pair in pairs:
        groups.setdefault(pair.group, []).append(pair)
    return split_groups(groups, sample_size, validation_size, seed, unit="group")


def folder_split(spec: UNetSpec, data_dir: str | os.PathLike) -> tuple[FolderLayout, list[Pair], list[Pair]]:
    """The layout and the (train, validation) pairs of a run on a folder set."""
    layout = find_folder_set(data_dir)
    if layout is None:
        raise DataError(Path(data_dir), "no images/ and masks/ folders")
    train, valid = split_pairs(match_pairs(layout, spec.split_by), spec.sample_size, spec.validation_size, spec.seed)
    return layout, train, valid


# ---- reading ------------------------------------------------------------------------------------------------------

def _is_gray(img: Image.Image) -> bool:
    """Whether an opened image holds one channel of information (a palette of greys counts)."""
    if img.mode in GRAY_MODES:
        return True
    if img.mode in ("P", "PA"):
        palette = img.getpalette() or [0, 1, 2]
        return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))
    return False


def header(path: Path, what: str = "image") -> tuple[tuple[int, int], bool]:
    """Upright (width, height) (as its EXIF orientation turns it) and whether the image is grayscale, from its header;
    unreadable: a DataError naming it."""
    with _decoding(path, what), Image.open(path) as img:
        return upright_size(img), _is_gray(img)


def check_mask_size(pair: Pair, size: tuple[int, int], mask_size: tuple[int, int]) -> None:
    """A mask has its image's upright size, or a DataError naming both sizes (and the turn, for an image whose EXIF
    orientation turns it: its mask is read as drawn on the upright image, as viewers and annotation tools show it)."""
    if mask_size == size:
        return
    turned = ""
    if mask_size == size[::-1]:
        with _decoding(pair.image, "image"), Image.open(pair.image) as img:
            if _orientation(img) in TURNED:
                turned = (f"; its EXIF orientation turns the stored {size[1]}x{size[0]} upright, and a mask is "
                          "read as drawn on the upright image")
    raise DataError(pair.mask, f"mask is {mask_size[0]}x{mask_size[1]} but its image {pair.name} is "
                               f"{size[0]}x{size[1]} (width x height){turned}")


@dataclass(frozen=True)
class Survey:
    """What the headers of a folder set say, read once in the parent before any side starts."""

    layout: FolderLayout
    pairs: list[Pair]
    modes: Counter  # images by how they are stored: "grayscale", "colour"
    sizes: list[tuple[int, int]]  # each image's (width, height)

    @property
    def mode(self) -> str:
        """The mode every image is read in: the majority's (colour on a tie: nothing is thrown away)."""
        return "L" if self.modes["grayscale"] > self.modes["colour"] else "RGB"

    @property
    def in_channels(self) -> int:
        return 1 if self.mode == "L" else 3


def survey(data_dir: str | os.PathLike, split_by: str | None = None) -> Survey | None:
    """The folder set's pairs, each image's and mask's header read (an unreadable file, or a mask of another size than
    its image, is a DataError naming both sizes); None when data_dir is not a folder set."""
    layout = find_folder_set(data_dir)
    if layout is None:
        return None
    pairs = match_pairs(layout, split_by)
    modes: Counter = Counter()
    sizes = []
    for pair in pairs:
        size, gray = header(pair.image)
        check_mask_size(pair, size, header(pair.mask, "mask")[0])
        modes["grayscale" if gray else "colour"] += 1
        sizes.append(size)
    return Survey(layout, pairs, modes, sizes)


def read_folder_image(path: Path, mode: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image as uint8 (H, W, C) in the set's mode ("L": C = 1, "RGB": C = 3), resized to size=(w, h) bilinearly;
    16-bit and float images stretched from their own darkest to brightest value (shared/data/carvana/decode.py)."""
    image, _ = read_photo(path, size, mode)  # upright, as a prediction reads it
    return image[..., None] if image.ndim == 2 else image


class FolderDataset(TrainImageDataset):
    """A folder set's pairs as TrainImageDataset's are: get(index, epoch) -> (image (H, W, C) float32 in [0, 1],
    mask (H, W) float32 in {0, 1}), resized to image_size (each image from its own size), mirror-padded for the
    original net, augmented when asked, decoded once and kept (in memory and in the cache folder)."""

    def __init__(self, pairs: Sequence[Pair], image_size: int | tuple[int, int], mode: str,
                 threshold: float | None = None, augment: bool = False, seed: int = 0,
                 cache_bytes: int = CACHE_BUDGET_BYTES, pad: int = 0):
        self.mode, self.threshold, self.channels = mode, threshold, len(mode)  # before the cache is looked up
        super().__init__(pairs, image_size, augment, seed, cache_bytes, pad)

    def kind(self) -> str:
        """What the decoded cache's name must also depend on: the same files read otherwise give other arrays."""
        return f"folder {self.mode} {self.threshold}"

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pair, size = self.samples[index], self.shape[::-1]  # PIL sizes are (width, height)
        check_mask_size(pair, header(pair.image)[0], header(pair.mask, "mask")[0])
        return read_folder_image(pair.image, self.mode, size), read_folder_mask(pair.mask, self.threshold, size)

    def original_mask(self, index: int) -> np.ndarray:
        return read_folder_mask(self.samples[index].mask, self.threshold)


def folder_dataset(spec: UNetSpec, pairs: Sequence[Pair], augment: bool = False) -> FolderDataset:
    """The run's dataset of these pairs: the spec's size, channels, mask threshold, seed and mirrored border."""
    return FolderDataset(pairs, spec.output_shape, MODES[spec.in_channels], spec.mask_threshold, augment=augment,
                         seed=spec.seed, pad=spec.pad)


def prediction_images(data_dir: str | os.PathLike) -> list[Path] | None:
    """The images a prediction reads from a folder: its images/ (or imgs/), else the images directly in it; None
    when there are none."""
    layout = find_folder_set(data_dir, masks=False)
    found = image_files(layout.image_dir if layout else Path(data_dir).expanduser())
    _by_stem(found, "images")  # i.png and i.bmp: one predicted masks/i.png would overwrite the other
    return found or None


def all_foreground_dice(masks: Sequence[np.ndarray]) -> float:
    """The mean Dice of predicting every pixel foreground: 2|M| / (|M| + HW) per mask (0 for an empty one). When the
    foreground is most of the image this is high, and a model must beat it to have learnt anything."""
    return float(np.mean([2.0 * np.count_nonzero(m) / (np.count_nonzero(m) + m.size) for m in masks]))
