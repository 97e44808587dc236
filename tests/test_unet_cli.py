"""`compare.py --task unet` as a user runs it, on a tiny generated Carvana folder given with --data-dir: one full
run and one without validation (both sides in their own processes), and bad input that must stop in the parent
with exit status 2 and one line naming the file, before either framework starts."""
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
from PIL import Image
from test_unet import read_tensorboard

from conftest import COMPARE, USER_DIR
from shared.data import carvana
from shared.data.synthetic_cars import generate_synthetic_carvana
from shared.rle import rle_decode

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = 192, 128  # the generated photos
TINY = ("--task", "unet", "--epochs", "1", "--base-filters", "2", "--image-size", "32", "--threads", "1")


def run_cli(*args: str, cache: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TWINNETS_CACHE": str(cache)}
    return subprocess.run([sys.executable, COMPARE, *args], cwd=USER_DIR, env=env, capture_output=True, text=True,
                          timeout=timeout)


def first_training_pair(root: Path) -> carvana.Sample:
    """The pair compare.py checks before any side starts (the default seed and validation share)."""
    train, _ = carvana.get_train_files(carvana.resolve_carvana(root), None, 0.2, seed=0)
    return train[0]


def missing_mask(root: Path) -> str:
    photo = sorted((root / "train").glob("*.jpg"))[-1]  # not the first pair: the folder check sees every photo
    (root / "train_masks" / f"{photo.stem}_mask.gif").unlink()
    return photo.name


def small_mask(root: Path) -> str:
    mask = first_training_pair(root).mask
    Image.fromarray(np.zeros((HEIGHT // 2, WIDTH // 2), np.uint8), "L").convert("P").save(mask)
    return mask.name


def truncated_photo(root: Path) -> str:
    photo = first_training_pair(root).image
    photo.write_bytes(photo.read_bytes()[:1500])
    return photo.name


def emptied(root: Path) -> str:
    shutil.rmtree(root)
    root.mkdir()
    return root.name


BAD_DATA = {"photo without a mask": missing_mask, "mask of another size": small_mask,
            "truncated photo": truncated_photo, "empty folder": emptied}
BAD_FLAGS = {"image size not a multiple of 16": (("--image-size", "30"), "--image-size 30"),
             "invalid original tile": (("--variant", "original", "--image-size", "100"), "--image-size 100")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every CLI run of this file, started at once: the two full runs side by side (one thread each), the
    bad-input runs (the parent only, about a second each) alongside."""
    base = tmp_path_factory.mktemp("unet_cli")
    data = generate_synthetic_carvana(base / "carvana", n_cars=4, n_test_cars=1, size=(WIDTH, HEIGHT))
    cache = base / "cache"
    jobs = {
        "full": (*TINY, "--out", str(base / "full"), "--data-dir", str(data)),
        "no-validation": (*TINY, "--validation-size", "0", "--control", "none", "--out", str(base / "noval"),
                          "--data-dir", str(data)),
        "data-parallel": (*TINY, "--nproc", "2", "--out", str(base / "dp"), "--data-dir", str(data)),
    }
    named = {}
    for case, damage in BAD_DATA.items():
        folder = shutil.copytree(data, base / f"bad-{len(named)}")
        named[case] = damage(folder)
        jobs[case] = (*TINY, "--out", str(base / f"out-{len(named)}"), "--data-dir", str(folder))
    for case, (flags, words) in BAD_FLAGS.items():
        jobs[case] = (*TINY, *flags, "--out", str(base / f"out-{case[:5]}"), "--data-dir", str(data))
        named[case] = words
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {case: pool.submit(run_cli, *args, cache=cache, timeout=480 if case in OUT else 60)
                   for case, args in jobs.items()}
        completed = {case: future.result() for case, future in futures.items()}
    return {"data": data, "base": base, "completed": completed, "named": named}


OUT = {"full": "full", "no-validation": "noval", "data-parallel": "dp"}


def results_of(runs, case: str) -> dict:
    completed = runs["completed"][case]
    assert completed.returncode == 0, (
        f"exit {completed.returncode}\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}")
    return json.loads((runs["base"] / OUT[case] / "results.json").read_text())


def test_full_run_results(runs):
    results = results_of(runs, "full")
    assert results["task"] == "unet"
    assert results["data"]["source"] == "carvana", "a --data-dir dataset is real Carvana data to the report"
    assert results["data"]["train"] + results["data"]["valid"] == 64 and results["data"]["test"] == 16
    assert results["parity"]["passed"] is True, results["parity"]
    assert 0 <= results["parity"]["max_abs_diff"] <= results["parity"]["tolerance"] == 1e-4
    assert results["agreement"]["same_weights"] >= 0.999, results["agreement"]
    for side in ("tf", "torch"):
        metrics = results["frameworks"][side]["metrics"]
        assert 0.0 <= metrics["val_dice"] <= 1.0, (side, metrics)
        # Dice at the photos' own size (probabilities upsampled as the submission does), beside the training size's.
        assert 0.0 <= metrics["val_dice_original"] <= 1.0 and list(metrics)[:2] == ["val_dice", "val_dice_original"]
        assert np.isfinite(metrics["val_loss"]) and metrics["parameters"] > 0
        assert len(results["frameworks"][side]["history"]) == 1
    # Same weights, same batches, one epoch: the two sides' losses agree closely.
    tf_loss, torch_loss = (results["frameworks"][s]["metrics"]["train_loss"] for s in ("tf", "torch"))
    assert abs(tf_loss - torch_loss) <= 1e-3 * abs(torch_loss), (tf_loss, torch_loss)
    # Each side's control trained the same epoch from weights 1 ulp away, and wrote nothing but its numbers.
    steps = len(results["frameworks"]["tf"]["batch_losses"])
    for side in ("tf", "torch"):
        control = results["controls"][side]
        assert 0.0 <= control["metrics"]["val_dice"] <= 1.0 and len(control["batch_losses"]) == steps
        assert not (runs["base"] / "full" / f"{side}-control" / "submit.csv.gz").exists()
        assert not (runs["base"] / "full" / f"{side}-control" / "tensorboard").exists()
    assert set(results["drift"]["pairs"]) == {"tf-torch", "tf-control", "torch-control"}
    assert results["drift"]["pairs"]["tf-torch"]["weight_steps"] == list(range(steps + 1))
    # Each side's worker ran its control right after it, and predicted its agreement masks before it ended.
    stdout = runs["completed"]["full"].stdout
    titles = [line for line in stdout.splitlines() if line.startswith("== ")]
    assert titles == ["== TensorFlow ==", "== TensorFlow control (initial weights moved by 1 ulp) ==",
                      "== PyTorch ==", "== PyTorch control (initial weights moved by 1 ulp) =="], titles


def test_full_run_writes_submissions_tensorboard_and_report(runs):
    results = results_of(runs, "full")
    out = runs["base"] / "full"
    test_photos = sorted(p.name for p in (runs["data"] / "test").glob("*.jpg"))
    assert len(test_photos) == 16
    for side in ("tf", "torch"):
        artifacts = results["frameworks"][side]["artifacts"]
        with gzip.open(out / artifacts["submission"], "rt", newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["img", "rle_mask"]
        assert [name for name, _ in rows[1:]] == test_photos, f"{side}: one row per test photo"
        for name, rle in rows[1:]:
            mask = rle_decode(rle, (HEIGHT, WIDTH))  # raises on runs past a 128 x 192 mask
            assert mask.shape == (HEIGHT, WIDTH) and set(np.unique(mask).tolist()) <= {0, 1}
        events = list((out / artifacts["tensorboard"]).rglob("events.out.tfevents*"))
        assert events, f"{side}: no TensorBoard event file in {artifacts['tensorboard']}"
        assert Path(artifacts["tensorboard"]).is_relative_to(side)  # inside the side's folder, relative to the run
    assert (out / "report.md").read_text().strip()
    for name in ("curves.png", "masks.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


def test_both_sides_log_the_same_tensorboard_tags(runs):
    """Read back: the same scalar tags on both sides, each side in its own run folder (so TensorBoard overlays
    them), with the values of the epoch's history, and a model graph on each side."""
    results = results_of(runs, "full")
    out = runs["base"] / OUT["full"]
    found = {side: read_tensorboard(out / results["frameworks"][side]["artifacts"]["tensorboard"])
             for side in ("tf", "torch")}
    assert set(found["tf"][0]) == set(found["torch"][0]) == {"loss/train", "loss/valid", "dice/train", "dice/valid",
                                                              "learning_rate"}
    for side, (scalars, has_graph) in found.items():
        epoch = results["frameworks"][side]["history"][0]
        lrs = results["frameworks"][side]["batch_lrs"]  # per step, numbered from 1
        assert scalars["learning_rate"] == [(step, pytest.approx(lr, rel=1e-6)) for step, lr in enumerate(lrs, 1)]
        assert scalars["dice/valid"] == [(1, pytest.approx(epoch["val_dice"], rel=1e-6))], side
        assert scalars["loss/train"] == [(1, pytest.approx(epoch["loss"], rel=1e-6))], side
        assert has_graph, f"{side}: no model graph"


def test_run_without_validation(runs):
    results = results_of(runs, "no-validation")
    assert results["data"]["valid"] == 0 and results["data"]["train"] == 64
    assert results["parity"]["passed"] is True
    for side in ("tf", "torch"):
        framework = results["frameworks"][side]
        assert "val_dice" not in framework["metrics"] and "val_loss" not in framework["metrics"], framework["metrics"]
        assert all("val_dice" not in epoch for epoch in framework["history"])
        assert 0.0 <= framework["metrics"]["train_dice"] <= 1.0


@pytest.mark.parametrize("case", [*BAD_DATA, *BAD_FLAGS])
def test_bad_input_exits_2_with_one_line_naming_it(runs, case):
    completed = runs["completed"][case]
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2, f"exit {completed.returncode}\n{completed.stderr[-3000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{completed.stderr[-3000:]}"
    assert runs["named"][case] in lines[0], lines[0]
    assert lines[0].startswith("compare.py: error: ")
    # Stopped in the parent: no side started.
    assert "== TensorFlow ==" not in completed.stdout and "== PyTorch ==" not in completed.stdout


def test_data_parallel_run_with_two_processes_per_side(runs):
    """--nproc 2: DDP under torchrun and two MultiWorkerMirroredStrategy workers train on halves of the same
    global batches; with BatchNorm synchronised, the first batch's loss is the one-process run's, and the
    epoch stays close to it. Rank 0 alone wrote the side's files."""
    results, single = results_of(runs, "data-parallel"), results_of(runs, "full")
    out = runs["base"] / "dp"
    assert results["config"]["nproc"] == 2 and results["parity"]["passed"]
    for side in ("tf", "torch"):
        found = results["frameworks"][side]
        assert found["processes"] == 2 and found["execution"]["mode"] == "data-parallel"
        losses, reference = found["batch_losses"], single["frameworks"][side]["batch_losses"]
        assert len(losses) == len(reference) == 6
        assert abs(losses[0] - reference[0]) <= 1e-5 * abs(reference[0]), (side, losses[0], reference[0])
        np.testing.assert_allclose(losses, reference, rtol=1e-2, err_msg=side)
        assert 0.0 <= found["metrics"]["val_dice"] <= 1.0
        with gzip.open(out / found["artifacts"]["submission"], "rt", newline="") as handle:
            assert len(list(csv.reader(handle))) == 1 + 16
        checkpoints = sorted(p.name for p in (out / side / "checkpoint").iterdir())
        assert checkpoints == ["epoch-1", "latest.json"], (side, checkpoints)
