"""The TensorFlow engine's part of the Keras arms (keras-tf): threads, versions, each batch's gradients, what the
engine made of the train step, the benchmark's matrix product and TF32 switch, the served forward pass. Imported by
keras_fit/backend/ in a keras-tf process only; the same functions as jax.py and torch.py."""
from __future__ import annotations

import os
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def configure(threads: int, seed: int) -> None:
    """TensorFlow's intra-op threads (one inter-op thread) before its first op; Keras' seeds (TensorFlow's too)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised: keep what is set
        pass
    keras.utils.set_random_seed(seed)


def versions() -> dict:
    return {"tensorflow": tf.__version__}


def threads() -> int:
    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()


def gradients(model: keras.Model, loss: Callable, images: np.ndarray, targets: np.ndarray) -> tuple:
    """The batch's loss in training mode and its gradients, by TensorFlow's GradientTape."""
    with tf.GradientTape() as tape:
        value = loss(ops.cast(model(images, training=True), "float32"), ops.convert_to_tensor(targets))
    return value, tape.gradient(value, model.trainable_variables)


def describe_step(model: keras.Model, images: np.ndarray, targets: np.ndarray, loss: Callable,
                  compiled: bool) -> dict:
    """Keras' train step traced by tf.function for this batch's shapes (traced, not run: no weight changes)."""
    data = (tf.constant(images), tf.constant(targets))
    graph = tf.function(model.train_step).get_concrete_function(data).graph
    return {"kind": "static", "records": "a tf.function graph of model.train_step, traced once per input shape",
            "graph_ops": len(graph.get_operations())}


def count_flops(step: Callable, images: np.ndarray, targets: np.ndarray) -> int | None:
    """None: TensorFlow's profiler has no formulas for gradient ops (tf_impl/benchmark.py)."""
    return None


def matmul(a, b) -> Callable[[], None]:
    def run() -> None:
        tf.matmul(a, b)[0, 0].numpy()  # the host copy waits for the product
    return run


def build_info() -> dict:
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset: on only where the CPU has AVX-512 VNNI or AMX")
    return {"onednn": onednn, "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}


def configure_tf32(tf32: bool) -> None:
    tf.config.experimental.enable_tensor_float_32_execution(tf32)


def tf32_state() -> bool:
    return bool(tf.config.experimental.tensor_float_32_execution_enabled())


def inference_function(model: keras.Model, mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """The forward pass in inference mode as tf.function traces it ("function"; "xla": jit_compile=True), once per
    input shape; numpy in, numpy out (float32)."""
    call = tf.function(lambda images: tf.cast(model(images, training=False), tf.float32), jit_compile=mode == "xla")
    return lambda images: call(tf.constant(images)).numpy()
