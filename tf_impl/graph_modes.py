"""TensorFlow's graph modes, counted by running them; twin of torch_impl/graph_modes.py.

Staying static (AutoGraph turns a Python `if` on a tensor value into one conditional op; tf.cond by hand), going
dynamic (run_functions_eagerly takes the `if` call by call), and the tf.function pitfalls: a Python print, a Python
scalar argument, a new batch shape on the mlp's real epoch."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time

import tensorflow as tf

from shared import graph_drawing as gd
from shared.execution import default_execution
from shared.graph_lessons import DigitsEpoch, first_line, median_call_s, step_summary

# autograd.py's graph panels (private to the lesson) draw the graphs here too.
from tf_impl.autograd import _graph_panel, _signature_text, _value_text, branch, branch_cond


@contextlib.contextmanager
def _quiet():
    """TensorFlow warns about the retracing measured here ("5 out of the last 5 calls ..."): keep the console clean."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


# ---- going static and dynamic ------------------------------------------------------------------------------------

def _conditionals(concrete) -> list[str]:
    return [f"{op.name} = {op.type}" for op in concrete.graph.get_operations() if op.type in ("If", "StatelessIf")]


def _function_panel(title: str, function) -> dict:
    """A graph function of the library (a conditional's branch) as a panel, read from its FunctionDef: the
    arguments, the ops (inputs are "arg" or "op:output:index"; "^op" a control input) and what it returns."""
    nodes = [gd.node(arg.name, f"{arg.name}\nargument", "input") for arg in function.signature.input_arg]
    edges = []
    for op in function.node_def:
        if op.op == "Const":
            nodes.append(gd.node(op.name, f"{op.name}\nConst {_value_text(op.attr['value'].tensor)}", "const"))
        else:
            nodes.append(gd.node(op.name, f"{op.name}\n{op.op}"))
        for source in op.input:
            edges.append(gd.edge(source.lstrip("^").split(":")[0], op.name, "control" if source[0] == "^" else ""))
    for out in function.signature.output_arg:
        nodes.append(gd.node(f"return:{out.name}", f"returns\n{out.name}", "output"))
        edges.append(gd.edge(function.ret[out.name].split(":")[0], f"return:{out.name}"))
    return gd.panel(title, nodes, edges)


def going_static(x_value: float, shape: tuple) -> dict:
    """TensorFlow's own way, shown on `branch`: AutoGraph turns the Python `if` into one conditional op, so one
    graph (one trace) serves inputs of either sign; tf.cond writes the same op by hand; without AutoGraph, tracing
    refuses the Python `if` on a symbolic tensor, as torch.fx.symbolic_trace does."""
    signature = tf.TensorSpec(shape, tf.float32)
    fresh = tf.function(branch.python_function)
    for value in (x_value, -x_value):
        fresh(tf.fill(shape, value))
    concrete = fresh.get_concrete_function(signature)
    library = {f.signature.name: f for f in concrete.graph.as_graph_def().library.function}
    cond_ops = [op for op in concrete.graph.get_operations() if op.type in ("If", "StatelessIf")]
    branches = {attr: op.get_attr(attr).name for op in cond_ops for attr in ("then_branch", "else_branch")}
    panels = [_graph_panel(f"the one graph traced for x: {_signature_text(signature)}", concrete.graph,
                           concrete.outputs)]
    panels += [_function_panel(f"{attr} = {name} (held by {cond_ops[0].name})", library[name])
               for attr, name in branches.items()]
    explicit = tf.function(branch_cond.python_function)
    for value in (x_value, -x_value):
        explicit(tf.fill(shape, value))
    try:
        tf.function(branch.python_function, autograph=False)(tf.fill(shape, x_value))
        refusal = None
    except TypeError as error:  # OperatorNotAllowedInGraphError is a TypeError
        refusal = first_line(error)
    return {
        "branch": {"calls": 2, "traces": fresh.experimental_get_tracing_count(), "graphs": 1, "graph_breaks": 0,
                   "conditionals": _conditionals(concrete), "branch_functions": list(branches.values()),
                   "ops": len(concrete.graph.get_operations())},
        "branch_cond": {"calls": 2, "traces": explicit.experimental_get_tracing_count(),
                        "conditionals": _conditionals(explicit.get_concrete_function(signature))},
        "without_autograph": {"error": refusal},
        "drawings": {"tf_function_branch": gd.drawing(
            "TensorFlow: branch as one tf.function graph",
            panels,
            f"AutoGraph turned the Python if into {', '.join(_conditionals(concrete))}: "
            f"{fresh.experimental_get_tracing_count()} trace for inputs of both signs, both branches inside the "
            "graph as functions, chosen when the graph runs.")},
    }


def going_dynamic(x_value: float, shape: tuple, calls: int = 200) -> dict:
    """The same tf.function run eagerly (tf.config.run_functions_eagerly(True)): it never traces, the Python `if`
    runs on every call and takes one branch, and each call costs its ops one by one instead of one graph replay."""
    inputs = [tf.fill(shape, x_value), tf.fill(shape, -x_value)]
    ran: list[str] = []

    def noting(x):
        if tf.reduce_sum(x) > 0:
            ran.append("x * 2")
            return x * 2
        ran.append("-x")
        return -x

    traced, eager = tf.function(noting), tf.function(noting)
    for i in range(4):
        traced(inputs[i % 2])
    traced_ran = list(ran)
    ran.clear()
    graph_s = median_call_s(lambda i: branch(inputs[i % 2]).numpy(), calls)
    tf.config.run_functions_eagerly(True)
    try:
        for i in range(4):
            eager(inputs[i % 2])
        eager_ran = list(ran)
        eager_s = median_call_s(lambda i: branch(inputs[i % 2]).numpy(), calls)
    finally:
        tf.config.run_functions_eagerly(False)
    return {
        "calls": 4, "inputs": ["positive", "negative", "positive", "negative"],
        "graph": {"traces": traced.experimental_get_tracing_count(), "python_branches_ran": traced_ran},
        "eager": {"traces": eager.experimental_get_tracing_count(), "python_branches_ran": eager_ran},
        "time_per_call_s": {"tf.function": graph_s, "eager": eager_s}, "timed_calls": calls,
    }


# ---- the pitfalls, measured ------------------------------------------------------------------------------------

def _count_prints(x: tf.Tensor, calls: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        log = os.path.join(folder, "tf_print.txt")

        @tf.function
        def printing(x):
            print("Python print")
            tf.print("tf.print", output_stream=f"file://{log}")
            return x * 2

        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            for _ in range(calls):
                printing(x)
        with open(log) as lines:
            tf_prints = sum(1 for line in lines if line.strip() == "tf.print")
    return {"calls": calls, "traces": printing.experimental_get_tracing_count(),
            "python_print": captured.getvalue().count("Python print"), "tf_print": tf_prints}


def _train_step(digits: DigitsEpoch, variant: str) -> tuple:
    """A fresh mlp from the canonical weights, its optimizer, and the project's train step (tf_impl/train.py) as a
    variant runs it, with its trace counter: "input_signature" is the project's own (one tf.function whose
    signature leaves the batch dimension None: tf_impl/runtime.py), "no_signature" the same Python in a plain
    tf.function, "reduce_retracing" that with reduce_retracing=True."""
    task, runtime = digits.surface.task, digits.surface.runtime
    execution = default_execution("tf").replace(mode="function" if variant == "input_signature" else "eager")
    model = task.build(digits.spec)
    task.load_weights(model, digits.initial)
    step = task.make_train_step(model, task.make_optimizer(model, digits.spec), digits.spec, execution)
    if variant == "input_signature":
        return step, lambda: runtime.traces(step)
    function = tf.function(step, reduce_retracing=variant == "reduce_retracing")  # step: the Python, untraced
    return function, function.experimental_get_tracing_count


def _epoch(digits: DigitsEpoch, variant: str) -> dict:
    """One epoch of the mlp's training digits through a variant of the step, each step timed, each trace noted."""
    step, traces = _train_step(digits, variant)
    loader = digits.surface.task.make_loader(digits.train_set, digits.spec.batch_size, digits.spec.seed, True)
    times, traced_at, sizes = [], [], []
    for index, (images, labels) in enumerate(loader.batches(1), 1):
        before = traces()
        start = time.perf_counter()
        float(step(images, labels))  # the host copy waits for the step
        times.append(time.perf_counter() - start)
        sizes.append(int(labels.shape[0]))
        if traces() > before:
            traced_at.append(index)
    return step_summary(times, traced_at, sizes)


def _traces_over_batch_sizes(digits: DigitsEpoch, variant: str) -> int:
    loader = digits.surface.task.make_loader(digits.train_set, max(digits.batch_sizes), digits.spec.seed, True)
    images, labels = next(iter(loader.batches(1)))
    step, traces = _train_step(digits, variant)
    for size in digits.batch_sizes:
        float(step(images[:size], labels[:size]))
    return traces()


def pitfalls(x_value: float, shape: tuple, digits: DigitsEpoch) -> dict:
    """The tf.function pitfalls, each counted: a Python print runs once per trace while tf.print runs every call; a
    Python scalar argument retraces for every new value, a tensor does not; a new batch shape retraces unless the
    signature leaves the batch dimension None (on the mlp's real epoch, whose last batch is partial);
    reduce_retracing=True generalises the shape after the second one."""
    x = tf.fill(shape, x_value)
    values = [1.0, 2.0, 3.0, 4.0, 5.0]

    @tf.function
    def by_float(x, scale):
        return x * scale

    @tf.function
    def by_tensor(x, scale):
        return x * scale

    with _quiet():
        for value in values:
            by_float(x, value)
            by_tensor(x, tf.constant(value))
        return {
            "print": _count_prints(x, 3),
            "python_scalar": {"values": values, "traces": by_float.experimental_get_tracing_count()},
            "tensor_argument": {"values": values, "traces": by_tensor.experimental_get_tracing_count()},
            "batch_shape": {"steps": digits.steps, "batch_size": digits.spec.batch_size,
                            "last_batch": digits.last_batch,
                            "input_signature": _epoch(digits, "input_signature"),
                            "no_signature": _epoch(digits, "no_signature")},
            "new_batch_sizes": {"batch_sizes": list(digits.batch_sizes),
                                "default": _traces_over_batch_sizes(digits, "no_signature"),
                                "reduce_retracing": _traces_over_batch_sizes(digits, "reduce_retracing"),
                                "input_signature": _traces_over_batch_sizes(digits, "input_signature")},
        }
