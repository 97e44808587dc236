"""The benchmark's Keras 3 half, for the portable arms on whichever engine KERAS_BACKEND chose: a minimal reference
step, FLOPs, the matrix-multiply peak, device memory, build facts and the settings that change timings (the fairness
manifest); twin of tf_impl/benchmark.py and torch_impl/benchmark.py. What differs between the engines is in
keras_fit/backend/<engine>.py, chosen once: a keras-jax row never loads TensorFlow."""
from __future__ import annotations

import os
from typing import Callable

import keras
import numpy as np

from keras_fit.backend import engine
from keras_fit.runtime import backend, compile_options, threads, versions
from shared.execution import Execution

DTYPES = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Environment variables that change what the settings below do, on any of the three engines.
VARIABLES = ("KERAS_BACKEND", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "KMP_AFFINITY", "KMP_BLOCKTIME",
             "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS", "DNNL_MAX_CPU_ISA",
             "ONEDNN_DEFAULT_FPMATH_MODE", "TF_XLA_FLAGS", "XLA_FLAGS", "JAX_ENABLE_X64", "JAX_PLATFORMS",
             "TORCHINDUCTOR_MAX_AUTOTUNE", "TORCHINDUCTOR_CACHE_DIR", "NVIDIA_TF32_OVERRIDE", "CUDA_VISIBLE_DEVICES")
# What each engine makes of the execution's mode (model.compile's jit_compile / run_eagerly).
GRAPHS = {("tensorflow", "function"): "one tf.function graph", ("tensorflow", "xla"): "one XLA program (tf.function)",
          ("jax", "jit"): "one XLA program (jax.jit)", ("jax", "eager"): "run op by op (run_eagerly)",
          ("torch", "eager"): "run op by op, an autograd graph recorded each step",
          ("torch", "compile"): "torch.compile (Dynamo graphs, Inductor kernels)"}


def reference_step(model: keras.Model, loss: Callable, optimizer: keras.optimizers.Optimizer,
                   execution: Execution) -> Callable[[np.ndarray, np.ndarray], float]:
    """The few lines a Keras user writes: model.compile(optimizer, loss) in the execution's mode, then
    model.train_on_batch (float32). Keras' own train function is the simplest step there is on every engine, so this
    reference is the arm's own train_on_batch step without what twinnets adds to it: its per-step metrics (the
    batch's loss and Dice) and reading them back."""
    model.compile(optimizer=optimizer, loss=lambda targets, outputs: loss(outputs, targets),
                  **compile_options(execution))
    return lambda images, targets: float(model.train_on_batch(images, targets, return_dict=True)["loss"])


def loader_batches(loader: keras.utils.PyDataset, epoch: int):
    """One epoch of the real PyDataset, batch by batch in the order model.fit reads it."""
    loader.epoch = epoch
    return (loader[index] for index in range(len(loader)))


def count_flops(step: Callable, images: np.ndarray, targets: np.ndarray) -> int | None:
    """On PyTorch, FlopCounterMode around Keras' step, as torch_impl counts its own. Elsewhere None: TensorFlow's
    profiler has no formulas for gradient ops (tf_impl/benchmark.py), and XLA's cost analysis on JAX counts every op,
    elementwise ones too, not the convolutions and matrix products the others count (keras_fit/backend/)."""
    return engine.count_flops(step, images, targets)


def matmul(n: int, precision: str, execution: Execution) -> Callable[[], None]:
    """One (n x n) @ (n x n) product in the given precision by the engine itself (not keras.ops, whose dispatch is
    not the machine's limit), waiting for the result."""
    rng = np.random.default_rng(n)
    a, b = (keras.ops.cast(rng.standard_normal((n, n), dtype=np.float32), DTYPES[precision]) for _ in range(2))
    return engine.matmul(a, b)


def peak_device_memory(execution: Execution) -> int | None:
    """None: the Keras arms run on the CPU (keras_fit/runtime.py), which has no separate device memory."""
    return None


def build_info() -> dict:
    """What decides the kernels: Keras and its engine's versions, the engine's CPU libraries, threads."""
    return {**versions(), "intra_op_threads": threads(), "pid": os.getpid(), **engine.build_info()}


def place(model: keras.Model, execution: Execution) -> keras.Model:
    """The model as it is: the arms run on the CPU, where every engine keeps Keras' variables."""
    return model


def configure_fairness(execution: Execution, tf32: bool) -> dict:
    """What the harness sets, the same on every side: TF32 for float32 matrix products and convolutions as asked
    (each engine's own switch; on the CPU, where the arms run, no product uses TF32). Returns what it set."""
    engine.configure_tf32(tf32)
    return {"tf32_matmul": tf32, "tf32_convolution": tf32}


def fairness_settings(execution: Execution) -> dict:
    """The settings in force in this process that change a timing, and the variables that change them."""
    name, options = backend(), compile_options(execution)
    tf32 = engine.tf32_state()
    return {"keras_backend": name, "tf32_matmul": tf32, "tf32_convolution": tf32,
            "jit_compile": f"model.compile(jit_compile={options['jit_compile']}, "
                           f"run_eagerly={options['run_eagerly']})",
            "graph": GRAPHS.get((name, execution.mode), execution.mode),
            "intra_op_threads": threads(), "inter_op_threads": build_info().get("inter_op_threads"),
            "variables": {name: os.environ.get(name) for name in VARIABLES}}
