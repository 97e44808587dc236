"""Tensors, autograd and the graph in PyTorch, as text and drawn; twin of tf_impl/autograd.py.

The graph is recorded while the code runs (define-by-run), anew on every call. Going static (torch.compile,
torch.export, torch.cond), staying dynamic and the pitfalls' PyTorch column: torch_impl/graph_modes.py."""
from __future__ import annotations

import torch
import torch._dynamo
import torch.fx
from torch._dynamo.utils import counters

from shared import graph_drawing as gd

NOTES = [
    "torch.Tensor(2, 3) returns uninitialised memory (whatever bytes were there), so the code uses torch.zeros.",
    "torch.autograd.Variable is gone: a tensor created with requires_grad=True is what a Variable was.",
    "The graph is built while the forward code runs (grad_fn chain) and freed by backward() unless retain_graph=True.",
    "A plain Python `if` on a tensor value picks a branch on every call; each call records only the branch it took.",
    ("torch.compile captures the Python into FX graphs; a Python `if` on a tensor value breaks the graph there, and "
     "torch.cond keeps both branches in one graph, which torch.export can export."),
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
    """Nothing is traced: every call records a fresh graph, whatever the shape. Counted, not assumed: each call's z
    is kept alive (a freed grad_fn's id could be handed to the next one) and its distinct grad_fn objects counted;
    the traces are the graphs Dynamo captured meanwhile (torch.compile's tracer: none, in eager mode)."""
    captured = counters["stats"]["unique_graphs"]
    results = [z_of(torch.full(shape, x_value, requires_grad=True)) for shape in shapes]
    graphs = {id(z.grad_fn) for z in results}  # all still alive: distinct ids are distinct graphs
    return {"calls": len(shapes), "graphs_built": len(graphs),
            "traces": counters["stats"]["unique_graphs"] - captured}


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


def branch_cond(x: torch.Tensor) -> torch.Tensor:
    """The conditional as one operator that holds both branches (the twin of AutoGraph's conditional, tf.cond):
    torch.compile and torch.export capture it in one graph."""
    return torch.cond(x.sum() > 0, lambda x: x * 2, lambda x: -x, (x,))


# ---- capturing and drawing graphs --------------------------------------------------------------------------------

class _Captured:
    """A torch.compile backend that needs no C++ compiler: it keeps each FX graph Dynamo captured, with the shapes
    it was captured for, and runs it as Python."""

    def __init__(self):
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, graph_module: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs.append(graph_module)
        return graph_module.forward


_SHORT_DTYPES = {torch.float32: "f32", torch.float64: "f64", torch.bool: "b8", torch.int32: "i32", torch.int64: "i64"}


def _tensor_text(value) -> str:
    """An FX value (a fake tensor) as its edge label: dtype[shape]."""
    if isinstance(value, (tuple, list)):
        return ", ".join(_tensor_text(v) for v in value)
    if not isinstance(value, torch.Tensor):
        return "" if value is None else type(value).__name__
    return f"{_SHORT_DTYPES.get(value.dtype, str(value.dtype))}[{','.join(str(d) for d in value.shape)}]"


def _target_text(target) -> str:
    if isinstance(target, str):
        return target
    if type(target).__module__.startswith("torch"):  # aten.sum.default, cond
        return str(target)
    return getattr(target, "__name__", str(target))


def _fx_panel(title: str, graph_module: torch.fx.GraphModule) -> dict:
    """An FX graph as a panel: its nodes (placeholders, calls, the output) and the values between them; a number
    in the arguments becomes a constant node; a conditional gets its branch graphs as inputs."""
    nodes, edges = [], []
    for fx_node in graph_module.graph.nodes:
        if fx_node.op == "placeholder":
            nodes.append(gd.node(fx_node.name, f"{fx_node.name}\nplaceholder", "input"))
        elif fx_node.op == "output":
            nodes.append(gd.node(fx_node.name, "output", "output"))
        elif fx_node.op == "get_attr":
            nodes.append(gd.node(fx_node.name, f"{fx_node.name}\ngraph module", "subgraph"))
        else:
            target = _target_text(fx_node.target)
            nodes.append(gd.node(fx_node.name, f"{fx_node.name}\n{target}", "cond" if target == "cond" else "op"))
        for position, arg in enumerate(fx_node.args):
            if isinstance(arg, (int, float, bool)):
                constant = f"{fx_node.name}:{position}"
                nodes.append(gd.node(constant, f"{arg:g}" if isinstance(arg, float) else str(arg), "const"))
                edges.append(gd.edge(constant, fx_node.name))
        for source in fx_node.all_input_nodes:
            if source.op == "get_attr":  # torch.cond(pred, true_fn, false_fn, operands)
                label = {1: "true", 2: "false"}.get(list(fx_node.args).index(source), "")
            else:
                label = _tensor_text(source.meta.get("val", source.meta.get("example_value")))
            edges.append(gd.edge(source.name, fx_node.name, label))
    return gd.panel(title, nodes, edges)


def _autograd_panel(title: str, z: torch.Tensor) -> dict:
    """The graph backward() walks, from z to the leaf: grad_fn nodes (with the scalars they saved) and AccumulateGrad
    for x, reached twice and drawn once. backward(ones) runs with a hook on every node, so each edge carries the
    gradient that flowed along it (each is a constant 2x2 here: its value is shown)."""
    functions, stack = [], [z.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or any(fn is seen for seen in functions):
            continue
        functions.append(fn)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    saved = {id(fn): [f"{attr[len('_saved_'):]} = {float(getattr(fn, attr)):g}" for attr in dir(fn)
                      if attr.startswith("_saved_") and _is_scalar(getattr(fn, attr))]
             for fn in functions}  # read before backward() frees them
    flowed = {}
    for fn in functions:
        fn.register_hook(lambda grad_inputs, grad_outputs, fn=fn: flowed.__setitem__(id(fn), grad_inputs))
    z.backward(torch.ones_like(z))

    def gradient_text(grad) -> str:
        if grad is None:
            return ""
        values = grad.unique()
        return f"{values.item():g} [{'x'.join(map(str, grad.shape))}]" if values.numel() == 1 else _tensor_text(grad)

    nodes = [gd.node("z", "z.backward(ones)", "input")]
    edges = [gd.edge("z", str(id(z.grad_fn)), gradient_text(torch.ones_like(z)))]
    for fn in functions:
        name = type(fn).__name__
        if name == "AccumulateGrad":
            variable = fn.variable
            nodes += [gd.node(str(id(fn)), f"AccumulateGrad\nx {tuple(variable.shape)}", "leaf"),
                      gd.node(f"{id(fn)}:grad", "x.grad", "output")]
            edges.append(gd.edge(str(id(fn)), f"{id(fn)}:grad", gradient_text(variable.grad)))
            continue
        nodes.append(gd.node(str(id(fn)), "\n".join([name, *saved[id(fn)]]), "grad"))
        grads = flowed.get(id(fn), ())
        for index, (next_fn, _) in enumerate(fn.next_functions):
            if next_fn is not None:
                edges.append(gd.edge(str(id(fn)), str(id(next_fn)), gradient_text(grads[index])))
    return gd.panel(title, nodes, edges)


def _is_scalar(value) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.dim() == 0)


def graph_drawings(x_value: float, shape: tuple) -> dict:
    """Two graphs of z_of drawn: the autograd graph running it recorded (walked by backward, gradients on its
    edges), and the FX graph torch.compile's Dynamo captures from the same Python (values as shapes)."""
    x = torch.full(shape, x_value, requires_grad=True)
    autograd_z = _autograd_panel("recorded while z_of ran; backward walks it left to right", z_of(x))
    torch._dynamo.reset()
    captured = _Captured()
    torch.compile(z_of, backend=captured)(torch.full(shape, x_value, requires_grad=True))
    dims = ",".join(map(str, shape))
    return {
        "torch_autograd_z": gd.drawing(
            "PyTorch: the autograd graph of z = 2x^2 + 5x", [autograd_z],
            f"Built by running z_of (define-by-run), anew on every call. Each edge carries the gradient that "
            f"flowed along it in z.backward(ones); the leaf x is one AccumulateGrad node reached twice, and it adds "
            f"its two incoming gradients into x.grad = {float(x.grad.flatten()[0]):g} (4x + 5)."),
        "torch_dynamo_z": gd.drawing(
            "PyTorch: the FX graph torch.compile captures of z", [_fx_panel(
                f"Dynamo's graph {len(captured.graphs)} of {len(captured.graphs)}, for x: f32[{dims}]",
                captured.graphs[0])],
            f"torch.compile(z_of) with a recording backend: Dynamo captured {len(captured.graphs)} graph from the "
            "same Python; the numbers 2, 2 and 5 are baked in as constants, as in TensorFlow's trace."),
    }
