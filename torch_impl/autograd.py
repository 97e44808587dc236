"""Tensors and automatic differentiation in PyTorch: the graph is built by running the code (define-by-run), and
captured into a static graph when asked (torch.compile, torch.export, torch.cond); twin of tf_impl/autograd.py."""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import time

import torch
import torch._dynamo
import torch.fx

from shared import graph_drawing as gd
from shared.graph_lessons import DigitsEpoch, first_line, median_call_s, step_summary
from shared.lesson_parts import autograd_lesson
from shared.tasks import AutogradSpec

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
    is kept alive (a freed grad_fn's id could be handed to the next one) and its distinct grad_fn objects counted."""
    results = [z_of(torch.full(shape, x_value, requires_grad=True)) for shape in shapes]
    graphs = {id(z.grad_fn) for z in results}  # all still alive: distinct ids are distinct graphs
    return {"calls": len(shapes), "graphs_built": len(graphs), "traces": 0}


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


@contextlib.contextmanager
def _quiet():
    """torch.compile and torch.export log warnings, and print the graph they gave up on, while they fail on purpose
    here: keep the console clean (exceptions still propagate)."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


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


def _graph_break_reasons(before: dict) -> list[str]:
    """What Dynamo said about the graph breaks since `before` (its counters): the title and explanation of each."""
    from torch._dynamo.utils import counters

    reasons = []
    for key in ("graph_break", "unimplemented"):
        for message, count in counters[key].items():
            if count > before.get(key, {}).get(message, 0):
                lines = [line.strip() for line in message.splitlines() if line.strip()]
                explanation = next((line[len("Explanation:"):].strip() for line in lines
                                    if line.startswith("Explanation:")), "")
                reasons.append(f"{lines[0]}: {explanation}" if explanation else lines[0])
    return list(dict.fromkeys(reasons))


def _counters() -> dict:
    from torch._dynamo.utils import counters

    return {key: dict(counters[key]) for key in ("graph_break", "unimplemented")}


class _Branching(torch.nn.Module):
    """torch.export takes a module: this one calls a branch function."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


def going_static(x_value: float, shape: tuple) -> dict:
    """PyTorch going static on `branch` (a Python `if` on a tensor value): torch.compile's Dynamo breaks the graph
    at the `if` (graphs, breaks and its stated reason counted), torch.fx.symbolic_trace and torch.export refuse it,
    and torch.cond holds both branches in one graph that exports (the twin of TensorFlow's conditional op)."""
    positive, negative = torch.full(shape, x_value), torch.full(shape, -x_value)
    with _quiet():
        torch._dynamo.reset()
        before = _counters()
        explained = torch._dynamo.explain(branch)(positive)
        reasons = _graph_break_reasons(before)
        torch._dynamo.reset()
        captured = _Captured()
        compiled = torch.compile(branch, backend=captured)
        captured_after = []
        for value in (positive, negative, positive):
            compiled(value)
            captured_after.append(len(captured.graphs))
        try:
            torch.fx.symbolic_trace(branch)
            fx_refusal = None
        except Exception as error:  # torch.fx.proxy.TraceError
            fx_refusal = first_line(error)
        try:
            torch.export.export(_Branching(branch), (positive,))
            export_refusal = None
        except Exception as error:  # GuardOnDataDependentSymNode, or UserError in strict mode
            export_refusal = first_line(error)
        torch._dynamo.reset()
        cond_explained = torch._dynamo.explain(branch_cond)(positive)
        exported = torch.export.export(_Branching(branch_cond), (positive,))
    program = exported.graph_module
    cond_nodes = [n for n in program.graph.nodes if n.op == "call_function" and _target_text(n.target) == "cond"]
    subgraphs = [arg.target for n in cond_nodes for arg in n.args[1:3]]
    dims = ",".join(map(str, shape))
    line = explained.break_reasons[0].user_stack[-1] if explained.break_reasons else None
    break_text = reasons[0] if reasons else (explained.break_reasons[0].reason if explained.break_reasons else "")
    calls = ["positive input, x * 2", "negative input, -x", "positive input again"]
    captured_by = [next(c for c, count in enumerate(captured_after) if count > k) for k in range(len(captured.graphs))]
    dynamo_panels = [_fx_panel(f"graph {k + 1}, captured in call {captured_by[k] + 1} ({calls[captured_by[k]]}): "
                               + ("the code up to the break" if k == 0 else "the code after the break"), graph)
                     for k, graph in enumerate(captured.graphs)]
    if dynamo_panels and line:  # where Python takes over: the break after the first graph
        dynamo_panels[0]["nodes"].append(gd.node("break", f"graph break: Python runs\n{line.line}", "break"))
        dynamo_panels[0]["edges"].append(gd.edge("output", "break", "bool()"))
    return {
        "compile": {
            "graphs": explained.graph_count, "graph_breaks": explained.graph_break_count,
            "reason": break_text,
            "explain_reason": explained.break_reasons[0].reason if explained.break_reasons else "",
            "where": f"{'/'.join(line.filename.split('/')[-2:])}:{line.lineno}: {line.line}" if line else "",
            "calls": calls, "graphs_captured_after_each_call": captured_after,
        },
        "symbolic_trace": {"error": fx_refusal},
        "export": {"error": export_refusal},
        "cond": {
            "graphs": cond_explained.graph_count, "graph_breaks": cond_explained.graph_break_count,
            "exported": True, "branch_graphs": subgraphs,
            "ops": [_target_text(n.target) for n in program.graph.nodes if n.op == "call_function"],
            "positive_input": exported.module()(positive).tolist(),
            "negative_input": exported.module()(negative).tolist(),
        },
        "drawings": {
            "torch_dynamo_branch": gd.drawing(
                "PyTorch: torch.compile of branch breaks the graph", dynamo_panels,
                f"torch._dynamo.explain: {explained.graph_count} graphs, {explained.graph_break_count} graph break "
                f"at the Python if. Dynamo: \"{break_text}\" Calls with a positive, a negative and a positive input "
                f"left {', '.join(map(str, captured_after))} captured graphs: Python picks the branch between them."),
            "torch_export_cond": gd.drawing(
                "PyTorch: torch.cond, exported as one graph", [_fx_panel(
                    f"torch.export.export of branch_cond, x: f32[{dims}]", program)] + [
                    _fx_panel(f"{name} (held by {cond_nodes[0].name})", getattr(program, name)) for name in subgraphs],
                f"torch.cond holds both branches: torch._dynamo.explain finds {cond_explained.graph_count} graph and "
                f"{cond_explained.graph_break_count} breaks, and torch.export.export succeeds; the branch is chosen "
                "when the graph runs, as in TensorFlow's StatelessIf."),
        },
    }


def going_dynamic(x_value: float, shape: tuple, calls: int = 200) -> dict:
    """PyTorch is dynamic by default: nothing is traced, the Python `if` runs on every call and takes one branch.
    torch.compile's graphs (a recording backend, no C++ compiler) still leave the `if` to Python at the break."""
    inputs = [torch.full(shape, x_value), torch.full(shape, -x_value)]
    ran: list[str] = []

    def noting(x):
        if x.sum() > 0:
            ran.append("x * 2")
            return x * 2
        ran.append("-x")
        return -x

    for i in range(4):
        noting(inputs[i % 2])
    eager_ran = list(ran)
    ran.clear()
    torch._dynamo.reset()
    captured = _Captured()
    compiled = torch.compile(noting, backend=captured)
    for i in range(4):
        compiled(inputs[i % 2])
    compiled_ran = list(ran)
    eager_s = median_call_s(lambda i: branch(inputs[i % 2]).tolist(), calls)
    timed = torch.compile(branch, backend=_Captured())
    compile_s = median_call_s(lambda i: timed(inputs[i % 2]).tolist(), calls)
    return {
        "calls": 4, "inputs": ["positive", "negative", "positive", "negative"],
        "eager": {"traces": 0, "python_branches_ran": eager_ran},
        "compile": {"graphs": len(captured.graphs), "python_branches_ran": compiled_ran},
        "time_per_call_s": {"eager": eager_s, "torch.compile": compile_s}, "timed_calls": calls,
    }


# ---- the pitfalls, the PyTorch column ----------------------------------------------------------------------------

def _count_prints(x: torch.Tensor, calls: int) -> dict:
    def printing(x):
        print("Python print")
        return x * 2

    eager_out, compiled_out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(eager_out):
        for _ in range(calls):
            printing(x)
    torch._dynamo.reset()
    captured, before = _Captured(), _counters()
    compiled = torch.compile(printing, backend=captured)
    with contextlib.redirect_stdout(compiled_out):
        for _ in range(calls):
            compiled(x)
    breaks = sum(count - before["graph_break"].get(message, 0) for message, count in _counters()["graph_break"].items())
    return {"calls": calls, "eager": {"python_print": eager_out.getvalue().count("Python print"), "traces": 0},
            "compile": {"python_print": compiled_out.getvalue().count("Python print"), "graphs": len(captured.graphs),
                        "graph_breaks": breaks, "reasons": _graph_break_reasons(before)}}


def _compiles(call, values, **options) -> int:
    torch._dynamo.reset()
    captured = _Captured()

    def scaled(x, scale):
        return x * scale

    compiled = torch.compile(scaled, backend=captured, **options)
    for value in values:
        call(compiled, value)
    return len(captured.graphs)


class _BatchMarkedDynamic(torch.nn.Module):
    """Marks the batch dimension of the images dynamic just before the compiled model sees them (the step copies
    its inputs first, so a mark made outside it would be lost): the twin of an input signature with batch None."""

    def __init__(self, compiled: torch.nn.Module):
        super().__init__()
        self.compiled = compiled

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        torch._dynamo.mark_dynamic(images, 0)
        return self.compiled(images)


def _train_step(digits: DigitsEpoch, variant: str) -> tuple:
    """A fresh mlp from the canonical weights, its optimizer and the project's eager train step
    (torch_impl/train.py), the model compiled or not: "eager", "compile" (torch.compile's default: a new shape
    recompiles, dynamic from the second), "compile_static" (dynamic=False), "compile_marked_dynamic" (the batch
    dimension marked dynamic on every batch). Returns the step and its graph counter."""
    from shared.execution import default_execution

    task = digits.surface.task
    model = task.build(digits.spec)
    task.load_weights(model, digits.initial)
    optimizer = task.make_optimizer(model, digits.spec)
    torch._dynamo.reset()
    captured = _Captured()
    network = model if variant == "eager" else torch.compile(
        model, backend=captured, **({"dynamic": False} if variant == "compile_static" else {}))
    if variant == "compile_marked_dynamic":
        network = _BatchMarkedDynamic(network)
    step = task.make_train_step(network, optimizer, digits.spec, default_execution("torch"))
    return step, lambda: len(captured.graphs)


def _epoch(digits: DigitsEpoch, variant: str) -> dict:
    """One epoch of the mlp's training digits through the step, each step timed, each compile noted; the losses
    are kept, so the eager side's autograd graphs (one per step) can be counted as distinct objects."""
    step, compiles = _train_step(digits, variant)
    loader = digits.surface.task.make_loader(digits.train_set, digits.spec.batch_size, digits.spec.seed, True)
    loader.sampler.set_epoch(1)
    times, compiled_at, sizes, losses = [], [], [], []
    for index, (images, labels) in enumerate(loader, 1):
        before = compiles()
        start = time.perf_counter()
        loss = step(images, labels)
        loss.item()  # the host copy waits for the step
        times.append(time.perf_counter() - start)
        sizes.append(len(labels))
        losses.append(loss)
        if compiles() > before:
            compiled_at.append(index)
    summary = step_summary(times, compiled_at, sizes)
    if variant == "eager":
        summary.update(autograd_graphs=len({id(loss.grad_fn) for loss in losses}), first_step_s=times[0])
    return summary


def _compiles_over_batch_sizes(digits: DigitsEpoch, variant: str) -> int:
    loader = digits.surface.task.make_loader(digits.train_set, max(digits.batch_sizes), digits.spec.seed, True)
    loader.sampler.set_epoch(1)
    images, labels = next(iter(loader))
    step, compiles = _train_step(digits, variant)
    for size in digits.batch_sizes:
        step(images[:size], labels[:size]).item()
    return compiles()


def pitfalls(x_value: float, shape: tuple, digits: DigitsEpoch) -> dict:
    """The PyTorch column of the tf.function pitfalls, counted: eager PyTorch traces nothing (a print runs every
    call); torch.compile recompiles for a new Python scalar or a new shape until it marks it dynamic (by default
    from the second value), never with dynamic=True or mark_dynamic, every time with dynamic=False."""
    x = torch.full(shape, x_value)
    values = [1.0, 2.0, 3.0, 4.0, 5.0]

    def by_float(compiled, value):
        return compiled(x, value)

    def by_tensor(compiled, value):
        return compiled(x, torch.tensor(value))

    with _quiet():
        printed = _count_prints(x, 3)
        scalar = {"values": values, "eager": {"traces": 0}, "compile": {"compiles": _compiles(by_float, values)},
                  "compile_static": {"compiles": _compiles(by_float, values, dynamic=False)},
                  "compile_dynamic": {"compiles": _compiles(by_float, values, dynamic=True)}}
        tensor = {"values": values, "eager": {"traces": 0}, "compile": {"compiles": _compiles(by_tensor, values)}}
        eager = _epoch(digits, "eager")
        batch_shape = {"steps": digits.steps, "batch_size": digits.spec.batch_size, "last_batch": digits.last_batch,
                       "eager": {**eager, "traces": 0},
                       "compile": _epoch(digits, "compile"),
                       "compile_marked_dynamic": _epoch(digits, "compile_marked_dynamic")}
        sizes = {"batch_sizes": list(digits.batch_sizes), "eager": 0,
                 **{variant: _compiles_over_batch_sizes(digits, variant)
                    for variant in ("compile", "compile_static", "compile_marked_dynamic")}}
    return {"print": printed, "python_scalar": scalar, "tensor_argument": tensor, "batch_shape": batch_shape,
            "reduce_retracing": sizes}


def lesson(spec: AutogradSpec) -> dict:
    """Everything the autograd task reports, from this module's functions (the keys: shared/lesson_parts.py)."""
    return autograd_lesson(spec, sys.modules[__name__])
