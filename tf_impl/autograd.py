"""Tensors, autograd and the graph in TensorFlow, as text and drawn; twin of torch_impl/autograd.py.

tf.function traces the Python into a graph once per input signature and replays it (define-then-run). Staying static,
going dynamic and the tf.function pitfalls: tf_impl/graph_modes.py."""
from __future__ import annotations

import tensorflow as tf

from shared import graph_drawing as gd

NOTES = [
    "tf.zeros, tf.random.uniform and tf.ones build the same tensors; TensorFlow has no uninitialised constructor.",
    "A tf.Variable is trainable state; GradientTape records the operations on watched variables.",
    ("A tf.function traces the Python once per input signature into a graph, then replays the graph; "
     "a call with a new input shape traces again."),
    "Inside a tf.function, AutoGraph turns a Python `if` on a tensor value into a conditional op in the graph.",
    ("tf.config.run_functions_eagerly(True) runs a tf.function as plain Python: nothing is traced and the `if` "
     "is taken call by call (for debugging; the graph is what runs fast and exports)."),
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


@tf.function
def branch_cond(x: tf.Tensor) -> tf.Tensor:
    """The conditional written out, as AutoGraph writes it for `branch`: tf.cond holds both branches in the graph
    (the twin of torch.cond)."""
    return tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2, lambda: -x)


# ---- the graphs drawn ------------------------------------------------------------------------------------------

_SHORT_DTYPES = {"float32": "f32", "float64": "f64", "bool": "b8", "int32": "i32", "int64": "i64"}


def _tensor_text(value: tf.Tensor) -> str:
    """A graph tensor as its edge label: dtype[shape], as FX writes it (symbolic: a graph holds no values)."""
    dims = "?" if value.shape.rank is None else ",".join("?" if d is None else str(d) for d in value.shape)
    return f"{_SHORT_DTYPES.get(value.dtype.name, value.dtype.name)}[{dims}]"


def _value_text(proto) -> str:
    value = tf.make_ndarray(proto)
    if value.size > 4:
        return f"{value.dtype}{list(value.shape)}"
    items = [f"{v:g}" if isinstance(v, float) else str(v) for v in value.ravel().tolist()]
    return items[0] if value.ndim == 0 else "[" + ", ".join(items) + "]"


def _graph_panel(title: str, graph: tf.Graph, outputs: list[tf.Tensor]) -> dict:
    """A traced graph as a panel: its ops are the nodes, its tensors the edges; a conditional op gets its two
    branch functions as inputs (they are attributes of the op: the graph holds both)."""
    returned = {t.op.name for t in outputs}
    nodes, edges = [], []
    for op in graph.get_operations():
        if op.type == "Placeholder":
            nodes.append(gd.node(op.name, f"{op.name}\nPlaceholder", "input"))
        elif op.type == "Const":
            nodes.append(gd.node(op.name, f"{op.name}\nConst {_value_text(op.get_attr('value'))}", "const"))
        elif op.type in ("If", "StatelessIf"):
            nodes.append(gd.node(op.name, f"{op.name}\n{op.type}", "cond"))
            for attr in ("then_branch", "else_branch"):
                function = op.get_attr(attr).name
                nodes.append(gd.node(f"{op.name}:{attr}", f"{attr}\n{function}", "subgraph"))
                edges.append(gd.edge(f"{op.name}:{attr}", op.name, attr.split("_")[0]))
        else:
            nodes.append(gd.node(op.name, f"{op.name}\n{op.type}", "output" if op.name in returned else "op"))
        edges += [gd.edge(t.op.name, op.name, _tensor_text(t)) for t in op.inputs]
        edges += [gd.edge(c.name, op.name, "control") for c in op.control_inputs]
    return gd.panel(title, nodes, edges)


def _signature_text(spec: tf.TensorSpec) -> str:
    return f"{_SHORT_DTYPES.get(spec.dtype.name, spec.dtype.name)}[{','.join(map(str, spec.shape))}]"


def graph_drawings(x_value: float, shape: tuple) -> dict:
    """The graph tracing z_of produced, drawn: ops as nodes, tensors as edges, the constants baked in."""
    signature = tf.TensorSpec(shape, tf.float32)
    concrete = _traced_z.get_concrete_function(signature)
    ops = concrete.graph.get_operations()
    constants = [f"{op.name} = {_value_text(op.get_attr('value'))}" for op in ops if op.type == "Const"]
    return {"tf_function_z": gd.drawing(
        "TensorFlow: the tf.function's graph of z = 2x^2 + 5x",
        [_graph_panel(f"the concrete function traced for x: {_signature_text(signature)}", concrete.graph,
                      concrete.outputs)],
        f"{len(ops)} ops, traced once from the Python of z_of and replayed on every call with this signature. "
        f"Edges carry symbolic tensors (dtype[shape], no values); the constants are baked in: {', '.join(constants)}.")}
