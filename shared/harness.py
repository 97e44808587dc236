"""Runs one task on one side through that side's surface (build, load_weights, forward, train, ...).
The side's modules are handed in by compare.py, so this file never imports a framework itself."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from shared.errors import UserError
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
    """Resolve and validate the task's dataset once, in the parent, before any side starts."""
    raise UserError(f"task {spec.name!r} has no data loader yet")


RUNNERS = {"neuron": run_neuron, "autograd": run_autograd}


def run_task(side: SimpleNamespace, spec: TaskSpec, out_dir: Path, data=None) -> tuple[dict, np.ndarray]:
    """The side's result (the results.json entry) and its parity probe array."""
    return RUNNERS[spec.name](side, spec, Path(out_dir), data)
