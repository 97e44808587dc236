"""Your own segmentation set (a --data-dir with images/ and masks/) in the parent, before any side starts: the spec
fitted to it (a grayscale set trains a one-channel U-Net), and every file read and checked once, so a bad folder
stops in one line; what it found goes to results.json and the report (shared/data/folders.py reads the files)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.report import SIDE_NAMES
from shared.data import folder_masks, folders
from shared.errors import UserError
from shared.tasks import UNetSpec, normalize_image_size, shape_text

MODE_NAMES = {"L": "grayscale", "RGB": "colour"}


def fit_data(spec: UNetSpec, data_dir: Path | None, download: bool) -> UNetSpec:
    """The spec as the data makes it: the channels of a folder set's images (the majority's, 1 for grayscale). The
    folder flags (--mask-threshold, --split-by) apply to a folder set alone."""
    found = folders.survey(data_dir, spec.split_by) if data_dir is not None and not download else None
    if found is None:
        if spec.mask_threshold is not None or spec.split_by is not None:
            raise UserError("--mask-threshold and --split-by apply to your own folder of images/ and masks/ "
                            "(--data-dir DIR), not to Carvana's layout or the embedded set")
        return spec
    return spec.replace(in_channels=found.in_channels)


def converted_text(modes: dict, mode: str) -> str | None:
    """What a mixed folder's minority became, or None when every image is stored in the mode they are read in."""
    other = "colour" if mode == "L" else "grayscale"
    if not modes.get(other):
        return None
    total = sum(modes.values())
    return (f"{modes[other]} {other} image(s) of {total} converted to {MODE_NAMES[mode]}, the mode of the majority "
            f"({modes.get(MODE_NAMES[mode], 0)})")


def size_range(sizes: list[tuple[int, int]]) -> str:
    """The images' sizes, width x height: one, or the smallest and the largest by area."""
    ordered = sorted(set(sizes), key=lambda size: (size[0] * size[1], size))
    shown = [f"{w}x{h}" for w, h in (ordered[0], ordered[-1])]
    return shown[0] if len(ordered) == 1 else f"{len(ordered)} sizes from {shown[0]} to {shown[1]}"


def prepare_folder(spec: UNetSpec, found: folders.Survey) -> dict:
    """Split the pairs as every side will, decode every image and mask once (the decoded sets go to the cache the
    sides read), and describe the set: its groups, modes, sizes, foreground share and the Dice of the trivial answer
    (every pixel foreground) on the validation images."""
    train, valid = folders.split_pairs(found.pairs, spec.sample_size, spec.validation_size, spec.seed)
    mode = folders.MODES[spec.in_channels]
    masks = folders.folder_dataset(spec, train).decode_all()
    valid_masks = folders.folder_dataset(spec, valid).decode_all() if valid else []
    folder_masks.check_foreground(found.layout.mask_dir, [pair.mask for pair in train + valid], masks + valid_masks,
                                  spec.mask_threshold)
    groups = {"train": len({p.group for p in train}), "valid": len({p.group for p in valid})}
    description = {
        "source": folders.SOURCE_NAME, "location": str(found.layout.root),
        "folders": [found.layout.image_dir.name, found.layout.mask_dir.name],
        "train": len(train), "valid": len(valid), "test": 0, "groups": groups, "split_by": spec.split_by,
        "mode": MODE_NAMES[mode], "in_channels": spec.in_channels, "stored": dict(found.modes),
        "converted": converted_text(found.modes, mode), "mask_threshold": spec.mask_threshold,
        "image_size": spec.image_size, "mask_size": normalize_image_size(spec.output_shape),
        "resize": (f"each image resized from its own size ({size_range(found.sizes)}, width x height) to "
                   f"{shape_text(spec.output_shape)} (height x width), masks by nearest neighbour; predicted masks "
                   "are upsampled back to each image's size"),
        "foreground": float(np.mean([m.mean() for m in masks + valid_masks])),
        "all_foreground_dice": folders.all_foreground_dice(valid_masks) if valid_masks else None,
    }
    print(split_line(description), flush=True)
    if description["converted"]:
        print(f"mixed folder: {description['converted']}", flush=True)
    return description


def split_line(data: dict) -> str:
    """One line on the set and its split: how many groups and images each side of the split got."""
    how = f"by --split-by {data['split_by']!r}" if data["split_by"] else "by file"
    groups = data["groups"]
    return (f"your folder {data['location']}: {data['train'] + data['valid']} {data['mode']} images "
            f"({data['in_channels']} input channel{'s' if data['in_channels'] > 1 else ''}), split {how}: "
            f"{data['train']} images in {groups['train']} groups for training, {data['valid']} images in "
            f"{groups['valid']} groups for validation; foreground {100 * data['foreground']:.1f}% of the pixels")


def folder_lines(results: dict) -> list[str]:
    """The report's lines on your own folder set (what was read, how it was split), and, for any run with validation,
    each side's Dice next to the all-foreground answer's: when the foreground is most of the image the trivial answer
    scores high, and only a model above it has learnt anything."""
    data, lines = results.get("data", {}), []
    if data.get("source") == folders.SOURCE_NAME:
        line = split_line(data)
        lines += ["", line[0].upper() + line[1:] + "."]
        if data.get("converted"):
            lines += ["", f"Mixed folder: {data['converted']}."]
        if data.get("mask_threshold") is not None:
            lines += ["", f"Masks: foreground where the value is {data['mask_threshold']:g} or more "
                          "(--mask-threshold)."]
    scored = {side: r["metrics"] for side, r in results["frameworks"].items()
              if r.get("metrics", {}).get("val_dice_all_foreground") is not None}
    if scored:
        each = [f"{SIDE_NAMES[side]} **{m['val_dice']:.4f}** against {m['val_dice_all_foreground']:.4f} "
                f"({m['val_dice'] - m['val_dice_all_foreground']:+.4f})" for side, m in scored.items()]
        lines += ["", "Validation Dice against the all-foreground answer (every pixel predicted foreground): "
                  + "; ".join(each) + "."]
    return lines
