"""Threads, seeds, devices and versions of a Keras 3 process on whichever engine KERAS_BACKEND chose before Keras
was imported (tensorflow, jax or torch); the twin of tf_impl/runtime.py and torch_impl/runtime.py for the portable
arms. What differs between the engines is in keras_fit/backend/<engine>.py, chosen once: a keras-jax process never
loads TensorFlow, nor a keras-tf one PyTorch."""
from __future__ import annotations

import keras

from keras_fit.backend import engine
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
    """The same intra-op thread count as every other side, before the engine runs its first op; the seeds (each
    engine's own way: keras_fit/backend/)."""
    engine.configure(threads, seed)


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
    mode = execution.mode
    if mode == "eager":
        return {"jit_compile": False, "run_eagerly": backend() != "torch"}  # torch without jit_compile is eager
    return {"jit_compile": mode in ("xla", "jit", "compile"), "run_eagerly": False}


def versions() -> dict:
    return {"keras": keras.__version__, "keras_backend": backend(), **engine.versions()}


def threads() -> int:
    return engine.threads()
