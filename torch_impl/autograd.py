"""Tensors and automatic differentiation in PyTorch: the graph is built by running the code (define-by-run);
twin of tf_impl/autograd.py."""
from __future__ import annotations

import sys

import torch

from shared.lesson_parts import autograd_lesson
from shared.tasks import AutogradSpec

NOTES = [
    "torch.Tensor(2, 3) returns uninitialised memory (whatever bytes were there), so the code uses torch.zeros.",
    "torch.autograd.Variable is gone: a tensor created with requires_grad=True is what a Variable was.",
    "The graph is built while the forward code runs (grad_fn chain) and freed by backward() unless retain_graph=True.",
    "A plain Python `if` on a tensor value picks a branch on every call; each call records only the branch it took.",
]


def tensor_basics(seed: int) -> dict:
    """The source text's first tensors: zeros, uniform random, ones, a column, products and sums."""
    generator = torch.Generator().manual_seed(seed)
    zeros = torch.zeros(2, 3)
    uniform = torch.rand(2, 3, generator=generator)
    ones = torch.ones(2, 3)
    return {
        "zeros": zeros.tolist(),
        "uniform": uniform.tolist(),
        "ones": ones.tolist(),
        "second_column": uniform[:, 1].tolist(),
        "ones_times_3_plus_uniform": (ones * 3 + uniform).tolist(),
        "matmul_uniform_by_ones_T": (uniform @ ones.T).tolist(),
    }


def z_of(x: torch.Tensor) -> torch.Tensor:
    """z = 2 x^2 + 5 x, so dz/dx = 4 x + 5."""
    return 2 * x**2 + 5 * x


def gradient(x_value: float, shape: tuple) -> dict:
    """x trainable; z.backward(ones) fills x.grad with 4x + 5 (13 at x = 2)."""
    x = torch.full(shape, x_value, requires_grad=True)
    z = z_of(x)
    z.backward(torch.ones_like(z))
    return {"x": x.tolist(), "z": z.tolist(), "grad": x.grad.tolist()}


def gradient_of_constant(x_value: float, shape: tuple) -> dict:
    """A tensor with requires_grad=False is not recorded in the graph: it gets no gradient."""
    trainable = torch.full(shape, x_value, requires_grad=True)
    constant = torch.full(shape, x_value)  # requires_grad=False
    z = z_of(trainable) + z_of(constant)
    z.backward(torch.ones_like(z))
    return {"grad": None if constant.grad is None else constant.grad.tolist(),
            "trainable_grad": trainable.grad.tolist()}


def graph(x_value: float, shape: tuple) -> str:
    """The grad_fn chain that running z_of recorded, walked back from z to the leaf x."""
    x = torch.full(shape, x_value, requires_grad=True)
    z = z_of(x)
    lines, seen = [], set()

    def walk(fn, depth):
        if fn is None:
            return
        label = type(fn).__name__
        if label == "AccumulateGrad":
            label += f" -> x{tuple(fn.variable.shape)}"
        if id(fn) in seen:  # x feeds two branches: one node, reached twice
            lines.append("  " * depth + label + " (the same node as above)")
            return
        seen.add(id(fn))
        lines.append("  " * depth + label)
        for next_fn, _ in fn.next_functions:
            walk(next_fn, depth + 1)

    walk(z.grad_fn, 0)
    return "\n".join(lines)


def graphs_per_call(x_value: float, shapes: list[tuple]) -> dict:
    """Nothing is traced: every call builds a fresh graph (new grad_fn objects), whatever the shape."""
    builds = [id(z_of(torch.full(shape, x_value, requires_grad=True)).grad_fn) for shape in shapes]
    return {"calls": len(shapes), "graphs_built": len(builds), "traces": 0}


def branch(x: torch.Tensor) -> torch.Tensor:
    """Data-dependent control flow as plain Python: the branch is chosen on this call's values."""
    if x.sum() > 0:
        return x * 2
    return -x


def control_flow(x_value: float, shape: tuple) -> dict:
    positive = branch(torch.full(shape, x_value, requires_grad=True))
    negative = branch(torch.full(shape, -x_value, requires_grad=True))
    return {
        "positive_input": positive.tolist(), "negative_input": negative.tolist(),
        "graph": f"x.sum() > 0: {type(positive.grad_fn).__name__}\nx.sum() <= 0: {type(negative.grad_fn).__name__}",
    }


def lesson(spec: AutogradSpec) -> dict:
    """Everything the autograd task reports, from this module's functions (the keys: shared/lesson_parts.py)."""
    return autograd_lesson(spec, sys.modules[__name__])
