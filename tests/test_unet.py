"""The U-Net on both sides: shapes and the canonical layout, cross-framework parity (forward, loss, gradients,
training steps with PyTorch-style BatchNorm statistics), the loss against a numpy reference, the data
pipelines, overlap tiles, the Kaggle submission and the callbacks. Small widths and depths keep it fast."""
from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import side_module
from harness.registry import TOLERANCES  # docs/equivalence.md: one row per task
from shared import weights as layouts
from shared.callbacks import PredictionsSaverCallback
from shared.data import carvana
from shared.data.synthetic_cars import generate_synthetic_carvana
from shared.init import init_weights
from shared.rle import rle_decode
from shared.tasks import make_spec, unet_output_size, valid_tile_sizes
from shared.tiles import mirror_pad, tile_predict

# Small nets: padded at 32x32, and the original (valid convolutions) on a 60x60 tile with a 20x20 output.
SMALL = {
    "padded": {"variant": "padded", "depth": 2, "image_size": 32, "base_filters": 2},
    "original": {"variant": "original", "depth": 2, "image_size": 60, "base_filters": 2},
}
VARIANTS = list(SMALL)
BATCH, STEPS = 4, 5
SIDES = ("torch", "tf")  # torch first: see conftest.py


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """These nets are tiny: on a busy 2-core machine PyTorch's spinning OpenMP threads make each step
    50-80 times slower than one thread does."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_spec(variant: str, **changes):
    return make_spec("unet", **{**SMALL[variant], **changes})


def build(side: str, spec, canonical=None):
    """The side's U-Net for the spec, with the canonical weights loaded when given."""
    model = side_module(side, "unet").build(spec)
    if canonical is not None:
        side_module(side, "weights").load_weights(model, canonical)
    return model


def nontrivial_weights(spec, seed: int = 0) -> dict:
    """The canonical initial weights, with BatchNorm affine parameters and running statistics drawn at random,
    so inference mode really uses them (mean 0 and var 1 would hide a swapped or ignored statistic)."""
    canonical = init_weights(layouts.unet_layout(spec), spec.seed)
    rng = np.random.default_rng(seed)
    for name, param in layouts.unet_layout(spec).items():
        if param.kind == "bn_weight":
            canonical[name] = rng.uniform(0.5, 1.5, param.shape).astype(np.float32)
        elif param.kind in ("bn_bias", "bn_mean"):
            canonical[name] = rng.normal(0.0, 0.2, param.shape).astype(np.float32)
        elif param.kind == "bn_var":
            canonical[name] = rng.uniform(0.5, 2.0, param.shape).astype(np.float32)
    return canonical


def batch(spec, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images (N, S, S, 3) in [0, 1] with a bright rectangle, and its mask (N, S_out, S_out) of the output's
    size (the original U-Net's input carries a border of context around the masked centre)."""
    rng = np.random.default_rng(seed)
    size, out = spec.image_size, spec.output_size
    border = (size - out) // 2
    images = rng.uniform(0.0, 0.4, (n, size, size, 3)).astype(np.float32)
    masks = np.zeros((n, out, out), np.float32)
    for i in range(n):
        top, left = rng.integers(0, out // 2, 2)
        height, width = rng.integers(out // 4, out // 2 + 1, 2)
        masks[i, top:top + height, left:left + width] = 1
        images[i, border + top:border + top + height, border + left:border + left + width] += 0.55
    return images, masks


def to_side(side: str, images: np.ndarray, masks: np.ndarray):
    """Canonical NHWC images and (N, H, W) masks as the side's tensors: NHWC for Keras, NCHW for PyTorch."""
    data = side_module(side, "data")
    return data.to_tensor_images(images), data.to_tensor_images(masks[..., None])


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def classifier_for(side: str, model, spec):
    """A CarvanaClassifier ready for train_step: the PyTorch side puts BatchNorm in training mode, as
    CarvanaClassifier.train does each epoch (the Keras step traces its tf.function on its first call)."""
    classifier = side_module(side, "classifier").CarvanaClassifier(model, 1, spec, verbose=False)
    if side == "torch":
        model.train()
    return classifier


# ---- 1. shapes, names, parameter counts ------------------------------------------------------------------

def test_padded_forward_keeps_the_image_size(side):
    spec = make_spec("unet", base_filters=2, image_size=32)  # the default depth, 4
    assert spec.depth == 4 and spec.output_size == 32
    images, _ = batch(spec, 3, seed=1)
    logits = side_module(side, "classifier").forward(build(side, spec, init_weights(layouts.unet_layout(spec), 0)),
                                                     images)
    assert logits.shape == (3, 32, 32, 1), logits.shape
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    assert float(np.std(logits)) > 0, "constant logits: the net ignores its input"


def test_original_unet_sizes():
    """Ronneberger 2015: a 572 tile gives a 388 mask at depth 4; each level loses 4 pixels and must be even."""
    assert unet_output_size(572, 4) == 388
    assert make_spec("unet", variant="original", image_size=572).output_size == 388
    assert unet_output_size(60, 2) == 20 and unet_output_size(44, 2) == 4
    assert unet_output_size(571, 4) is None and unet_output_size(100, 4) is None  # odd before a pooling
    assert unet_output_size(20, 2) is None  # too small: nothing left
    tiles = valid_tile_sizes(4)
    assert tiles[0] == 188 and 572 in tiles
    assert all(unet_output_size(t, 4) for t in tiles) and all((b - a) == 16 for a, b in zip(tiles, tiles[1:]))


def test_original_forward_572_to_388(side):
    spec = make_spec("unet", variant="original", image_size=572, base_filters=1)
    model = build(side, spec, init_weights(layouts.unet_layout(spec), 0))
    logits = side_module(side, "classifier").forward(model, np.full((1, 572, 572, 3), 0.5, np.float32))
    assert logits.shape == (1, 388, 388, 1), logits.shape


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_of_a_small_net(side, variant):
    spec = small_spec(variant)
    images, _ = batch(spec, 2, seed=2)
    logits = side_module(side, "classifier").forward(build(side, spec, init_weights(layouts.unet_layout(spec), 0)),
                                                     images)
    assert logits.shape == (2, spec.output_size, spec.output_size, 1)
    assert spec.output_size == (32 if variant == "padded" else 20)


@pytest.mark.parametrize("variant", VARIANTS)
def test_exported_weights_are_the_shared_layout(side, variant):
    spec = small_spec(variant, depth=4, image_size=32 if variant == "padded" else 188)
    model = build(side, spec)  # as built, before any load
    exported = side_module(side, "weights").export_weights(model)
    layout = layouts.unet_layout(spec)
    assert list(layout)[:2] == ["enc1.conv1.weight", "enc1.conv1.bias"]
    assert {k: tuple(v.shape) for k, v in exported.items()} == {k: p.shape for k, p in layout.items()}
    count = side_module(side, "weights").count_parameters(model)
    assert count == layouts.parameter_count(layout), f"{side} {variant}: {count} parameters"


def test_both_sides_count_the_same_parameters():
    spec = small_spec("padded", depth=4)
    counts = {s: side_module(s, "weights").count_parameters(build(s, spec)) for s in SIDES}
    assert counts["tf"] == counts["torch"] == layouts.parameter_count(layouts.unet_layout(spec)), counts


def test_paper_width_counts_31043521_parameters():
    """Base 64, depth 4: the widely quoted 31.04 M of the U-Net with BatchNorm and transposed convolutions."""
    layout = layouts.unet_layout(make_spec("unet", base_filters=64, depth=4))
    assert layouts.parameter_count(layout) == 31_043_521
    assert layout["enc5.conv1.weight"].shape == (1024, 512, 3, 3)
    assert layout["up1.weight"].shape == (128, 64, 2, 2)
    assert layout["dec1.conv1.weight"].shape == (64, 128, 3, 3)
    assert layout["head.weight"].shape == (1, 64, 1, 1)
    # Running statistics are buffers, not parameters.
    buffers = sum(int(np.prod(p.shape)) for p in layout.values() if p.kind in ("bn_mean", "bn_var"))
    assert buffers > 0 and sum(int(np.prod(p.shape)) for p in layout.values()) == 31_043_521 + buffers


# ---- 2. parity -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_parity_with_running_statistics(variant):
    spec = small_spec(variant)
    canonical = nontrivial_weights(spec)
    images, _ = batch(spec, BATCH, seed=3)
    out = {s: side_module(s, "classifier").forward(build(s, spec, canonical), images) for s in SIDES}
    assert out["tf"].shape == out["torch"].shape == (BATCH, spec.output_size, spec.output_size, 1)
    diff = max_abs(out["tf"], out["torch"])
    assert diff <= TOLERANCES["unet"]["forward"], f"unet {variant} forward: max |tf - torch| = {diff:.3e}"
    # The running statistics matter: the default ones (mean 0, var 1) give other logits.
    plain = side_module("torch", "classifier").forward(
        build("torch", spec, init_weights(layouts.unet_layout(spec), spec.seed)), images)
    assert max_abs(plain, out["torch"]) > 100 * TOLERANCES["unet"]["forward"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_loss_and_gradients_parity(variant):
    spec = small_spec(variant)
    canonical = nontrivial_weights(spec)
    images, masks = batch(spec, BATCH, seed=4)
    results = {s: side_module(s, "classifier").gradients(build(s, spec, canonical), images, masks[..., None])
               for s in SIDES}
    (tf_loss, tf_grads), (torch_loss, torch_grads) = results["tf"], results["torch"]
    diff = abs(tf_loss - torch_loss)
    assert diff <= TOLERANCES["unet"]["loss"], f"unet {variant} loss: tf {tf_loss}, torch {torch_loss}, diff {diff:.3e}"
    assert 0.5 < torch_loss < 3.0  # BCE about log 2 plus 1 - soft Dice for random weights
    trainable = {k for k, p in layouts.unet_layout(spec).items() if p.kind not in ("bn_mean", "bn_var")}
    assert set(tf_grads) == set(torch_grads) == trainable
    for name in sorted(trainable):
        assert tf_grads[name].shape == torch_grads[name].shape, name
        scale = float(np.max(np.abs(torch_grads[name])))
        if name.endswith(".bias") and not name.startswith(("head", "enc1.bn", "dec1.bn")):
            # A bias that only shifts what a training-mode BatchNorm normalises (conv biases; in the original net the
            # transposed convs' too) is subtracted again with the batch mean: its gradient is zero but for rounding.
            # Measure it against its layer's weight gradient.
            scale = max(scale, float(np.max(np.abs(torch_grads[name[:-len(".bias")] + ".weight"]))))
        if name.endswith(("conv1.bias", "conv2.bias")):
            for s, grads in (("tf", tf_grads), ("torch", torch_grads)):
                assert float(np.max(np.abs(grads[name]))) <= TOLERANCES["unet"]["grad"] * scale, f"{s} {name} not ~0"
        assert scale > 0, f"{variant} {name}: zero gradient proves nothing"
        diff = max_abs(tf_grads[name], torch_grads[name])
        assert diff <= TOLERANCES["unet"]["grad"] * scale, (
            f"unet {variant} d loss / d {name}: max |tf - torch| = {diff:.3e}, relative {diff / scale:.3e}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_identical_train_steps_keep_the_sides_together(variant):
    """STEPS SGD-with-momentum steps on the same batches: the losses, every exported tensor (BatchNorm
    running_mean and running_var included: the Keras side stores PyTorch's unbiased batch variance) and the
    inference-mode logits afterwards agree."""
    spec = small_spec(variant)
    assert spec.optimizer == "sgd" and spec.momentum == 0.99
    canonical = nontrivial_weights(spec)
    batches = [batch(spec, BATCH, seed=10 + step) for step in range(STEPS)]
    models, losses = {}, {}
    for s in SIDES:
        models[s] = build(s, spec, canonical)
        classifier = classifier_for(s, models[s], spec)
        losses[s] = np.array([classifier.train_step(*to_side(s, images, masks))[0] for images, masks in batches])
    relative = np.abs(losses["tf"] - losses["torch"]) / np.abs(losses["torch"])
    worst = int(np.argmax(relative))
    assert relative[worst] <= TOLERANCES["unet"]["trained_loss"], (
        f"unet {variant} step {worst + 1}: loss tf {losses['tf'][worst]}, torch {losses['torch'][worst]}, "
        f"relative {relative[worst]:.3e}")

    exported = {s: side_module(s, "weights").export_weights(models[s]) for s in SIDES}
    assert set(exported["tf"]) == set(exported["torch"]) == set(canonical)
    moved = max_abs(exported["torch"]["enc1.conv1.weight"], canonical["enc1.conv1.weight"])
    assert moved > 1e-3, f"the weights hardly moved ({moved:.2e}): the comparison proves little"
    for name in sorted(canonical):
        diff = max_abs(exported["tf"][name], exported["torch"][name])
        assert diff <= TOLERANCES["unet"]["trained_weights"], (
            f"unet {variant} {name} after {STEPS} steps: diff {diff:.3e}")

    images, _ = batch(spec, BATCH, seed=99)
    out = {s: side_module(s, "classifier").forward(models[s], images) for s in SIDES}
    diff = max_abs(out["tf"], out["torch"])
    assert diff <= TOLERANCES["unet"]["forward"], (
        f"unet {variant} forward after training: max |tf - torch| = {diff:.3e}")


def test_keras_batchnorm_keeps_pytorch_running_statistics():
    """On a batch of n = 2 x 2 x 2 = 8 values per channel the unbiased variance is 8/7 of the biased one: the
    Keras BatchNorm must store PyTorch's (unbiased) running_var and normalise with the biased batch variance."""
    import tensorflow as tf
    import torch

    from keras_models.unet import BatchNorm as KerasBatchNorm
    from torch_impl.unet import BatchNorm as TorchBatchNorm

    spec = small_spec("padded")
    x = np.random.default_rng(9).normal(1.0, 2.0, (2, 2, 2, 3)).astype(np.float32)  # NHWC
    keras_bn = KerasBatchNorm(epsilon=spec.bn_eps, momentum=1 - spec.bn_momentum)
    keras_bn.build(x.shape)
    torch_bn = TorchBatchNorm(3, eps=spec.bn_eps, momentum=spec.bn_momentum).train()
    keras_out = keras_bn(tf.constant(x), training=True).numpy()
    torch_out = torch_bn(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy().transpose(0, 2, 3, 1)
    assert max_abs(keras_out, torch_out) <= 1e-5, "training-mode outputs differ"
    unbiased = x.reshape(-1, 3).var(axis=0, ddof=1)
    expected_var = (1 - spec.bn_momentum) * 1.0 + spec.bn_momentum * unbiased
    expected_mean = spec.bn_momentum * x.reshape(-1, 3).mean(axis=0)
    for got_mean, got_var, who in ((keras_bn.moving_mean.numpy(), keras_bn.moving_variance.numpy(), "keras"),
                                   (torch_bn.running_mean.numpy(), torch_bn.running_var.numpy(), "torch")):
        assert max_abs(got_mean, expected_mean) <= 1e-6, f"{who} running mean {got_mean} != {expected_mean}"
        assert max_abs(got_var, expected_var) <= 1e-5, f"{who} running var {got_var} != {expected_var} (unbiased)"
    biased_var = (1 - spec.bn_momentum) + spec.bn_momentum * x.reshape(-1, 3).var(axis=0)
    assert max_abs(biased_var, expected_var) > 1e-2  # the check above tells the two apart


# ---- 3. the loss falls -----------------------------------------------------------------------------------

def test_overfits_one_batch(side):
    """Adam, lr 1e-2, 30 steps on one fixed batch of 4 images: the loss ends below half its start."""
    spec = make_spec("unet", variant="padded", depth=2, image_size=32, base_filters=8, optimizer="adam", lr=1e-2)
    rng = np.random.default_rng(5)
    images = rng.uniform(0.0, 0.4, (4, 32, 32, 3)).astype(np.float32)  # dark noise ...
    masks = np.zeros((4, 32, 32), np.float32)
    for i in range(4):  # ... with one bright rectangle per image, its mask the target
        height, width = rng.integers(12, 25, 2)
        top, left = rng.integers(0, 33 - height), rng.integers(0, 33 - width)
        masks[i, top:top + height, left:left + width] = 1
        images[i, top:top + height, left:left + width] += 0.55
    model = build(side, spec, init_weights(layouts.unet_layout(spec), spec.seed))
    classifier = classifier_for(side, model, spec)
    tensors = to_side(side, images, masks)
    losses = [classifier.train_step(*tensors)[0] for _ in range(30)]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], f"{side}: loss {losses[0]:.4f} -> {losses[-1]:.4f} after 30 steps"


# ---- 4. loss and Dice against numpy ----------------------------------------------------------------------

def numpy_bce_dice(logits: np.ndarray, masks: np.ndarray, smooth: float = 1.0) -> float:
    """BCE from logits averaged over every pixel, plus 1 - the soft Dice of each image averaged, in float64."""
    z, y = logits.astype(np.float64).reshape(len(logits), -1), masks.astype(np.float64).reshape(len(masks), -1)
    bce = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    p = 1 / (1 + np.exp(-z))
    dice = (2 * (p * y).sum(1) + smooth) / (p.sum(1) + y.sum(1) + smooth)
    return float(bce + 1 - dice.mean())


def test_bce_dice_loss_matches_numpy(side):
    rng = np.random.default_rng(6)
    logits = rng.normal(0, 3, (3, 8, 8, 1)).astype(np.float32)
    masks = (rng.random((3, 8, 8, 1)) > 0.6).astype(np.float32)
    masks[2] = 0  # an empty mask: the smooth term keeps its Dice finite
    logits[0, 0, 0, 0] = 40.0  # a large logit: BCE must not overflow
    expected = numpy_bce_dice(logits, masks)
    module = side_module(side, "classifier")
    z, y = (side_module(side, "data").to_tensor_images(a) for a in (logits, masks))
    got = float(module.bce_dice_loss(z, y))
    assert abs(got - expected) <= TOLERANCES["unet"]["reference_loss"], f"{side}: {got} vs numpy {expected}"
    # Dice per image, then averaged: pooling the pixels of the batch would give another number.
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    pooled = (np.mean(np.maximum(logits, 0) - logits * masks + np.log1p(np.exp(-np.abs(logits))))
              + 1 - (2 * (p * masks).sum() + 1) / (p.sum() + masks.sum() + 1))
    assert abs(pooled - expected) > 100 * TOLERANCES["unet"]["reference_loss"]


def test_dice_score(side):
    module, data = side_module(side, "classifier"), side_module(side, "data")

    def dice(logits: np.ndarray, masks: np.ndarray) -> float:
        return float(module.dice_score(data.to_tensor_images(logits.astype(np.float32)),
                                       data.to_tensor_images(masks.astype(np.float32)), 0.5))

    truth = np.zeros((1, 6, 6, 1))
    truth[0, 1:4, 1:5] = 1
    confident = np.where(truth > 0, 5.0, -5.0)
    assert dice(confident, truth) == 1.0  # perfect prediction
    assert dice(np.full_like(truth, -5.0), np.zeros_like(truth)) == 1.0  # empty prediction of an empty mask
    assert dice(-confident, truth) == 0.0  # disjoint
    assert dice(np.full_like(truth, -5.0), truth) == 0.0  # nothing predicted of a car
    half = np.full_like(truth, -5.0)
    half[0, 1:4, 1:3] = 5.0  # 6 of the 12 pixels
    assert dice(half, truth) == pytest.approx(2 * 6 / (6 + 12))
    # Averaged per image: a perfect image and a disjoint one make 0.5.
    assert dice(np.concatenate([confident, -confident]), np.concatenate([truth, truth])) == pytest.approx(0.5)


# ---- 5. the data pipelines -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_carvana(tmp_path_factory) -> Path:
    return generate_synthetic_carvana(tmp_path_factory.mktemp("unet") / "carvana", n_cars=3, n_test_cars=1,
                                      size=(192, 128))


def test_both_pipelines_yield_identical_batches(small_carvana):
    train, valid = carvana.get_train_files(carvana.resolve_carvana(small_carvana), None, 0.2, seed=0)
    assert len(train) == 32 and len(valid) == 16  # 2 cars to train, 1 to validate
    assert not {s.car for s in train} & {s.car for s in valid}, "a car on both sides of the split"
    dataset = carvana.TrainImageDataset(train, 32, augment=True, seed=0)
    torch_loader = side_module("torch", "data").make_image_loader(dataset, 6, 0, True, 0)
    tf_loaders = [side_module("tf", "data").make_image_loader(dataset, 6, 0, True, workers) for workers in (0, 2)]
    seen = {}
    for epoch in (1, 2):
        torch_loader.sampler.set_epoch(epoch)
        torch_batches = [(x.numpy().transpose(0, 2, 3, 1), y.numpy().transpose(0, 2, 3, 1)) for x, y in torch_loader]
        assert [len(x) for x, _ in torch_batches] == [6, 6, 6, 6, 6, 2]
        for loader in tf_loaders:
            tf_batches = [(x.numpy(), y.numpy()) for x, y in loader.batches(epoch)]
            assert len(tf_batches) == len(torch_batches)
            for i, ((tx, ty), (px, py)) in enumerate(zip(tf_batches, torch_batches)):
                assert tx.shape == px.shape and ty.shape == py.shape == (len(px), 32, 32, 1)
                assert np.array_equal(tx, px), f"epoch {epoch} batch {i}: images differ by {max_abs(tx, px):.3e}"
                assert np.array_equal(ty, py), f"epoch {epoch} batch {i}: masks differ in {int((ty != py).sum())} px"
        images = np.concatenate([x for x, _ in torch_batches])
        masks = np.concatenate([y for _, y in torch_batches])
        assert set(np.unique(masks).tolist()) == {0.0, 1.0}, "masks not binary"
        assert images.dtype == np.float32 and 0 <= images.min() and images.max() <= 1
        seen[epoch] = images
    # Augmentation and order are drawn per epoch: the two epochs differ.
    assert max_abs(seen[1], seen[2]) > 0.1


# ---- 6. overlap tiles ------------------------------------------------------------------------------------

def test_tile_predict_reconstructs_an_image_that_is_not_a_multiple_of_the_tile():
    tile_in, tile_out = 60, 20
    pad = (tile_in - tile_out) // 2
    image = np.random.default_rng(7).random((37, 50, 3)).astype(np.float32)
    calls = []

    def centre_mean(tiles: np.ndarray) -> np.ndarray:
        calls.append(tiles.shape)
        return tiles[:, pad:pad + tile_out, pad:pad + tile_out].mean(-1)  # (N, tile_out, tile_out)

    out = tile_predict(image, tile_in, tile_out, centre_mean, batch_size=4)
    assert out.shape == (37, 50) and out.dtype == np.float32
    assert np.array_equal(out, image.mean(-1)), f"max diff {max_abs(out, image.mean(-1)):.3e}"
    assert calls == [(4, 60, 60, 3), (2, 60, 60, 3)]  # 2 x 3 tiles of 20 cover 37 x 50

    # The context around each tile is the mirrored image: the top-left tile's corner is the mirror of the photo.
    def corner(tiles: np.ndarray) -> np.ndarray:
        return tiles[:, :tile_out, :tile_out, 0]

    mirrored = tile_predict(image, tile_in, tile_out, corner)
    expected = np.pad(image[..., 0], pad, mode="symmetric")[:tile_out, :tile_out]
    assert np.array_equal(mirrored[:tile_out, :tile_out], expected)
    assert mirrored[0, 0] == image[pad - 1, pad - 1, 0]


def test_mirror_pad():
    image = np.arange(4 * 5 * 2, dtype=np.float32).reshape(4, 5, 2)
    padded = mirror_pad(image, 3)
    assert padded.shape == (10, 11, 2)
    assert np.array_equal(padded[3:-3, 3:-3], image)
    assert np.array_equal(padded[:3, 3:-3], image[2::-1])  # rows 2, 1, 0: the edge pixel repeated, then inward
    assert np.array_equal(padded[3:-3, -3:], image[:, :-4:-1])
    assert mirror_pad(image, 0) is image


@pytest.mark.parametrize("tile, depth, out", [(572, 4, 388), (60, 2, 20)])
def test_dataset_adds_the_original_unets_mirror_border(small_carvana, tile, depth, out):
    spec = make_spec("unet", variant="original", image_size=tile, depth=depth, base_filters=2)
    pad = (spec.image_size - spec.output_size) // 2
    assert spec.output_size == out and pad == (tile - out) // 2 and out + 2 * pad == tile
    if tile > 100:
        return  # the sizes only: decoding a 572 tile is not needed to check them
    train, _ = carvana.get_train_files(carvana.resolve_carvana(small_carvana), None, 0.2, seed=0)
    plain = carvana.TrainImageDataset(train[:1], spec.output_size, augment=True, seed=0)
    bordered = carvana.TrainImageDataset(train[:1], spec.output_size, augment=True, seed=0, pad=pad)
    (image, mask), (big, big_mask) = plain.get(0, 1), bordered.get(0, 1)
    assert big.shape == (tile, tile, 3) and big_mask.shape == mask.shape == (out, out)
    assert np.array_equal(big[pad:pad + out, pad:pad + out], image) and np.array_equal(big_mask, mask)
    assert np.array_equal(big, mirror_pad(image, pad))


# ---- 7. the Kaggle submission ----------------------------------------------------------------------------

ELLIPSES = {"0a0a0a0a0a0a_01.jpg": ((1918, 1280), 0.3), "0a0a0a0a0a0a_02.jpg": ((1918, 1280), 0.2),
            "0b0b0b0b0b0b_01.jpg": ((300, 200), 0.4)}


@pytest.fixture(scope="module")
def ellipse_photos(tmp_path_factory) -> list[Path]:
    """JPEG test photos: a white centred ellipse (semi-axes a share of the width and height) on dark grey."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name, ((width, height), share) in ELLIPSES.items():
        y, x = np.mgrid[:height, :width]
        inside = ((x + 0.5 - width / 2) / (share * width)) ** 2 + ((y + 0.5 - height / 2) / (share * height)) ** 2 < 1
        pixels = np.where(inside[..., None], 240, 30).astype(np.uint8).repeat(3, axis=2)
        Image.fromarray(pixels).save(folder / name, quality=90)
        paths.append(folder / name)
    return paths


def read_submission(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt", newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.parametrize("tiled", [False, True], ids=["padded", "original-tiles"])
def test_predictions_saver_writes_one_row_per_photo_at_its_original_size(tmp_path, ellipse_photos, tiled):
    """The fake net predicts the photo's own brightness (channel mean), so each decoded mask must be that photo's
    ellipse, at the photo's original size."""
    tile_in, tile_out = (60, 20) if tiled else (32, 32)
    pad = (tile_in - tile_out) // 2
    shapes = []

    def predict(images: np.ndarray) -> np.ndarray:
        shapes.append(images.shape)
        return images[:, pad:pad + tile_out, pad:pad + tile_out].mean(-1)  # (N, S_out, S_out) "probabilities"

    test_set = carvana.TestImageDataset(ellipse_photos, tile_out)
    path = tmp_path / "submit.csv.gz"
    saver = PredictionsSaverCallback(path, test_set, predict, 0.5, tile_in, tile_out, batch_size=2)
    saver.on_train_end({})
    assert sorted(os.listdir(tmp_path)) == ["submit.csv.gz"], "a temporary file was left behind"
    assert all(shape[1:] == (tile_in, tile_in, 3) for shape in shapes)

    rows = read_submission(path)
    assert rows[0] == ["img", "rle_mask"]
    assert [name for name, _ in rows[1:]] == list(ELLIPSES) and saver.rows == 3
    for name, rle in rows[1:]:
        (width, height), share = ELLIPSES[name]
        mask = rle_decode(rle, (height, width))
        assert mask.shape == (height, width) and set(np.unique(mask).tolist()) == {0, 1}
        assert mask[height // 2, width // 2] == 1 and mask[0, 0] == mask[-1, -1] == 0
        area = float(mask.mean())
        assert abs(area - np.pi * share ** 2) < 0.02, (
            f"{name}: mask covers {area:.3f}, ellipse {np.pi * share ** 2:.3f}")


def test_predictions_saver_keeps_the_old_file_when_prediction_fails(tmp_path, ellipse_photos):
    path = tmp_path / "submit.csv.gz"
    path.write_bytes(b"previous")
    calls = []

    def failing(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return np.zeros(images.shape[:3], np.float32)

    saver = PredictionsSaverCallback(path, carvana.TestImageDataset(ellipse_photos, 16), failing, batch_size=1)
    with pytest.raises(RuntimeError):
        saver.save()
    assert path.read_bytes() == b"previous" and sorted(os.listdir(tmp_path)) == ["submit.csv.gz"]


# ---- 8. callbacks ----------------------------------------------------------------------------------------

def test_model_saver_writes_native_and_canonical_checkpoints(side, tmp_path):
    spec = small_spec("padded")
    canonical = nontrivial_weights(spec)
    model = build(side, spec, canonical)
    saver = side_module(side, "callbacks").ModelSaverCallback(model, tmp_path / "model")
    saver.on_epoch_end(1, {"loss": 1.0})
    native = "model.keras" if side == "tf" else "model.pt"
    assert sorted(os.listdir(tmp_path)) == sorted([native, "model.safetensors"])
    saved = layouts.load_weights_file(tmp_path / "model.safetensors")
    exported = side_module(side, "weights").export_weights(model)
    assert set(saved) == set(exported) == set(canonical)
    for name in exported:
        assert np.array_equal(saved[name], exported[name]) and np.array_equal(saved[name], canonical[name]), name
    assert saver.save() == {"model": str(tmp_path / native), "checkpoint": str(tmp_path / "model.safetensors")}
    if side == "torch":
        import torch

        state = torch.load(tmp_path / native, weights_only=True)
        for name in exported:
            assert np.array_equal(state[name].numpy(), exported[name]), name


def test_keras_file_holds_the_weights(tmp_path):
    """The .keras file is a zip with the model's weights; whether keras.saving.load_model can revive it is
    reported separately (it needs the custom classes, and a config that records the model's true size)."""
    import zipfile

    spec = small_spec("padded")
    model = build("tf", spec, nontrivial_weights(spec))
    side_module("tf", "callbacks").ModelSaverCallback(model, tmp_path / "model").save()
    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        assert {"config.json", "model.weights.h5"} <= set(archive.namelist())


def test_tensorboard_logger_writes_event_files(side, tmp_path, request):
    if side == "tf":
        # Both sides in one process (tests, --in-process): loading the PyTorch writer first must not hide
        # TensorFlow from tf.summary (it did when torch_impl set TensorBoard's "no TensorFlow" marker).
        import importlib

        importlib.import_module("torch_impl.callbacks")  # as --in-process does, before the TensorFlow side runs
    spec = small_spec("padded")
    model = build(side, spec, init_weights(layouts.unet_layout(spec), 0))
    images, _ = batch(spec, 1, seed=8)
    logger = side_module(side, "callbacks").TensorboardLoggerCallback(tmp_path / "tb", model, images)
    logger.on_train_begin()
    logger.on_epoch_end(1, {"epoch": 1, "loss": 0.9, "dice": 0.4, "val_loss": 1.0, "val_dice": 0.3})
    logger.on_train_end()
    scalars, has_graph = read_tensorboard(tmp_path / "tb")
    expected = {"loss/train": 0.9, "loss/valid": 1.0, "dice/train": 0.4, "dice/valid": 0.3}
    assert set(scalars) == set(expected), f"{side}: scalars {sorted(scalars)}"
    for name, value in expected.items():
        assert scalars[name] == [(1, pytest.approx(value, rel=1e-6))], f"{side} {name}: {scalars[name]}"
    assert has_graph, f"{side}: no model graph in the event files"


def read_tensorboard(log_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], bool]:
    """The scalars of every event file below log_dir as "loss/train" -> [(step, value)], and whether a graph was
    written (PyTorch's add_scalar writes scalar events, tf.summary scalar tensors)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    scalars, has_graph = {}, False
    for folder in sorted({path.parent for path in log_dir.rglob("events.out.tfevents*")}):
        events = EventAccumulator(str(folder))
        events.Reload()
        tags = events.Tags()
        has_graph = has_graph or tags["graph"]
        assert folder == log_dir, f"a second run folder {folder}: TensorBoard would not overlay the two sides"
        for tag in tags["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in tags["tensors"]:
            values = [(e.step, make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
            if all(value.ndim == 0 for _, value in values):  # scalars; tf.summary.image writes tensors too
                scalars[tag] = [(step, float(value)) for step, value in values]
    return scalars, has_graph


def test_keras_file_reloads_with_load_model(tmp_path):
    import keras

    from keras_models import unet

    spec = small_spec("padded")
    model = build("tf", spec, nontrivial_weights(spec))
    side_module("tf", "callbacks").ModelSaverCallback(model, tmp_path / "model").save()
    custom = {"UNetPadded": unet.UNetPadded, "UNetOriginal": unet.UNetOriginal, "UNet": unet.UNet,
              "DoubleConv": unet.DoubleConv, "BatchNorm": unet.BatchNorm}
    revived = keras.saving.load_model(tmp_path / "model.keras", custom_objects=custom)
    images, _ = batch(spec, 2, seed=11)
    diff = max_abs(side_module("tf", "classifier").forward(revived, images),
                   side_module("tf", "classifier").forward(model, images))
    assert diff == 0.0, f"the revived model predicts otherwise: {diff:.3e}"


def _first_pipeline_error(loader, epoch: int) -> tuple[type, str] | None:
    """Run one epoch of a tf.data pipeline; the type and text of what it raised. Only these plain values leave the
    function: a live tf.data iterator kept by a traceback until interpreter exit deadlocks the exit."""
    try:
        for _ in loader.batches(epoch):
            pass
    except Exception as error:  # noqa: BLE001 - the type is the point of the test
        return type(error), str(error)
    return None


def test_tf_pipeline_reports_a_corrupt_photo_as_a_data_error(small_carvana, tmp_path):
    """A photo that only the pipeline decodes (not the first pair, which prepare_data checks) is truncated."""
    import gc
    import shutil

    from shared.errors import DataError

    root = shutil.copytree(small_carvana, tmp_path / "carvana")
    train, _ = carvana.get_train_files(carvana.resolve_carvana(root), None, 0.2, seed=0)
    bad = train[-1].image
    bad.write_bytes(bad.read_bytes()[:2000])
    dataset = carvana.TrainImageDataset(train, 32, augment=False, seed=0)
    raised = _first_pipeline_error(side_module("tf", "data").make_image_loader(dataset, 8, 0, False, 0), 1)
    gc.collect()
    assert raised is not None, "the truncated photo went unnoticed"
    kind, text = raised
    assert bad.name in text
    assert issubclass(kind, DataError), f"{kind.__module__}.{kind.__name__} instead of DataError"
