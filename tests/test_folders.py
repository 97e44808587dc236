"""Your own segmentation set (shared/data/folders.py, harness/tasks/folder_set.py): an images/ and a masks/ folder
matched by stem, 8- and 16-bit images and masks in PNG, TIFF and palette GIF, the refusal of a mask of many values,
the split by group, a grayscale U-Net (one input channel) on both sides, every bad folder as one line and exit 2
through compare.main, and one tiny end-to-end run and prediction (slow)."""
from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import compare
from conftest import COMPARE, USER_DIR
from harness.registry import REGISTRY, TOLERANCES
from harness.tasks import folder_set as folder_runner
from harness.tasks.unet import FolderSplit, make_split, prepare_carvana
from shared.data import folders
from shared.data.augment import random_augment
from shared.data.synthetic_cells import generate_cells
from shared.errors import DataError, UserError
from shared.init import init_weights
from shared.rle import rle_decode
from shared.tasks import make_spec
from shared.weights import unet_layout

TINY = {"base_filters": 2, "image_size": 32}


def write(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def blob(height: int, width: int, value: int = 255, dtype=np.uint8) -> np.ndarray:
    """A centred rectangle of `value` on 0: a mask with two values."""
    mask = np.zeros((height, width), dtype)
    mask[height // 4:3 * height // 4, width // 3:2 * width // 3] = value
    return mask


def small_folder(root: Path, count: int = 4, size: tuple[int, int] = (16, 24)) -> Path:
    """count grayscale PNG images (height x width) with 0/255 PNG masks of the same stem."""
    rng = np.random.default_rng(0)
    for i in range(count):
        write(root / "images" / f"im{i}.png", rng.integers(0, 256, size, dtype=np.uint8))
        write(root / "masks" / f"im{i}.png", blob(*size))
    return root


# ---- matching, reading, splitting ---------------------------------------------------------------------------------

def test_images_and_masks_match_by_stem_with_or_without_mask_suffix(tmp_path):
    rng = np.random.default_rng(1)
    write(tmp_path / "imgs" / "a.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))
    write(tmp_path / "imgs" / "b.jpg", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    write(tmp_path / "imgs" / "c.tif", rng.integers(0, 4096, (16, 16), dtype=np.uint16))
    write(tmp_path / "labels" / "a.png", blob(16, 16))
    write(tmp_path / "labels" / "b_mask.png", blob(16, 16, 1))
    write(tmp_path / "labels" / "c_mask.gif", blob(16, 16, 1), "L")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image: ignored")
    layout = folders.find_folder_set(tmp_path)
    assert (layout.image_dir.name, layout.mask_dir.name) == ("imgs", "labels")
    pairs = folders.match_pairs(layout)
    assert [(p.name, p.mask.name, p.group) for p in pairs] == [("a.png", "a.png", "a"), ("b.jpg", "b_mask.png", "b"),
                                                                ("c.tif", "c_mask.gif", "c")]
    found = folders.survey(tmp_path)
    assert found.modes == {"grayscale": 2, "colour": 1} and found.in_channels == 1 and found.sizes == [(16, 16)] * 3


def test_16_bit_palette_and_01_masks_read_as_0_1(tmp_path):
    expected = (blob(12, 18) > 0).astype(np.uint8)
    masks = [write(tmp_path / "m255.png", blob(12, 18)), write(tmp_path / "m01.png", blob(12, 18, 1)),
             write(tmp_path / "m16.tif", blob(12, 18, 1000, np.uint16)),
             write(tmp_path / "m16.png", blob(12, 18, 65535, np.uint16))]
    Image.fromarray(blob(12, 18, 1), "L").save(tmp_path / "palette.gif")  # Pillow writes palette indices 0/1
    assert Image.open(tmp_path / "palette.gif").mode == "P"
    for path in [*masks, tmp_path / "palette.gif"]:
        found = folders.read_folder_mask(path, None)
        assert found.dtype == np.uint8 and np.array_equal(found, expected), path.name
    assert folders.read_folder_mask(masks[0], None, (9, 6)).shape == (6, 9)  # resized (w, h) by nearest
    # A 16-bit image holding 12-bit values is stretched onto 0..255, not clipped or left dark.
    ramp = np.tile(np.linspace(100, 4000, 18).astype(np.uint16), (12, 1))
    image = folders.read_folder_image(write(tmp_path / "ramp.tif", ramp), "L")
    assert image.shape == (12, 18, 1) and image.min() == 0 and image.max() == 255
    assert folders.read_folder_image(tmp_path / "ramp.tif", "RGB", (9, 6)).shape == (6, 9, 3)


def test_a_mask_of_more_than_two_values_is_refused_unless_a_threshold_is_given(tmp_path):
    labels = np.zeros((10, 10), np.uint8)
    labels[1:4, 1:4], labels[5:8, 5:8], labels[8:, :2] = 1, 2, 3  # instance labels 0..3
    path = write(tmp_path / "cells.png", labels)
    with pytest.raises(DataError) as refused:
        folders.read_folder_mask(path, None)
    message = str(refused.value)
    assert message.startswith(f"{path}: mask holds 4 values (0, 1, 2, 3)") and "--mask-threshold" in message
    assert "\n" not in message
    assert folders.read_folder_mask(path, 1).sum() == 9 + 9 + 4
    assert folders.read_folder_mask(path, 2).sum() == 9 + 4
    with pytest.raises(DataError, match=r"2 values \(128, 255\)"):  # two values, but no background
        folders.read_folder_mask(write(tmp_path / "no-zero.png", np.where(labels > 0, 255, 128).astype(np.uint8)),
                                 None)


def test_the_split_by_regex_keeps_each_group_on_one_side(tmp_path):
    rng = np.random.default_rng(2)
    for patient in range(5):
        for i in range(4):
            write(tmp_path / "images" / f"patient{patient}-slide{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
            write(tmp_path / "masks" / f"patient{patient}-slide{i}_mask.png", blob(8, 8))
    spec = make_spec("unet", split_by=r"^(patient\d+)-", validation_size=0.4, seed=3)
    layout, train, valid = folders.folder_split(spec, tmp_path)
    train_groups, valid_groups = {p.group for p in train}, {p.group for p in valid}
    assert not train_groups & valid_groups
    assert (len(train_groups), len(valid_groups), len(train), len(valid)) == (3, 2, 12, 8)
    assert all(p.group == p.name.split("-")[0] for p in train + valid)
    # Without --split-by: by file, seeded (another seed, another split; the same seed, the same one).
    _, by_file, held_out = folders.folder_split(spec.replace(split_by=None), tmp_path)
    assert (len(by_file), len(held_out)) == (12, 8) and len({p.group for p in held_out}) == 8
    assert folders.folder_split(spec.replace(split_by=None), tmp_path)[2] == held_out
    assert folders.folder_split(spec.replace(split_by=None, seed=4), tmp_path)[2] != held_out
    with pytest.raises(DataError, match="finds no group in this file name"):
        folders.folder_split(spec.replace(split_by=r"slide(\d{3})"), tmp_path)


def test_the_dataset_resizes_each_image_from_its_own_size_and_keeps_one_channel(tmp_path):
    generate_cells(tmp_path, images=4, sizes=[(20, 28), (36, 24)], groups=2)
    spec = make_spec("unet", **TINY, in_channels=1)
    split = make_split(spec, str(tmp_path))
    assert isinstance(split, FolderSplit) and split.test == []
    dataset = split.dataset(split.train + split.valid)
    image, mask = dataset.get(0)
    assert image.shape == (32, 32, 1) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0.0, 1.0}
    # Each mask at its image's own size, for the Dice there.
    assert sorted(dataset.original_mask(i).shape for i in range(4)) == [(20, 28), (20, 28), (36, 24), (36, 24)]
    augmented, _ = split.dataset(split.train, augment=True).get(0, epoch=2)
    assert augmented.shape == (32, 32, 1)
    # Grayscale augmentation is the RGB copy's, channel for channel: brightness alone, no hue or saturation.
    gray, rgb = random_augment(image, mask, np.random.default_rng(5)), random_augment(
        np.repeat(image, 3, -1), mask, np.random.default_rng(5))
    assert np.array_equal(gray[0][..., 0], rgb[0][..., 0]) and np.array_equal(gray[1], rgb[1])


def test_a_mixed_folder_reads_as_its_majority_and_the_spec_follows(tmp_path, capsys):
    root = small_folder(tmp_path / "gray", count=5)
    Image.open(root / "images" / "im0.png").convert("RGB").save(root / "images" / "im0.png")
    spec = folder_runner.fit_data(make_spec("unet", **TINY), root, download=False)
    assert spec.in_channels == 1
    data = prepare_carvana(spec.replace(validation_size=0.4), root, download=False)["description"]
    assert data["converted"] == "1 colour image(s) of 5 converted to grayscale, the mode of the majority (4)"
    assert (data["train"], data["valid"], data["groups"]) == (3, 2, {"train": 3, "valid": 2})
    share = 1 / 6  # of each mask's pixels: half its rows, a third of its columns
    assert data["foreground"] == pytest.approx(share, abs=0.02)
    assert data["all_foreground_dice"] == pytest.approx(2 * share / (1 + share), abs=0.02)
    assert "3 images in 3 groups for training, 2 images in 2 groups for validation" in capsys.readouterr().out
    for i in (1, 2, 3):  # now most images are colour: a three-channel U-Net
        Image.open(root / "images" / f"im{i}.png").convert("RGB").save(root / "images" / f"im{i}.png")
    assert folder_runner.fit_data(make_spec("unet", **TINY), root, download=False).in_channels == 3
    with pytest.raises(UserError, match="apply to your own folder"):
        folder_runner.fit_data(make_spec("unet", **TINY, split_by="x"), None, download=False)


# ---- a grayscale U-Net on both sides ----------------------------------------------------------------------------

def test_a_grayscale_unet_has_one_input_channel_and_the_sides_agree(side):
    spec = make_spec("unet", **TINY, in_channels=1)
    layout = unet_layout(spec)
    assert layout["enc1.conv1.weight"].shape == (2, 1, 3, 3) and layout["enc2.conv1.weight"].shape == (4, 2, 3, 3)
    canonical = init_weights(layout, spec.seed)
    task = REGISTRY["unet"].surface(side, spec).task
    model = task.build(spec)
    task.load_weights(model, canonical)
    exported = task.export_weights(model)
    assert {k: v.shape for k, v in exported.items()} == {k: p.shape for k, p in layout.items()}
    images, masks = REGISTRY["unet"].benchmark_batch(spec, 2, seed=4)
    assert images.shape == (2, 32, 32, 1)
    logits = task.forward(model, images)
    other = "torch" if side == "tf" else "tf"
    twin = REGISTRY["unet"].surface(other, spec).task
    twin_model = twin.build(spec)
    twin.load_weights(twin_model, canonical)
    difference = float(np.max(np.abs(logits - twin.forward(twin_model, images))))
    assert logits.shape == (2, 32, 32, 1) and difference <= TOLERANCES["unet"]["forward"], difference
    loss, gradients = task.gradients(model, images, masks)
    twin_loss, twin_gradients = twin.gradients(twin_model, images, masks)
    assert abs(loss - twin_loss) <= TOLERANCES["unet"]["loss"]
    first = gradients["enc1.conv1.weight"]
    assert first.shape == (2, 1, 3, 3)
    assert np.max(np.abs(first - twin_gradients["enc1.conv1.weight"])) <= 1e-4 * np.max(np.abs(first))


# ---- bad folders: one line, exit status 2, nothing written ------------------------------------------------------

def no_images(root: Path) -> str:
    for path in (root / "images").iterdir():
        path.unlink()
    return "images: no images"


def masks_without_images(root: Path) -> str:
    for i in range(4):
        write(root / "masks" / f"stray{i}.png", blob(16, 24))
    return "4 masks without an image in"  # and the first three named


def images_without_masks(root: Path) -> str:
    (root / "masks" / "im2.png").unlink()
    return "1 images without a mask in"


def unreadable(root: Path) -> str:
    (root / "images" / "im3.png").write_bytes(b"not a PNG at all")
    return "im3.png: cannot read this image"


def truncated(root: Path) -> str:
    data = (root / "masks" / "im1.png").read_bytes()
    (root / "masks" / "im1.png").write_bytes(data[:60])
    return "im1.png: cannot read this"


def other_size(root: Path) -> str:
    write(root / "masks" / "im1.png", blob(20, 30))
    return "im1.png: mask is 30x20 but its image im1.png is 24x16 (width x height)"


def too_small(root: Path) -> str:
    for i in range(1, 4):
        (root / "images" / f"im{i}.png").unlink()
        (root / "masks" / f"im{i}.png").unlink()
    return "leaves no group for validation: 1 image(s) in 1 group(s) are used"


def many_values(root: Path) -> str:
    write(root / "masks" / "im2.png", np.arange(16 * 24, dtype=np.uint8).reshape(16, 24) % 5)
    return "im2.png: mask holds 5 values (0, 1, 2, 3, 4)"


BAD_FOLDERS = {"no images": no_images, "masks without images": masks_without_images,
               "images without masks": images_without_masks, "unreadable file": unreadable,
               "truncated mask": truncated, "mask of another size": other_size, "too small to split": too_small,
               "mask of many values": many_values}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_a_bad_folder_stops_in_one_line_with_exit_2(tmp_path, capsys, case):
    root = small_folder(tmp_path / "data")
    words = BAD_FOLDERS[case](root)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    out = tmp_path / "run"
    status = compare.main(["--task", "unet", "--data-dir", str(root), "--epochs", "1", "--image-size", "32",
                           "--base-filters", "2", "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("compare.py: error: ") and words in lines[0], lines[0]
    assert not out.exists() and {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    if case == "masks without images":
        assert "stray0.png, stray1.png, stray2.png and 1 more" in lines[0]


def test_the_folder_flags_are_refused_without_a_folder_set(capsys):
    assert compare.main(["--task", "unet", "--mask-threshold", "1"]) == 2
    assert "--mask-threshold and --split-by apply to your own folder" in capsys.readouterr().err
    assert compare.main(["--task", "unet", "--split-by", "(unclosed"]) == 2
    assert "is not a regular expression" in capsys.readouterr().err


# ---- end to end: train on both sides, then predict a new folder ------------------------------------------------

def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TWINNETS_CACHE": str(cache)}
    return subprocess.run([sys.executable, COMPARE, *args], cwd=USER_DIR, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_train_on_a_grayscale_folder_then_predict_pngs_at_each_images_size(tmp_path):
    data = generate_cells(tmp_path / "cells", images=12, sizes=[(40, 48), (32, 32), (56, 40)], groups=4,
                          image_format="tif", mask_format="gif")  # 16-bit TIFF images, palette GIF _mask masks
    run = tmp_path / "run"
    trained = run_cli("--task", "unet", "--data-dir", str(data), "--epochs", "1", "--image-size", "32",
                      "--base-filters", "2", "--batch-size", "4", "--split-by", r"^(p\d+)_", "--control", "none",
                      "--threads", "1", "--out", str(run), cache=tmp_path / "cache")
    assert trained.returncode == 0, trained.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["config"]["in_channels"] == 1 and results["data"]["source"] == "folder"
    assert results["data"]["groups"] == {"train": 3, "valid": 1} and results["data"]["valid"] == 3
    assert results["parity"]["passed"] and results["agreement"]["same_weights"] >= 0.999
    assert "drift" in results
    for side in ("tf", "torch"):
        metrics = results["frameworks"][side]["metrics"]
        assert metrics["val_dice_all_foreground"] == pytest.approx(results["data"]["all_foreground_dice"])
        assert 0 <= metrics["val_dice"] <= 1 and 0 <= metrics["val_dice_original"] <= 1
    assert "against the all-foreground answer" in (run / "report.md").read_text()
    assert "3 images in 1 groups for validation" in trained.stdout

    new = tmp_path / "new"  # images only, of other sizes and formats, directly in the folder
    write(new / "wide.png", np.random.default_rng(0).integers(0, 256, (30, 70, 3), dtype=np.uint8))
    write(new / "tall.tif", np.random.default_rng(1).integers(0, 4096, (50, 20), dtype=np.uint16))
    write(new / "small.jpg", np.random.default_rng(2).integers(0, 256, (16, 16), dtype=np.uint8))
    predicted = run_cli("--predict", str(run), "--data-dir", str(new), "--out", str(tmp_path / "predicted"),
                        "--threads", "1", cache=tmp_path / "cache")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "<side>/submit.csv.gz, <side>/masks/<stem>.png" in predicted.stdout  # the closing line names both
    sizes = {"small": (16, 16), "tall": (50, 20), "wide": (30, 70)}
    for side in ("tf", "torch"):
        folder = tmp_path / "predicted" / side
        with gzip.open(folder / "submit.csv.gz", "rt", newline="") as handle:
            rows = list(csv.reader(handle))[1:]
        assert sorted(name for name, _ in rows) == ["small.jpg", "tall.tif", "wide.png"]
        for name, rle in rows:
            png = np.asarray(Image.open(folder / "masks" / f"{Path(name).stem}.png"))
            assert png.shape == sizes[Path(name).stem] and set(np.unique(png)) <= {0, 255}
            assert np.array_equal(png > 0, rle_decode(rle, png.shape).astype(bool)), (side, name)
