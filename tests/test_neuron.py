"""The one-neuron task on both sides: the two trajectories agree, the gradients match the analytic formula
(itself checked against finite differences in float64, micrograd-style), and the TF step traces once."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import side_module
from harness.tasks.lessons import analytic_neuron_gradient, sigmoid
from shared.tasks import make_spec

TOLERANCE = 1e-6  # trajectories and gradients, float64 on both sides
# (w, b) points besides the start where backprop must equal the analytic gradient.
POINTS = [(2.0, -1.0), (0.0, 0.0), (-3.5, 2.25), (1.4525, 1.38), (10.0, -7.0)]


@pytest.fixture(scope="module")
def spec():
    return make_spec("neuron")


@pytest.fixture(scope="module")
def runs(spec) -> dict:
    """One training run per side, shared by the tests below."""
    return {s: side_module(s, "neuron").train(spec) for s in ("torch", "tf")}


def error(w: float, b: float, phi: float, target: float) -> float:
    """E = 1/2 (O - t)^2 in plain float64."""
    return 0.5 * (sigmoid(phi * w + b) - target) ** 2


def test_trajectories_agree_at_every_step(runs, spec):
    tf_path, torch_path = runs["tf"]["trajectory"], runs["torch"]["trajectory"]
    assert len(tf_path) == len(torch_path) == spec.epochs + 1
    for a, b in zip(tf_path, torch_path):
        assert a["step"] == b["step"]
        for key in ("w", "b", "output"):
            diff = abs(a[key] - b[key])
            assert diff <= TOLERANCE, f"step {a['step']}: {key} differs by {diff:.3e} (tf {a[key]}, torch {b[key]})"


def test_trajectory_starts_at_the_spec(side, runs, spec):
    first = runs[side]["trajectory"][0]
    assert (first["w"], first["b"]) == (spec.w0, spec.b0)
    assert abs(first["output"] - sigmoid(spec.phi * spec.w0 + spec.b0)) <= 1e-12


def test_final_output_reaches_target(side, runs, spec):
    final = runs[side]["trajectory"][-1]
    assert spec.target == 0.74
    assert abs(final["output"] - 0.74) <= 1e-3, f"{side}: final O = {final['output']}"
    # The end point lies (nearly) on the line of exact solutions phi*w + b = logit(t).
    logit = math.log(spec.target / (1 - spec.target))
    assert abs(spec.phi * final["w"] + final["b"] - logit) <= 1e-3


def test_error_decreases_monotonically(side, runs):
    errors = np.array([p["error"] for p in runs[side]["trajectory"]])
    steps = np.diff(errors)
    assert np.all(steps <= 0), f"{side}: E rose at step {int(np.argmax(steps)) + 1} by {steps.max():.3e}"
    assert errors[-1] < 1e-6 * errors[0], f"{side}: E went from {errors[0]} only to {errors[-1]}"


def test_error_is_half_squared_difference(side, runs, spec):
    """E = 1/2 (O - t)^2, not the source text's typo "12 (O - t)^2"."""
    for point in runs[side]["trajectory"][:5]:
        assert point["error"] == pytest.approx(0.5 * (point["output"] - spec.target) ** 2, rel=1e-12, abs=1e-18)


def test_history_is_error_after_each_step(side, runs, spec):
    history = runs[side]["history"]
    assert [h["epoch"] for h in history] == list(range(1, spec.epochs + 1))
    assert [h["loss"] for h in history] == [p["error"] for p in runs[side]["trajectory"][1:]]


@pytest.mark.parametrize("w, b", POINTS)
def test_backprop_matches_analytic_gradient(side, spec, w, b):
    neuron = side_module(side, "neuron")
    model = neuron.build(spec)
    neuron.load_weights(model, {"w": np.float64(w), "b": np.float64(b)})
    assert neuron.forward(model, spec.phi) == pytest.approx(sigmoid(spec.phi * w + b), abs=1e-12)
    backprop = neuron.gradients(model, spec.phi, spec.target)
    analytic = analytic_neuron_gradient(w, b, spec.phi, spec.target)
    diff = float(np.max(np.abs(np.subtract(backprop, analytic))))
    assert diff <= TOLERANCE, f"{side} at (w={w}, b={b}): backprop {backprop} vs analytic {analytic}, diff {diff:.3e}"


def test_gradient_at_start_of_fresh_model(side, spec):
    neuron = side_module(side, "neuron")
    backprop = neuron.gradients(neuron.build(spec), spec.phi, spec.target)
    analytic = analytic_neuron_gradient(spec.w0, spec.b0, spec.phi, spec.target)
    assert analytic[1] != 0.0  # the start is not already a solution
    assert np.max(np.abs(np.subtract(backprop, analytic))) <= TOLERANCE


@pytest.mark.parametrize("w, b", POINTS)
def test_analytic_gradient_matches_finite_differences(spec, w, b):
    """The reference itself, against central differences of E in float64 (as micrograd checks against PyTorch)."""
    h = 1e-5
    numeric_w = (error(w + h, b, spec.phi, spec.target) - error(w - h, b, spec.phi, spec.target)) / (2 * h)
    numeric_b = (error(w, b + h, spec.phi, spec.target) - error(w, b - h, spec.phi, spec.target)) / (2 * h)
    analytic_w, analytic_b = analytic_neuron_gradient(w, b, spec.phi, spec.target)
    assert abs(analytic_w - numeric_w) <= 1e-6, f"dE/dw: analytic {analytic_w}, numeric {numeric_w}"
    assert abs(analytic_b - numeric_b) <= 1e-6, f"dE/db: analytic {analytic_b}, numeric {numeric_b}"
    # dE/dw = phi * dE/db: the input scales the weight's gradient.
    assert analytic_w == pytest.approx(spec.phi * analytic_b, rel=1e-12, abs=1e-300)


def test_one_step_is_plain_gradient_descent(side, runs, spec):
    """Step 1 equals (w0, b0) - lr * analytic gradient."""
    dw, db = analytic_neuron_gradient(spec.w0, spec.b0, spec.phi, spec.target)
    step1 = runs[side]["trajectory"][1]
    assert abs(step1["w"] - (spec.w0 - spec.lr * dw)) <= 1e-12
    assert abs(step1["b"] - (spec.b0 - spec.lr * db)) <= 1e-12


def test_load_export_round_trip(side, spec):
    neuron = side_module(side, "neuron")
    model = neuron.build(spec)
    neuron.load_weights(model, {"w": np.float64(-0.125), "b": np.float64(3.5)})
    exported = neuron.export_weights(model)
    assert float(exported["w"]) == -0.125 and float(exported["b"]) == 3.5


def test_tf_train_step_traced_once(runs, spec):
    assert spec.epochs > 1
    assert runs["tf"]["traces"] == 1


def test_timing_recorded_for_every_step(side, runs, spec):
    timing = runs[side]["timing"]
    assert timing["steps"] == spec.epochs
    assert timing["first_step_s"] > 0 and timing["step_s_median"] > 0 and timing["train_s"] > 0
