"""Tests of shared/data/synthetic_cars.py: the generated dataset has Kaggle Carvana's layout, formats and sense."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.data import synthetic_cars
from shared.data.synthetic_cars import (
    ANGLES,
    SOURCE_NAME,
    generate_synthetic_carvana,
    synthetic_carvana,
)
from shared.errors import UserError
from shared.rle import read_rle_csv, rle_decode

SIZE = (192, 128)  # (width, height)
CAR_ID = re.compile(r"[0-9a-f]{12}")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_synthetic_carvana(tmp_path_factory.mktemp("gen") / "carvana", n_cars=2, n_test_cars=1,
                                      size=SIZE, seed=3)


def _cars(folder: Path) -> set[str]:
    return {p.name.split("_")[0] for p in folder.iterdir()}


def _mask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def test_layout_and_file_names(dataset):
    assert sorted(p.name for p in dataset.iterdir()) == [
        "sample_submission.csv", "test", "train", "train_masks", "train_masks.csv"]
    train_cars, test_cars = _cars(dataset / "train"), _cars(dataset / "test")
    assert len(train_cars) == 2 and len(test_cars) == 1 and not train_cars & test_cars
    assert all(CAR_ID.fullmatch(car) for car in train_cars | test_cars)
    assert ANGLES == tuple(f"{i:02d}" for i in range(1, 17))
    assert {p.name for p in (dataset / "train").iterdir()} == {f"{c}_{a}.jpg" for c in train_cars for a in ANGLES}
    assert {p.name for p in (dataset / "train_masks").iterdir()} == {
        f"{c}_{a}_mask.gif" for c in train_cars for a in ANGLES}
    assert {p.name for p in (dataset / "test").iterdir()} == {f"{c}_{a}.jpg" for c in test_cars for a in ANGLES}
    assert SOURCE_NAME == "synthetic-carvana"


def test_photos_are_rgb_jpegs_of_the_size(dataset):
    for path in sorted((dataset / "train").iterdir()) + sorted((dataset / "test").iterdir()):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", SIZE)
            pixels = np.asarray(image)
        assert pixels.std() > 10  # a picture, not a flat colour


def test_masks_are_binary_gifs_covering_part_of_the_image(dataset):
    for path in sorted((dataset / "train_masks").iterdir()):
        with Image.open(path) as image:
            assert (image.format, image.size) == ("GIF", SIZE)
            assert image.mode in ("P", "L")
            mask = np.array(image)
        assert set(np.unique(mask)) == {0, 1}
        assert 0.10 <= mask.mean() <= 0.70, f"{path.name}: the car covers {mask.mean():.1%}"


def test_csv_rle_decodes_to_the_gif_masks(dataset):
    assert (dataset / "train_masks.csv").read_text().splitlines()[0] == "img,rle_mask"
    rows = read_rle_csv(dataset / "train_masks.csv")
    assert set(rows) == {p.name for p in (dataset / "train").iterdir()}
    assert list(rows) == sorted(rows)
    width, height = SIZE
    for name, rle in rows.items():
        expected = _mask(dataset / "train_masks" / name.replace(".jpg", "_mask.gif"))
        np.testing.assert_array_equal(rle_decode(rle, (height, width)), expected, err_msg=name)


def test_sample_submission_lists_every_test_image(dataset):
    assert (dataset / "sample_submission.csv").read_text().splitlines()[0] == "img,rle_mask"
    rows = read_rle_csv(dataset / "sample_submission.csv")
    assert set(rows) == {p.name for p in (dataset / "test").iterdir()}
    assert set(rows.values()) == {"1 1"}


def test_the_photo_shows_the_car_where_the_mask_is(dataset):
    # The car's pixels differ from the studio around it: the mean colour inside the mask is not the background's.
    car = sorted(_cars(dataset / "train"))[0]
    photo = np.asarray(Image.open(dataset / "train" / f"{car}_05.jpg"), np.float32)
    mask = _mask(dataset / "train_masks" / f"{car}_05_mask.gif").astype(bool)
    inside, outside = photo[mask].mean(axis=0), photo[~mask].mean(axis=0)
    assert np.abs(inside - outside).max() > 8 or photo[mask].std() > 30


def test_angles_change_the_silhouette(dataset):
    car = sorted(_cars(dataset / "train"))[0]
    widths = {}
    for angle in ANGLES:
        columns = np.nonzero(_mask(dataset / "train_masks" / f"{car}_{angle}_mask.gif").any(axis=0))[0]
        widths[angle] = columns[-1] - columns[0] + 1
    assert widths["05"] > 1.8 * widths["01"]  # side view against front view
    assert widths["13"] > 1.8 * widths["09"]  # the other side against the rear
    side_a = _mask(dataset / "train_masks" / f"{car}_05_mask.gif")
    side_b = _mask(dataset / "train_masks" / f"{car}_13_mask.gif")
    assert (side_a != side_b).mean() > 0.01  # facing the other way
    assert len({_mask(p).tobytes() for p in (dataset / "train_masks").glob(f"{car}_*")}) == len(ANGLES)


def test_cars_differ(dataset):
    first, second = sorted(_cars(dataset / "train"))
    for angle in ("01", "05", "07"):
        a = _mask(dataset / "train_masks" / f"{first}_{angle}_mask.gif")
        b = _mask(dataset / "train_masks" / f"{second}_{angle}_mask.gif")
        assert (a != b).mean() > 0.005


def test_same_seed_same_files(dataset, tmp_path):
    again = generate_synthetic_carvana(tmp_path / "again", n_cars=2, n_test_cars=1, size=SIZE, seed=3, workers=1)
    for relative in ("train_masks.csv", "sample_submission.csv"):
        assert (again / relative).read_bytes() == (dataset / relative).read_bytes()
    for path in sorted((dataset / "train_masks").iterdir()) + sorted((dataset / "train").iterdir()):
        assert (again / path.parent.name / path.name).read_bytes() == path.read_bytes(), path.name


def test_other_seed_other_cars(dataset, tmp_path):
    other = generate_synthetic_carvana(tmp_path / "other", n_cars=2, n_test_cars=1, size=SIZE, seed=4)
    assert not _cars(other / "train") & _cars(dataset / "train")


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic_cars, "_write_csv", fail)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_carvana(tmp_path / "data", n_cars=1, n_test_cars=0, size=(64, 48))
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_and_bad_arguments(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        generate_synthetic_carvana(tmp_path / "full", n_cars=1, n_test_cars=0, size=(64, 48))
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    for kwargs in ({"n_cars": 0}, {"n_test_cars": -1}, {"size": (8, 8)}, {"seed": -1}):
        with pytest.raises(UserError):
            generate_synthetic_carvana(tmp_path / "x", **{"n_cars": 1, "size": (64, 48), **kwargs})
    # An empty folder is fine to fill.
    (tmp_path / "empty").mkdir()
    assert generate_synthetic_carvana(tmp_path / "empty", n_cars=1, n_test_cars=0, size=(64, 48)).is_dir()


def test_cache_is_generated_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TWINNETS_CACHE", str(tmp_path / "cache"))
    root = synthetic_carvana(n_cars=1, n_test_cars=1, size=(96, 64), seed=5)
    assert root == tmp_path / "cache" / "synthetic-carvana-1-1-96x64-s5"
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}

    def no_generation(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(synthetic_cars, "generate_synthetic_carvana", no_generation)
    assert synthetic_carvana(n_cars=1, n_test_cars=1, size=(96, 64), seed=5) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    assert sorted(p.name for p in root.parent.iterdir()) == [root.name]  # no temporary folder left


def test_cache_dir_argument_and_damaged_cache(tmp_path):
    root = synthetic_carvana(cache_dir=tmp_path, n_cars=1, n_test_cars=0, size=(64, 48))
    assert root == tmp_path / "synthetic-carvana-1-0-64x48-s0"
    first = sorted(root.glob("train/*.jpg"))[0]
    first.unlink()  # damaged by hand: made again
    assert synthetic_carvana(cache_dir=tmp_path, n_cars=1, n_test_cars=0, size=(64, 48)) == root
    assert first.is_file()


def test_full_size_car(tmp_path):
    root = generate_synthetic_carvana(tmp_path / "full", n_cars=1, n_test_cars=0, seed=1)
    name = sorted((root / "train").iterdir())[0].name
    with Image.open(root / "train" / name) as photo:
        assert photo.size == (1918, 1280) and photo.mode == "RGB"
    mask = _mask(root / "train_masks" / name.replace(".jpg", "_mask.gif"))
    assert mask.shape == (1280, 1918) and set(np.unique(mask)) == {0, 1}
    assert 0.10 <= mask.mean() <= 0.70
    np.testing.assert_array_equal(rle_decode(read_rle_csv(root / "train_masks.csv")[name], (1280, 1918)), mask)
