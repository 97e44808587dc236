"""The two lessons on one side: the sigmoid neuron (checked against its analytic gradient) and autograd (its
results assembled here from the side's functions, the same keys on both sides)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from harness.surface import AutogradLesson, Surface
from harness.tasks.digits import digits_epoch
from shared.execution import Execution
from shared.graph_lessons import DigitsEpoch
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


def autograd_lesson(spec: AutogradSpec, autograd: AutogradLesson, digits: DigitsEpoch) -> dict:
    """Everything the autograd task reports, in the same keys on both sides; `autograd` is the side's lesson surface
    (tf_impl or torch_impl autograd.py and graph_modes.py), whose functions compute each part: the tensors and the
    gradient, the graphs (as text and drawn), the side going static (torch.compile, torch.export, torch.cond) or
    staying static (AutoGraph), going dynamic (run_functions_eagerly) or staying dynamic, and the tf.function
    pitfalls on `digits`, the mlp's real training epoch."""
    # The same shape twice, then a new one: TensorFlow replays its trace once and traces again.
    shapes = [spec.shape, spec.shape, (spec.shape[0] + 1, spec.shape[1] + 1)]
    static = autograd.going_static(spec.x_value, spec.shape)
    return {
        "basics": autograd.tensor_basics(spec.seed),
        **autograd.gradient(spec.x_value, spec.shape),
        "constant": autograd.gradient_of_constant(spec.x_value, spec.shape),
        "graph": autograd.graph(spec.x_value, spec.shape),
        "tracing": autograd.graphs_per_call(spec.x_value, shapes),
        "control_flow": autograd.control_flow(spec.x_value, spec.shape),
        "drawings": {**autograd.graph_drawings(spec.x_value, spec.shape), **static.pop("drawings")},
        "static": static,
        "dynamic": autograd.going_dynamic(spec.x_value, spec.shape),
        "pitfalls": autograd.pitfalls(spec.x_value, spec.shape, digits),
        "notes": autograd.NOTES,
    }


def run_autograd(surface: Surface, spec: AutogradSpec, initial: None, out_dir: Path, data: dict | None = None,
                 execution: Execution | None = None) -> tuple[dict, np.ndarray]:
    """The tensors-and-autograd lesson; the probe is the gradient dz/dx."""
    lesson = autograd_lesson(spec, surface.task, digits_epoch(surface.side))
    result = {
        "history": [],
        "metrics": {"grad_mean": float(np.mean(lesson["grad"])), "traces": lesson["tracing"]["traces"]},
        "timing": {},
        "artifacts": {},
        **lesson,
    }
    return result, np.asarray(lesson["grad"], dtype=np.float64)
