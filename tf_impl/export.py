"""Inference and export, TensorFlow's half: the forward pass as eager, tf.function or XLA calls, the model exported
as a SavedModel and as ONNX, and a SavedModel loaded back with TensorFlow alone; twin of torch_impl/export.py.

A Keras model is already a graph waiting to be traced: `model.export` traces `model(x, training=False)` once into a
tf.function over a batch of any size and saves that graph with its weights (docs/inference.md)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

MODES = ("eager", "function", "xla")  # how this side runs a forward pass (torch_impl/export.py: eager, compile)
# The forward's precisions: bf16 is Keras' "mixed_bfloat16" policy (float32 weights, bfloat16 compute), fixed when the
# model is built (tf_impl/runtime.py configure_execution); torch_impl/export.py: torch.autocast at call time.
PRECISIONS = ("fp32", "bf16")
_COMPUTE_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}  # what the model's layers compute in, by precision
INPUT_LAYOUT = "NHWC"  # the exported graphs take what Keras takes: channels last
NATIVE_FORMAT = "savedmodel"  # a folder: saved_model.pb (the traced graph) and variables/ (the weights)


def to_input(images: np.ndarray) -> np.ndarray:
    """Canonical NHWC images in the layout this side's graphs take: NHWC already."""
    return np.ascontiguousarray(images, dtype=np.float32)  # (N, H, W, C)


def to_canonical(outputs: np.ndarray) -> np.ndarray:
    """This side's outputs in the canonical layout: (N, 10) or (N, H, W, 1) already."""
    return np.asarray(outputs)


def inference_function(model, mode: str, precision: str = "fp32") -> Callable[[np.ndarray], np.ndarray]:
    """The forward pass in inference mode (BatchNorm's running statistics), run op by op ("eager"), as one traced
    graph ("function") or as one XLA-compiled program ("xla"); numpy in, float32 numpy out. In bf16 the model must
    have been built under the mixed_bfloat16 policy: its layers compute in bfloat16, its output is cast back."""
    if model.compute_dtype != _COMPUTE_DTYPES[precision]:
        raise ValueError(f"{precision}: the model computes in {model.compute_dtype}; build it under the "
                         f"{_COMPUTE_DTYPES[precision]} policy (tf_impl/runtime.py configure_execution)")

    def call(images):
        return tf.cast(model(images, training=False), tf.float32)  # no op in float32

    if mode != "eager":
        call = tf.function(call, jit_compile=mode == "xla")  # traced once per input shape
    return lambda images: call(tf.constant(images)).numpy()


def export_native(model, example: np.ndarray, path: Path) -> None:
    """The SavedModel: Keras traces the model once, batch size left open, into the endpoint `serve`."""
    model.export(str(path), format="tf_saved_model", verbose=False, input_signature=[_signature(example)])


def load_native(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A SavedModel loaded with TensorFlow alone (no Keras model, no twinnets model code): its `serve` graph."""
    loaded = tf.saved_model.load(str(path))  # the closure keeps it: the graph's variables live as long as it does
    return lambda images: loaded.serve(tf.constant(images)).numpy()


def export_onnx(model, example: np.ndarray, path: Path) -> None:
    """ONNX through Keras' own export (tf2onnx converts the traced graph), batch size left open."""
    with warnings.catch_warnings():  # Keras' tf2onnx shim asks numpy for np.object, which warns: not the user's to fix
        warnings.filterwarnings("ignore", message="In the future `np.object`", category=FutureWarning)
        model.export(str(path), format="onnx", verbose=False, input_signature=[_signature(example)])


def _signature(example: np.ndarray) -> tf.TensorSpec:
    """The graph's input: the example's shape with the batch dimension left open (None)."""
    return tf.TensorSpec((None, *example.shape[1:]), tf.float32, name="images")
