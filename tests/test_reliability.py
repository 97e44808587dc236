"""Runs that must not lose work: a non-empty --out is refused, and a diverging loss stops with exit 3."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

from conftest import ROOT
from shared.errors import TrainingDiverged
from shared.history import TrainingLog


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "compare.py"), *args], cwd=ROOT, capture_output=True,
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
