"""Where TensorFlow's train step goes: tf.profiler.experimental around a few steps, each op sorted into the
categories both sides share (shared/profiling.py); twin of torch_impl/profile.py. Only a --profile row runs this:
the timed rows never see the profiler.

The profiler writes an XSpace protobuf (`*.xplane.pb`, what TensorBoard's profile plugin opens); TensorFlow's own
copy of its schema reads it, so no other package is needed. Each op the executor runs is an event on a tf_Compute
thread named `scope/op:OpType`; the scope says which layer, and `gradient_tape/` that it is the backward pass."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from shared.profiling import COMPILED_CONVOLUTIONS, Kernel, attribute, top_kernels, write_chrome_trace

STEP = "twinnets train step"
CONVOLUTIONS = {"Conv2D", "_FusedConv2D", "_MklNativeConv2D", "_MklNativeFusedConv2D", "_MklNativeConv2DWithBias",
                "BiasAdd", "_MklConv2D", "_MklFusedConv2D"}  # the forward ones
BACKWARD_CONVOLUTIONS = re.compile(r"Conv2DBackprop|BiasAddGrad")
BY_TYPE = {"Relu": "activations and elementwise", "ReluGrad": "activations and elementwise",
           "MaxPool": "pooling", "MaxPoolGrad": "pooling", "_MklNativeMaxPool": "pooling",
           "_MklNativeMaxPoolGrad": "pooling", "ConcatV2": "concatenation and copies",
           "_MklConcatV2": "concatenation and copies", "Slice": "concatenation and copies",
           "Transpose": "concatenation and copies", "Identity": "concatenation and copies",
           "_MklToTf": "concatenation and copies", "Copy": "concatenation and copies"}
OPTIMIZER = re.compile(r"^(sgd|adam|adamw)(_\d+)?$", re.IGNORECASE)
OP_EVENT = re.compile(r"^[\w./-]+:\w+$")  # scope/op:OpType; the executor's own events have spaces or "::"
WRAPPERS = {"ExecutorState::Process", "ParallelFor"}
# An op run eagerly has no scope; __inference_* is a whole tf.function, whose ops are events of their own.
EAGER_OP = re.compile(r"^EagerLocalExecute: (?!__inference)(\w+)$")


def profile_steps(step: Callable[[], float], steps: int, out_dir: Path) -> dict:
    """`steps` calls of the (warmed-up) step under TensorFlow's profiler; per step, milliseconds per category, the
    profiler's own files (TensorBoard: `tensorboard --logdir <out_dir>`, Profile tab) and a Chrome trace."""
    out_dir = Path(out_dir)
    tf.profiler.experimental.start(str(out_dir))
    try:
        for number in range(steps):
            with tf.profiler.experimental.Trace(STEP, step_num=number, _r=1):
                step()
    finally:
        tf.profiler.experimental.stop()
    xplane = sorted(out_dir.glob("plugins/profile/*/*.xplane.pb"))[-1]
    kernels, windows = step_kernels(xplane)
    trace = write_chrome_trace(kernels, windows, out_dir / "trace.json", "TensorFlow")
    return {"steps": attribute(kernels, windows), "window_ms": [(end - begin) / 1000 for begin, end in windows],
            "top_ops": top_kernels(kernels, windows), "trace": str(trace), "xplane": str(xplane),
            "profiler": "tf.profiler.experimental"}


def step_kernels(trace: Path) -> tuple[list[Kernel], list[tuple[float, float]]]:
    """Every op event of the host's compute threads, and the steps' windows, in microseconds."""
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(trace).read_bytes())
    host = next(plane for plane in space.planes if plane.name == "/host:CPU")
    thunk_stat = next((key for key, stat in host.stat_metadata.items() if stat.name == "hlo_op"), None)
    kernels, windows = [], []
    for line in host.lines:
        origin_ps = line.timestamp_ns * 1000
        for event in line.events:
            name = host.event_metadata[event.metadata_id].name
            start, end = (origin_ps + event.offset_ps) / 1e6, (origin_ps + event.offset_ps + event.duration_ps) / 1e6
            if name == STEP:
                windows.append((start, end))
            elif any(stat.metadata_id == thunk_stat for stat in event.stats):
                kernels.append(Kernel(start, end, _xla_category(name), name, line.name, re.sub(r"\.\d+$", "", name)))
            elif OP_EVENT.match(name) and name not in WRAPPERS and not name.split(":")[-1].startswith("__inference"):
                scope, op_type = name.rsplit(":", 1)
                kernels.append(Kernel(start, end, op_category(scope, op_type), name, line.name, op_type))
            elif EAGER_OP.match(name):  # eager mode: one op at a time, named by its type alone
                op_type = EAGER_OP.match(name).group(1)
                kernels.append(Kernel(start, end, op_category("", op_type), name, line.name, op_type))
    return kernels, sorted(windows)


def _xla_category(hlo: str) -> str:
    """An XLA thunk (jit_compile) by its HLO instruction's name: the compiled step keeps no layer names, so its
    convolutions are one category, its fusions another (the whole step runs as one op, __inference_*, whose time
    is the thunks')."""
    if hlo.startswith("convolution"):
        return COMPILED_CONVOLUTIONS
    if "reduce-window" in hlo or "select-and-scatter" in hlo:
        return "pooling"
    if re.match(r"(wrapped_)?(transpose|copy|concatenate|slice)", hlo):
        return "concatenation and copies"
    return "compiled (fused) region"


def op_category(scope: str, op_type: str) -> str:
    """The category of one op from its name scope and type (PyTorch reads its events: torch_impl/profile.py's
    event_category). The loss (and the batch's Dice) run in the "loss" scope,
    the optimizer in its own; a layer's name says what it is (upN: transposed convolution, _bnN: batch norm). An op
    run eagerly has no scope: it is sorted by its type alone (BatchNorm's and the loss's ops are then elementwise,
    a transposed convolution's are convolutions)."""
    parts = [re.sub(r"_\d+$", "", part) for part in scope.split("/")]
    if "loss" in parts:
        return "loss"
    if OPTIMIZER.match(parts[0]):
        return "optimizer update"
    if op_type in BY_TYPE:
        return BY_TYPE[op_type]
    if any(re.fullmatch(r"up\d+", part) for part in parts):
        return "transposed convolution"
    if any(re.search(r"_bn\d+$", part) for part in parts):
        return "batch norm"
    backward = parts[0] == "gradient_tape" or not scope  # eager: a Conv2DBackprop* is the backward pass
    if backward and BACKWARD_CONVOLUTIONS.search(op_type):
        return "convolution backward"
    if op_type in CONVOLUTIONS:
        return "convolution forward"
    return "activations and elementwise"
