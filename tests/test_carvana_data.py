"""Tests of shared/data/carvana.py and shared/data/augment.py on tiny generated Carvana folders and zips."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from shared.data import carvana
from shared.data.augment import hflip, hsv_jitter, hsv_to_rgb, random_augment, rgb_to_hsv, shift_scale
from shared.data.carvana import (
    CarvanaLayout,
    DatasetFetcher,
    Sample,
    TestImageDataset,
    TrainImageDataset,
    get_test_files,
    get_train_files,
    original_size,
    read_image,
    read_mask,
    resolve_carvana,
)
from shared.errors import DataError, UserError

W, H = 96, 64  # photo size of the fixtures (the real ones are 1918x1280)
CARS = [f"{i:03d}car{i:05d}" for i in range(8)]
ANGLES = ["01", "02", "03"]


def rle(mask: np.ndarray) -> str:
    """Kaggle run-length encoding (row-major, 1-based starts), enough for a fixture CSV."""
    flat = np.concatenate([[0], mask.ravel(), [0]])
    runs = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(map(str, runs))


def car_mask(rng: np.random.Generator, w: int = W, h: int = H) -> np.ndarray:
    """A filled ellipse at a random place: a car-like blob, uint8 0/1."""
    yy, xx = np.mgrid[:h, :w]
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.4, 0.6) * h
    return (((xx - cx) / (0.3 * w)) ** 2 + ((yy - cy) / (0.25 * h)) ** 2 <= 1).astype(np.uint8)


def write_photo(path: Path, rng: np.random.Generator, w: int = W, h: int = H) -> None:
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, "JPEG", quality=90)


def write_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask, "L").save(path, "GIF")  # PIL writes a paletted GIF with indices 0/1, as Carvana's


def make_extracted(root: Path, cars=CARS, angles=ANGLES, seed: int = 0) -> Path:
    """A Carvana folder: train/, train_masks/, train_masks.csv, test/, sample_submission.csv."""
    rng = np.random.default_rng(seed)
    for sub in ("train", "train_masks", "test"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lines = ["img,rle_mask"]
    for car in cars:
        for angle in angles:
            name = f"{car}_{angle}"
            write_photo(root / "train" / f"{name}.jpg", rng)
            mask = car_mask(rng)
            write_mask(root / "train_masks" / f"{name}_mask.gif", mask)
            lines.append(f"{name}.jpg,{rle(mask)}")
    (root / "train_masks.csv").write_text("\n".join(lines) + "\n")
    sub_lines = ["img,rle_mask"]
    for i in range(4):
        write_photo(root / "test" / f"test{i:04d}_01.jpg", rng)
        sub_lines.append(f"test{i:04d}_01.jpg,1 1")
    (root / "sample_submission.csv").write_text("\n".join(sub_lines) + "\n")
    return root


def zip_folder(source: Path, zip_path: Path, arcname: str) -> None:
    """Zip a folder or a file the way Kaggle serves them (train.zip holds train/...)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        if source.is_file():
            archive.write(source, arcname)
        else:
            for path in sorted(source.iterdir()):
                archive.write(path, f"{arcname}/{path.name}")


def make_zips(root: Path, source: Path | None = None) -> Path:
    """The Kaggle zips of a generated Carvana folder, in root."""
    source = source or make_extracted(root.parent / f"{root.name}-source")
    root.mkdir(parents=True, exist_ok=True)
    for name in ("train", "train_masks", "test"):
        zip_folder(source / name, root / f"{name}.zip", name)
    for name in ("train_masks.csv", "sample_submission.csv"):
        zip_folder(source / name, root / f"{name}.zip", name)
    return root


def assert_one_line_naming(error: pytest.ExceptionInfo, name: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    assert name in message, message


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    return make_extracted(tmp_path_factory.mktemp("carvana"))


@pytest.fixture(scope="module")
def layout(extracted) -> CarvanaLayout:
    return resolve_carvana(extracted)


# ----------------------------------------------------------------------------- layout


def test_resolve_extracted_folder(extracted):
    layout = resolve_carvana(extracted)
    assert layout.root == extracted
    assert layout.train_dir == extracted / "train"
    assert layout.mask_dir == extracted / "train_masks"
    assert layout.test_dir == extracted / "test"
    assert layout.masks_csv == extracted / "train_masks.csv"
    assert layout.sample_submission == extracted / "sample_submission.csv"
    assert not (extracted / "extracted").exists()  # nothing to extract, nothing written


def test_resolve_zips_extracts_once(tmp_path, monkeypatch):
    root = make_zips(tmp_path / "zips")
    layout = resolve_carvana(root)
    assert layout.train_dir.is_relative_to(root / "extracted")
    assert len(list(layout.train_dir.glob("*.jpg"))) == len(CARS) * len(ANGLES)
    assert layout.masks_csv.name == "train_masks.csv" and layout.sample_submission.is_file()
    assert len(get_test_files(layout)) == 4
    assert not [p for p in (root / "extracted").iterdir() if "partial" in p.name]

    def no_second_extraction(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", no_second_extraction)
    assert resolve_carvana(root) == layout
    for name in ("train.zip", "train_masks.zip", "test.zip"):
        (root / name).unlink()  # the zips may be deleted once extracted
    again = resolve_carvana(root)
    assert (again.train_dir, again.mask_dir, again.test_dir) == (layout.train_dir, layout.mask_dir, layout.test_dir)


def test_resolve_read_only_folder_extracts_into_cache(tmp_path, monkeypatch):
    root = make_zips(tmp_path / "zips")
    cache = tmp_path / "cache"
    monkeypatch.setenv("TWINNETS_CACHE", str(cache))
    # Running as root ignores permission bits, so read-only is simulated where it is decided.
    real_writable = carvana.layout._writable
    monkeypatch.setattr(carvana.layout, "_writable", lambda p: not p.is_relative_to(root) and real_writable(p))
    layout = resolve_carvana(root)
    assert layout.train_dir.is_relative_to(cache)
    assert not (root / "extracted").exists()
    assert resolve_carvana(root) == layout


def test_resolve_all_in_one_zip(tmp_path):
    inner = make_zips(tmp_path / "inner")
    root = tmp_path / "download"
    root.mkdir()
    with zipfile.ZipFile(root / "carvana-image-masking-challenge.zip", "w") as archive:
        for path in inner.glob("*.zip"):
            archive.write(path, path.name)
    layout = resolve_carvana(root)
    assert len(list(layout.train_dir.glob("*.jpg"))) == len(CARS) * len(ANGLES)
    assert layout.mask_dir.is_dir() and layout.test_dir.is_dir()


def test_resolve_prefers_hq_when_asked(tmp_path):
    root = make_extracted(tmp_path / "c", cars=CARS[:2], angles=["01"])
    (root / "train_hq").mkdir()
    for photo in (root / "train").iterdir():
        (root / "train_hq" / photo.name).write_bytes(photo.read_bytes())
    assert resolve_carvana(root).train_dir == root / "train"
    assert resolve_carvana(root, prefer_hq=True).train_dir == root / "train_hq"


def test_empty_folder_is_named(tmp_path):
    with pytest.raises(DataError) as error:
        resolve_carvana(tmp_path)
    assert_one_line_naming(error, str(tmp_path))
    assert "empty" in str(error.value)


def test_folder_without_photos_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as error:
        resolve_carvana(tmp_path)
    assert_one_line_naming(error, str(tmp_path))


def test_photo_without_mask_is_named(tmp_path):
    root = make_extracted(tmp_path / "c", cars=CARS[:2], angles=["01", "02"])
    (root / "train_masks" / f"{CARS[1]}_02_mask.gif").unlink()
    with pytest.raises(DataError) as error:
        resolve_carvana(root)
    assert_one_line_naming(error, f"{CARS[1]}_02.jpg")


def test_corrupt_zip_is_named(tmp_path):
    root = make_zips(tmp_path / "zips")
    data = (root / "train.zip").read_bytes()
    (root / "train.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as error:
        resolve_carvana(root)
    assert_one_line_naming(error, "train.zip")
    assert not [p for p in (root / "extracted").iterdir() if p.name.startswith(".train")]  # no leftovers


# ----------------------------------------------------------------------------- split


def cars_of(samples: list[Sample]) -> set[str]:
    return {s.car for s in samples}


def test_split_is_by_car_and_seeded(layout):
    train, valid = get_train_files(layout, validation_size=0.25, seed=0)
    assert cars_of(train).isdisjoint(cars_of(valid))
    assert len(cars_of(valid)) == 2 and len(cars_of(train)) == 6
    assert len(train) + len(valid) == len(CARS) * len(ANGLES)
    for s in train + valid:
        assert s.mask == layout.mask_dir / f"{s.image.stem}_mask.gif" and s.name == s.image.name
    assert get_train_files(layout, validation_size=0.25, seed=0) == (train, valid)
    others = [cars_of(get_train_files(layout, validation_size=0.25, seed=seed)[1]) for seed in range(1, 6)]
    assert any(other != cars_of(valid) for other in others)


def test_no_validation(layout):
    train, valid = get_train_files(layout, validation_size=0)
    assert valid == [] and len(train) == len(CARS) * len(ANGLES)


@pytest.mark.parametrize("share, side", [(0.95, "training"), (0.01, "validation")])
def test_validation_share_that_empties_a_side(layout, share, side):
    with pytest.raises(UserError) as error:
        get_train_files(layout, validation_size=share)
    assert_one_line_naming(error, f"--validation-size {share} leaves no car for {side}")


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_validation_share_out_of_range(layout, share):
    with pytest.raises(UserError):
        get_train_files(layout, validation_size=share)


@pytest.mark.parametrize("sample_size, cars", [(1, 1), (3, 1), (4, 2), (7, 3), (1000, len(CARS))])
def test_sample_size_keeps_whole_cars(layout, sample_size, cars):
    train, valid = get_train_files(layout, sample_size=sample_size, validation_size=0)
    assert len(cars_of(train)) == cars and len(train) == cars * len(ANGLES)
    # The kept cars are the first ones of the seeded order, whatever the sample size.
    bigger, _ = get_train_files(layout, sample_size=sample_size + len(ANGLES), validation_size=0)
    assert cars_of(train) <= cars_of(bigger)


# ----------------------------------------------------------------------------- decoding and datasets


def test_read_image_and_mask(layout):
    photo = layout.train_dir / f"{CARS[0]}_01.jpg"
    image = read_image(photo)
    assert image.shape == (H, W, 3) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1
    small = read_image(photo, (32, 16))
    assert small.shape == (16, 32, 3) and small.dtype == np.float32
    mask = read_mask(layout.mask_dir / f"{CARS[0]}_01_mask.gif")
    assert mask.shape == (H, W) and mask.dtype == np.float32
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert set(np.unique(read_mask(layout.mask_dir / f"{CARS[0]}_01_mask.gif", (17, 13)))) <= {0.0, 1.0}
    assert original_size(photo) == (W, H)


def test_mask_of_0_255_and_of_other_values(tmp_path):
    mask = car_mask(np.random.default_rng(1))
    Image.fromarray(mask * 255, "L").save(tmp_path / "a_mask.gif")
    assert np.array_equal(read_mask(tmp_path / "a_mask.gif"), mask.astype(np.float32))
    Image.fromarray(mask * 255, "L").save(tmp_path / "b_mask.png")
    assert np.array_equal(read_mask(tmp_path / "b_mask.png"), mask.astype(np.float32))
    Image.fromarray(mask * 7 + 3, "L").save(tmp_path / "c_mask.png")
    with pytest.raises(DataError) as error:
        read_mask(tmp_path / "c_mask.png")
    assert_one_line_naming(error, "c_mask.png")


def test_train_dataset_shapes_and_values(layout):
    train, _ = get_train_files(layout, validation_size=0)
    for augment in (False, True):
        dataset = TrainImageDataset(train, 32, augment=augment, seed=3)
        assert len(dataset) == len(train)
        image, mask = dataset.get(0, epoch=1)
        assert image.shape == (32, 32, 3) and image.dtype == np.float32
        assert mask.shape == (32, 32) and mask.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 1
        assert set(np.unique(mask)) <= {0.0, 1.0}
    plain = TrainImageDataset(train, 32)
    expected = read_mask(train[0].mask, (32, 32))
    assert np.array_equal(plain[0][1], expected)


def test_augmentation_depends_only_on_seed_epoch_index(layout):
    train, _ = get_train_files(layout, validation_size=0)
    first = TrainImageDataset(train, 32, augment=True, seed=5)
    second = TrainImageDataset(train, 32, augment=True, seed=5)
    second.get(4, epoch=9)  # another draw in between must not change anything
    for index in (0, 3):
        a_image, a_mask = first.get(index, epoch=2)
        b_image, b_mask = second.get(index, epoch=2)
        assert np.array_equal(a_image, b_image) and np.array_equal(a_mask, b_mask)
        c_image, _ = first.get(index, epoch=3)
        assert not np.array_equal(a_image, c_image)
    other_seed = TrainImageDataset(train, 32, augment=True, seed=6)
    assert not np.array_equal(first.get(0, 2)[0], other_seed.get(0, 2)[0])


def test_masks_stay_binary_after_augmentation(layout):
    train, _ = get_train_files(layout, validation_size=0)
    dataset = TrainImageDataset(train, 48, augment=True, seed=0)
    for epoch in range(3):
        for index in range(0, len(dataset), 5):
            image, mask = dataset.get(index, epoch)
            assert set(np.unique(mask)) <= {0.0, 1.0}
            assert 0 <= image.min() and image.max() <= 1 and image.dtype == np.float32


def test_decoded_samples_are_cached(layout, monkeypatch):
    train, _ = get_train_files(layout, validation_size=0)
    dataset = TrainImageDataset(train[:2], 16)
    first = dataset.get(1)
    monkeypatch.setattr(carvana.datasets, "_load_pair", lambda *a: pytest.fail("decoded again"))
    assert all(np.array_equal(a, b) for a, b in zip(first, dataset.get(1, epoch=4)))
    uncached = TrainImageDataset(train[:2], 16, cache_bytes=0)
    with pytest.raises(pytest.fail.Exception):
        uncached.get(1)



def test_a_decoded_set_is_kept_on_disk_for_the_next_process(layout, monkeypatch):
    """Once a whole set is decoded it is kept under the cache folder: a new dataset of the same photos at the same
    size (what the other side's process makes) decodes nothing and yields the same arrays; another size, a damaged
    kept file or an edited photo is decoded again."""
    from shared.data.carvana import decoded

    train, _ = get_train_files(layout, validation_size=0)
    first = TrainImageDataset(train[:3], 16, augment=True, seed=1)
    arrays = [first.get(i, epoch=2) for i in range(3)]
    kept = decoded.decoded_path(train[:3], (16, 16))
    assert kept.is_file()
    real_load = carvana.datasets._load_pair
    monkeypatch.setattr(carvana.datasets, "_load_pair", lambda *a: pytest.fail("decoded again"))
    second = TrainImageDataset(train[:3], 16, augment=True, seed=1)
    for (image, mask), (kept_image, kept_mask) in zip(arrays, (second.get(i, epoch=2) for i in range(3))):
        assert np.array_equal(image, kept_image) and np.array_equal(mask, kept_mask)
    with pytest.raises(pytest.fail.Exception):
        TrainImageDataset(train[:3], 24).get(0)  # another size: nothing kept for it
    monkeypatch.setattr(carvana.datasets, "_load_pair", real_load)
    from_kept = TrainImageDataset(train[:3], 16).get(0)[0]
    kept.write_bytes(b"not an npz")
    assert decoded.load_decoded(kept, 3, (16, 16)) == {}
    redecoded = TrainImageDataset(train[:3], 16)
    assert np.array_equal(redecoded.get(0)[0], from_kept)
    [redecoded.get(i) for i in range(3)]
    assert len(decoded.load_decoded(kept, 3, (16, 16))) == 3  # decoded again, and kept again
    photo = train[0].image
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    assert decoded.decoded_path(train[:3], (16, 16)) != kept

def test_test_dataset(layout):
    paths = get_test_files(layout)
    assert paths == sorted(paths) and len(paths) == 4
    dataset = TestImageDataset(paths, 24)
    image, name, size = dataset.get(2)
    assert image.shape == (24, 24, 3) and image.dtype == np.float32
    assert name == paths[2].name and size == (W, H)


def test_mask_of_another_size_is_named(tmp_path):
    root = make_extracted(tmp_path / "c", cars=CARS[:2], angles=["01"])
    bad = root / "train_masks" / f"{CARS[1]}_01_mask.gif"
    write_mask(bad, car_mask(np.random.default_rng(0), W // 2, H // 2))
    train, _ = get_train_files(resolve_carvana(root), validation_size=0)
    dataset = TrainImageDataset(train, 16)
    dataset.get(0)
    with pytest.raises(DataError) as error:
        dataset.get(1)
    assert_one_line_naming(error, bad.name)


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_corrupt_jpeg_is_named(tmp_path, damage):
    root = make_extracted(tmp_path / "c", cars=CARS[:2], angles=["01"])
    photo = root / "train" / f"{CARS[0]}_01.jpg"
    data = photo.read_bytes()
    if damage == "truncate":
        photo.write_bytes(data[: len(data) // 3])
    else:
        photo.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError) as error:
        read_image(photo)
    assert_one_line_naming(error, photo.name)
    train, _ = get_train_files(resolve_carvana(root), validation_size=0)
    with pytest.raises(DataError) as error:
        TrainImageDataset(train, 16).get([s.image for s in train].index(photo))
    assert_one_line_naming(error, photo.name)


def test_truncated_gif_is_named(tmp_path):
    path = tmp_path / "x_mask.gif"
    write_mask(path, (np.random.default_rng(0).random((H, W)) > 0.5).astype(np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError) as error:
        read_mask(path)
    assert_one_line_naming(error, path.name)


# ----------------------------------------------------------------------------- augment


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    return rng.random((20, 30, 3), dtype=np.float32), car_mask(rng, 30, 20).astype(np.float32)


def test_hflip_twice_is_identity(pair):
    image, mask = pair
    once = hflip(image, mask)
    assert not np.array_equal(once[0], image)
    twice = hflip(*once)
    assert np.array_equal(twice[0], image) and np.array_equal(twice[1], mask)


def test_shift_scale(pair):
    image, mask = pair
    same = shift_scale(image, mask, 0, 0, 1.0)
    assert np.allclose(same[0], image, atol=1e-6) and np.array_equal(same[1], mask)
    moved_image, moved_mask = shift_scale(image, mask, 3, -2, 1.0)  # whole pixels: an exact move
    assert np.allclose(moved_image[:-2, 3:], image[2:, :-3], atol=1e-6)
    assert np.array_equal(moved_mask[:-2, 3:], mask[2:, :-3])
    assert moved_image[:, :3].max() == 0 and moved_mask[-2:].max() == 0  # constant-0 border
    zoomed_image, zoomed_mask = shift_scale(image, mask, 1.3, 0.7, 1.08)
    assert set(np.unique(zoomed_mask)) <= {0.0, 1.0} and zoomed_image.dtype == np.float32


def test_hsv_jitter(pair):
    image, _ = pair
    assert np.allclose(hsv_jitter(image, 0, 0, 0), image, atol=1e-5)
    darker = hsv_jitter(image, 0, 0, -0.1)
    assert np.allclose(darker, image * 0.9, atol=1e-5)
    shifted = hsv_jitter(image, 0.05, 0.1, 0.1)
    assert shifted.dtype == np.float32 and 0 <= shifted.min() and shifted.max() <= 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(*[st.floats(0, 1, width=32)] * 3), min_size=1, max_size=20))
def test_hsv_round_trip(colours):
    rgb = np.array(colours, dtype=np.float32)
    assert np.allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-5)


def test_random_augment_is_reproducible(pair):
    image, mask = pair
    a = random_augment(image, mask, np.random.default_rng([1, 2, 3]))
    b = random_augment(image, mask, np.random.default_rng([1, 2, 3]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert set(np.unique(a[1])) <= {0.0, 1.0} and a[0].dtype == np.float32


# ----------------------------------------------------------------------------- download


class FakeKaggle:
    """Stands in for KaggleApi: writes generated zips, or raises what the real one raises."""

    def __init__(self, source: Path, error: BaseException | None = None):
        self.source, self.error, self.calls = source, error, []

    def competition_download_file(self, competition, file_name, path=None, **kwargs):
        self.calls.append(file_name)
        if self.error is not None:
            raise self.error
        (Path(path) / file_name).write_bytes((self.source / file_name).read_bytes())


@pytest.fixture(scope="module")
def served_zips(tmp_path_factory) -> Path:
    return make_zips(tmp_path_factory.mktemp("served") / "zips")


def test_fetcher_downloads_then_resolves(tmp_path, served_zips):
    fake = FakeKaggle(served_zips)
    dest = DatasetFetcher(client_factory=lambda: fake).download_dataset(tmp_path / "carvana")
    assert sorted(fake.calls) == sorted(carvana.DEFAULT_FILES)
    assert not (dest / ".partial").exists()
    layout = resolve_carvana(dest)
    assert len(get_train_files(layout, validation_size=0)[0]) == len(CARS) * len(ANGLES)

    again = FakeKaggle(served_zips)
    DatasetFetcher(client_factory=lambda: again).download_dataset(dest)
    assert again.calls == []  # already downloaded: nothing fetched again
    (dest / "test.zip").write_bytes(b"half a zip")
    DatasetFetcher(client_factory=lambda: again).download_dataset(dest)
    assert again.calls == ["test.zip"]  # a broken file is fetched again


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Client Error: for url: https://www.kaggle.com/api/v1/...", response=response)


class ApiException(Exception):
    """The shape of the older kaggle package's error: an HTTP status in .status."""

    def __init__(self, status: int):
        super().__init__(f"({status})\nReason: Forbidden\nHTTP response body: {{}}")
        self.status = status


@pytest.mark.parametrize("error, expected", [
    (http_error(403), "accept the competition rules at https://www.kaggle.com/c/carvana-image-masking-challenge/rules"),
    (ApiException(403), "accept the competition rules"),
    (requests.ConnectionError("Max retries exceeded\nName or service not known"), "check your network"),
    (ConnectionRefusedError(111, "Connection refused"), "check your network"),
    (http_error(401), "save it as ~/.kaggle/kaggle.json"),
    (http_error(500), "retry later"),
    (RuntimeError("something\nodd"), "--data-dir"),
])
def test_fetcher_failures_are_one_sentence(tmp_path, served_zips, error, expected):
    fake = FakeKaggle(served_zips, error)
    with pytest.raises(UserError) as raised:
        DatasetFetcher(client_factory=lambda: fake).download_dataset(tmp_path)
    message = str(raised.value)
    assert "\n" not in message and expected in message
    assert message.endswith(".") and message.count(". ") == 0


@pytest.mark.parametrize("error", [SystemExit(1), OSError("Could not find kaggle.json. Make sure it's located in ~")])
def test_fetcher_authentication_failures(tmp_path, error):
    def factory():
        raise error

    with pytest.raises(UserError) as raised:
        DatasetFetcher(client_factory=factory).download_dataset(tmp_path)
    assert_one_line_naming(raised, "KAGGLE_USERNAME and KAGGLE_KEY")


def test_fetcher_without_credentials_says_what_to_do(tmp_path, monkeypatch):
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(UserError) as raised:
        DatasetFetcher().download_dataset(tmp_path / "carvana")
    assert_one_line_naming(raised, "create an API token at kaggle.com (Account > API)")
