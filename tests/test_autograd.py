"""Tensors and autograd on both sides: dz/dx = 4x + 5, no gradient for a non-trainable tensor,
one trace per input signature (TF) against a fresh graph per call (PyTorch, counted as distinct grad_fn objects),
and the graphs as text. The graphs drawn, going static and dynamic, and the pitfalls: tests/test_graph_lessons.py."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import side_module
from shared.tasks import make_spec

SHAPE = (2, 2)


@pytest.mark.parametrize("x_value", [2.0, -1.5, 0.25])
def test_gradient_is_4x_plus_5(side, x_value):
    result = side_module(side, "autograd").gradient(x_value, SHAPE)
    grad = np.asarray(result["grad"])
    assert grad.shape == SHAPE
    np.testing.assert_allclose(grad, np.full(SHAPE, 4 * x_value + 5), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(result["z"]), np.full(SHAPE, 2 * x_value**2 + 5 * x_value), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(result["x"]), np.full(SHAPE, x_value))


def test_gradient_is_13_at_the_default(side):
    spec = make_spec("autograd")
    assert spec.x_value == 2.0 and spec.shape == SHAPE
    grad = np.asarray(side_module(side, "autograd").gradient(spec.x_value, spec.shape)["grad"])
    assert np.array_equal(grad, np.full(SHAPE, 13.0)), grad


def test_non_trainable_tensor_gets_no_gradient(side):
    result = side_module(side, "autograd").gradient_of_constant(2.0, SHAPE)
    assert result["grad"] is None
    np.testing.assert_allclose(np.asarray(result["trainable_grad"]), np.full(SHAPE, 13.0), atol=1e-6)


def test_tf_traces_once_per_new_shape():
    tracing = side_module("tf", "autograd").graphs_per_call(2.0, [SHAPE, SHAPE, (3, 3)])
    assert tracing == {"calls": 3, "graphs_built": 2, "traces": 2}


def test_tf_same_shape_replays_one_trace():
    tracing = side_module("tf", "autograd").graphs_per_call(2.0, [SHAPE] * 4)
    assert tracing["traces"] == 1


def test_torch_builds_a_graph_per_call_and_never_traces():
    tracing = side_module("torch", "autograd").graphs_per_call(2.0, [SHAPE, SHAPE, (3, 3)])
    assert tracing == {"calls": 3, "graphs_built": 3, "traces": 0}


def test_torch_graph_count_sees_a_reused_graph(monkeypatch):
    """The count is measured, so the test above can fail: a z_of that hands every call the one graph it built first
    (as a replayed static graph would) is counted as 1 graph, not as 3 calls."""
    autograd = side_module("torch", "autograd")
    built, z_of = {}, autograd.z_of
    monkeypatch.setattr(autograd, "z_of", lambda x: built.setdefault("z", z_of(x)))
    tracing = autograd.graphs_per_call(2.0, [SHAPE, SHAPE, (3, 3)])
    assert tracing["calls"] == 3 and tracing["graphs_built"] == 1, tracing


def test_torch_trace_count_sees_a_compiled_z(monkeypatch):
    """The traces are measured, so the test above can fail: a z_of handed to torch.compile is traced by Dynamo (one
    graph for the first shape, at least one more for the new one) and counted."""
    import torch

    autograd = side_module("torch", "autograd")
    torch._dynamo.reset()
    monkeypatch.setattr(autograd, "z_of", torch.compile(autograd.z_of, backend="eager", dynamic=False))
    tracing = autograd.graphs_per_call(2.0, [SHAPE, SHAPE, (3, 3)])
    torch._dynamo.reset()
    assert tracing["calls"] == 3 and tracing["traces"] == 2, tracing


def test_torch_graph_count_keeps_each_graph_alive():
    """Distinct ids are distinct graphs only while all are alive: many calls still count one graph each."""
    tracing = side_module("torch", "autograd").graphs_per_call(2.0, [SHAPE] * 50)
    assert tracing["graphs_built"] == 50


def test_tf_graph_holds_the_ops_of_z():
    text = side_module("tf", "autograd").graph(2.0, SHAPE)
    ops = {line.split(" = ")[1].split("(")[0] for line in text.splitlines()}
    for op in ("Pow", "Mul", "AddV2"):
        assert op in ops, f"{op} missing from the traced graph:\n{text}"
    assert sum(1 for line in text.splitlines() if " = Mul(" in line) >= 2  # 2*x^2 and 5*x


def test_torch_graph_is_the_grad_fn_chain():
    text = side_module("torch", "autograd").graph(2.0, SHAPE)
    lines = text.splitlines()
    assert lines[0].strip() == "AddBackward0"  # z = (2 x^2) + (5 x): the last op is the root
    for node in ("PowBackward0", "MulBackward0", "AccumulateGrad"):
        assert node in text, f"{node} missing from the grad_fn chain:\n{text}"
    assert "AccumulateGrad -> x(2, 2)" in text
    assert "(the same node as above)" in text  # x feeds both terms: one leaf, reached twice


def test_tf_control_flow_is_one_conditional_op():
    result = side_module("tf", "autograd").control_flow(2.0, SHAPE)
    assert "If" in result["graph"], result["graph"]


def test_torch_control_flow_records_only_the_branch_taken():
    result = side_module("torch", "autograd").control_flow(2.0, SHAPE)
    assert "x.sum() > 0: MulBackward0" in result["graph"]
    assert "x.sum() <= 0: NegBackward0" in result["graph"]


@pytest.mark.parametrize("x_value", [2.0, 0.5])
def test_branch_results(side, x_value):
    """Positive input: 2x; negative input: -x (so -(-x_value) = x_value)."""
    result = side_module(side, "autograd").control_flow(x_value, SHAPE)
    np.testing.assert_array_equal(np.asarray(result["positive_input"]), np.full(SHAPE, 2 * x_value))
    np.testing.assert_array_equal(np.asarray(result["negative_input"]), np.full(SHAPE, x_value))
