"""--pair --benchmark's Keras half: your model's training step (forward, the pair's loss, backward, SGD update) as one
tf.function, the static graph twinnets' TensorFlow side trains with, and its forward pass in inference mode as a
tf.function; each a call that returns once its result reached the host. harness/benchmark/rows.py's time_steps times
them; twin of torch_impl/pair_benchmark.py."""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from shared import pair_layouts as layouts
from tf_impl.pair import loss_of, model_output


def train_step(model: keras.Model, inputs: np.ndarray, targets: np.ndarray | None, loss: str, layout: dict,
               lr: float) -> Callable[[], float]:
    """One SGD step on the batch in training mode (BatchNorm on batch statistics), dropout switched off as in the
    pair's checked steps; the loss as a Python float."""
    x = tf.convert_to_tensor(layouts.keras_input(inputs, layout["input"]))
    t = None if targets is None else tf.convert_to_tensor(targets)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    variables = model.trainable_variables
    optimizer = keras.optimizers.SGD(learning_rate=lr)
    optimizer.build(variables)  # its variables made here, not inside the graph

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            value = loss_of(model_output(model(x, training=True), layout), t, loss)
        optimizer.apply_gradients([(g, v) for g, v in zip(tape.gradient(value, variables), variables)
                                   if g is not None])
        return value

    return lambda: float(step())


def inference_step(model: keras.Model, inputs: np.ndarray, layout: dict) -> Callable[[], float]:
    """The forward pass in inference mode (training=False); one element of the output copied to the host."""
    x = tf.convert_to_tensor(layouts.keras_input(inputs, layout["input"]))

    @tf.function
    def forward() -> tf.Tensor:
        return tf.reshape(model_output(model(x, training=False), layout), [-1])[0]

    return lambda: float(forward())
