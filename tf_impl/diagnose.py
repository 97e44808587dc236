"""What --diagnose records of a Keras training step, in canonical names and layouts; twin of torch_impl/diagnose.py."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from keras_models.weights import canonical_gradients, canonical_layers
from shared.weights import Weights
from tf_impl.data import to_tensor_images

# The optimizer's state by its canonical (PyTorch) names: Keras keeps one list of slot variables per kind,
# indexed like the variables the optimizer was built for.
SLOTS = {"SGD": {"momentum": "momentums"}, "Adam": {"exp_avg": "_momentums", "exp_avg_sq": "_velocities"}}


@contextmanager
def float64() -> Iterator[None]:
    """While open, the layers built are float64 (Keras takes their dtype from the global policy); the optimizer's
    learning rate stays a float32 variable, as in a float32 run."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)


def float32_hyperparameters(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The optimizer as a float64 run must use it to match a float32 run's hyperparameters: as it is, for Keras
    casts its learning rate (a float32 variable) and momentum (a Python float, through a float32 tensor) from float32
    to the variable's dtype."""
    return optimizer


@contextmanager
def recording(model: keras.Model) -> Iterator[dict[str, np.ndarray]]:
    """While open, each canonical layer's output lands in the yielded dict by name, in the order the forward pass
    computes them (NHWC already). Keras has no forward hooks: each layer's `call` is wrapped on the instance,
    and the class's own `call` is back when the block ends."""
    outputs: dict[str, np.ndarray] = {}
    layers = canonical_layers(model)
    for name, layer in layers.items():
        def call(*args, _call=layer.call, _name=name, **kwargs):
            result = _call(*args, **kwargs)
            outputs[_name] = np.array(result)  # eager only: a tf.function trace has no values to record
            return result

        layer.call = call
    try:
        yield outputs
    finally:
        for layer in layers.values():
            del layer.call


def layer_outputs(model: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every canonical layer's output for canonical NHWC images as a training step's forward pass computes it
    (BatchNorm normalises with the batch's own statistics); the running statistics that this pass moves are put
    back, so the model is left as it was."""
    saved = [variable.numpy() for variable in model.non_trainable_variables]
    with recording(model) as outputs:
        model(to_tensor_images(images), training=True)
    for variable, value in zip(model.non_trainable_variables, saved):
        variable.assign(value)
    return outputs


def train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, loss: Callable, images: tf.Tensor,
               targets: tf.Tensor) -> tuple[float, Weights]:
    """One optimisation step as the training loop takes it (tape, loss, gradients, apply_gradients), run eagerly so
    that the gradients it applies can be read: the loss and those gradients by canonical name."""
    with tf.GradientTape() as tape:
        batch_loss = loss(model(images, training=True), targets)
    grads = tape.gradient(batch_loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    by_variable = {id(variable): grad.numpy() for variable, grad in zip(model.trainable_variables, grads)}
    return float(batch_loss), canonical_gradients(model, by_variable)


def optimizer_state(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> Weights:
    """The optimizer's state after its last step, "<param name>.<state>" in canonical layouts and conventions:
    SGD's "momentum" as PyTorch's buffer b = momentum * b + g (the step subtracts lr * b), where Keras keeps the
    velocity m = momentum * m - lr * g (the step adds m), so b = -m / lr; Adam's moments "exp_avg" and "exp_avg_sq"
    are the same numbers on both sides."""
    learning_rate = keras.ops.convert_to_numpy(optimizer.learning_rate)
    by_kind = {}
    for kind, attribute in SLOTS.get(type(optimizer).__name__, {}).items():
        slots = getattr(optimizer, attribute, None)
        if not slots:  # SGD without momentum keeps none
            continue
        values = {id(variable): slots[optimizer._get_variable_index(variable)].numpy()
                  for variable in model.trainable_variables}
        if kind == "momentum":
            values = {key: -value / value.dtype.type(learning_rate) for key, value in values.items()}
        by_kind[kind] = canonical_gradients(model, values)
    names = next(iter(by_kind.values()), {})
    return {f"{name}.{kind}": state[name] for name in names for kind, state in by_kind.items()}
