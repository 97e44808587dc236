"""The benchmark's TensorFlow half: a minimal reference loop, FLOPs, the matrix-multiply peak, device memory,
build facts and the settings that change timings (the fairness manifest); twin of torch_impl/benchmark.py."""
from __future__ import annotations

import os
from typing import Callable

import keras
import tensorflow as tf

from shared.execution import Execution

DTYPES = {"fp32": tf.float32, "tf32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}
# Environment variables that change what the settings below do (read by TensorFlow, XLA, oneDNN, cuDNN, cuBLAS).
VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "KMP_AFFINITY", "KMP_BLOCKTIME", "TF_NUM_INTRAOP_THREADS",
             "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE",
             "TF_CUDNN_USE_AUTOTUNE", "TF_XLA_FLAGS", "XLA_FLAGS", "NVIDIA_TF32_OVERRIDE", "TF_DETERMINISTIC_OPS",
             "TF_ENABLE_AUTO_MIXED_PRECISION", "CUDA_VISIBLE_DEVICES")


def reference_step(model: keras.Model, loss: Callable, optimizer: keras.optimizers.Optimizer,
                   execution: Execution) -> Callable[[tf.Tensor, tf.Tensor], float]:
    """The few lines anyone would write: a tf.function with a GradientTape and apply_gradients (float32)."""

    @tf.function
    def step(images: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            batch_loss = loss(model(images, training=True), targets)
        optimizer.apply_gradients(zip(tape.gradient(batch_loss, model.trainable_variables), model.trainable_variables))
        return batch_loss

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
    """One (n x n) @ (n x n) product in the given precision ("tf32": float32 tensors, under the TF32 policy in
    force; one op: eager costs nothing next to it); copying one element to the host waits for the device."""
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
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset: on only where the CPU has AVX-512 VNNI or AMX"),
            "xla_flags": os.environ.get("XLA_FLAGS"),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(), "pid": os.getpid()}


def place(model: keras.Model, execution: Execution) -> keras.Model:
    """The model as it is: TensorFlow places each op on the devices configure_execution left visible."""
    return model


def configure_fairness(execution: Execution, tf32: bool) -> dict:
    """What the harness sets, the same on both sides: TF32 for float32 matrix products and convolutions as asked
    (TensorFlow's own default is on, PyTorch's differ). cuDNN autotuning is TensorFlow's default
    (TF_CUDNN_USE_AUTOTUNE), which the other side matches. Returns what it set."""
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
    return {"tf32_matmul": tf32, "tf32_convolution": tf32}


def fairness_settings(execution: Execution) -> dict:
    """The settings in force in this process that change a timing, and the variables that change them."""
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    return {"tf32_matmul": tf32, "tf32_convolution": tf32,
            "cudnn_autotune": os.environ.get("TF_CUDNN_USE_AUTOTUNE", "1") != "0",
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0",
            "xla_auto_jit": tf.config.optimizer.get_jit() or "off",
            "jit_compile": "tf.function(jit_compile=True)" if execution.mode == "xla" else "not used",
            "graph": "run op by op (eager)" if execution.mode == "eager" else "one tf.function graph",
            "xla_flags": {name: os.environ.get(name) for name in ("TF_XLA_FLAGS", "XLA_FLAGS")},
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "variables": {name: os.environ.get(name) for name in VARIABLES}}
