"""The two lessons on one side: the sigmoid neuron (checked against its analytic gradient) and autograd."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from shared.execution import Execution
from shared.surface import Surface
from shared.tasks import AutogradSpec, NeuronSpec


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def analytic_neuron_gradient(w: float, b: float, phi: float, target: float) -> tuple[float, float]:
    """dE/dw = (O - t) O (1 - O) phi and dE/db = (O - t) O (1 - O), for E = 1/2 (O - t)^2."""
    output = sigmoid(phi * w + b)
    delta = (output - target) * output * (1 - output)
    return delta * phi, delta


def run_neuron(surface: Surface, spec: NeuronSpec, initial: None, out_dir: Path, data: dict | None = None,
               execution: Execution | None = None) -> tuple[dict, np.ndarray]:
    """Fit the neuron; check the side's gradient at the start against the analytic one. The probe is the
    trajectory (w, b, O at every step); the neuron runs in float64 on the CPU whatever the execution."""
    lesson = surface.task
    backprop = lesson.gradients(lesson.build(spec), spec.phi, spec.target)
    analytic = analytic_neuron_gradient(spec.w0, spec.b0, spec.phi, spec.target)
    run = lesson.train(spec)
    trajectory, last = run["trajectory"], run["trajectory"][-1]
    result = {
        "history": run["history"],
        "trajectory": trajectory,
        "final_output": last["output"],
        "metrics": {"final_output": last["output"], "final_error": last["error"], "w": last["w"], "b": last["b"],
                    "gradient_vs_analytic_max_abs": float(np.max(np.abs(np.subtract(backprop, analytic))))},
        "timing": run["timing"],
        "traces": run["traces"],
        "artifacts": {},
    }
    probe = np.array([[point["w"], point["b"], point["output"]] for point in trajectory])
    return result, probe


def run_autograd(surface: Surface, spec: AutogradSpec, initial: None, out_dir: Path, data: dict | None = None,
                 execution: Execution | None = None) -> tuple[dict, np.ndarray]:
    """The tensors-and-autograd lesson; the probe is the gradient dz/dx."""
    lesson = surface.task.lesson(spec)
    result = {
        "history": [],
        "metrics": {"grad_mean": float(np.mean(lesson["grad"])), "traces": lesson["tracing"]["traces"]},
        "timing": {},
        "artifacts": {},
        **lesson,
    }
    return result, np.asarray(lesson["grad"], dtype=np.float64)
