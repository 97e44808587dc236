"""Non-square U-Net inputs (--image-size HxW): the spec's shapes and refusals, both sides equal on a non-square
batch (both variants), the FLOP count, the data at HxW, the submission at the photo's original size, and the
Dice at the original size. Tiny nets and photos keep it to seconds."""
from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest

from compare import parse_args
from conftest import side_module
from harness.benchmark import flops
from harness.original_dice import original_size_dice
from harness.predict.masks import PhotoDataset
from harness.registry import TOLERANCES, photos_batch
from shared import data_parallel, weights
from shared.callbacks import PredictionsSaverCallback, upsample
from shared.data import carvana
from shared.data.synthetic_cars import generate_synthetic_carvana
from shared.errors import UserError
from shared.init import init_weights
from shared.metrics import dice
from shared.rle import rle_decode
from shared.tasks import UNetSpec, make_spec, parse_image_size
from shared.tiles import mirror_pad
from shared.visualize import mask_panel

# Depth 2 keeps the nets tiny: the padded one needs multiples of 4, the original one tiles of 44, 48, 52, ...
SMALL = {"padded": {"variant": "padded", "depth": 2, "image_size": (16, 32), "base_filters": 2},
         "original": {"variant": "original", "depth": 2, "image_size": (60, 76), "base_filters": 2}}
OUTPUT = {"padded": (16, 32), "original": (20, 36)}
WIDTH, HEIGHT = 192, 128  # the generated photos: Carvana's 3:2 (width:height)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return generate_synthetic_carvana(tmp_path_factory.mktemp("aspect") / "carvana", n_cars=2, n_test_cars=1,
                                      size=(WIDTH, HEIGHT))


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---- the spec and the flag --------------------------------------------------------------------------------

def test_shapes_of_a_non_square_spec():
    spec = make_spec("unet", image_size=(128, 192))
    assert spec.image_shape == spec.output_shape == (128, 192) and spec.pad == 0
    original = make_spec("unet", variant="original", image_size=(572, 764))
    assert original.image_shape == (572, 764) and original.output_shape == (388, 580) and original.pad == 92
    with pytest.raises(ValueError, match="output_shape"):
        _ = spec.output_size  # no single side: a square-only code path must not guess
    # A JSON list (results.json, a job file) reads back as the tuple; N x N is N, as a plain --image-size N.
    assert make_spec("unet", image_size=[128, 192]).image_size == (128, 192)
    assert make_spec("unet", image_size=(64, 64)).image_size == 64 == make_spec("unet").output_size
    assert make_spec("unet", image_size=64).image_shape == (64, 64)
    assert parse_image_size("128x192") == (128, 192) and parse_image_size("64") == 64
    assert parse_image_size("640X960") == (640, 960) and parse_image_size("32x32") == 32


@pytest.mark.parametrize("flags, words", [
    (("--image-size", "100x192"), "--image-size 100x192: the padded U-Net needs both sides multiples of 16 "
                                  "(it halves the image 4 times), such as 96x192"),
    (("--image-size", "30"), "--image-size 30: the padded U-Net needs both sides multiples of 16 (it halves the "
                             "image 4 times), such as 32"),
    (("--variant", "original", "--image-size", "572x701"), "--image-size 572x701: the original U-Net needs a valid "
                                                           "tile size for each side, such as 572x700"),
    (("--image-size", "12a"), "--image-size must be N or HxW (such as 64 or 128x192), got '12a'"),
    (("--image-size", "0x64"), "--image-size must be positive"),
])
def test_refusals_name_the_flag_the_value_and_a_valid_size(flags, words):
    with pytest.raises(UserError) as refused:
        parse_args(["--task", "unet", *flags])
    message = str(refused.value)
    assert words in message and "\n" not in message, message
    if "such as" in message:  # the example it gives is accepted
        example = message.split("such as ")[1].split(" ")[0]
        parse_args(["--task", "unet", *flags[:-1], example])


def test_full_size_is_torchbenchs_640x960_and_the_papers_572_tile():
    assert UNetSpec.full_size["padded"] == {"image_size": (640, 960), "base_filters": 64}
    _, spec, _ = parse_args(["--task", "unet", "--full-size"])
    assert spec.image_shape == (640, 960) and spec.base_filters == 64
    _, spec, _ = parse_args(["--task", "unet", "--full-size", "--variant", "original"])
    assert spec.image_size == 572 and spec.output_shape == (388, 388)
    _, spec, _ = parse_args(["--task", "unet", "--full-size", "--image-size", "1024"])
    assert spec.image_shape == (1024, 1024)
    _, spec, _ = parse_args(["--task", "unet", "--image-size", "128x192"])
    assert spec.image_shape == (128, 192)


# ---- both sides on a non-square batch ---------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(SMALL))
def test_both_sides_agree_on_a_non_square_batch(variant):
    """Same weights, same (N, H, W, 3) batch with H != W: the logits (the skips cropped per axis in the original
    net), the loss and every gradient agree within the task's tolerances."""
    spec = make_spec("unet", **SMALL[variant])
    assert spec.output_shape == OUTPUT[variant]
    canonical = init_weights(weights.unet_layout(spec), spec.seed)
    images, masks = photos_batch(spec, 2, seed=1)
    assert images.shape == (2, *spec.image_shape, 3) and masks.shape == (2, *spec.output_shape, 1)
    logits, grads = {}, {}
    for side in ("torch", "tf"):
        classifier = side_module(side, "classifier")
        model = side_module(side, "unet").build(spec)
        side_module(side, "weights").load_weights(model, canonical)
        logits[side] = classifier.forward(model, images)
        grads[side] = classifier.gradients(model, images, masks)
    assert logits["tf"].shape == logits["torch"].shape == (2, *spec.output_shape, 1)
    diff = max_abs(logits["tf"], logits["torch"])
    assert diff <= TOLERANCES["unet"]["forward"], f"{variant} forward: max |tf - torch| = {diff:.3e}"
    (tf_loss, tf_grads), (torch_loss, torch_grads) = grads["tf"], grads["torch"]
    assert abs(tf_loss - torch_loss) <= TOLERANCES["unet"]["loss"], (tf_loss, torch_loss)
    for name in ("enc1.conv1.weight", "up1.weight", "head.weight"):
        scale = float(np.max(np.abs(torch_grads[name])))
        assert scale > 0 and max_abs(tf_grads[name], torch_grads[name]) <= TOLERANCES["unet"]["grad"] * scale, name


@pytest.mark.parametrize("variant", list(SMALL))
def test_flop_count_matches_pytorchs_on_a_non_square_input(variant):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    spec = make_spec("unet", **SMALL[variant])
    model = side_module("torch", "unet").build(spec).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, *spec.image_shape))
    assert counter.get_total_flops() == sum(flops.unet_forward_flops(spec, 1))


# ---- the data, the submission, the Dice at the original size --------------------------------------------

def test_datasets_resize_to_height_by_width(photos):
    train, _ = carvana.get_train_files(carvana.resolve_carvana(photos), None, 0.5, seed=0)
    image, mask = carvana.TrainImageDataset(train[:1], (32, 48)).get(0)
    assert image.shape == (32, 48, 3) and mask.shape == (32, 48)
    bordered, same = carvana.TrainImageDataset(train[:1], (32, 48), pad=20).get(0)
    assert bordered.shape == (72, 88, 3) and np.array_equal(bordered, mirror_pad(image, 20))
    assert np.array_equal(same, mask)
    # Not squeezed: the car's mask covers the same share of the photo at 32x48 as at full size.
    full = carvana.read_mask(train[0].mask)
    assert abs(mask.mean() - full.mean()) < 0.02
    # The data-parallel loop reads the same sets (both distributed engines take their shapes from them).
    spec = make_spec("unet", **{**SMALL["original"], "validation_size": 0.5})
    train_set, valid_set = data_parallel.carvana_sets(spec, photos)
    assert train_set.get(0, 1)[0].shape == valid_set.get(0)[0].shape == (60, 76, 3)
    assert valid_set.get(0)[1].shape == spec.output_shape == (20, 36)
    test_image, name, size = carvana.TestImageDataset(carvana.get_test_files(carvana.resolve_carvana(photos)),
                                                      (32, 48)).get(0)
    assert test_image.shape == (32, 48, 3) and size == (WIDTH, HEIGHT)
    kept = carvana.resize_description((1918, 1280), (128, 192))
    assert "aspect ratio kept" in kept and "1918x1280 (width x height) to 128x192 (height x width)" in kept
    assert "squeezed: aspect ratio NOT kept" in carvana.resize_description((1918, 1280), (64, 64))
    assert "mirror-padded by 92 pixels to the 572x764 tile" in carvana.resize_description((1918, 1280), (388, 580), 92)


@pytest.mark.parametrize("variant", list(SMALL))
def test_submission_of_a_non_square_net_decodes_at_the_original_size(tmp_path, photos, variant):
    """A fake net that predicts the photo's brightness in its output's centre: every row decodes to a mask of the
    photo's own size, whose car is where the photo's bright pixels are."""
    spec = make_spec("unet", **SMALL[variant])
    pad, (out_h, out_w) = spec.pad, spec.output_shape
    shapes = []

    def predict(images: np.ndarray) -> np.ndarray:
        shapes.append(images.shape[1:])
        return (images[:, pad:pad + out_h, pad:pad + out_w].mean(-1) > 0.5).astype(np.float32)

    paths = carvana.get_test_files(carvana.resolve_carvana(photos))[:3]
    saver = PredictionsSaverCallback(tmp_path / "submit.csv.gz", carvana.TestImageDataset(paths, spec.output_shape),
                                     predict, 0.5, spec.image_shape, spec.output_shape, batch_size=2)
    saver.on_train_end({})
    assert set(shapes) == {(*spec.image_shape, 3)}
    with gzip.open(tmp_path / "submit.csv.gz", "rt", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    assert [name for name, _ in rows] == [p.name for p in paths]
    test_set = carvana.TestImageDataset(paths, spec.output_shape)
    for index, (_, rle) in enumerate(rows):
        image, _, size = test_set.get(index)  # (H_out, W_out, 3), (width, height)
        expected = upsample(predict(mirror_pad(image, pad)[None])[0], size) > 0.5
        mask = rle_decode(rle, (HEIGHT, WIDTH))
        assert size == (WIDTH, HEIGHT) and mask.shape == (HEIGHT, WIDTH) and np.array_equal(mask, expected)
        assert 0 < mask.mean() < 1, "a blank mask proves little"


def test_dice_at_the_original_size(photos):
    """Against a hand computation: the probabilities upsampled as the submission does, thresholded, scored against
    the full-size masks; a net that predicts nothing scores 0, one that predicts the resized mask nearly 1."""
    train, valid = carvana.get_train_files(carvana.resolve_carvana(photos), None, 0.5, seed=0)
    dataset = carvana.TrainImageDataset(valid[:5], (32, 48))
    masks = np.stack([dataset.get(i)[1] for i in range(len(dataset))])
    calls = []

    def resized_truth(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        start = sum(calls[:-1])
        return masks[start:start + len(images)] * 0.8  # (n, 32, 48) "probabilities"

    score = original_size_dice(dataset, resized_truth, 0.5, batch_size=2)
    assert calls == [2, 2, 1]
    by_hand = np.mean([dice(upsample(m * 0.8, (WIDTH, HEIGHT)) > 0.5, carvana.read_mask(s.mask))
                       for m, s in zip(masks, valid[:5])])
    assert score == pytest.approx(by_hand, abs=1e-12) and 0.9 < score < 1.0
    assert original_size_dice(dataset, lambda images: np.zeros(images.shape[:3], np.float32), 0.5, 8) == 0.0


def test_preview_panel_of_a_non_square_tile():
    """The original net's (H + 2 pad, W + 2 pad) photo is cropped to its (H, W) centre beside the masks."""
    image = np.random.default_rng(2).random((20 + 40, 36 + 40, 3)).astype(np.float32)
    mask = np.zeros((20, 36), np.float32)
    panel = mask_panel(image, mask, mask + 0.9)
    assert panel.shape == (20, 4 * 36, 3)
    assert np.array_equal(panel[:, :36], (image[20:40, 20:56] * 255).round().astype(np.uint8))


def test_prediction_photos_travel_at_the_nets_non_square_input(photos):
    """--predict's photos: resized to the output's (H_out, W_out) as the test photos are, with the mirrored border."""
    spec = make_spec("unet", **SMALL["original"])
    paths = [str(p) for p in carvana.get_test_files(carvana.resolve_carvana(photos))[:2]]
    dataset = PhotoDataset(paths, 0, spec, skip_bad=False)
    flat, facts = dataset.get(1)
    assert dataset.shape == (60, 76, 3) and facts.tolist() == [1, 1, WIDTH, HEIGHT]
    expected = mirror_pad(carvana.TestImageDataset(paths, spec.output_shape).get(1)[0], spec.pad)
    assert max_abs(flat.reshape(dataset.shape), expected) <= 1e-7
