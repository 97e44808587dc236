"""Canonical weights (PyTorch state_dict layout, numpy) in and out of Keras models; twin of torch_impl/weights.py.

Each layer's layout is converted at this boundary. Each Keras layer carries its canonical name (`name="fc1"`,
`name="enc1_conv1"` for enc1.conv1), as Hugging Face does, so weights map by name. Layouts: Dense kernel (in, out);
Conv2D (kh, kw, in, out); Conv2DTranspose (kh, kw, out, in); BatchNormalization gamma/beta/moving_mean/moving_variance.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import keras
import numpy as np

from shared import weights as layouts
from shared.atomic import atomic_path
from shared.checkpoint import Checkpointer
from shared.weights import Weights

# The layers whose weights have a canonical layout; containers (models, blocks) only hold them.
CANONICAL_LAYERS = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv2DTranspose,
                    keras.layers.BatchNormalization)


def _canonical_name(layer: keras.Layer) -> str:
    """A layer's canonical name from its Keras name: "enc1_conv1" is "enc1.conv1" (PyTorch's module path; Keras on
    PyTorch refuses "." in a layer's name, and no canonical name has "_")."""
    return layer.name.replace("_", ".")


def canonical_layers(model: keras.Layer) -> dict[str, keras.Layer]:
    """The layers that own canonical weights (Dense, Conv2D, Conv2DTranspose, BatchNorm), by canonical name;
    containers (models, blocks) only hold them."""
    return {_canonical_name(layer): layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, CANONICAL_LAYERS)}


def _to_keras(model, name: str, layer: keras.Layer, canonical: Weights) -> list[np.ndarray]:
    """The layer's weights in Keras order and layout."""
    flattened = getattr(model, "flattened_inputs", {})  # Dense after Flatten: name -> (C, H, W)
    if isinstance(layer, keras.layers.Dense):
        weight = canonical[f"{name}.weight"]
        kernel = (layouts.flattened_linear_to_keras(weight, flattened[name]) if name in flattened
                  else layouts.linear_to_keras(weight))
        return [kernel, canonical[f"{name}.bias"]]
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return [layouts.conv_transpose_to_keras(canonical[f"{name}.weight"]), canonical[f"{name}.bias"]]
    if isinstance(layer, keras.layers.Conv2D):
        return [layouts.conv_to_keras(canonical[f"{name}.weight"]), canonical[f"{name}.bias"]]
    if isinstance(layer, keras.layers.BatchNormalization):
        return [canonical[f"{name}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]
    raise TypeError(f"no canonical layout for layer {name!r} of type {type(layer).__name__}")


def _from_keras(model, name: str, layer: keras.Layer, values: list | None = None) -> Weights:
    """The layer's weights (or the given values in the same order, e.g. gradients) in canonical layout."""
    flattened = getattr(model, "flattened_inputs", {})
    values = [np.asarray(v) for v in (layer.get_weights() if values is None else values)]
    if isinstance(layer, keras.layers.Dense):
        kernel, bias = values
        weight = (layouts.flattened_linear_from_keras(kernel, flattened[name]) if name in flattened
                  else layouts.linear_from_keras(kernel))
        return {f"{name}.weight": weight, f"{name}.bias": bias}
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return {f"{name}.weight": layouts.conv_transpose_from_keras(values[0]), f"{name}.bias": values[1]}
    if isinstance(layer, keras.layers.Conv2D):
        return {f"{name}.weight": layouts.conv_from_keras(values[0]), f"{name}.bias": values[1]}
    if isinstance(layer, keras.layers.BatchNormalization):
        return dict(zip((f"{name}.{key}" for key in ("weight", "bias", "running_mean", "running_var")), values))
    raise TypeError(f"no canonical layout for layer {name!r} of type {type(layer).__name__}")


def load_weights(model: keras.Model, canonical: Weights) -> None:
    layers = canonical_layers(model)
    expected = {key for name, layer in layers.items() for key in _from_keras(model, name, layer)}
    missing, unexpected = sorted(expected - set(canonical)), sorted(set(canonical) - expected)
    if missing or unexpected:
        raise KeyError(f"weights do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, layer in layers.items():
        layer.set_weights(_to_keras(model, name, layer, canonical))


def export_weights(model: keras.Model) -> Weights:
    exported: Weights = {}
    for name, layer in canonical_layers(model).items():
        exported.update(_from_keras(model, name, layer))
    return exported


def canonical_gradients(model: keras.Model, gradients: dict) -> Weights:
    """Gradients keyed by variable (id) -> canonical names and layouts (trainable tensors only)."""
    canonical: Weights = {}
    for name, layer in canonical_layers(model).items():
        values = [gradients[id(variable)] for variable in layer.trainable_weights]
        canonical.update(_from_keras(model, name, layer, values))
    return canonical


def save_optimizer(optimizer: keras.optimizers.Optimizer, path: Path) -> None:
    """The optimizer's variables (iterations, momentums, ...) in their creation order, as .npz."""
    with atomic_path(path.with_suffix(".npz"), suffix=".npz") as temporary:
        np.savez(temporary, *[np.asarray(variable) for variable in optimizer.variables])


def load_optimizer(optimizer: keras.optimizers.Optimizer, path: Path) -> None:
    """Into an optimizer already built for the same model (so its variables exist, in the same order)."""
    with np.load(path.with_suffix(".npz")) as saved:
        for index, variable in enumerate(optimizer.variables):
            variable.assign(saved[f"arr_{index}"])


def checkpointer(checkpoint_dir, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> Checkpointer:
    """Saves and restores this model and optimizer after each epoch, so a killed run can continue (None: off)."""
    return Checkpointer(checkpoint_dir, partial(export_weights, model), partial(save_optimizer, optimizer),
                        partial(load_weights, model), partial(load_optimizer, optimizer))


def count_parameters(model: keras.Model) -> int:
    return int(sum(np.prod(variable.shape) for variable in model.trainable_weights))
