"""The PyTorch DataLoader and the tf.data pipeline built by each side's data.make_loader yield the very same
batches, in the same order, epoch after epoch (the order is drawn from numpy, seeded by (seed, epoch))."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import side_module
from shared.data.batches import batch_indices

N, BATCH_SIZE, SEED = 23, 5, 7  # 5 batches, the last one ragged (3 samples)


@pytest.fixture(scope="module")
def dataset() -> tuple[np.ndarray, np.ndarray]:
    """Distinct images (each holds its index) in NHWC float32, and labels int64."""
    rng = np.random.default_rng(0)
    images = rng.random((N, 6, 4, 2), dtype=np.float32)  # H != W and C = 2 so a wrong transpose shows
    images[:, 0, 0, 0] = np.arange(N)
    return images, rng.integers(0, 10, N).astype(np.int64)


def torch_batches(images, labels, epoch: int, shuffle: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    loader = side_module("torch", "data").make_loader(images, labels, BATCH_SIZE, SEED, shuffle)
    loader.sampler.set_epoch(epoch)
    # PyTorch's images are NCHW: back to the canonical NHWC to compare.
    return [(x.numpy().transpose(0, 2, 3, 1), y.numpy()) for x, y in loader]


def tf_batches(images, labels, epoch: int, shuffle: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    loader = side_module("tf", "data").make_loader(images, labels, BATCH_SIZE, SEED, shuffle)
    return [(x.numpy(), y.numpy()) for x, y in loader.batches(epoch)]


@pytest.mark.parametrize("epoch", [1, 2])
def test_both_loaders_yield_identical_batches(dataset, epoch):
    images, labels = dataset
    from_torch, from_tf = torch_batches(images, labels, epoch), tf_batches(images, labels, epoch)
    assert [len(y) for _, y in from_torch] == [len(y) for _, y in from_tf] == [5, 5, 5, 5, 3]
    for i, ((tx, ty), (fx, fy)) in enumerate(zip(from_torch, from_tf)):
        assert tx.dtype == fx.dtype == np.float32 and ty.dtype == fy.dtype == np.int64
        assert np.array_equal(tx, fx), f"epoch {epoch} batch {i}: images differ"
        assert np.array_equal(ty, fy), f"epoch {epoch} batch {i}: labels differ ({ty} vs {fy})"


@pytest.mark.parametrize("epoch", [1, 2])
def test_batches_follow_the_shared_order(dataset, epoch):
    images, labels = dataset
    expected = batch_indices(N, BATCH_SIZE, SEED, epoch, shuffle=True)
    for (x, y), index in zip(tf_batches(images, labels, epoch), expected, strict=True):
        assert np.array_equal(x, images[index]) and np.array_equal(y, labels[index])
    # Every sample exactly once per epoch, nothing dropped.
    seen = np.concatenate([x[:, 0, 0, 0] for x, _ in torch_batches(images, labels, epoch)])
    assert sorted(seen.astype(int).tolist()) == list(range(N))


def test_epochs_are_shuffled_differently(dataset):
    images, labels = dataset
    orders = {}
    for epoch in (1, 2):
        for name, batches in (("torch", torch_batches(images, labels, epoch)),
                              ("tf", tf_batches(images, labels, epoch))):
            orders[name, epoch] = np.concatenate([x[:, 0, 0, 0] for x, _ in batches]).astype(int)
    assert np.array_equal(orders["torch", 1], orders["tf", 1])
    assert np.array_equal(orders["torch", 2], orders["tf", 2])
    assert not np.array_equal(orders["torch", 1], orders["torch", 2]), "epochs 1 and 2 came in the same order"
    assert not np.array_equal(orders["torch", 1], np.arange(N)), "epoch 1 was not shuffled"


def test_same_epoch_is_reproducible(dataset):
    images, labels = dataset
    first, again = tf_batches(images, labels, 3), tf_batches(images, labels, 3)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again, strict=True))


def test_unshuffled_loaders_keep_the_stored_order(dataset):
    images, labels = dataset
    for batches in (torch_batches(images, labels, 1, shuffle=False), tf_batches(images, labels, 1, shuffle=False)):
        assert np.array_equal(np.concatenate([x for x, _ in batches]), images)
        assert np.array_equal(np.concatenate([y for _, y in batches]), labels)


def test_loader_length_counts_the_ragged_batch(dataset):
    images, labels = dataset
    torch_loader = side_module("torch", "data").make_loader(images, labels, BATCH_SIZE, SEED, True)
    tf_loader = side_module("tf", "data").make_loader(images, labels, BATCH_SIZE, SEED, True)
    assert len(torch_loader) == len(tf_loader) == 5
