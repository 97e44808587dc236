"""`compare.py --export RUN_DIR` verifies each exported file on the run's own first validation batch, and
`--predict RUN_DIR --runtime onnx|savedmodel|pt2` serves the U-Net's masks (and the digits' classes) with those
files: the same submissions and the same agreement table as the framework's model (docs/predict.md,
docs/inference.md). A run whose data folder moved is one line, exit 2, nothing written. The CLI runs start at once
(module fixture) on a U-Net run folder built from canonical weights, as a user's run leaves it; the slow test trains
one first."""
from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import COMPARE, USER_DIR
from harness.predict.checks import TrainedRun, read_run
from harness.predict.exported import exported_files
from harness.predict.validation import VERIFY_BATCH, validation_batch
from harness.registry import REGISTRY, TOLERANCES
from harness.tasks.unet import make_split
from shared.data import mnist
from shared.data.synthetic_cars import generate_synthetic_carvana
from shared.errors import DataError, UserError
from shared.init import init_weights
from shared.rle import rle_decode
from shared.tasks import make_spec
from shared.weights import save_weights, unet_layout

WIDTH, HEIGHT = 96, 64  # the generated photos
UNET = {"base_filters": 4, "image_size": 32}
SPEC = make_spec("unet", **UNET)
MASK_AGREEMENT = 0.9999  # the least share of pixels an exported file's masks share with the framework model's
FILES = ("tf.savedmodel", "tf-onnx.onnx", "torch.pt2", "torch-onnx.onnx")


def run_cli(*args: str, cache: Path, timeout: float = 420) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TWINNETS_CACHE": str(cache)}
    return subprocess.run([sys.executable, COMPARE, *args], cwd=USER_DIR, capture_output=True, text=True,
                          timeout=timeout, env=environment)


def succeeded(completed: subprocess.CompletedProcess) -> str:
    assert completed.returncode == 0, (
        f"exit {completed.returncode}\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}")
    return completed.stdout


def structured_weights(seed: int, data: Path) -> dict:
    """Canonical weights whose masks hold both foreground and background: the initial ones give each photo an almost
    constant output, so the head is scaled up and its bias moved to the validation photos' median logit."""
    torch_side = REGISTRY["unet"].surface("torch", SPEC).task  # PyTorch in this process, for one forward pass
    weights = init_weights(unet_layout(SPEC), seed)
    weights["head.weight"] = weights["head.weight"] * np.float32(40.0)
    model = torch_side.build(SPEC)
    torch_side.load_weights(model, weights)
    logits = torch_side.forward(model, make_split(SPEC, str(data)).probe_images())
    return {**weights, "head.bias": (weights["head.bias"] - np.median(logits)).astype(np.float32)}


def make_unet_run(folder: Path, data: Path, weights: dict, data_entry: dict) -> Path:
    """A U-Net training run's folder as compare.py leaves it: results.json (its spec and data), each side's
    canonical weights."""
    for side, tensors in weights.items():
        save_weights(tensors, folder / side / "model.safetensors")
    results = {"task": "unet", "config": {**SPEC.to_dict(), "frameworks": list(weights), "threads": 1},
               "data": data_entry, "frameworks": {side: {} for side in weights}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def nudged(weights: dict, scale: float = 1e-3) -> dict:
    """The same weights a little apart, as two sides' trainings end."""
    rng = np.random.default_rng(7)
    return {k: (v + scale * np.abs(v).mean() * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in
            weights.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The export and the framework's prediction side by side, the moved data's refusal beside them; then the
    prediction served by the ONNX files."""
    base = tmp_path_factory.mktemp("export_run")
    cache = base / "cache"
    data = generate_synthetic_carvana(base / "carvana", n_cars=5, n_test_cars=1, size=(WIDTH, HEIGHT))
    split = make_split(SPEC, str(data))
    entry = {"source": "carvana", "location": str(data), "train": len(split.train), "valid": len(split.valid),
             "test": len(split.test)}
    tf_weights = structured_weights(0, data)
    run = make_unet_run(base / "run", data, {"tf": tf_weights, "torch": nudged(tf_weights)}, entry)
    moving = shutil.copytree(data, base / "moving")
    moved_run = make_unet_run(base / "moved-run", moving, {"tf": tf_weights, "torch": tf_weights},
                              {**entry, "location": str(moving)})
    moving.rename(base / "moved")
    common = ("--threads", "1")
    with ThreadPoolExecutor(max_workers=3) as pool:
        export = pool.submit(run_cli, "--export", str(run), *common, cache=cache)
        framework = pool.submit(run_cli, "--predict", str(run), *common, "--out", str(base / "framework"),
                                cache=cache)
        moved = run_cli("--export", str(moved_run), *common, cache=cache)
        export, framework = export.result(), framework.result()
    onnx = run_cli("--predict", str(run), "--runtime", "onnx", *common, "--out", str(base / "onnx"), cache=cache)
    return {"base": base, "data": data, "run": run, "moved_run": moved_run, "export": export,
            "framework": framework, "onnx": onnx, "moved": moved, "split": split}


def masks_of(out: Path, side: str) -> dict[str, np.ndarray]:
    with gzip.open(out / side / "submit.csv.gz", "rt", newline="") as handle:
        return {name: rle_decode(rle, (HEIGHT, WIDTH)) for name, rle in list(csv.reader(handle))[1:]}


def test_each_file_is_verified_on_the_runs_validation_batch(runs):
    printed = succeeded(runs["export"])
    record = json.loads((runs["run"] / "exported" / "export.json").read_text())
    batch = record["validation_batch"]
    valid = runs["split"].valid
    assert batch["images"] == VERIFY_BATCH and batch["names"] == [sample.name for sample in valid[:VERIFY_BATCH]]
    assert batch["location"] == str(runs["data"]) and batch["found"] == "where the run read it"
    assert record["verified_on"].startswith(f"the run's validation batch: {VERIFY_BATCH} 32x32 images")
    assert f"verified on {record['verified_on']}" in printed
    assert record["layouts"] == {"tf": "NHWC", "torch": "NCHW"} and record["input_shape"] == [32, 32, 3]
    tolerance = TOLERANCES["unet"]["forward"]
    for side, formats in record["sides"].items():
        for fmt, entry in formats.items():
            assert entry["kept"] and entry["max_abs_diff"] <= tolerance, (side, fmt, entry)
    kept = sorted(p.name for p in (runs["run"] / "exported").iterdir() if not p.name.startswith("."))
    assert kept == sorted([*FILES, "export.json"])  # nothing pending or half-written left


def test_the_onnx_files_predict_the_masks_the_framework_models_predict(runs):
    """Each side's submission from its ONNX file against its framework model's: pixel for pixel the same on at
    least MASK_AGREEMENT of the pixels (measured: identical), and the same agreement table of the two sides."""
    succeeded(runs["framework"])
    printed = succeeded(runs["onnx"])
    framework, onnx = runs["base"] / "framework", runs["base"] / "onnx"
    for side in ("tf", "torch"):
        theirs, mine = masks_of(framework, side), masks_of(onnx, side)
        assert list(mine) == list(theirs) and len(mine) == len(runs["split"].test)
        share = np.mean([np.mean(mine[name] == theirs[name]) for name in mine])
        assert share >= MASK_AGREEMENT, f"{side}: {share:.6f} of the pixels agree"
        foreground = np.mean([mask.mean() for mask in theirs.values()])
        assert 0.05 < foreground < 0.95, "masks of both kinds of pixel: the comparison is not vacuous"
    results = json.loads((onnx / "results.json").read_text())
    before = json.loads((framework / "results.json").read_text())
    assert results["frameworks"]["torch"]["served_by"]["file"].endswith("torch-onnx.onnx")
    for key in ("pixels", "rows"):
        assert results["agreement"][key] == before["agreement"][key]
    assert abs(results["agreement"]["agreement"] - before["agreement"]["agreement"]) <= 1 - MASK_AGREEMENT
    assert "PyTorch: 16 predicted by onnx running torch-onnx.onnx" in printed
    assert "served by" in printed and "agreement each side with its own trained weights" in printed


def test_a_run_whose_data_folder_moved_is_one_line_and_writes_nothing(runs):
    completed = runs["moved"]
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2 and len(lines) == 1, completed.stderr[-3000:]
    assert lines[0].startswith(f"compare.py: error: {runs['base'] / 'moving'}: ") and "--data-dir" in lines[0]
    assert not (runs["moved_run"] / "exported").exists()


def test_the_moved_data_is_taken_at_its_new_place_and_another_folder_is_refused(runs, tmp_path):
    run = read_run(runs["moved_run"], "unet")
    batch = validation_batch(run, run.spec, "masks", runs["base"] / "moved")
    assert np.array_equal(batch.images, runs["split"].probe_images()[:VERIFY_BATCH])  # the run's first batch
    assert batch.record["found"] == "--data-dir" and "from " + str(runs["base"] / "moved") in batch.text
    smaller = generate_synthetic_carvana(tmp_path / "smaller", n_cars=3, n_test_cars=0, size=(WIDTH, HEIGHT))
    with pytest.raises(DataError, match="not the data this run trained on: 32 train images where the run had 64"):
        validation_batch(run, run.spec, "masks", smaller)


def test_the_digits_are_verified_on_their_test_set_the_run_validated_on():
    spec = make_spec("mlp", layer_sizes=(784, 32, 32, 10))
    run = TrainedRun(Path("."), spec, ["tf", "torch"], {"source": "sklearn-digits", "location": "sklearn.datasets"})
    batch = validation_batch(run, spec, "classes", None)
    test_images = mnist.load_mnist(None, seed=spec.seed).test_images
    assert np.array_equal(batch.images, mnist.normalize(test_images[:VERIFY_BATCH], spec.mean, spec.std))
    assert f"{len(test_images)} test digits" in batch.text and "sklearn-digits" in batch.text


def test_an_image_size_or_weights_the_files_do_not_hold_are_one_line(tmp_path):
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "export.json").write_text(json.dumps({
        "image_size": [32, 32], "sides": {"torch": {"onnx": {"path": "torch-onnx.onnx", "kept": True}}},
        "layouts": {"torch": "NCHW"}, "weights": {"torch": {"file": "run/torch/model.safetensors", "sha256": "a1"}}}))
    with pytest.raises(UserError, match="take 32x32 images, not 64x64: leave out --image-size"):
        exported_files(tmp_path, "onnx", ["torch"], "masks", 64)
    other = {"torch": {"file": "run/tf/model.safetensors", "sha256": "b2"}}  # --weights-from tf
    with pytest.raises(UserError, match="holds the weights of run/torch/model.safetensors, not of run/tf/model"):
        exported_files(tmp_path, "onnx", ["torch"], "masks", 32, other)
    found = exported_files(tmp_path, "onnx", ["torch"], "masks", 32, {"torch": {"file": "x", "sha256": "a1"}})
    assert found["torch"]["prediction"] == "masks" and found["torch"]["input_layout"] == "NCHW"


@pytest.mark.slow
def test_a_trained_unet_exported_then_served_by_each_file_predicts_the_frameworks_masks(tmp_path):
    """A U-Net trained by compare.py (a few steps), exported, then predicted by every runtime: each side's masks
    from each of its files against its framework model's, on at least MASK_AGREEMENT of the pixels."""
    cache = tmp_path / "cache"
    data = generate_synthetic_carvana(tmp_path / "carvana", n_cars=5, n_test_cars=1, size=(WIDTH, HEIGHT))
    run = tmp_path / "run"
    succeeded(run_cli("--task", "unet", "--epochs", "1", "--base-filters", "4", "--image-size", "32", "--threads", "1",
                      "--control", "none", "--data-dir", str(data), "--out", str(run), cache=cache))
    printed = succeeded(run_cli("--export", str(run), "--threads", "1", cache=cache))
    assert "verified on the run's validation batch: 8 32x32 images (the first of its 16 validation photos)" in printed
    record = json.loads((run / "exported" / "export.json").read_text())
    assert all(entry["kept"] for formats in record["sides"].values() for entry in formats.values()), record["sides"]
    succeeded(run_cli("--predict", str(run), "--threads", "1", "--out", str(tmp_path / "framework"), cache=cache))
    for runtime, sides in (("onnx", "tf,torch"), ("savedmodel", "tf"), ("pt2", "torch")):
        out = tmp_path / runtime
        succeeded(run_cli("--predict", str(run), "--runtime", runtime, "--frameworks", sides, "--threads", "1",
                          "--out", str(out), cache=cache))
        for side in sides.split(","):
            theirs, mine = masks_of(tmp_path / "framework", side), masks_of(out, side)
            assert list(mine) == list(theirs)
            share = np.mean([np.mean(mine[name] == theirs[name]) for name in mine])
            assert share >= MASK_AGREEMENT, f"{runtime} on {side}: {share:.6f} of the pixels agree"


@pytest.mark.slow
def test_a_trained_cnn_is_verified_on_its_test_digits_and_its_onnx_files_give_its_classes(tmp_path):
    cache = tmp_path / "cache"
    run = tmp_path / "run"
    succeeded(run_cli("--task", "cnn", "--epochs", "1", "--sample-size", "400", "--threads", "1", "--control", "none",
                      "--out", str(run), cache=cache))
    printed = succeeded(run_cli("--export", str(run), "--threads", "1", cache=cache))
    assert "verified on the run's validation batch: 8 digits (the first of its" in printed
    record = json.loads((run / "exported" / "export.json").read_text())
    for formats in record["sides"].values():
        for entry in formats.values():
            assert entry["kept"] and entry["max_abs_diff"] <= TOLERANCES["cnn"]["forward"], entry
    succeeded(run_cli("--predict", str(run), "--threads", "1", "--out", str(tmp_path / "framework"), cache=cache))
    succeeded(run_cli("--predict", str(run), "--runtime", "onnx", "--threads", "1", "--out", str(tmp_path / "onnx"),
                      cache=cache))
    for side in ("tf", "torch"):
        mine, theirs = ((tmp_path / out / side / "predictions.csv").read_text().splitlines()
                        for out in ("onnx", "framework"))
        assert [line.split(",")[1] for line in mine] == [line.split(",")[1] for line in theirs]  # the same classes
    assert json.loads((tmp_path / "onnx" / "results.json").read_text())["agreement"]["passed"]
