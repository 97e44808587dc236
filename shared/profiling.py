"""Where a train step's time goes, framework-free: the categories both sides' profiles are sorted into, the
attribution of a step's wall time to them, and a Chrome trace writer. Each side's profile module (tf_impl/profile.py,
torch_impl/profile.py) reads its own profiler's events and names each kernel's category; everything after that is
here, so both sides are counted by one rule."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shared.atomic import write_atomic

OUTSIDE = "outside any kernel"
# A compiler's kernels keep no layer names: what it fuses is one region, its convolutions one category.
COMPILED_CONVOLUTIONS = "convolutions, compiled (forward and backward)"
# The order of the tables and of the stacked bars.
CATEGORIES = ("convolution forward", "convolution backward", "transposed convolution", "batch norm",
              "activations and elementwise", "pooling", "concatenation and copies", "loss", "optimizer update",
              COMPILED_CONVOLUTIONS, "compiled (fused) region", OUTSIDE)


@dataclass(frozen=True)
class Kernel:
    """One op as the profiler recorded it: microseconds from the trace's origin, and the category its side named."""

    start_us: float
    end_us: float
    category: str
    name: str
    thread: str = "main"
    op: str = ""  # what the top-ops table groups by (TensorFlow: the op type; PyTorch: the op); the name if empty


def attribute(kernels: list[Kernel], windows: list[tuple[float, float]]) -> list[dict[str, float]]:
    """Per step window (start_us, end_us): milliseconds per category. Where kernels overlap (two threads), each
    instant is shared out equally among the kernels running then, so the categories plus the time outside any
    kernel add up to the window exactly, however the kernels overlap."""
    steps = []
    for begin, end in windows:
        inside = [kernel for kernel in kernels if kernel.end_us > begin and kernel.start_us < end]
        changes = sorted([(max(k.start_us, begin), 1, k.category) for k in inside]
                         + [(min(k.end_us, end), -1, k.category) for k in inside])
        totals, running, now = dict.fromkeys(CATEGORIES, 0.0), dict.fromkeys(CATEGORIES, 0), begin
        for time, change, category in [*changes, (end, 0, OUTSIDE)]:
            width, active = time - now, sum(running.values())
            if width > 0:
                if not active:
                    totals[OUTSIDE] += width
                for name, count in running.items():
                    totals[name] += width * count / active if count else 0.0
            running[category] += change
            now = time
        steps.append({category: microseconds / 1000 for category, microseconds in totals.items()})
    return steps


def mean_step(steps: list[dict[str, float]]) -> dict[str, float]:
    """The categories' milliseconds averaged over the profiled steps."""
    return {category: sum(step[category] for step in steps) / len(steps) for category in CATEGORIES}


def top_kernels(kernels: list[Kernel], windows: list[tuple[float, float]], count: int = 12) -> list[dict]:
    """The ops that took most time inside the windows, in milliseconds per step, by op and category (one op type,
    Mul say, is batch norm in one layer and the loss in another)."""
    totals: dict[str, list] = {}
    for kernel in kernels:
        if any(kernel.start_us >= begin and kernel.end_us <= end for begin, end in windows):
            entry = totals.setdefault((kernel.op or kernel.name, kernel.category), [0.0, 0])
            entry[0] += (kernel.end_us - kernel.start_us) / 1000
            entry[1] += 1
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])[:count]
    return [{"op": name, "ms_per_step": total / len(windows), "calls_per_step": calls / len(windows),
             "category": category} for (name, category), (total, calls) in ranked]


def write_chrome_trace(kernels: list[Kernel], windows: list[tuple[float, float]], path: Path,
                       process: str) -> Path:
    """A Chrome trace (chrome://tracing, ui.perfetto.dev) of the profiled steps: one row per thread, each op a
    complete event with its category, and the steps on a row of their own."""
    events = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": process}}]
    events += [{"name": f"step {index}", "ph": "X", "pid": 1, "tid": "steps", "ts": begin, "dur": end - begin,
                "cat": "step"} for index, (begin, end) in enumerate(windows)]
    events += [{"name": kernel.name, "ph": "X", "pid": 1, "tid": kernel.thread, "ts": kernel.start_us,
                "dur": kernel.end_us - kernel.start_us, "cat": kernel.category} for kernel in kernels]
    return write_atomic(path, json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
