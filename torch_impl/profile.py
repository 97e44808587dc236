"""Where PyTorch's train step goes: torch.profiler around a few steps, each op sorted into the categories both
sides share (shared/profiling.py); twin of tf_impl/profile.py. Only a --profile row runs this: the timed rows never
see the profiler."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from torch.profiler import ProfilerActivity, profile, record_function

from shared.profiling import COMPILED_CONVOLUTIONS, Kernel, attribute, top_kernels, write_chrome_trace
from shared.quiet import native_stderr_closed

STEP = "twinnets train step"
# An op's own name (the outermost ATen op or autograd node of the step) -> its category.
FORWARD = {"aten::conv2d": "convolution forward", "aten::convolution": "convolution forward",
           "aten::conv_transpose2d": "transposed convolution", "aten::batch_norm": "batch norm",
           "aten::relu": "activations and elementwise", "aten::max_pool2d": "pooling",
           "aten::cat": "concatenation and copies", "aten::to": "concatenation and copies",
           "aten::copy_": "concatenation and copies", "aten::contiguous": "concatenation and copies",
           "aten::_to_copy": "concatenation and copies", "loss": "loss"}
BACKWARD = {"NativeBatchNormBackward0": "batch norm", "ReluBackward0": "activations and elementwise",
            "ThresholdBackward0": "activations and elementwise", "MaxPool2DWithIndicesBackward0": "pooling",
            "CatBackward0": "concatenation and copies", "torch::autograd::AccumulateGrad": "concatenation and copies",
            "ToCopyBackward0": "concatenation and copies"}
AUTOGRAD = re.compile(r"autograd::engine::evaluate_function: (.+)")
COMPILED = re.compile(r"^Torch-Compiled Region|CompiledFunction")  # torch.compile's forward and backward
CONVOLUTION = re.compile(r"convolution")  # aten::convolution(_backward), mkldnn::_convolution_pointwise, ...


def profile_steps(step: Callable[[], float], steps: int, out_dir: Path) -> dict:
    """`steps` calls of the (warmed-up) step under torch.profiler; per step, milliseconds per category, and the
    trace for chrome://tracing or Perfetto."""
    profiler = profile(activities=[ProfilerActivity.CPU])
    with native_stderr_closed():  # Kineto's start line
        profiler.start()
    try:
        for _ in range(steps):
            with record_function(STEP):
                step()
    finally:
        with native_stderr_closed():  # and its stop lines
            profiler.stop()
    kernels, windows = step_kernels(profiler.events())
    trace = write_chrome_trace(kernels, windows, Path(out_dir) / "trace.json", "PyTorch")
    return {"steps": attribute(kernels, windows), "window_ms": [(end - begin) / 1000 for begin, end in windows],
            "top_ops": top_kernels(kernels, windows), "trace": str(trace), "profiler": "torch.profiler"}


def step_kernels(trace) -> tuple[list[Kernel], list[tuple[float, float]]]:
    """The ops directly inside each step (their children are inside them), and the steps' windows. A backward node
    takes the category of the forward op that made it (autograd's sequence number links the two), so a transposed
    convolution's backward and the loss's gradient are counted where their forward is. A torch.compile region is
    one fused region, except for the convolutions it calls."""
    events = sorted(trace, key=lambda event: event.time_range.start)
    windows = [(event.time_range.start, event.time_range.end) for event in events if event.name == STEP]
    forward_of = {}
    for event in events:  # the op that makes a node is the last one to see its number (sequence_nr peeks ahead)
        root = _root_name(event)
        if event.sequence_nr >= 0 and not AUTOGRAD.match(root) and root != STEP:
            forward_of[event.sequence_nr] = root
    kernels = []
    for event in events:
        parent = event.cpu_parent
        if parent is None or parent.name != STEP:
            continue
        if COMPILED.search(event.name):
            kernels += _compiled_region(event)
        else:
            kernels.append(Kernel(event.time_range.start, event.time_range.end, event_category(event, forward_of),
                                  event.name, str(event.thread)))
    return kernels, windows


def _compiled_region(region) -> list[Kernel]:
    """A torch.compile region (forward or backward): its convolutions, and the rest of it as the fused region."""
    convolutions, stack = [], list(region.cpu_children)
    while stack:
        event = stack.pop()
        if CONVOLUTION.search(event.name):
            convolutions.append(event)
        else:
            stack += event.cpu_children
    kernels, start = [], region.time_range.start
    for conv in sorted(convolutions, key=lambda event: event.time_range.start):
        kernels.append(Kernel(start, conv.time_range.start, "compiled (fused) region", region.name,
                              str(region.thread)))
        kernels.append(Kernel(conv.time_range.start, conv.time_range.end, COMPILED_CONVOLUTIONS, conv.name,
                              str(region.thread)))
        start = conv.time_range.end
    kernels.append(Kernel(start, region.time_range.end, "compiled (fused) region", region.name, str(region.thread)))
    return [kernel for kernel in kernels if kernel.end_us > kernel.start_us]


def _root_name(event) -> str:
    """The outermost op (below the step) an op belongs to: aten::convolution inside aten::conv_transpose2d is the
    transposed convolution, an op inside record_function("loss") is the loss."""
    while event.cpu_parent is not None and event.cpu_parent.name != STEP:
        event = event.cpu_parent
    return event.name


def event_category(event, forward_of: dict[int, str]) -> str:
    """The category of one profiler event by its name: an ATen op by itself, an autograd node by the forward op
    that made it (forward_of: sequence number -> that op); the twin of tf_impl/profile.py's op_category."""
    name = event.name
    if name.startswith("Optimizer."):
        return "optimizer update"
    node = AUTOGRAD.match(name)
    if node is None:
        return FORWARD.get(name, "activations and elementwise")
    if node.group(1) in BACKWARD:
        return BACKWARD[node.group(1)]
    forward = FORWARD.get(forward_of.get(event.sequence_nr, ""), "activations and elementwise")
    return {"convolution forward": "convolution backward"}.get(forward, forward)
