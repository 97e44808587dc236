"""Threads, seeds, devices and versions of a Keras 3 process on whichever engine KERAS_BACKEND chose before Keras
was imported (tensorflow, jax or torch); the twin of tf_impl/runtime.py and torch_impl/runtime.py for the portable
arms. Each engine's own module is imported inside the function that needs it: a keras-jax process must never load
TensorFlow, nor a keras-tf one PyTorch."""
from __future__ import annotations

import os
import random

import keras
import numpy as np

from shared.errors import UserError
from shared.execution import Execution
from shared.tasks import TaskSpec

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}  # mixed: float32 variables


ARMS = {"tensorflow": "keras-tf", "jax": "keras-jax", "torch": "keras-torch"}
TITLES = {"tensorflow": "Keras on TensorFlow", "jax": "Keras on JAX", "torch": "Keras on PyTorch"}


def backend() -> str:
    return keras.backend.backend()


def arm() -> str:
    """This process's arm: keras-tf, keras-jax or keras-torch."""
    return ARMS[backend()]


def title() -> str:
    return TITLES[backend()]


def configure(threads: int, seed: int) -> None:
    """The same intra-op thread count as every other side, before the engine runs its first op; the seeds.

    JAX's CPU client sizes its thread pool from the cores the process may run on, so the process is pinned to
    `threads` cores (XLA has no thread-count setting for its CPU client)."""
    engine = backend()
    if engine == "tensorflow":
        import tensorflow as tf  # this engine's own process only

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised: keep what is set
            pass
        keras.utils.set_random_seed(seed)
        return
    if engine == "torch":
        import torch  # this engine's own process only

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already started: keep what is set
            pass
        torch.manual_seed(seed)
    elif engine == "jax" and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cores[:max(1, threads)])
    # keras.utils.set_random_seed would import TensorFlow whenever it is installed; the weights are canonical and
    # no layer draws random numbers, so Python's and numpy's seeds are all a run needs.
    random.seed(seed)
    np.random.seed(seed)


def configure_execution(execution: Execution) -> Execution:
    """Before the model is built: its dtype policy; the device is the CPU (the portable arms are CPU arms here)."""
    keras.mixed_precision.set_global_policy(POLICIES[execution.precision])
    device = "cpu" if execution.device == "auto" else execution.device
    if device != "cpu":
        raise UserError(f"--device {device}: the Keras arms run on the CPU; use --device cpu or auto")
    return execution.replace(device=device)


def training_execution(execution: Execution, spec: TaskSpec) -> Execution:
    """Keras convolutions take NHWC on every engine, so a training run changes nothing."""
    return execution


def compile_options(execution: Execution) -> dict:
    """model.compile's arguments for the execution mode: whether Keras compiles the train step (tf.function or XLA
    on TensorFlow, jax.jit on JAX, torch.compile on PyTorch) or runs it op by op."""
    engine, mode = backend(), execution.mode
    if mode == "eager":
        return {"jit_compile": False, "run_eagerly": engine != "torch"}  # torch without jit_compile is eager
    return {"jit_compile": mode in ("xla", "jit", "compile"), "run_eagerly": False}


def versions() -> dict:
    found = {"keras": keras.__version__, "keras_backend": backend()}
    engine = backend()
    if engine == "jax":
        import jax  # this engine's own process only

        found["jax"] = jax.__version__
    elif engine == "torch":
        import torch  # this engine's own process only

        found["torch"] = torch.__version__
    else:
        import tensorflow as tf  # this engine's own process only

        found["tensorflow"] = tf.__version__
    return found


def threads() -> int:
    engine = backend()
    if engine == "torch":
        import torch  # this engine's own process only

        return torch.get_num_threads()
    if engine == "tensorflow":
        import tensorflow as tf  # this engine's own process only

        return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
