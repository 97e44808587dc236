"""PyTorch's graph modes, counted by running them; twin of tf_impl/graph_modes.py.

Going static (torch.compile breaks the graph at a Python `if` on a tensor value, torch.fx and torch.export refuse it,
torch.cond keeps both branches in one graph that exports), staying dynamic (eager, its default), and the PyTorch
column of the tf.function pitfalls."""
from __future__ import annotations

import contextlib
import io
import logging
import time

import torch
import torch._dynamo
import torch.fx
from torch._dynamo.utils import counters

from shared import graph_drawing as gd
from shared.execution import default_execution
from shared.graph_lessons import DigitsEpoch, first_line, median_call_s, step_summary

# autograd.py's recording backend and FX panels (private to the lesson) capture and draw the graphs here too.
from torch_impl.autograd import _Captured, _fx_panel, _target_text, branch, branch_cond


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


# ---- going static and dynamic ------------------------------------------------------------------------------------

def _graph_break_reasons(before: dict) -> list[str]:
    """What Dynamo said about the graph breaks since `before` (its counters): the title and explanation of each."""
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
            "new_batch_sizes": sizes}
