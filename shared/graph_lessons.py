"""The framework-free parts of the autograd task's graph lessons, called by both sides (tf_impl/graph_modes.py,
torch_impl/graph_modes.py) and by the report: what the retracing pitfall runs on (the mlp's real training epoch,
built by harness/tasks/digits.py), timing a call, quoting an error in one line, and the table of tf.function
pitfalls with the PyTorch column beside it."""
from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

from shared import tables
from shared.data.batches import LabelledImages

# The batch sizes of the "every new batch size" row: a full batch of the mlp, the epoch's partial last batch
# (12942 digits in batches of 200 leave 142), and three more.
RETRACE_BATCH_SIZES = (200, 142, 100, 64, 10)


@dataclass(frozen=True)
class DigitsEpoch:
    """What the batch-shape pitfall runs: the mlp's spec, the side's mlp surface (its task and runtime), the
    canonical initial weights, and the real training digits, normalised as the mlp trains on them."""

    spec: Any  # MLPSpec
    surface: Any  # harness.surface.Surface of the side, for the mlp
    initial: dict
    train_set: LabelledImages
    batch_sizes: tuple = RETRACE_BATCH_SIZES

    @property
    def steps(self) -> int:
        return -(-len(self.train_set) // self.spec.batch_size)

    @property
    def last_batch(self) -> int:
        return len(self.train_set) - (self.steps - 1) * self.spec.batch_size


def autograd_nodes(grad_fn) -> int:
    """The nodes of a PyTorch autograd graph (grad_fn nodes and the AccumulateGrad leaves), walked back from a
    tensor's grad_fn through next_functions: plain attribute access, so no framework is imported here."""
    seen, stack = set(), [grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


def median_call_s(call: Callable[[int], object], calls: int, warmup: int = 5) -> float:
    """The median wall time of call(i) over `calls` calls, after `warmup` untimed ones; call must return only
    once its result is computed (copy it to the host)."""
    for i in range(warmup):
        call(i)
    times = []
    for i in range(calls):
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def first_line(error: BaseException, limit: int = 220) -> str:
    """An exception as one quotable line: its type and the first non-empty line of its message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    sentence = line.find(". ")
    text = f"{type(error).__name__}: {line[:sentence + 1] if sentence > 0 else line}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def step_summary(times: list[float], traced_at: list[int], sizes: list[int]) -> dict:
    """One epoch of timed steps: which steps traced (or compiled), how long each of those took, and the median
    of the others (the replayed graph)."""
    replayed = [t for i, t in enumerate(times, 1) if i not in traced_at]
    return {"steps": len(times), "traces": len(traced_at), "trace_steps": traced_at,
            "trace_batch_sizes": [sizes[i - 1] for i in traced_at],
            "trace_step_s": [times[i - 1] for i in traced_at],
            "step_s_median": statistics.median(replayed) if replayed else None,
            "first_batch": sizes[0] if sizes else None, "last_batch": sizes[-1] if sizes else None}


# ---- the pitfall table ---------------------------------------------------------------------------------------

def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"


def _trace_times(run: dict, word: str) -> str:
    steps = ", ".join(f"step {s} (batch {b}) {_s(t)}" for s, b, t in
                      zip(run["trace_steps"], run["trace_batch_sizes"], run["trace_step_s"]))
    return f"{run['traces']} {word}{'s' if run['traces'] != 1 else ''}: {steps}; other steps {_s(run['step_s_median'])}"


def pitfall_table(frameworks: dict) -> list[list[str]]:
    """The rows of the tf.function pitfall table, from each side's measured `pitfalls` (a side that did not run
    gets "not run"): the case, what TensorFlow's tf.function does, what PyTorch eager does, what torch.compile
    does. The first row is the header."""
    tf, torch = frameworks.get("tf", {}).get("pitfalls"), frameworks.get("torch", {}).get("pitfalls")
    rows = [["case", "TensorFlow: tf.function", "PyTorch: eager", "PyTorch: torch.compile"]]

    def row(case: str, tf_cell: Callable[[dict], str], eager_cell: Callable[[dict], str],
            compile_cell: Callable[[dict], str]) -> None:
        rows.append([case, tf_cell(tf) if tf else "not run", eager_cell(torch) if torch else "not run",
                     compile_cell(torch) if torch else "not run"])

    p = (tf or torch)["print"]
    row(f"Python `print` (and `tf.print`) inside, {p['calls']} calls",
        lambda t: f"print ran {t['print']['python_print']}x (once per trace: {t['print']['traces']} trace); "
                  f"tf.print ran {t['print']['tf_print']}x (every call)",
        lambda t: f"print ran {t['print']['eager']['python_print']}x (every call; nothing is traced)",
        lambda t: f"print ran {t['print']['compile']['python_print']}x: Dynamo breaks the graph at the print "
                  f"({t['print']['compile']['graph_breaks']} break, {t['print']['compile']['graphs']} graph)")
    s = (tf or torch)["python_scalar"]
    row(f"a Python float argument, {len(s['values'])} values",
        lambda t: f"{t['python_scalar']['traces']} traces (one per value)",
        lambda t: f"{t['python_scalar']['eager']['traces']} traces",
        lambda t: f"{t['python_scalar']['compile']['compiles']} compiles (default: the 2nd value makes it dynamic); "
                  f"dynamic=False: {t['python_scalar']['compile_static']['compiles']}; "
                  f"dynamic=True: {t['python_scalar']['compile_dynamic']['compiles']}")
    row("the same values as a tensor argument",
        lambda t: f"{t['tensor_argument']['traces']} trace",
        lambda t: f"{t['tensor_argument']['eager']['traces']} traces",
        lambda t: f"{t['tensor_argument']['compile']['compiles']} compile")
    b = (tf or torch)["batch_shape"]
    epoch = f"{b['steps']} batches of {b['batch_size']}, the last of {b['last_batch']}"
    row(f"one mlp epoch on the training digits ({epoch}); batch dimension left open",
        lambda t: "the project's step (input_signature, batch None): "
                  + _trace_times(t["batch_shape"]["input_signature"], "trace"),
        lambda t: f"{t['batch_shape']['eager']['traces']} traces; {t['batch_shape']['eager']['autograd_graphs']} "
                  f"autograd graphs, one per step; first step {_s(t['batch_shape']['eager']['first_step_s'])}, "
                  f"median {_s(t['batch_shape']['eager']['step_s_median'])}",
        lambda t: "model marked dynamic (mark_dynamic on the batch dimension): "
                  + _trace_times(t["batch_shape"]["compile_marked_dynamic"], "compile"))
    row("the same epoch, no shape left open",
        lambda t: "tf.function without input_signature: " + _trace_times(t["batch_shape"]["no_signature"], "trace"),
        lambda t: "(the same: nothing is traced)",
        lambda t: "torch.compile default: " + _trace_times(t["batch_shape"]["compile"], "compile"))
    r = (tf or torch)["new_batch_sizes"]
    sizes = ", ".join(map(str, r["batch_sizes"]))
    row(f"{len(r['batch_sizes'])} batch sizes ({sizes}), the project's step on digits",
        lambda t: f"{t['new_batch_sizes']['default']} traces; reduce_retracing=True: "
                  f"{t['new_batch_sizes']['reduce_retracing']} (the 2nd shape traces a generalised, None-batch "
                  f"graph); input_signature: {t['new_batch_sizes']['input_signature']}",
        lambda t: f"{t['new_batch_sizes']['eager']} traces",
        lambda t: f"{t['new_batch_sizes']['compile']} compiles (default: automatic dynamic shapes after the 2nd); "
                  f"dynamic=False: {t['new_batch_sizes']['compile_static']}; "
                  f"mark_dynamic: {t['new_batch_sizes']['compile_marked_dynamic']}")
    return rows


def markdown(rows: list[list[str]]) -> str:
    """A markdown table; the first row is the header."""
    cells = [[cell.replace("|", "\\|") for cell in row] for row in rows]
    return tables.markdown(cells[0], cells[1:])


# ---- the report's sections ---------------------------------------------------------------------------------------

def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def code(text: str) -> str:
    """A markdown code span that may itself hold backticks (a fence longer than any run inside it)."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest else f"`{text}`"


def _ran(branches: list[str]) -> str:
    return ", ".join(f"`{b}`" for b in branches) or "nothing"


def static_lines(frameworks: dict) -> list[str]:
    """Going static, in words, from what each side measured on `branch` (a Python if on a tensor value)."""
    lines = []
    tf = frameworks.get("tf", {}).get("static")
    if tf:
        b = tf["branch"]
        lines += [f"- TensorFlow, `tf.function(branch)`: {b['traces']} trace for {b['calls']} calls with inputs of "
                  f"both signs, {b['graphs']} graph, {b['graph_breaks']} graph breaks; AutoGraph turned the `if` into "
                  f"`{', '.join(b['conditionals'])}`, holding the branch functions {', '.join(b['branch_functions'])}. "
                  f"`tf.cond` written by hand gives the same op (`{', '.join(tf['branch_cond']['conditionals'])}`, "
                  f"{tf['branch_cond']['traces']} trace).",
                  f"- TensorFlow without AutoGraph (`autograph=False`) refuses the `if`: "
                  f"{code(tf['without_autograph']['error'])}"]
    torch = frameworks.get("torch", {}).get("static")
    if torch:
        c, cond = torch["compile"], torch["cond"]
        lines += [f"- PyTorch, `torch.compile(branch)` (Dynamo, `torch._dynamo.explain`): {c['graphs']} graphs, "
                  f"{c['graph_breaks']} graph break at {code(c['where'])}. Dynamo's reason: \"{c['reason']}\" "
                  f"(explain's own record: `{c['explain_reason']}`). Compiled and called with a positive, a negative "
                  f"and a positive input it holds {', '.join(map(str, c['graphs_captured_after_each_call']))} "
                  "graphs: one up to the break, one per branch after it, Python choosing between them.",
                  f"- `torch.fx.symbolic_trace(branch)` refuses the `if`: {code(torch['symbolic_trace']['error'])}",
                  f"- `torch.export.export` of it refuses too: {code(torch['export']['error'])}",
                  f"- `torch.cond` (`branch_cond`), the twin of AutoGraph's conditional: {cond['graphs']} graph, "
                  f"{cond['graph_breaks']} graph breaks; exported as one graph with the ops "
                  f"{', '.join(f'`{op}`' for op in cond['ops'])}, holding {', '.join(cond['branch_graphs'])}; the "
                  f"exported program gives {cond['positive_input'][0][0]:g} for x = 2 and "
                  f"{cond['negative_input'][0][0]:g} for x = -2."]
    return lines


def dynamic_lines(frameworks: dict) -> list[str]:
    """Going dynamic, in words: which Python branches ran on four calls, and the time per call."""
    lines = []
    tf = frameworks.get("tf", {}).get("dynamic")
    if tf:
        t, graph, eager = tf["time_per_call_s"], tf["graph"], tf["eager"]
        lines += [f"- TensorFlow, {tf['calls']} calls ({', '.join(tf['inputs'])}) of one `tf.function`: traced, "
                  f"{graph['traces']} trace, and the Python branches ran {_ran(graph['python_branches_ran'])} (both, "
                  "once, while tracing; never again). With `tf.config.run_functions_eagerly(True)`: "
                  f"{eager['traces']} traces, and they ran {_ran(eager['python_branches_ran'])} (the `if` taken per "
                  f"call). Time per call of `branch`, median of {tf['timed_calls']}: traced {_us(t['tf.function'])}, "
                  f"eagerly {_us(t['eager'])}."]
    torch = frameworks.get("torch", {}).get("dynamic")
    if torch:
        t, eager, compiled = torch["time_per_call_s"], torch["eager"], torch["compile"]
        lines += [f"- PyTorch, the same {torch['calls']} calls: eager (its default) traces nothing and the branches "
                  f"ran {_ran(eager['python_branches_ran'])}; under `torch.compile` too "
                  f"({_ran(compiled['python_branches_ran'])}: the `if` stays Python, at the graph break). Time per "
                  f"call of `branch`, median of {torch['timed_calls']}: eager {_us(t['eager'])}, torch.compile "
                  f"{_us(t['torch.compile'])} (a recording backend that runs the captured graphs as Python)."]
    return lines
