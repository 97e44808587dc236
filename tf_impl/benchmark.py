"""The benchmark's TensorFlow half: the in-memory batch, the twinnets train step and a minimal reference loop,
FLOPs, the matrix-multiply peak, device memory and build facts; twin of torch_impl/benchmark.py."""
from __future__ import annotations

import os
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from shared.execution import Execution
from tf_impl import classifier, train
from tf_impl.data import to_tensor_images

DTYPES = {"fp32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}


def to_tensors(spec, images: np.ndarray, targets: np.ndarray, execution: Execution) -> tuple:
    """Canonical NHWC numpy is Keras' layout; tensors go to the device TensorFlow places them on."""
    return to_tensor_images(images), tf.convert_to_tensor(targets)


def train_step(spec, model: keras.Model, execution: Execution) -> Callable[[tf.Tensor, tf.Tensor], float]:
    """The step twinnets trains with (CarvanaClassifier.train_step, or train.make_train_step); returns the loss."""
    if spec.name == "unet":
        trainer = classifier.CarvanaClassifier(model, 1, spec, verbose=False, execution=execution)
        return lambda images, masks: trainer.train_step(images, masks)[0]
    step = None

    def run(images: tf.Tensor, labels: tf.Tensor) -> float:
        nonlocal step
        if step is None:  # the input signature comes from the first batch, its batch dimension left open
            signature = tuple(tf.TensorSpec((None, *t.shape[1:]), t.dtype) for t in (images, labels))
            step = train.make_train_step(model, train.make_optimizer(model, spec), signature, execution)
        return float(step(images, labels))  # the host copy waits for the step

    return run


def reference_step(spec, model: keras.Model, execution: Execution) -> Callable[[tf.Tensor, tf.Tensor], float]:
    """The few lines anyone would write: a tf.function with a GradientTape and apply_gradients (float32)."""
    loss_fn = classifier.bce_dice_loss if spec.name == "unet" else train.nll_loss
    optimizer = classifier.make_optimizer(model, spec) if spec.name == "unet" else train.make_optimizer(model, spec)

    @tf.function
    def step(images: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(model(images, training=True), targets)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    return lambda images, targets: float(step(images, targets))


def loader_batches(loader, epoch: int):
    """One epoch of the real tf.data pipeline."""
    return iter(loader.batches(epoch))


def count_flops(step: Callable, images: tf.Tensor, targets: tf.Tensor) -> int | None:
    """None: TensorFlow's graph profiler (tf.compat.v1.profiler float_operation) has FLOP formulas for the
    forward Conv2D and MatMul but none for their gradient ops or Conv2DBackpropInput, so it cannot count a
    training step. The benchmark uses PyTorch's count of the same model, checked against the analytic one."""
    return None


def matmul(n: int, precision: str, execution: Execution) -> Callable[[], None]:
    """One (n x n) @ (n x n) product in the given precision (one op: eager costs nothing next to it);
    copying one element to the host waits for the device."""
    a, b = (tf.cast(tf.random.normal((n, n)), DTYPES[precision]) for _ in range(2))

    def run() -> None:
        tf.matmul(a, b)[0, 0].numpy()

    return run


def peak_device_memory(execution: Execution) -> int | None:
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"]) if execution.device == "cuda" else None


def build_info() -> dict:
    """What decides the kernels: versions, oneDNN / CUDA / cuDNN, threads."""
    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "cuda_build": build.get("cuda_version"),
            "cudnn": build.get("cudnn_version"), "gpu": [gpu.name for gpu in gpus] or None,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 CPUs)"),
            "xla_flags": os.environ.get("XLA_FLAGS"),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(), "pid": os.getpid()}
