"""Inference, the Keras arms' half: the portable model's forward pass in inference mode as a Keras 3 user serves it on
the engine KERAS_BACKEND chose; beside tf_impl/export.py and torch_impl/export.py (their `inference_function`). On
JAX: jax.jit of model.stateless_call (the weights passed in as arguments); on PyTorch: the model called eagerly under
torch.inference_mode. keras-tf has no mode of its own here: the tf side's rows are the same Keras model on
TensorFlow. What differs between the engines is in keras_fit/backend/<engine>.py (`inference_function`)."""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from keras_fit.backend import engine
from keras_fit.runtime import backend, versions

MODES = {"tensorflow": ("function", "xla"), "jax": ("jit", "eager"), "torch": ("eager", "compile")}
# What each (engine, mode) runs, in the row's settings and the report.
SERVES = {("tensorflow", "function"): "tf.function of model(x, training=False)",
          ("tensorflow", "xla"): "tf.function(jit_compile=True) of model(x, training=False)",
          ("jax", "jit"): "jax.jit of model.stateless_call(weights, x, training=False): one XLA program",
          ("jax", "eager"): "model.stateless_call(weights, x, training=False), op by op",
          ("torch", "eager"): "model(x, training=False) eager under torch.inference_mode",
          ("torch", "compile"): "torch.compile of the model, under torch.inference_mode"}


def inference_function(model: keras.Model, mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """The forward pass in inference mode (BatchNorm's moving statistics) in one of the engine's MODES; canonical
    NHWC numpy in (Keras' layout on every engine), float32 numpy out."""
    if mode not in MODES[backend()]:
        raise ValueError(f"mode {mode!r} does not exist on Keras' {backend()} engine; choose from "
                         f"{', '.join(MODES[backend()])}")
    return engine.inference_function(model, mode)


def settings(mode: str) -> dict:
    """What the row ran: the engine, how the forward pass was served, the versions."""
    return {"keras_backend": backend(), "serves": SERVES[(backend(), mode)], **versions()}
