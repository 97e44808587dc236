"""Tests of shared/data/mnist.py: IDX and npz reading, the embedded digits, the download, and every bad input."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.data.mnist import (
    DIGITS_TRAIN_COPIES,
    MNIST_FILES,
    MNISTData,
    download_mnist,
    find_mnist_files,
    jitter,
    load_digits_28,
    load_mnist,
    normalize,
    read_idx,
    write_idx,
)
from shared.errors import DataError, UserError

N_TRAIN, N_TEST = 50, 20


def make_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def write_mnist(folder: Path, arrays: dict[str, np.ndarray], gz: bool) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, name in MNIST_FILES.items():
        paths[key] = folder / (name + (".gz" if gz else ""))
        write_idx(paths[key], arrays[key])
    return paths


def assert_one_line_naming(error: pytest.ExceptionInfo, name: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert name in message


def assert_matches(data: MNISTData, arrays: dict[str, np.ndarray]) -> None:
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        images = getattr(data, f"{split}_images")
        labels = getattr(data, f"{split}_labels")
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.float32
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert 0.0 <= images.min() and images.max() <= 1.0
        np.testing.assert_array_equal(labels, arrays[f"{split}_labels"])
        np.testing.assert_allclose(images[..., 0] * 255.0, arrays[f"{split}_images"], atol=1e-3)


# ----------------------------------------------------------------------------- reading real files

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_load_idx_folder(tmp_path, gz, layout):
    arrays = make_arrays()
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    paths = write_mnist(folder, arrays, gz)
    assert find_mnist_files(tmp_path) == paths
    data = load_mnist(tmp_path)
    assert_matches(data, arrays)
    assert data.source == "mnist"
    assert data.describe() == {
        "source": "mnist", "location": str(folder), "train": N_TRAIN, "test": N_TEST, "image_shape": [28, 28, 1],
    }


def test_plain_file_preferred_over_gz(tmp_path):
    write_mnist(tmp_path, make_arrays(), gz=True)
    write_mnist(tmp_path, make_arrays(), gz=False)
    assert all(path.suffix != ".gz" for path in find_mnist_files(tmp_path).values())


def test_load_npz(tmp_path):
    arrays = make_arrays()
    np.savez(tmp_path / "mnist.npz", x_train=arrays["train_images"], y_train=arrays["train_labels"],
             x_test=arrays["test_images"], y_test=arrays["test_labels"])
    for where in (tmp_path / "mnist.npz", tmp_path):  # the file itself, or the folder holding it
        data = load_mnist(where)
        assert_matches(data, arrays)
        assert data.source == "mnist"


def test_read_idx_roundtrip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, array)
        back = read_idx(tmp_path / name)
        np.testing.assert_array_equal(back, array)
        assert back.dtype == np.uint8 and back.flags.writeable


def test_sample_size_is_seeded_and_only_when_asked(tmp_path):
    arrays = make_arrays()
    write_mnist(tmp_path, arrays, gz=False)
    assert len(load_mnist(tmp_path).train_images) == N_TRAIN  # nothing subsampled unless asked
    a = load_mnist(tmp_path, seed=3, sample_size=10)
    b = load_mnist(tmp_path, seed=3, sample_size=10)
    c = load_mnist(tmp_path, seed=4, sample_size=10)
    assert a.train_images.shape == (10, 28, 28, 1) and len(a.test_images) == N_TEST
    np.testing.assert_array_equal(a.train_labels, b.train_labels)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    assert not np.array_equal(a.train_images, c.train_images)
    assert len(load_mnist(tmp_path, sample_size=10_000).train_images) == N_TRAIN
    with pytest.raises(UserError):
        load_mnist(tmp_path, sample_size=0)


def test_normalize():
    x = np.array([0.0, 0.5, 1.0])
    out = normalize(x, 0.1307, 0.3081)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (x - 0.1307) / 0.3081, rtol=1e-6)


# ----------------------------------------------------------------------------- embedded digits

def test_embedded_digits():
    data = load_mnist()
    assert data.source == "sklearn-digits" and data.location == "sklearn.datasets.load_digits"
    n_train, n_test = len(data.train_images), len(data.test_images)
    assert n_train == (1 + DIGITS_TRAIN_COPIES) * (1797 - n_test)  # each training digit plus its jittered copies
    assert abs(n_test / 1797 - 0.2) < 0.01
    assert data.train_images.shape == (n_train, 28, 28, 1) and data.train_images.dtype == np.float32
    assert data.test_images.shape == (n_test, 28, 28, 1)
    assert data.train_labels.dtype == np.int64 and data.test_labels.dtype == np.int64
    assert set(data.train_labels) == set(range(10)) and set(data.test_labels) == set(range(10))
    assert data.train_images.min() >= 0.0 and data.train_images.max() <= 1.0
    # MNIST framing: the digit sits inside the 20x20 box, leaving at least a 4-pixel margin in total.
    ink_rows = np.flatnonzero(data.train_images[..., 0].sum(axis=(0, 2)))
    assert ink_rows[-1] - ink_rows[0] + 1 <= 28


def test_jittered_copies_keep_labels_and_differ_a_little():
    plain, jittered = load_digits_28(seed=0, train_copies=0), load_digits_28(seed=0, train_copies=2)
    n = len(plain.train_images)
    np.testing.assert_array_equal(jittered.train_images[:n], plain.train_images)  # the originals come first
    np.testing.assert_array_equal(jittered.train_labels, np.tile(plain.train_labels, 3))
    np.testing.assert_array_equal(jittered.test_images, plain.test_images)  # the test split is never altered
    copy = jittered.train_images[n:2 * n]
    assert copy.dtype == np.float32 and copy.min() >= 0.0 and copy.max() <= 1.0
    change = np.abs(copy - plain.train_images).mean(axis=(1, 2, 3))
    ink = plain.train_images.mean(axis=(1, 2, 3))
    assert np.all(change > 0)  # every copy moved
    assert np.median(change / ink) < 1.0  # but stays a digit, not noise: less change than ink on average
    assert "jittered" in jittered.describe()["note"]


def test_jitter_with_zero_ranges_is_identity():
    images = load_digits_28(seed=0, train_copies=0).train_images[:20]
    same = jitter(images, np.random.default_rng(0), max_degrees=0.0, max_zoom=0.0, max_shift=0.0)
    np.testing.assert_allclose(same, images, atol=1e-6)


def test_embedded_split_deterministic_and_disjoint():
    a, b, c = (load_digits_28(seed=1, train_copies=0), load_digits_28(seed=1, train_copies=0),
               load_digits_28(seed=2, train_copies=0))
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    assert not np.array_equal(a.test_images, c.test_images)
    # Disjoint: no test image appears among the training images.
    train_rows = {row.tobytes() for row in a.train_images}
    assert not any(row.tobytes() in train_rows for row in a.test_images)
    # Stratified: every class holds about the same test share.
    shares = np.bincount(a.test_labels, minlength=10) / (
        np.bincount(a.test_labels, minlength=10) + np.bincount(a.train_labels, minlength=10))
    assert np.all(np.abs(shares - 0.2) < 0.02)


# ----------------------------------------------------------------------------- bad input

def test_missing_folder_and_files(tmp_path):
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path / "nowhere")
    assert_one_line_naming(error, "nowhere")

    with pytest.raises(DataError) as error:
        load_mnist(tmp_path)  # empty folder
    assert_one_line_naming(error, str(tmp_path))
    assert "train-images-idx3-ubyte" in str(error.value)

    paths = write_mnist(tmp_path, make_arrays(), gz=True)
    paths["test_labels"].unlink()
    with pytest.raises(DataError) as error:
        find_mnist_files(tmp_path)
    assert_one_line_naming(error, "t10k-labels-idx1-ubyte")

    with pytest.raises(DataError) as error:
        load_mnist(tmp_path / "mnist.npz")
    assert_one_line_naming(error, "mnist.npz")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_truncated_file(tmp_path, gz):
    paths = write_mnist(tmp_path, make_arrays(), gz=False)
    raw = paths["train_images"].read_bytes()[:-100]
    if gz:
        paths["train_images"].unlink()
        paths["train_images"] = paths["train_images"].with_name(paths["train_images"].name + ".gz")
        paths["train_images"].write_bytes(gzip.compress(raw))
    else:
        paths["train_images"].write_bytes(raw)
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path)
    assert_one_line_naming(error, paths["train_images"].name)
    assert "truncated" in str(error.value)


def test_trailing_bytes(tmp_path):
    paths = write_mnist(tmp_path, make_arrays(), gz=False)
    with open(paths["test_labels"], "ab") as file:
        file.write(b"\0\0")
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path)
    assert_one_line_naming(error, "t10k-labels-idx1-ubyte")


def test_wrong_magic(tmp_path):
    arrays = make_arrays()
    paths = write_mnist(tmp_path, arrays, gz=False)
    # Labels where images belong: a valid IDX file with the wrong magic number (2049, not 2051).
    write_idx(paths["train_images"], arrays["train_labels"])
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path)
    assert_one_line_naming(error, "train-images-idx3-ubyte")
    assert "magic" in str(error.value) and "2049" in str(error.value)

    raw = bytearray(paths["test_labels"].read_bytes())
    raw[2] = 0x0D  # a float dtype byte
    paths["test_labels"].write_bytes(bytes(raw))
    with pytest.raises(DataError) as error:
        read_idx(paths["test_labels"])
    assert_one_line_naming(error, "t10k-labels-idx1-ubyte")


def test_wrong_image_size(tmp_path):
    arrays = make_arrays()
    paths = write_mnist(tmp_path, arrays, gz=False)
    write_idx(paths["test_images"], np.zeros((N_TEST, 32, 32), np.uint8))
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path)
    assert_one_line_naming(error, "t10k-images-idx3-ubyte")
    assert "28x28" in str(error.value)


def test_count_mismatch(tmp_path):
    arrays = make_arrays()
    paths = write_mnist(tmp_path, arrays, gz=True)
    write_idx(paths["train_labels"], arrays["train_labels"][:-1])
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path)
    assert_one_line_naming(error, "train-labels-idx1-ubyte")
    assert str(N_TRAIN - 1) in str(error.value) and str(N_TRAIN) in str(error.value)


def test_label_out_of_range(tmp_path):
    arrays = make_arrays()
    paths = write_mnist(tmp_path, arrays, gz=False)
    bad = arrays["test_labels"].copy()
    bad[3] = 11
    write_idx(paths["test_labels"], bad)
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path)
    assert_one_line_naming(error, "t10k-labels-idx1-ubyte")


@pytest.mark.parametrize("damage", ["garbage", "cut"])
def test_corrupt_gzip(tmp_path, damage):
    paths = write_mnist(tmp_path, make_arrays(), gz=True)
    raw = paths["train_labels"].read_bytes()
    paths["train_labels"].write_bytes(b"this is not gzip" if damage == "garbage" else raw[: len(raw) // 2])
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path)
    assert_one_line_naming(error, "train-labels-idx1-ubyte.gz")


def test_bad_npz(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path / "mnist.npz")
    assert_one_line_naming(error, "mnist.npz")

    arrays = make_arrays()
    np.savez(tmp_path / "mnist.npz", x_train=arrays["train_images"], y_train=arrays["train_labels"])
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path / "mnist.npz")
    assert_one_line_naming(error, "mnist.npz")
    assert "x_test" in str(error.value)

    np.savez(tmp_path / "mnist.npz", x_train=arrays["train_images"], y_train=arrays["train_labels"][:5],
             x_test=arrays["test_images"], y_test=arrays["test_labels"])
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path / "mnist.npz")
    assert_one_line_naming(error, "mnist.npz")


@pytest.fixture(scope="module")
def valid_idx() -> bytes:
    header = bytes([0, 0, 8, 3]) + (3).to_bytes(4, "big") + (4).to_bytes(4, "big") + (5).to_bytes(4, "big")
    return header + bytes(range(60))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_read_idx_fuzz(tmp_path_factory, valid_idx, data):
    """Random bytes, truncations and byte flips of a valid IDX file either parse or raise DataError."""
    kind = data.draw(st.sampled_from(["random", "truncated", "flipped", "gz"]))
    if kind == "random":
        raw = data.draw(st.binary(max_size=64))
    elif kind == "truncated":
        raw = valid_idx[: data.draw(st.integers(0, len(valid_idx)))]
    elif kind == "flipped":
        raw = bytearray(valid_idx)
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
        raw = bytes(raw)
    else:
        packed = gzip.compress(valid_idx)
        raw = packed[: data.draw(st.integers(0, len(packed)))]
    path = tmp_path_factory.getbasetemp() / ("fuzz.idx.gz" if kind == "gz" else "fuzz.idx")
    path.write_bytes(raw)
    try:
        array = read_idx(path)
    except DataError as error:
        assert "\n" not in str(error) and path.name in str(error)
    else:
        assert array.dtype == np.uint8 and array.ndim >= 1


# ----------------------------------------------------------------------------- download

class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder and counts GET requests per path."""

    def __init__(self, *args, counts: dict, **kwargs):
        self.counts = counts
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.counts[self.path] = self.counts.get(self.path, 0) + 1
        super().do_GET()

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A loopback HTTP server holding the four .gz files; yields (url, md5 by name, request counts, arrays)."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    served = tmp_path / "served"
    arrays = make_arrays(seed=7)
    paths = write_mnist(served, arrays, gz=True)
    md5 = {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in paths.values()}
    counts: dict[str, int] = {}
    handler = partial(CountingHandler, directory=str(served), counts=counts)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", md5, counts, arrays
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_verifies_and_caches(tmp_path, mirror):
    url, md5, counts, arrays = mirror
    cache = tmp_path / "cache"
    # A dead mirror first: the next one is tried.
    folder = download_mnist(cache_dir=cache, mirrors=["http://127.0.0.1:1/", url], md5=md5, timeout=5)
    assert folder == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(md5)  # no temp files left behind
    assert sum(counts.values()) == 4

    data = load_mnist(download=True, cache_dir=cache, mirrors=[url], md5=md5)
    assert_matches(data, arrays)
    assert data.source == "mnist"
    assert sum(counts.values()) == 4  # verified files are not fetched again

    # A damaged cached file is fetched again.
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    download_mnist(cache_dir=cache, mirrors=[url], md5=md5, timeout=5)
    assert sum(counts.values()) == 5
    assert counts["/t10k-labels-idx1-ubyte.gz"] == 2


def test_download_default_cache_from_env(tmp_path, mirror, monkeypatch):
    url, md5, counts, _ = mirror
    monkeypatch.setenv("TWINNETS_CACHE", str(tmp_path / "root"))
    assert download_mnist(mirrors=[url], md5=md5, timeout=5) == tmp_path / "root" / "mnist"
    assert len(list((tmp_path / "root" / "mnist").glob("*.gz"))) == 4


def test_download_checksum_mismatch(tmp_path, mirror):
    url, md5, _, _ = mirror
    wrong = dict(md5, **{"train-labels-idx1-ubyte.gz": "0" * 32})
    with pytest.raises(DataError) as error:
        download_mnist(cache_dir=tmp_path / "cache", mirrors=[url], md5=wrong, timeout=5)
    assert_one_line_naming(error, "train-labels-idx1-ubyte.gz")
    assert "MD5" in str(error.value)
    assert not (tmp_path / "cache" / "train-labels-idx1-ubyte.gz").exists()
    assert not list((tmp_path / "cache").glob("*.part"))


def test_download_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    with pytest.raises(UserError) as error:
        download_mnist(cache_dir=tmp_path / "cache", mirrors=["http://127.0.0.1:1/"], timeout=5)
    message = str(error.value)
    assert not isinstance(error.value, DataError)
    assert "\n" not in message and "--data-dir" in message and "127.0.0.1:1" in message


def test_download_and_data_dir_exclude_each_other(tmp_path):
    with pytest.raises(UserError):
        load_mnist(tmp_path, download=True)
