"""Random or truncated bytes given to the readers of user files give the one-line DataError, never another
exception, a hang or a traceback at the user (IDX is fuzzed in test_mnist_data.py)."""
from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from shared.data import carvana
from shared.errors import DataError
from shared.rle import read_rle_csv, rle_decode, rle_encode

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_files() -> dict[str, bytes]:
    """One valid JPEG, GIF mask and RLE CSV, as bytes, for truncating and flipping."""
    rng = np.random.default_rng(0)
    photo = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)).save(photo, "JPEG")
    mask_array = np.zeros((24, 36), np.uint8)
    mask_array[6:18, 8:30] = 1
    mask = io.BytesIO()
    Image.fromarray(mask_array, "P").save(mask, "GIF")
    csv = f"img,rle_mask\ncar_01.jpg,{rle_encode(mask_array)}\n".encode()
    return {"photo.jpg": photo.getvalue(), "mask.gif": mask.getvalue(), "masks.csv": csv,
            "masks.csv.gz": gzip.compress(csv)}


VALID = _valid_files()


def _read(path):
    """The reader each file goes through in a run."""
    if path.name.endswith(".jpg"):
        return carvana.read_image(path, (16, 16))
    if path.name.endswith(".gif"):
        return carvana.read_mask(path, (16, 16))
    return read_rle_csv(path)


def _assert_reads_or_one_line_error(path) -> None:
    try:
        _read(path)
    except DataError as error:
        text = str(error)
        assert "\n" not in text and str(path) in text, text


@FUZZ
@given(name=st.sampled_from(sorted(VALID)), cut=st.floats(0.0, 1.0))
def test_truncated_files(tmp_path_factory, name, cut):
    path = tmp_path_factory.mktemp("fuzz") / name
    data = VALID[name]
    path.write_bytes(data[:int(len(data) * cut)])
    _assert_reads_or_one_line_error(path)


@FUZZ
@given(name=st.sampled_from(sorted(VALID)), flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                                     st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_bytes(tmp_path_factory, name, flips):
    path = tmp_path_factory.mktemp("fuzz") / name
    data = bytearray(VALID[name])
    for where, value in flips:
        data[int(where * len(data))] = value
    path.write_bytes(bytes(data))
    _assert_reads_or_one_line_error(path)


@FUZZ
@given(name=st.sampled_from(sorted(VALID)), junk=st.binary(max_size=300))
def test_random_bytes(tmp_path_factory, name, junk):
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(junk)
    _assert_reads_or_one_line_error(path)


@pytest.mark.parametrize("name", sorted(VALID))
def test_the_valid_files_read(tmp_path, name):
    """The fuzz starts from files that do read, so a DataError above comes from the damage."""
    path = tmp_path / name
    path.write_bytes(VALID[name])
    result = _read(path)
    if isinstance(result, dict):
        assert rle_decode(result["car_01.jpg"], (24, 36)).sum() == 12 * 22
    else:
        assert result.shape[:2] == (16, 16)
