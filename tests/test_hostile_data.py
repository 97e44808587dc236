"""What a hostile user's data no longer breaks (issue 30): masks judged by what they show (all empty or all full,
a --mask-threshold that empties them, alpha-drawn RGBA, palettes by colour, NaN pixels), one EXIF orientation for
training and prediction, no predicted mask overwritten by another of the same stem, zips extracted only in a folder
known to be Carvana's, and a symlink loop or a runaway --split-by named in one line. Small files in tmp_path; no
training."""
from __future__ import annotations

import json
import os
import re
import signal
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import compare
from harness.predict import checks as predict_checks
from harness.predict.masks import PhotoDataset, mask_row
from harness.tasks.unet import prepare_carvana
from shared.data import folders
from shared.data.carvana import read_image, resolve_carvana
from shared.errors import DataError
from shared.init import init_weights
from shared.tasks import make_spec
from shared.weights import save_weights, unet_layout

TINY = {"base_filters": 2, "image_size": 32}


def write(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def blob(height: int = 16, width: int = 24, value: int = 255) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4:3 * height // 4, width // 3:2 * width // 3] = value
    return mask


def folder_set(root: Path, masks: list[np.ndarray]) -> Path:
    """Grayscale PNG images im0.png, ... with the given masks (16x24)."""
    rng = np.random.default_rng(0)
    for i, mask in enumerate(masks):
        write(root / "images" / f"im{i}.png", rng.integers(0, 256, (16, 24), dtype=np.uint8))
        write(root / "masks" / f"im{i}.png", mask)
    return root


def one_line_error(capsys, argv: list[str]) -> str:
    status = compare.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("compare.py: error: "), lines
    return lines[0]


# ---- 4: masks are judged by what they show ------------------------------------------------------------------------

def test_a_set_of_empty_or_full_masks_is_refused_but_empty_validation_masks_are_not(tmp_path, capsys):
    spec = make_spec("unet", **TINY, validation_size=0.5)
    empty = folder_set(tmp_path / "empty", [np.zeros((16, 24), np.uint8)] * 4)
    with pytest.raises(DataError, match=r"masks: all 4 masks are empty \(no foreground pixel\) at the training "
                                        r"size 32x32 \(height x width\): nothing to learn") as refused:
        prepare_carvana(spec, empty, download=False)
    assert refused.value.path == empty / "masks"
    full = folder_set(tmp_path / "full", [np.full((16, 24), 255, np.uint8)] * 4)
    with pytest.raises(DataError, match="all 4 masks are full"):
        prepare_carvana(spec, full, download=False)
    # Only the validation masks empty: a set to learn from (its validation Dice is another matter).
    some = folder_set(tmp_path / "some", [blob()] * 4)
    _, valid = folders.split_pairs(folders.survey(some).pairs, None, 0.5, spec.seed)
    for pair in valid:
        write(pair.mask, np.zeros((16, 24), np.uint8))
    assert prepare_carvana(spec, some, download=False)["description"]["all_foreground_dice"] == 0
    capsys.readouterr()
    line = one_line_error(capsys, ["--task", "unet", "--data-dir", str(empty), "--epochs", "1", "--image-size", "32",
                                   "--base-filters", "2", "--out", str(tmp_path / "run")])
    assert f"{empty / 'masks'}: all 4 masks are empty" in line and not (tmp_path / "run").exists()


def test_a_threshold_that_empties_or_fills_every_mask_names_the_values(tmp_path):
    root = folder_set(tmp_path / "set", [blob()] * 4)
    spec = make_spec("unet", **TINY, validation_size=0.5)
    with pytest.raises(DataError, match=r"masks: --mask-threshold 256 makes all 4 masks empty \(no foreground "
                                        r"pixel\): the masks' values run from 0 to 255$"):
        prepare_carvana(spec.replace(mask_threshold=256.0), root, download=False)
    assert prepare_carvana(spec.replace(mask_threshold=128.0), root, download=False)["description"]["foreground"] > 0
    lifted = folder_set(tmp_path / "lifted", [np.maximum(blob(), 100)] * 4)  # background 100, not 0
    with pytest.raises(DataError, match="--mask-threshold 100 makes all 4 masks full .*from 100 to 255"):
        prepare_carvana(spec.replace(mask_threshold=100.0), lifted, download=False)


def test_alpha_drawn_rgba_and_palette_masks_are_read_by_what_they_show(tmp_path):
    shape = blob() > 0
    # One colour throughout (white), the shape only in the alpha channel.
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 255, np.where(shape, 255, 0)
    assert np.array_equal(folders.read_folder_mask(write(tmp_path / "alpha.png", rgba, "RGBA"), None), shape)
    # The shape in colour, alpha constant: read by the colour, as before.
    rgba[..., :3], rgba[..., 3] = np.where(shape, 255, 0)[..., None], 255
    assert np.array_equal(folders.read_folder_mask(write(tmp_path / "colour.png", rgba, "RGBA"), None), shape)
    # A palette whose index 0 is white, 1 black: the white shape is the foreground, whatever its index.
    palette = Image.fromarray(np.where(shape, 0, 1).astype(np.uint8), "P")
    palette.putpalette([255, 255, 255, 0, 0, 0])
    palette.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    assert np.array_equal(folders.read_folder_mask(tmp_path / "palette.png", None), shape)


def test_a_nan_or_infinite_pixel_is_refused_naming_the_file(tmp_path):
    image = np.random.default_rng(0).random((16, 24)).astype(np.float32)
    image[3, 4] = np.nan
    path = write(tmp_path / "nan.tif", image)
    with pytest.raises(DataError, match=r"nan\.tif: image holds 1 NaN or infinite pixel value\(s\)"):
        folders.read_folder_image(path, "L")
    mask = blob().astype(np.float32)
    mask[0, 0] = np.inf
    with pytest.raises(DataError, match=r"inf\.tif: mask holds 1 NaN or infinite"):
        folders.read_folder_mask(write(tmp_path / "inf.tif", mask), 0.5)


# ---- 5: one orientation -------------------------------------------------------------------------------------------

def turned_jpeg(path: Path, width: int = 48, height: int = 32) -> Path:
    """A JPEG stored width x height whose EXIF orientation (6) says: turn it by 90 degrees."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, exif=exif.tobytes())
    return path


def test_a_turned_jpeg_is_read_upright_in_training_and_prediction_and_its_mask_written_so(tmp_path):
    photo = turned_jpeg(tmp_path / "set" / "images" / "p.jpg")
    write(tmp_path / "set" / "masks" / "p.png", blob(48, 32))  # drawn on the upright 32x48 photo
    spec = make_spec("unet", **{**TINY, "image_size": (48, 32)})
    pair = folders.survey(tmp_path / "set").pairs[0]
    assert folders.header(photo) == ((32, 48), False)
    trained = folders.folder_dataset(spec, [pair]).load(0)[0]  # training's reader, at the spec's size
    predicted, facts = PhotoDataset([str(photo)], 0, spec, skip_bad=False).get(0)
    assert trained.shape == (48, 32, 3) and tuple(facts[2:]) == (32, 48)
    assert np.array_equal(predicted.reshape(trained.shape), trained.astype(np.float32) / 255)
    assert folders.read_folder_image(photo, "RGB").shape == read_image(photo).shape == (48, 32, 3)
    mask_row(np.ones(spec.output_shape, np.float32), str(photo), (32, 48), 0.5, None, tmp_path / "masks")
    assert Image.open(tmp_path / "masks" / "p.png").size == (32, 48)
    # A mask of the stored size: named, with the turn.
    write(pair.mask, blob(32, 48))
    with pytest.raises(DataError, match="mask is 48x32 but its image p.jpg is 32x48 .*EXIF orientation turns"):
        folders.survey(tmp_path / "set")


# ---- 6: nothing overwritten in prediction -------------------------------------------------------------------------

def test_two_photos_of_one_stem_are_refused_before_anything_is_predicted(tmp_path, capsys):
    photos = tmp_path / "photos"
    for name in ("a.png", "i_dup.png", "i_dup.bmp"):
        write(photos / name, np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="two images named i_dup: i_dup.bmp and i_dup.png"):
        predict_checks.data_dir_photos(photos)
    run = tmp_path / "run"
    spec = make_spec("unet", **TINY)
    for side in ("tf", "torch"):
        save_weights(init_weights(unet_layout(spec), 0), run / side / "model.safetensors")
    (run / "results.json").write_text(json.dumps({"task": "unet", "config": spec.to_dict(), "data": {},
                                                  "frameworks": {"tf": {}, "torch": {}}}))
    line = one_line_error(capsys, ["--predict", str(run), "--data-dir", str(photos), "--out", str(tmp_path / "out")])
    assert "two images named i_dup: i_dup.bmp and i_dup.png" in line and not (tmp_path / "out").exists()


# ---- 10: data touched only when recognised ------------------------------------------------------------------------

def test_a_foreign_zip_is_never_extracted_and_kaggles_are_once(tmp_path, monkeypatch):
    def backup(root: Path) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        (root / "notes.txt").write_text("mine")
        with zipfile.ZipFile(root / "backup.zip", "w") as archive:
            archive.writestr("train/x.jpg", b"not Carvana's")
        return root

    unrelated = backup(tmp_path / "unrelated")
    with pytest.raises(DataError, match="no training photos"):
        resolve_carvana(unrelated)
    with pytest.raises(DataError, match="no test photos"):
        predict_checks.test_photos(unrelated)
    own = folder_set(backup(tmp_path / "own"), [blob()] * 4)
    assert len(folders.survey(own).pairs) == 4
    assert not (unrelated / "extracted").exists() and not (own / "extracted").exists()
    # Kaggle's train.zip without train_masks: not extracted either.
    (unrelated / "backup.zip").rename(unrelated / "train.zip")
    with pytest.raises(DataError, match="no masks"):
        resolve_carvana(unrelated)
    assert not (unrelated / "extracted").exists()
    # A real Carvana zip layout: extracted, once.
    from test_carvana_data import make_zips
    root = make_zips(tmp_path / "zips")
    backup(root)
    extracted = resolve_carvana(root)
    assert sorted(p.name for p in (root / "extracted").iterdir()) == ["sample_submission.csv", "test", "train",
                                                                       "train_masks", "train_masks.csv"]
    monkeypatch.setattr(zipfile.ZipFile, "extractall", lambda *a, **k: pytest.fail("extracted again"))
    assert resolve_carvana(root) == extracted


# ---- 12: a symlink loop, a runaway --split-by ---------------------------------------------------------------------

@pytest.mark.parametrize("loop", ["self", "pair"])
def test_an_images_folder_that_is_a_symlink_loop_is_named(tmp_path, capsys, loop):
    root = tmp_path / "set"
    (root / "masks").mkdir(parents=True)
    if loop == "self":
        os.symlink("images", root / "images")
    else:
        os.symlink("b", root / "a")
        os.symlink("a", root / "b")
        os.symlink("a", root / "images")
    with pytest.raises(DataError, match="symlink loop"):
        folders.find_folder_set(root)
    line = one_line_error(capsys, ["--task", "unet", "--data-dir", str(root), "--epochs", "1", "--out",
                                   str(tmp_path / "run")])
    assert line == f"compare.py: error: {root / 'images'}: symlink loop: the link leads back to itself, never to a " \
                   "file or folder"


def test_a_split_by_that_backtracks_for_ever_is_stopped_naming_pattern_and_name(tmp_path, monkeypatch):
    name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaab"
    monkeypatch.setattr(folders, "SPLIT_BY_SECONDS", 0.2)
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"--split-by '\(a\+\)\+\$' ran more than 0.2 s on the name "
                                        rf"'{name}.png'") as stopped:
        folders.group_of(tmp_path / f"{name}.png", re.compile(r"(a+)+$"))
    assert time.perf_counter() - started < 2 and "\n" not in str(stopped.value)
    # The timer is gone afterwards, and an ordinary pattern still finds its group.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert folders.group_of(Path("p01_a.png"), re.compile(r"^(p\d+)_")) == "p01"
