"""Runs that must not lose work: a non-empty --out is refused, and a diverging loss stops with exit 3."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import COMPARE, USER_DIR
from shared.errors import TrainingDiverged
from shared.history import TrainingLog


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, COMPARE, *args], cwd=USER_DIR, capture_output=True,
                          text=True, timeout=timeout)


def test_non_empty_out_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    refused = run_cli("--task", "neuron", "--epochs", "5", "--frameworks", "torch", "--out", str(out))
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and str(out) in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "earlier results"

    allowed = run_cli("--task", "neuron", "--epochs", "5", "--frameworks", "torch", "--out", str(out), "--overwrite")
    assert allowed.returncode == 0, allowed.stderr
    assert (out / "results.json").is_file() and (out / "keep.txt").read_text() == "earlier results"

    # Overwriting a finished run runs again: the earlier side result is not taken for this run's.
    again = run_cli("--task", "neuron", "--epochs", "7", "--frameworks", "torch", "--out", str(out), "--overwrite")
    assert again.returncode == 0, again.stderr
    assert "finished before" not in again.stdout
    trajectory = json.loads((out / "results.json").read_text())["frameworks"]["torch"]["trajectory"]
    assert trajectory[-1]["step"] == 7


def test_training_log_stops_on_a_non_finite_loss():
    log = TrainingLog("PyTorch", epochs=1, batches=3, verbose=False)
    log.begin_epoch(1)
    log.end_batch(1, 0, 4, loss=0.7)
    with pytest.raises(TrainingDiverged) as caught:
        log.end_batch(1, 1, 4, loss=math.nan)
    message = str(caught.value)
    assert caught.value.exit_status == 3 and "\n" not in message
    assert "step 2" in message and "0.7" in message  # where it happened and the last finite loss
    assert log.batch_losses == [0.7]  # the non-finite loss is not recorded as history


def test_cli_exits_3_when_the_loss_diverges(tmp_path):
    completed = run_cli("--task", "mlp", "--lr", "1e9", "--epochs", "1", "--sample-size", "600",
                        "--frameworks", "torch", "--out", str(tmp_path / "out"))
    assert completed.returncode == 3, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "loss became" in lines[0]


def test_a_bad_photo_read_by_a_dataloader_worker_stays_a_one_line_data_error(tmp_path):
    """PyTorch re-creates a worker's error from its traceback text; it must still read as the error itself."""
    import pickle

    from shared.data import carvana
    from shared.data.synthetic_cars import generate_synthetic_carvana
    from shared.errors import DataError
    from torch_impl.data import make_image_loader

    root = generate_synthetic_carvana(tmp_path / "carvana", n_cars=2, n_test_cars=1, size=(96, 64))
    train, _ = carvana.get_train_files(carvana.resolve_carvana(root), validation_size=0.5)
    bad = train[-1].image
    bad.write_bytes(bad.read_bytes()[:600])
    loader = make_image_loader(carvana.TrainImageDataset(train, 16), batch_size=4, seed=0, shuffle=False, workers=2)
    with pytest.raises(DataError) as caught:
        for _ in loader:
            pass
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(bad)), message
    assert caught.value.path == str(bad) and "cannot read" in caught.value.problem
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is DataError and str(copy) == message


def _unet_losses(side: str, root) -> list[float]:
    """One epoch of the U-Net through the real pipeline (augmentation on), from the canonical weights."""
    from conftest import side_module
    from shared.data import carvana
    from shared.init import init_weights
    from shared.tasks import make_spec
    from shared.weights import unet_layout

    spec = make_spec("unet", base_filters=2, image_size=32, batch_size=4, epochs=1)
    train, _ = carvana.get_train_files(carvana.resolve_carvana(root), validation_size=0.5)
    loader = side_module(side, "data").make_image_loader(carvana.TrainImageDataset(train, 32, augment=True), 4, 0, True)
    model = side_module(side, "unet").build(spec)
    side_module(side, "weights").load_weights(model, init_weights(unet_layout(spec), 0))
    classifier = side_module(side, "classifier").CarvanaClassifier(model, 1, spec, verbose=False)
    classifier.train(loader, None)
    return classifier.batch_losses


def _mlp_losses(side: str) -> list[float]:
    from conftest import side_module, train_digits
    from harness.registry import REGISTRY
    from shared.tasks import make_spec

    spec = make_spec("mlp", layer_sizes=(784, 16, 16, 10), batch_size=20, epochs=2)
    rng = np.random.default_rng(3)
    images, labels = rng.normal(size=(100, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, 100)
    model = side_module(side, "mlp").build(spec)
    side_module(side, "weights").load_weights(model, REGISTRY["mlp"].initial_weights(spec))
    return train_digits(side, model, spec, images, labels, images[:20], labels[:20])["batch_losses"]


def test_reruns_give_the_same_losses(side, tmp_path):
    """The same seed and settings give the same losses again (CPU), batch for batch, on each side."""
    from shared.data.synthetic_cars import generate_synthetic_carvana

    root = generate_synthetic_carvana(tmp_path / "carvana", n_cars=2, n_test_cars=1, size=(96, 64))
    first, second = _mlp_losses(side), _mlp_losses(side)
    assert len(first) == 10 and first == second
    first, second = _unet_losses(side, root), _unet_losses(side, root)
    assert len(first) == 4 and first == second, np.max(np.abs(np.subtract(first, second)))


def test_an_arm_gets_its_parity_drift_verdict_and_a_finished_resume(tmp_path):
    """TensorFlow and Keras on JAX with their 1-ulp controls (about 30 s): the arm's probe within the tolerance, its
    drift from TensorFlow judged against the controls, named in the console; --resume then finds nothing to do."""
    import json

    out = tmp_path / "arms"
    completed = run_cli("--task", "mlp", "--frameworks", "tf,keras-jax", "--epochs", "1", "--sample-size", "300",
                        "--control", "ulp", "--out", str(out))
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    parity = results["parity"]
    assert parity["reference"] == "tf" and parity["passed"] is True and list(parity["sides"]) == ["keras-jax"]
    assert 0 <= parity["sides"]["keras-jax"]["max_abs_diff"] <= parity["tolerance"] == 1e-5
    drift = results["drift"]
    assert list(drift["pairs"]) == ["tf-keras-jax", "tf-control", "keras-jax-control"]
    assert drift["pairs"]["tf-keras-jax"]["weights"][0] == 0.0  # the same canonical initial weights
    verdict = drift["verdicts"]["tf-keras-jax"]
    assert verdict == drift["verdict"] and isinstance(verdict["within_noise"], bool) and not verdict["borrowed"]
    assert verdict["steps_compared"] == 2 and verdict["sentence"].startswith("TensorFlow and Keras on JAX drift apart")
    assert f"parity: max |tf - keras-jax| = {parity['max_abs_diff']:.3e}" in completed.stdout
    assert "equal up to rounding? " + verdict["sentence"] in completed.stdout
    finished = run_cli("--resume", str(out))
    assert finished.returncode == 2 and "nothing to resume (the run had finished)" in finished.stderr


def test_resume_refuses_a_folder_without_a_run(tmp_path):
    completed = run_cli("--resume", str(tmp_path))
    assert completed.returncode == 2 and len(completed.stderr.strip().splitlines()) == 1
    assert "nothing to resume" in completed.stderr


def test_ctrl_c_keeps_the_checkpoint_writes_a_partial_report_and_exits_130(tmp_path):
    import json
    import os
    import signal
    import time

    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, COMPARE, "--task", "cnn", "--epochs", "3",
                                "--sample-size", "1000", "--threads", "1", "--frameworks", "torch", "--out", str(out)],
                               cwd=USER_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True,
                               # a terminal's foreground job: a suite started in the background ignores SIGINT,
                               # and its children would inherit that
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    latest = out / "torch" / "checkpoint" / "latest.json"
    deadline = time.monotonic() + 240
    while not latest.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and f"--resume {out}" in stderr
    partial = json.loads((out / "results.json").read_text())
    assert partial["status"] == "interrupted" and partial["frameworks"]["torch"]["status"].startswith("interrupted")
    assert len(partial["frameworks"]["torch"]["history"]) >= 1 and (out / "job.json").is_file()
    resumed = run_cli("--resume", str(out), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len(json.loads((out / "results.json").read_text())["frameworks"]["torch"]["history"]) == 3


def _resident_mb() -> float:
    """This process's resident memory now (Linux /proc), in MB."""
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow  # about a minute: 2,000 photos decoded and predicted
def test_predicting_2000_full_size_photos_keeps_memory_bounded(tmp_path):
    """The submission is streamed: resident memory after 2,000 photos of 1918x1280 stays within 300 MB of
    what it was after the first 100."""
    import gzip
    import os

    from shared.callbacks import PredictionsSaverCallback
    from shared.data import carvana
    from shared.data.synthetic_cars import generate_synthetic_carvana
    from shared.rle import rle_decode

    root = generate_synthetic_carvana(tmp_path / "carvana", n_cars=1, n_test_cars=1, seed=2)  # full size
    originals = carvana.get_test_files(carvana.resolve_carvana(root))
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    for i in range(2000):  # hard links: 2,000 photos to read, without 2,000 to generate
        os.link(originals[i % len(originals)], test_dir / f"{i:012x}_{i % 16 + 1:02d}.jpg")
    photos = sorted(test_dir.iterdir())

    seen, memory = [0], {}

    def predict(images: np.ndarray) -> np.ndarray:  # a stand-in model: bright pixels are car
        seen[0] += len(images)
        if seen[0] > 100 and "after_100" not in memory:
            memory["after_100"] = _resident_mb()
        memory["peak"] = max(memory.get("peak", 0.0), _resident_mb())
        return images.mean(axis=-1)

    saver = PredictionsSaverCallback(tmp_path / "submit.csv.gz", carvana.TestImageDataset(photos, 64), predict,
                                     batch_size=8)
    saver.on_train_end()
    memory["end"] = _resident_mb()
    growth = max(memory["peak"], memory["end"]) - memory["after_100"]
    assert growth < 300, f"resident memory grew by {growth:.0f} MB after the first 100 photos"
    with gzip.open(tmp_path / "submit.csv.gz", "rt") as rows:
        lines = rows.read().splitlines()
    assert lines[0] == "img,rle_mask" and len(lines) == 2001 and saver.rows == 2000
    name, rle = lines[-1].split(",")
    assert name == photos[-1].name and rle_decode(rle, (1280, 1918)).shape == (1280, 1918)


def _small_carvana(tmp_path):
    from shared.data.synthetic_cars import generate_synthetic_carvana

    return generate_synthetic_carvana(tmp_path / "carvana", n_cars=2, n_test_cars=1, size=(96, 64))


def _prepare(root):
    from harness.tasks.unet import prepare_carvana
    from shared.tasks import make_spec

    return prepare_carvana(make_spec("unet", image_size=32, validation_size=0.5), root, download=False)


def test_an_invalid_rle_row_is_named_before_training(tmp_path):
    from shared.errors import DataError

    root = _small_carvana(tmp_path)
    csv = root / "train_masks.csv"
    rows = csv.read_text().splitlines()
    rows[3] = rows[3].split(",")[0] + ",5 x 7"
    csv.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as caught:
        _prepare(root)
    assert str(csv) in str(caught.value) and "row 4" in str(caught.value) and "\n" not in str(caught.value)


def test_an_unreadable_photo_is_named(tmp_path, monkeypatch):
    """Root reads any file whatever its mode, so the permission error a user would meet is raised by hand."""
    from shared.data import carvana
    from shared.errors import DataError

    root = _small_carvana(tmp_path)
    photo = sorted((root / "train").glob("*.jpg"))[5]
    real_open = carvana.decode.Image.open

    def guarded_open(path, *args, **kwargs):
        if str(path) == str(photo):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(carvana.decode.Image, "open", guarded_open)
    with pytest.raises(DataError) as caught:
        _prepare(root)
    assert str(photo) in str(caught.value) and "Permission denied" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_checkpoint_continues_only_its_own_data_order():
    from shared.errors import UserError

    log = TrainingLog("PyTorch", epochs=2, batches=1, verbose=False, seed=0)
    log.begin_epoch(1)
    log.end_batch(1, 0, 4, loss=0.5)
    log.end_epoch(1)
    state = log.state()
    same = TrainingLog("PyTorch", epochs=2, batches=1, verbose=False, seed=0)
    same.restore(state)
    assert same.epochs_done == 1 and same.batch_losses == [0.5]
    with pytest.raises(UserError, match="--seed 0, not 7"):
        TrainingLog("PyTorch", epochs=2, batches=1, verbose=False, seed=7).restore(state)


@pytest.mark.parametrize("task, field, value", [("mlp", "batch_size", 0), ("cnn", "epochs", -1),
                                                ("unet", "batch_size", -4), ("unet", "epochs", 0)])
def test_zero_or_negative_counts_are_refused_in_one_line(task, field, value):
    from shared.errors import UserError
    from shared.tasks import make_spec

    with pytest.raises(UserError) as caught:
        make_spec(task, **{field: value})
    flag = "--" + field.replace("_", "-")
    assert str(caught.value) == f"{flag} must be positive, got {value}"
