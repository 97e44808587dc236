"""Tests of shared/rle.py: Kaggle Carvana run-length text, the img,rle_mask CSV reader and the gzip writer."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from shared.errors import DataError
from shared.rle import RLEWriter, read_rle_csv, rle_decode, rle_encode

# ----------------------------------------------------------------------------- encode / decode

def test_hand_computed_example():
    mask = np.array([[0, 1, 1, 0],
                     [1, 1, 0, 0],
                     [0, 0, 0, 1]])
    # Row-major pixels 1..12: 0 1 1 0 | 1 1 0 0 | 0 0 0 1 -> ones at 2-3, 5-6 and 12.
    assert rle_encode(mask) == "2 2 5 2 12 1"
    np.testing.assert_array_equal(rle_decode("2 2 5 2 12 1", (3, 4)), mask)


def test_runs_cross_rows_in_row_major_order():
    mask = np.array([[0, 0, 1],
                     [1, 1, 0]])
    # Row-major (C order) pixels: 0 0 1 1 1 0 -> one run of 3 from pixel 3 (column-major order would give "2 1 4 2").
    assert rle_encode(mask) == "3 3"
    np.testing.assert_array_equal(rle_decode("3 3", (2, 3)), mask)


def test_empty_and_full_masks():
    assert rle_encode(np.zeros((5, 7), np.uint8)) == ""
    assert rle_encode(np.ones((5, 7), np.uint8)) == "1 35"
    np.testing.assert_array_equal(rle_decode("", (5, 7)), np.zeros((5, 7)))
    np.testing.assert_array_equal(rle_decode("1 35", (5, 7)), np.ones((5, 7)))


def test_any_dtype_nonzero_is_one():
    binary = np.array([[0, 1], [1, 0]], np.uint8)
    for mask in (binary * 255, binary.astype(np.float32) * 0.5, binary.astype(bool), binary.astype(np.int64) - 0):
        assert rle_encode(mask) == "2 2"


def test_decode_returns_uint8_of_the_shape():
    mask = rle_decode("2 3", (2, 5))
    assert mask.dtype == np.uint8 and mask.shape == (2, 5)
    assert set(np.unique(mask)) <= {0, 1}


def test_decode_tolerates_surrounding_and_repeated_whitespace():
    np.testing.assert_array_equal(rle_decode("  2  2\t5 2\n", (3, 4)), rle_decode("2 2 5 2", (3, 4)))


def test_touching_runs_decode():
    np.testing.assert_array_equal(rle_decode("1 1 2 1", (1, 3)), [[1, 1, 0]])


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24)))
def test_round_trip(mask):
    text = rle_encode(mask)
    decoded = rle_decode(text, mask.shape)
    np.testing.assert_array_equal(decoded, mask.astype(np.uint8))
    numbers = [int(t) for t in text.split()]
    assert all(n >= 1 for n in numbers)
    starts, lengths = numbers[::2], numbers[1::2]
    # Kaggle's canonical form: sorted runs with a gap between them.
    assert all(s1 > s0 + n0 for s0, n0, s1 in zip(starts, lengths, starts[1:]))


@pytest.mark.parametrize("text, shape", [
    ("1 a", (3, 4)),  # not an integer
    ("1.5 2", (3, 4)),
    ("-1 2", (3, 4)),
    ("+1 2", (3, 4)),
    ("1", (3, 4)),  # odd count
    ("1 2 3", (3, 4)),
    ("0 1", (3, 4)),  # start below 1
    ("1 0", (3, 4)),  # length below 1
    ("12 2", (3, 4)),  # past the end of 12 pixels
    ("13 1", (3, 4)),
    ("1 99999999999999999999999", (3, 4)),  # beyond int64
    ("1 3 2 1", (3, 4)),  # overlapping
    ("5 1 1 1", (3, 4)),  # unsorted
    ("1,2", (3, 4)),
])
def test_invalid_text_raises_one_line_value_error(text, shape):
    with pytest.raises(ValueError) as info:
        rle_decode(text, shape)
    message = str(info.value)
    assert message and "\n" not in message


def test_last_pixel_run_is_valid():
    assert rle_decode("12 1", (3, 4))[2, 3] == 1


def test_full_size_mask_round_trips():
    rng = np.random.default_rng(0)
    mask = np.zeros((1280, 1918), np.uint8)
    yy, xx = np.mgrid[:1280, :1918]
    mask[((xx - 960) / 700) ** 2 + ((yy - 640) / 300) ** 2 < 1] = 1
    mask[rng.random(mask.shape) < 0.001] ^= 1  # some ragged edges and specks
    # Speed is for benchmarks, not unit tests: this checks the Kaggle-size mask, whatever the machine's load.
    np.testing.assert_array_equal(rle_decode(rle_encode(mask), mask.shape), mask)


# ----------------------------------------------------------------------------- CSV files

def test_read_rle_csv(tmp_path):
    path = tmp_path / "train_masks.csv"
    path.write_text("img,rle_mask\na_01.jpg,1 2 5 3\nb_01.jpg,\n")
    assert read_rle_csv(path) == {"a_01.jpg": "1 2 5 3", "b_01.jpg": ""}


def test_read_rle_csv_gzipped(tmp_path):
    path = tmp_path / "submit.csv.gz"
    path.write_bytes(gzip.compress(b"img,rle_mask\na_01.jpg,1 1\n"))
    assert read_rle_csv(path) == {"a_01.jpg": "1 1"}


@pytest.mark.parametrize("content, expected", [
    ("", "empty"),
    ("image,mask\na.jpg,1 1\n", "row 1"),
    ("img,rle_mask\na.jpg,1 1\nb.jpg\n", "row 3"),
    ("img,rle_mask\na.jpg,1 1,extra\n", "row 2"),
    ("img,rle_mask\na.jpg,1 x\n", "row 2"),
    ("img,rle_mask\na.jpg,1 2 3\n", "row 2"),
    ("img,rle_mask\na.jpg,1 1\na.jpg,3 1\n", "row 3"),
    ("img,rle_mask\n,1 1\n", "row 2"),
])
def test_read_rle_csv_errors_name_file_and_row(tmp_path, content, expected):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        read_rle_csv(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert "\n" not in str(info.value)


def test_read_rle_csv_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_rle_csv(tmp_path / "nope.csv")
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"img,rle_mask\n" + b"a.jpg,1 1\n" * 100)[:40])
    with pytest.raises(DataError, match="broken.csv.gz"):
        read_rle_csv(broken)


# ----------------------------------------------------------------------------- RLEWriter

def test_writer_streams_a_gzip_csv(tmp_path):
    path = tmp_path / "submit.csv.gz"
    masks = {f"car_{i:02d}.jpg": np.random.default_rng(i).random((6, 9)) < 0.4 for i in range(1, 4)}
    with RLEWriter(path) as writer:
        for name, mask in masks.items():
            writer.write(name, mask)
        writer.write_rle("car_99.jpg", "1 1")
        assert writer.rows == 4
        assert not path.exists()  # nothing at the target until the block ends
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert lines[0] == "img,rle_mask"
    assert len(lines) == 5
    rows = read_rle_csv(path)
    assert list(rows) == [*masks, "car_99.jpg"]
    for name, mask in masks.items():
        np.testing.assert_array_equal(rle_decode(rows[name], mask.shape), mask.astype(np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submit.csv.gz"]


def test_writer_is_deterministic(tmp_path):
    for folder in ("a", "b"):  # the same rows give the same bytes (no timestamp in the gzip header)
        with RLEWriter(tmp_path / folder / "submit.csv.gz") as writer:
            writer.write("x.jpg", np.eye(4))
    assert (tmp_path / "a" / "submit.csv.gz").read_bytes() == (tmp_path / "b" / "submit.csv.gz").read_bytes()


def test_writer_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "submit.csv.gz"
    path.write_bytes(b"the previous submission")
    with pytest.raises(RuntimeError):
        with RLEWriter(path) as writer:
            writer.write("a.jpg", np.ones((3, 3)))
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"the previous submission"
    assert [p.name for p in tmp_path.iterdir()] == ["submit.csv.gz"]  # no temporary file left


def test_writer_failure_without_old_file_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with RLEWriter(tmp_path / "out" / "submit.csv.gz") as writer:
            writer.write_rle("a.jpg", "1 x")  # bad text is refused
    assert list((tmp_path / "out").iterdir()) == []


def test_writer_replaces_an_old_file_on_success(tmp_path):
    path = tmp_path / "submit.csv.gz"
    path.write_bytes(b"old")
    with RLEWriter(path) as writer:
        writer.write_rle("a.jpg", "2 3")
    assert read_rle_csv(path) == {"a.jpg": "2 3"}
