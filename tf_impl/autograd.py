"""Tensors and automatic differentiation in TensorFlow: tf.function traces Python into a graph once and
replays it (define-then-run); twin of torch_impl/autograd.py."""
from __future__ import annotations

import sys

import tensorflow as tf

from shared.lesson_parts import autograd_lesson
from shared.tasks import AutogradSpec

NOTES = [
    "tf.zeros, tf.random.uniform and tf.ones build the same tensors; TensorFlow has no uninitialised constructor.",
    "A tf.Variable is trainable state; GradientTape records the operations on watched variables.",
    ("A tf.function traces the Python once per input signature into a graph, then replays the graph; "
     "a call with a new input shape traces again."),
    "Inside a tf.function, AutoGraph turns a Python `if` on a tensor value into a conditional op in the graph.",
]


def tensor_basics(seed: int) -> dict:
    """The source text's first tensors: zeros, uniform random, ones, a column, products and sums."""
    generator = tf.random.Generator.from_seed(seed)
    zeros = tf.zeros((2, 3))
    uniform = generator.uniform((2, 3))
    ones = tf.ones((2, 3))
    return {
        "zeros": zeros.numpy().tolist(),
        "uniform": uniform.numpy().tolist(),
        "ones": ones.numpy().tolist(),
        "second_column": uniform[:, 1].numpy().tolist(),
        "ones_times_3_plus_uniform": (ones * 3 + uniform).numpy().tolist(),
        "matmul_uniform_by_ones_T": (uniform @ tf.transpose(ones)).numpy().tolist(),
    }


def z_of(x: tf.Tensor) -> tf.Tensor:
    """z = 2 x^2 + 5 x, so dz/dx = 4 x + 5."""
    return 2 * x**2 + 5 * x


def gradient(x_value: float, shape: tuple) -> dict:
    """x trainable; the tape's gradient of z with output gradient ones is 4x + 5 (13 at x = 2)."""
    x = tf.Variable(tf.fill(shape, x_value))
    with tf.GradientTape() as tape:
        z = z_of(x)
    grad = tape.gradient(z, x, output_gradients=tf.ones_like(z))
    return {"x": x.numpy().tolist(), "z": z.numpy().tolist(), "grad": grad.numpy().tolist()}


def gradient_of_constant(x_value: float, shape: tuple) -> dict:
    """A tf.constant is not watched by the tape: it gets no gradient (None)."""
    trainable = tf.Variable(tf.fill(shape, x_value))
    constant = tf.constant(x_value, shape=shape)
    with tf.GradientTape() as tape:
        z = z_of(trainable) + z_of(constant)
    trainable_grad, constant_grad = tape.gradient(z, [trainable, constant], output_gradients=tf.ones_like(z))
    return {"grad": None if constant_grad is None else constant_grad.numpy().tolist(),
            "trainable_grad": trainable_grad.numpy().tolist()}


@tf.function
def _traced_z(x):
    return z_of(x)


def _graph_ops(concrete_function) -> str:
    """The operations of a concrete function's graph, one per line: name = type(inputs)."""
    lines = []
    for op in concrete_function.graph.get_operations():
        inputs = ", ".join(t.op.name for t in op.inputs)
        lines.append(f"{op.name} = {op.type}({inputs})")
    return "\n".join(lines)


def graph(x_value: float, shape: tuple) -> str:
    """The ops of the graph that tracing z_of produced (the same graph every later call replays)."""
    return _graph_ops(_traced_z.get_concrete_function(tf.TensorSpec(shape, tf.float32)))


def graphs_per_call(x_value: float, shapes: list[tuple]) -> dict:
    """One trace per new input signature: repeated shapes replay the graph, a new shape traces again."""

    @tf.function
    def fresh_z(x):
        return z_of(x)

    for shape in shapes:
        fresh_z(tf.fill(shape, x_value))
    traces = fresh_z.experimental_get_tracing_count()
    return {"calls": len(shapes), "graphs_built": traces, "traces": traces}


@tf.function
def branch(x: tf.Tensor) -> tf.Tensor:
    """The same Python `if` as the PyTorch side; AutoGraph turns it into one conditional op."""
    if tf.reduce_sum(x) > 0:
        return x * 2
    return -x


def control_flow(x_value: float, shape: tuple) -> dict:
    positive = branch(tf.fill(shape, x_value))
    negative = branch(tf.fill(shape, -x_value))
    ops = branch.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph.get_operations()
    conditionals = [f"{op.name} = {op.type}" for op in ops if "If" in op.type or "Cond" in op.type]
    return {
        "positive_input": positive.numpy().tolist(), "negative_input": negative.numpy().tolist(),
        "graph": "one graph for both branches; its conditional op: " + ", ".join(conditionals),
    }


def lesson(spec: AutogradSpec) -> dict:
    """Everything the autograd task reports, from this module's functions (the keys: shared/lesson_parts.py)."""
    return autograd_lesson(spec, sys.modules[__name__])
