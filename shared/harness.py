"""Runs one task on one side through that side's surface (build, load_weights, forward, train, ...).
The side's modules are handed in by compare.py, so this file never imports a framework itself."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from shared import metrics, weights
from shared.data import mnist
from shared.errors import UserError
from shared.init import init_weights
from shared.tasks import TaskSpec

# Parity tolerance (max abs difference of the probe arrays) per task, one table for the harness and tests.
PARITY_TOLERANCE = {"neuron": 1e-6, "autograd": 1e-6, "mlp": 1e-5, "cnn": 1e-5, "unet": 1e-4}
PARITY_PROBES = {
    "neuron": "w, b and O at every gradient step",
    "autograd": "dz/dx",
    "mlp": "log-probabilities of the initial weights on the first test batch",
    "cnn": "log-probabilities of the initial weights on the first test batch",
    "unet": "logits of the initial weights on the first validation batch",
}


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def analytic_neuron_gradient(w: float, b: float, phi: float, target: float) -> tuple[float, float]:
    """dE/dw = (O - t) O (1 - O) phi and dE/db = (O - t) O (1 - O), for E = 1/2 (O - t)^2."""
    output = sigmoid(phi * w + b)
    delta = (output - target) * output * (1 - output)
    return delta * phi, delta


def run_neuron(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, data=None) -> tuple[dict, np.ndarray]:
    """Fit the neuron; check the side's gradient at the start against the analytic one."""
    model = side.task.build(spec)
    backprop = side.task.gradients(model, spec.phi, spec.target)
    analytic = analytic_neuron_gradient(spec.w0, spec.b0, spec.phi, spec.target)
    run = side.task.train(spec)
    trajectory = run["trajectory"]
    result = {
        "history": run["history"],
        "trajectory": trajectory,
        "final_output": trajectory[-1]["output"],
        "metrics": {"final_output": trajectory[-1]["output"], "final_error": trajectory[-1]["error"],
                    "w": trajectory[-1]["w"], "b": trajectory[-1]["b"],
                    "gradient_vs_analytic_max_abs": float(np.max(np.abs(np.subtract(backprop, analytic))))},
        "timing": run["timing"],
        "traces": run.get("traces"),
        "artifacts": {},
    }
    probe = np.array([[p["w"], p["b"], p["output"]] for p in trajectory])
    return result, probe


def run_autograd(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, data=None) -> tuple[dict, np.ndarray]:
    """The tensors-and-autograd lesson; the probe is the gradient dz/dx."""
    lesson = side.task.lesson(spec)
    result = {
        "history": [],
        "metrics": {"grad_mean": float(np.mean(lesson["grad"])), "traces": lesson["tracing"]["traces"]},
        "timing": {},
        "artifacts": {},
        **lesson,
    }
    return result, np.asarray(lesson["grad"], dtype=np.float64)


def prepare_data(spec: TaskSpec, data_dir, download: bool) -> dict:
    """Resolve and validate the task's dataset once, in the parent, before any side starts;
    the result (plain JSON) tells each side where to load it from."""
    if spec.name in ("mlp", "cnn"):
        if download:
            data_dir = mnist.download_mnist()
        data = mnist.load_mnist(data_dir, seed=spec.seed, sample_size=spec.sample_size)
        return {"data_dir": None if data_dir is None else str(data_dir), "description": data.describe()}
    raise UserError(f"task {spec.name!r} has no data loader yet")


def load_classifier_data(spec: TaskSpec, data: dict) -> SimpleNamespace:
    """MNIST normalised the same way for both sides (mean 0.1307, std 0.3081)."""
    loaded = mnist.load_mnist(data.get("data_dir"), seed=spec.seed, sample_size=spec.sample_size)
    return SimpleNamespace(
        train_images=mnist.normalize(loaded.train_images, spec.mean, spec.std), train_labels=loaded.train_labels,
        test_images=mnist.normalize(loaded.test_images, spec.mean, spec.std), test_labels=loaded.test_labels)


LAYOUTS = {"mlp": weights.mlp_layout, "cnn": weights.cnn_layout}


def initial_weights(spec: TaskSpec) -> dict:
    """The canonical starting point both sides load."""
    return init_weights(LAYOUTS[spec.name](spec), spec.seed)


def run_classifier(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, data=None) -> tuple[dict, np.ndarray]:
    """Load the canonical initial weights, probe them, train, evaluate, save the checkpoint."""
    dataset = load_classifier_data(spec, data or {})
    model = side.task.build(spec)
    side.weights.load_weights(model, initial_weights(spec))
    probe = side.train.forward(model, dataset.test_images[:spec.batch_size])
    run = side.train.train(model, spec, dataset, verbose=True)
    final = side.train.evaluate(model, dataset.test_images, dataset.test_labels, spec.batch_size)
    checkpoint = weights.save_weights(side.weights.export_weights(model), out_dir / "checkpoint.safetensors")
    result = {
        "history": run["history"],
        "batch_losses": run["batch_losses"],
        "metrics": {"test_accuracy": final["accuracy"], "test_loss": final["loss"],
                    "final_train_loss": run["batch_losses"][-1],
                    "parameters": side.weights.count_parameters(model)},
        "timing": run["timing"],
        "traces": run.get("traces"),
        "confusion_matrix": metrics.confusion_matrix(dataset.test_labels, final["predictions"]).tolist(),
        "artifacts": {"checkpoint": str(checkpoint)},
    }
    return result, probe


RUNNERS = {"neuron": run_neuron, "autograd": run_autograd, "mlp": run_classifier, "cnn": run_classifier}


def run_task(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, data=None) -> tuple[dict, np.ndarray]:
    """The side's result (the results.json entry) and its parity probe array."""
    return RUNNERS[spec.name](side, spec, Path(out_dir), data)
