"""A comparison without TensorFlow: the first side named is the reference of the U-Net's mask agreement (as of the
parity and the drift), and the frameworks' Python warnings go to the side's warnings.log, not the console."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import COMPARE, USER_DIR
from harness import comparison, side_training
from harness.jobs import RunJob
from shared.atomic import write_json
from shared.tasks import make_spec


def test_without_tensorflow_the_first_side_named_gives_the_agreement_weights(tmp_path, monkeypatch, capsys):
    job = RunJob("unet", make_spec("unet").to_dict(), 1, str(tmp_path), None, ["keras-jax", "keras-torch"],
                 agreement=True)
    for side in job.sides:
        (tmp_path / side).mkdir()
        np.savez(tmp_path / side / "preview.npz", predicted=np.zeros((1, 4, 4), np.float32))
    write_json(tmp_path / "keras-jax" / "result.json", {"artifacts": {"checkpoint": "keras-jax/model.safetensors"}})
    used = []
    surface = SimpleNamespace(runtime=SimpleNamespace(configure=lambda threads, seed: None))
    task = SimpleNamespace(surface=lambda side, spec: surface,
                           agreement=lambda surface, spec, data, weights: used.append(weights) or np.ones((2, 4, 4)))
    monkeypatch.setattr(side_training, "task_of", lambda spec: task)
    found = comparison.agreement(tmp_path, job, tmp_path / "job.json", in_process=True)
    assert found["reference"] == "keras-jax" and found["same_weights"] == 1.0
    assert used == [tmp_path / "keras-jax" / "model.safetensors"] * 2
    assert "same (Keras on JAX-trained) weights" in capsys.readouterr().out


def test_a_sides_warnings_go_to_its_log_and_one_line_says_so(tmp_path, capsys):
    before = warnings.showwarning
    with side_training.warnings_logged(tmp_path / "keras-torch"):
        warnings.warn("Dynamo detected a call to a functools.lru_cache-wrapped function", UserWarning)
        warnings.warn("another", UserWarning)
    assert warnings.showwarning is before
    console = capsys.readouterr()
    assert console.err == "" and console.out == "2 warnings from the frameworks: keras-torch/warnings.log\n"
    log = (tmp_path / "keras-torch" / "warnings.log").read_text()
    assert "UserWarning: Dynamo detected a call" in log and "UserWarning: another" in log
    with side_training.warnings_logged(tmp_path / "tf"):
        pass
    assert capsys.readouterr().out == "" and not (tmp_path / "tf").exists()


@pytest.mark.slow
def test_the_unet_on_two_keras_arms_without_tensorflow(tmp_path):
    """The user's command of issue 30, small: both arms train, the mask agreement uses keras-jax's weights, and the
    console holds twinnets' lines only."""
    out = tmp_path / "run"
    env = {**os.environ, "TWINNETS_CACHE": str(tmp_path / "cache")}
    completed = subprocess.run(
        [sys.executable, COMPARE, "--task", "unet", "--frameworks", "keras-jax,keras-torch", "--epochs", "1",
         "--sample-size", "40", "--image-size", "32", "--base-filters", "4", "--batch-size", "4", "--threads", "1",
         "--control", "none", "--out", str(out)], cwd=USER_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["agreement"]["reference"] == "keras-jax" and results["parity"]["reference"] == "keras-jax"
    assert "Warning" not in completed.stdout + completed.stderr
    logged = (out / "keras-torch" / "warnings.log").is_file()
    assert ("keras-torch/warnings.log" in completed.stdout) == logged
    assert "same (Keras on JAX-trained) weights" in (out / "report.md").read_text()
