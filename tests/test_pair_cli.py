"""`python compare.py --pair KERAS_FILE:FACTORY TORCH_FILE:FACTORY`: each side in a worker process of its own (the
Keras one on TensorFlow), run from a user's folder with relative paths; bad input ends in one line, exit status 2,
and leaves no folder behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import COMPARE, USER_DIR

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KERAS = """import keras
from keras import layers


def build():
    x = keras.Input((8, 8, 3))
    y = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    y = layers.Dense(2, name="fc")(layers.Flatten()(layers.MaxPooling2D(2)(y)))
    return keras.Model(x, y)
"""
TORCH = """from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(64, 2)

    def forward(self, x):
        return self.fc(nn.functional.max_pool2d(self.conv(x).relu(), 2).flatten(1))
"""


def user_folder() -> Path:
    """A folder of the user's own, inside the folder the command runs from: its files are named relatively."""
    folder = USER_DIR / f"pair-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "k.py").write_text(KERAS)
    (folder / "t.py").write_text(TORCH)
    return folder


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, COMPARE, *args], cwd=USER_DIR, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_command_checks_a_pair_in_two_worker_processes():
    folder = user_folder()
    name = folder.name
    completed = run_cli("--pair", f"{name}/k.py:build", f"{name}/t.py:Net", "--input-shape", "2,3,8,8", "--steps",
                        "2", "--out", f"{name}/run")
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = folder / "run"
    results = json.loads((out / "results.json").read_text())
    assert results["pair"]["verdict"] == "equal", results["pair"]["sentence"]
    assert results["pair"]["first_difference"] is None
    assert [(p["keras"], p["torch"]) for p in results["pair"]["mapping"]] == [("conv", "conv"), ("fc", "fc")]
    assert results["environment"]["process"] == "its own subprocess"
    assert (out / "pair.png").read_bytes().startswith(PNG_MAGIC)
    assert "Verdict: equal" in (out / "report.md").read_text()
    assert not (out / "pair-job.json").exists()
    for side in ("tf", "torch"):
        assert json.loads((out / side / "result.json").read_text())["side"] == side
    assert "Keras layer" in completed.stdout and "verdict: equal" in completed.stdout


def test_a_factory_that_raises_ends_in_one_line_and_leaves_nothing():
    folder = user_folder()
    (folder / "t.py").write_text(TORCH.replace("super().__init__()", "super().__init__()\n        "
                                                                     "raise RuntimeError('not ported yet')"))
    completed = run_cli("--pair", f"{folder.name}/k.py:build", f"{folder.name}/t.py:Net", "--input-shape", "2,3,8,8",
                        "--out", f"{folder.name}/run")
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert completed.stderr.strip() == ("compare.py: error: t.py:Net: the factory raised RuntimeError: not ported "
                                        "yet")
    assert not (folder / "run").exists()


def test_bad_flags_are_refused_before_any_worker():
    folder = user_folder()
    keras, torch = f"{folder.name}/k.py:build", f"{folder.name}/t.py:Net"
    cases = {
        ("--pair", keras, torch): "--pair needs --input-shape N,C,H,W (PyTorch's layout) or --input FILE.npy",
        ("--pair", keras, f"{folder.name}/missing.py:Net", "--input-shape", "2,3,8,8"):
            f"{folder / 'missing.py'}: no such file (the PyTorch file --pair names)",
        ("--pair", keras, torch, "--input-shape", "2,3,8,8", "--task", "mlp"):
            "--pair checks your own two models: leave out --task",
        ("--pair", keras, torch, "--input-shape", "2,3,8,8", "--loss", "mse"): "--loss mse: needs --target FILE.npy",
        ("--task", "neuron", "--input-shape", "2,3,8,8"): "--input-shape belong to --pair: give it, or leave them out",
    }
    for args, line in cases.items():
        completed = run_cli(*args, "--out", f"{folder.name}/run", timeout=60)
        assert (completed.returncode, completed.stderr.strip()) == (2, f"compare.py: error: {line}"), args
    assert not (folder / "run").exists()
