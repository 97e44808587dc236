"""The Keras 3 arms do the native sides' work: the same portable Keras model on Keras' TensorFlow, JAX and PyTorch
engines, loaded with the same canonical weights, gives PyTorch's forward outputs, loss and every gradient within the
task's tolerances, and K identical SGD-with-momentum steps of Keras' own train function (train_on_batch) give the
same losses. Each engine runs in a process of its own (KERAS_BACKEND is fixed when Keras is imported), all three at
once; a keras-jax or keras-torch process never loads TensorFlow."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from conftest import ROOT
from harness.registry import REGISTRY, TOLERANCES
from shared.execution import default_execution
from shared.init import init_weights
from shared.tasks import make_spec
from shared.weights import load_weights_file, save_weights

ARMS = {"keras-tf": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}
SPECS = {"mlp": {"layer_sizes": (784, 32, 32, 10), "batch_size": 8},
         "cnn": {"channels": (4, 8), "hidden": 32, "batch_size": 8},
         "unet": {"variant": "padded", "depth": 2, "image_size": 32, "base_filters": 2, "batch_size": 4}}
STEPS = 4

# What a child process does for each task: the surface of its arm, opened by the harness as compare.py's workers do.
CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from harness.registry import REGISTRY
    from shared.execution import default_execution
    from shared.tasks import make_spec
    from shared.weights import load_weights_file, save_weights

    arm, folder, specs, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    found = {}
    for name, fields in specs.items():
        spec = make_spec(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        surface = REGISTRY[name].surface(arm, spec)
        surface.runtime.configure(1, 0)
        surface.runtime.configure_execution(default_execution(arm))
        task, inputs = surface.task, np.load(f"{folder}/{name}-inputs.npz")
        canonical = load_weights_file(f"{folder}/{name}-weights.safetensors")
        model = task.build(spec)
        task.load_weights(model, canonical)
        forward = task.forward(model, inputs["images"])
        loss, grads = task.gradients(model, inputs["images"], inputs["targets"])
        model = task.build(spec)
        task.load_weights(model, canonical)
        step = task.make_train_step(model, task.make_optimizer(model, spec), spec)
        losses = [step(*task.to_tensors(inputs[f"images{k}"], inputs[f"targets{k}"], None)) for k in range(steps)]
        np.save(f"{folder}/{arm}-{name}-forward.npy", forward)
        save_weights(grads, f"{folder}/{arm}-{name}-grads.safetensors")
        save_weights(task.export_weights(model), f"{folder}/{arm}-{name}-trained.safetensors")
        found[name] = {"loss": loss, "losses": losses}
    found["modules"] = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "torch", "jax"})
    print(json.dumps(found))
""")


def inputs_of(name: str, spec, seed: int) -> dict:
    """A probe batch and STEPS training batches; digits with labels, photos with (N, H, W, 1) masks."""
    batch = REGISTRY[name].benchmark_batch
    arrays = dict(zip(("images", "targets"), batch(spec, spec.batch_size, seed)))
    for k in range(STEPS):
        arrays[f"images{k}"], arrays[f"targets{k}"] = batch(spec, spec.batch_size, seed + 1 + k)
    return arrays


@pytest.fixture(scope="module")
def arms_and_torch(tmp_path_factory):
    """Each arm's results (from its own process), and PyTorch's for the same inputs and weights (in this one)."""
    folder = tmp_path_factory.mktemp("arms")
    specs = {name: make_spec(name, **fields) for name, fields in SPECS.items()}
    for name, spec in specs.items():
        np.savez(folder / f"{name}-inputs.npz", **inputs_of(name, spec, seed=3))
        save_weights(init_weights(REGISTRY[name].layout(spec), spec.seed), folder / f"{name}-weights.safetensors")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = {arm: subprocess.Popen([sys.executable, "-c", CHILD, arm, str(folder), json.dumps(SPECS), str(STEPS)],
                                      cwd=ROOT, env={**env, "KERAS_BACKEND": backend}, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
                for arm, backend in ARMS.items()}
    found = {}
    for arm, child in children.items():
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, f"{arm}: {err[-3000:]}"
        found[arm] = json.loads(out.strip().splitlines()[-1])
    torch = {}
    for name, spec in specs.items():
        task, inputs = REGISTRY[name].surface("torch", spec).task, np.load(folder / f"{name}-inputs.npz")
        canonical = load_weights_file(folder / f"{name}-weights.safetensors")
        model = task.build(spec)
        task.load_weights(model, canonical)
        forward = task.forward(model, inputs["images"])
        loss, grads = task.gradients(model, inputs["images"], inputs["targets"])
        model = task.build(spec)
        task.load_weights(model, canonical)
        execution = default_execution("torch")
        step = task.make_train_step(model, task.make_optimizer(model, spec), spec, execution)
        with warnings.catch_warnings():  # float() of the step's loss tensor, which still requires grad
            warnings.simplefilter("ignore", UserWarning)
            losses = [float(step(*task.to_tensors(inputs[f"images{k}"], inputs[f"targets{k}"], execution)))
                      for k in range(STEPS)]
        torch[name] = {"forward": forward, "loss": loss, "grads": grads, "losses": losses,
                       "trained": task.export_weights(model)}
    return folder, found, torch


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("arm", ARMS)
@pytest.mark.parametrize("task", SPECS)
def test_an_arm_computes_what_pytorch_computes(arms_and_torch, arm, task):
    folder, found, torch = arms_and_torch
    tolerances, reference = TOLERANCES[task], torch[task]
    forward = np.load(folder / f"{arm}-{task}-forward.npy")
    assert forward.shape == reference["forward"].shape
    assert max_abs(forward, reference["forward"]) <= tolerances["forward"]
    assert abs(found[arm][task]["loss"] - reference["loss"]) <= tolerances["loss"]
    grads = load_weights_file(folder / f"{arm}-{task}-grads.safetensors")
    assert set(grads) == set(reference["grads"])
    for name, grad in reference["grads"].items():
        scale = float(np.max(np.abs(grad)))
        if name.endswith(".bias") and ".conv" in name or name.startswith("up"):
            # a bias a training-mode BatchNorm subtracts again has a gradient of rounding only: its weight's scale
            scale = max(scale, float(np.max(np.abs(reference["grads"][name.rsplit(".", 1)[0] + ".weight"]))))
        assert scale > 0, f"{task} {name}: a zero gradient proves nothing"
        assert max_abs(grads[name], grad) <= tolerances["grad"] * scale, f"{arm} {task} d loss / d {name}"


@pytest.mark.parametrize("arm", ARMS)
@pytest.mark.parametrize("task", SPECS)
def test_an_arm_trains_in_step_with_pytorch(arms_and_torch, arm, task):
    """STEPS steps of Keras' train_on_batch against PyTorch's eager steps: the same losses, and weights that moved."""
    folder, found, torch = arms_and_torch
    losses, reference = np.array(found[arm][task]["losses"]), np.array(torch[task]["losses"])
    assert losses.shape == (STEPS,)
    assert np.max(np.abs(losses - reference) / np.abs(reference)) <= TOLERANCES[task]["trained_loss"]
    trained = load_weights_file(folder / f"{arm}-{task}-trained.safetensors")
    initial = load_weights_file(folder / f"{task}-weights.safetensors")
    moved = max(max_abs(trained[name], initial[name]) for name in initial)
    assert moved > 1e-4, f"{arm} {task}: the weights did not move"
    apart = max(max_abs(trained[name], torch[task]["trained"][name]) for name in initial)
    assert apart <= 10 * TOLERANCES[task]["trained_loss"], f"{arm} {task}: weights {apart:.2e} from PyTorch's"


def test_no_tensorflow_in_a_jax_or_torch_arm(arms_and_torch):
    """sys.modules of each arm's process after building, differentiating and training all three tasks. (Keras 3.15
    imports JAX on every engine once JAX is installed, so the reverse cannot be asked.)"""
    _, found, _ = arms_and_torch
    assert "tensorflow" not in found["keras-jax"]["modules"] and "torch" not in found["keras-jax"]["modules"]
    assert "tensorflow" not in found["keras-torch"]["modules"] and "torch" in found["keras-torch"]["modules"]
    assert "tensorflow" in found["keras-tf"]["modules"]
