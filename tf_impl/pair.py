"""Your own Keras model in a pair (--pair): built from your factory, described layer by layer, given the mapped
weights, run with every layer's output recorded, its gradients, and SGD steps; twin of torch_impl/pair.py."""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from shared import pair_layouts as layouts
from shared.weights import Weights

# Keras classes (or a base class of yours) -> the kind both sides name a layer by.
KINDS = {"Dense": "linear", "Conv1D": "conv1d", "Conv2D": "conv2d", "Conv3D": "conv3d",
         "Conv1DTranspose": "conv_transpose1d", "Conv2DTranspose": "conv_transpose2d",
         "Conv3DTranspose": "conv_transpose3d", "DepthwiseConv1D": "depthwise_conv1d",
         "DepthwiseConv2D": "depthwise_conv2d", "BatchNormalization": "batch_norm",
         "LayerNormalization": "layer_norm", "Embedding": "embedding", "MultiHeadAttention": "mha", "ReLU": "relu",
         "LeakyReLU": "leaky_relu", "Softmax": "softmax", "ELU": "elu", "Flatten": "flatten", "Dropout": "dropout",
         "Resizing": "resize", "Add": "add", "Concatenate": "concat", "Multiply": "multiply", "Reshape": "reshape",
         "Permute": "permute", "Identity": "identity"}
KINDS.update({f"{prefix}{n}D": kind for n in (1, 2, 3) for prefix, kind in (
    ("MaxPooling", "max_pool"), ("AveragePooling", "avg_pool"), ("GlobalAveragePooling", "global_avg_pool"),
    ("GlobalMaxPooling", "global_max_pool"), ("UpSampling", "upsample"), ("ZeroPadding", "zero_pad"),
    ("Cropping", "crop"))})
CONFIG = ("kernel_size", "strides", "padding", "dilation_rate", "groups", "output_padding", "data_format", "epsilon",
          "momentum", "axis", "center", "scale", "pool_size", "size", "interpolation", "antialias", "height", "width",
          "crop_to_aspect_ratio", "rate", "use_bias", "num_heads", "key_dim", "value_dim")


def build(factory: Callable, precision: str) -> keras.Model:
    """Your factory's model; in float64, built under Keras' float64 policy (layers and inputs)."""
    if precision == "float32":
        return factory()
    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy("float64")
    keras.config.set_floatx("float64")
    try:
        model = factory()
    finally:
        keras.config.set_dtype_policy(policy)
        keras.config.set_floatx(floatx)
    for layer in getattr(model, "_flatten_layers", lambda **_: [])(include_self=False):
        activation = getattr(layer, "activation", None)
        if activation is not None and _activation_name(activation) == "gelu" and _approximate(activation) is not None:
            layer.activation = _float64_gelu(_approximate(activation))
    return model


def _float64_gelu(approximate: bool) -> Callable:
    """GELU's formula: TensorFlow's float64 GELU kernel is accurate to 5e-9 only, a 'real' difference in float64."""
    def gelu(x):
        if approximate:
            return 0.5 * x * (1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))
        return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0)))

    return gelu


def layout_of(model: keras.Model, input_shape: tuple) -> str | None:
    """The layout the model takes PyTorch's (N, C, *S) input in, from its declared input and first spatial layer."""
    try:
        declared = tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError):  # a subclassed model declares no input
        declared = None
    first = next((getattr(layer, "data_format", None) for layer in model._flatten_layers(include_self=False)
                  if getattr(layer, "data_format", None) in layouts.LAYOUTS), None)
    return layouts.detect_layout(declared, tuple(input_shape), first)


def kind_of(unit: keras.Layer) -> str:
    """The kind of layer, by its class or the first Keras class it derives from."""
    if isinstance(unit, keras.layers.Activation):
        return _activation_name(unit.activation)
    return next((KINDS[cls.__name__] for cls in type(unit).__mro__ if cls.__name__ in KINDS),
                type(unit).__name__.lower())


def _activation_name(activation: Callable) -> str:
    name = getattr(activation, "func", activation).__name__  # functools.partial(gelu, approximate=True)
    return "activation" if name == "<lambda>" else {"swish": "silu"}.get(name, name)


def _approximate(activation: Callable) -> bool | None:
    """GELU's approximation, where it can be read: keras.ops.gelu defaults to tanh, keras.activations.gelu not."""
    if isinstance(activation, functools.partial):
        return activation.keywords.get("approximate", _approximate(activation.func))
    return {keras.ops.gelu: True, keras.activations.gelu: False}.get(activation)


def config_of(unit: keras.Layer) -> dict:
    """The settings the traps read (strides, padding, epsilon, momentum, interpolation, activation, ...)."""
    try:
        config = unit.get_config()
    except Exception:  # noqa: BLE001 - a layer of yours without get_config: its attributes are enough
        config = {}
    found = {key: config[key] for key in CONFIG if key in config}
    activation = getattr(unit, "activation", None)
    if activation is not None:
        found["activation"] = _activation_name(activation)
        found["approximate"] = _approximate(activation)
    return found


def units(model: keras.Model) -> dict[str, keras.Layer]:
    """The layers compared and mapped, by unique name: those that own weights or hold no layers (a
    MultiHeadAttention is one, its projections inside it)."""
    layers = list(model._flatten_layers(include_self=False))
    inside = {id(sub) for layer in layers if isinstance(layer, keras.layers.MultiHeadAttention)
              for sub in layer._flatten_layers(include_self=False)}
    found = [layer for layer in layers if id(layer) not in inside and not isinstance(layer, keras.layers.InputLayer)
             and (_own_variables(layer) or not list(layer._flatten_layers(include_self=False)))]
    names = [layer.name for layer in found]
    return {(layer.name if names.count(layer.name) == 1 else layer.path): layer for layer in found}


def _own_variables(layer: keras.Layer) -> dict[str, keras.Variable]:
    """The layer's variables by name relative to it ("kernel"; "query/kernel" in a MultiHeadAttention)."""
    inner = set() if isinstance(layer, keras.layers.MultiHeadAttention) else {
        id(v) for sub in layer._flatten_layers(include_self=False) for v in sub.weights}
    prefix = f"{layer.path}/"
    return {(v.path[len(prefix):] if v.path.startswith(prefix) else v.name): v for v in layer.weights
            if id(v) not in inner}


def describe(model: keras.Model, records: list[dict]) -> list[dict]:
    """Each unit: its kind, class, settings, canonical parameter shapes and which of them train; a Dense fed by a
    Flatten of a channels-last tensor notes the (*S, C) it flattens, so its rows are mapped in PyTorch's order."""
    flattened = {}
    for record in records:
        source = record["inputs"][0] if record["inputs"] else -1
        if source >= 0 and records[source].get("flatten_from"):
            flattened.setdefault(record["unit"], records[source]["flatten_from"])
    found = []
    for name, layer in units(model).items():
        kind, config = kind_of(layer), config_of(layer)
        if layouts.family(kind) == "linear" and name in flattened:
            config["flatten_from"] = flattened[name]
        variables = _own_variables(layer)
        arrays = {key: np.asarray(v.numpy()) for key, v in variables.items()}
        trainable = layouts.to_canonical(kind, {k: a for k, a in arrays.items() if variables[k].trainable}, config)
        shapes = {role: list(a.shape) for role, a in layouts.to_canonical(kind, arrays, config).items()}
        found.append({"name": name, "kind": kind, "class": type(layer).__name__, "config": config,
                      "params": shapes, "trainable": sorted(trainable)})
    return found


def export_weights(model: keras.Model, mapped: list[dict]) -> Weights:
    """The mapped units' weights in canonical layout, named "<canonical unit>.<role>"."""
    layers, found = units(model), {}
    for entry in mapped:
        arrays = {key: np.asarray(v.numpy()) for key, v in _own_variables(layers[entry["unit"]]).items()}
        for role, value in layouts.to_canonical(entry["kind"], arrays, entry["config"]).items():
            found[_joined(entry["tensor"], role)] = value
    return found


def set_weights(model: keras.Model, weights: Weights, mapped: list[dict]) -> None:
    """Canonical weights into the mapped units, each converted to its Keras layout and the model's dtype; a zeroed
    bias PyTorch lacks is frozen."""
    layers = units(model)
    for entry in mapped:
        variables = _own_variables(layers[entry["unit"]])
        arrays = {k: np.asarray(v.numpy()) for k, v in variables.items()}
        names = {role: _joined(entry["tensor"], role) for role in layouts.to_canonical(entry["kind"], arrays,
                                                                                        entry["config"])}
        given = {role: weights[name] for role, name in names.items() if name in weights}
        shapes = {key: tuple(v.shape) for key, v in variables.items()}
        for key, value in layouts.from_canonical(entry["kind"], given, entry["config"], shapes).items():
            variables[key].assign(np.asarray(value, variables[key].dtype))
        frozen = {role: given[role] for role in entry.get("frozen", []) if role in given}
        for key in layouts.from_canonical(entry["kind"], frozen, entry["config"], shapes):
            variables[key].trainable = False


def _joined(tensor: str, role: str) -> str:
    return f"{tensor}.{role}" if tensor else role


class _Recorder:
    """Each unit's calls, in the order the forward pass makes them: the output in PyTorch's layout (a fused
    activation's input recorded first), where its inputs came from, and whether it is channels-last."""

    def __init__(self, layout: str):
        self.layout, self.records, self.made, self.keep, self.calls = layout, [], {}, [], {}

    def spatial(self, tensor) -> bool:
        """Channels-last? As its layer made it; a model input or a functional op's result by the input layout."""
        index = self.made.get(id(tensor))
        return self.records[index]["spatial"] if index is not None else (
            self.layout == "channels_last" and len(tensor.shape) >= 3)

    def add(self, name: str, layer: keras.Layer, inputs: list, before: list, output) -> None:
        output = output[0] if isinstance(output, (tuple, list)) else output
        first, kind = (inputs[0] if inputs else None), kind_of(layer)
        in_spatial = first is not None and self.spatial(first)
        in_shape = None if first is None else list(first.shape[1:])
        spatial, flatten_from = layouts.keras_layout_after(kind, getattr(layer, "data_format", None), in_spatial,
                                                           in_shape, len(output.shape))
        self.calls[name] = self.calls.get(name, 0) + 1
        base = {"unit": name, "call": self.calls[name], "class": type(layer).__name__, "spatial": spatial,
                "inputs": [self.made.get(id(t), -1) for t in inputs], "behaviour": None,
                "input_shape": None if in_shape is None else layouts.canonical_shape(in_shape, in_spatial)}
        if before:
            self.records.append({**base, "part": "pre_activation", "kind": kind, "flatten_from": None,
                                 "array": layouts.canonical_output(np.array(before[0]), spatial)})
            kind = _activation_name(layer.activation)
        value = np.array(output)
        if kind == "dropout" and layouts.drops(np.array(first), value):
            base["behaviour"] = "drops its input: left in training mode"
        if kind == "batch_norm" and layouts.uses_batch_statistics(
                np.array(first), value, layer.axis, _value(layer, "moving_mean"), _value(layer, "moving_variance"),
                _value(layer, "gamma"), _value(layer, "beta"), layer.epsilon):
            base["behaviour"] = "normalises with the batch's own statistics: left in training mode"
        self.records.append({**base, "part": "output", "kind": kind, "flatten_from": flatten_from,
                             "array": layouts.canonical_output(value, spatial, flatten_from)})
        self.made[id(output)] = len(self.records) - 1
        self.keep.append(output)  # alive, so that no later tensor reuses its id


def _value(layer: keras.Layer, name: str) -> np.ndarray | None:
    return None if getattr(layer, name, None) is None else np.asarray(getattr(layer, name).numpy())


def _tensors(args: tuple, kwargs: dict) -> list:
    """The tensors a call received: positional ones (a list of them for Add, Concatenate), MHA's value and key."""
    flat = [item for arg in args for item in (arg if isinstance(arg, (list, tuple)) else [arg])]
    flat += [value for key, value in kwargs.items() if key in ("value", "key")]
    return [item for item in flat if hasattr(item, "shape") and hasattr(item, "dtype")]


@contextmanager
def recording(model: keras.Model, layout: dict) -> Iterator[list[dict]]:
    """While open, every unit's calls land in the yielded list. Keras has no forward hooks: each unit's `call` (and
    a fused activation) is wrapped on the instance, and the class's own is back when the block ends."""
    recorder = _Recorder(layout["input"])
    layers = units(model)
    for name, layer in layers.items():
        def call(*args, _call=layer.call, _name=name, _layer=layer, **kwargs):
            activation = getattr(_layer, "activation", None)
            before = []
            fused = (activation is not None and not isinstance(_layer, keras.layers.Activation)
                     and _activation_name(activation) != "linear")
            if fused:
                _layer.activation = lambda x: before.append(x) or activation(x)
            try:
                output = _call(*args, **kwargs)
            finally:
                if fused:
                    _layer.activation = activation
            recorder.add(_name, _layer, _tensors(args, kwargs), before, output)
            return output

        layer.call = call
    try:
        yield recorder.records
    finally:
        for layer in layers.values():
            del layer.call


def _tensor_of(inputs: np.ndarray, layout: dict):
    return ops.convert_to_tensor(layouts.keras_input(inputs, layout["input"]))


def model_output(outputs, layout: dict):
    """The model's first output in PyTorch's layout (channels first)."""
    outputs = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    return ops.moveaxis(outputs, -1, 1) if layout.get("output_spatial") else outputs


def forward(model: keras.Model, inputs: np.ndarray, layout: dict) -> tuple[np.ndarray, list[dict]]:
    """The inference pass (training=False) on PyTorch-layout inputs: the output in PyTorch's layout, and every
    unit's recorded calls. layout["output_spatial"] is set from the record that made the output."""
    with recording(model, layout) as records:
        outputs = model(_tensor_of(inputs, layout), training=False)
        outputs = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    value = np.asarray(outputs)
    last = next((r for r in reversed(records) if r["part"] == "output"), None)
    made = last is not None and np.array_equal(last["array"], layouts.canonical_output(value, last["spatial"],
                                                                                last["flatten_from"]))
    layout["output_spatial"] = bool(last["spatial"] if made else
                                    layout["input"] == "channels_last" and value.ndim == inputs.ndim >= 3)
    return np.asarray(model_output(outputs, layout)), records


def loss_of(outputs, targets, loss: str):
    """The loss on PyTorch-layout outputs: the sum of squares, or the mean of mse, bce (of logits) or ce (of
    logits, classes on axis 1)."""
    if loss == "sum_squares":
        return ops.sum(ops.square(outputs))
    if loss == "mse":
        return ops.mean(ops.square(outputs - targets))
    if loss == "bce":
        return ops.mean(keras.losses.binary_crossentropy(targets, outputs, from_logits=True))
    logits = ops.moveaxis(outputs, 1, -1)  # TensorFlow's cross-entropy takes its classes last
    return ops.mean(keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True))


def gradients(model: keras.Model, inputs: np.ndarray, targets: np.ndarray | None, loss: str, layout: dict,
              mapped: list[dict]) -> tuple[float, Weights]:
    """The loss of the inference pass and its gradient for every mapped trainable tensor, canonical."""
    layers = units(model)
    owned = {entry["unit"]: _own_variables(layers[entry["unit"]]) for entry in mapped}
    trainable = [v for variables in owned.values() for v in variables.values() if v.trainable]
    with tf.GradientTape() as tape:
        value = loss_of(model_output(model(_tensor_of(inputs, layout), training=False), layout),
                        None if targets is None else ops.convert_to_tensor(targets), loss)
    by_id = {id(v): g for v, g in zip(trainable, tape.gradient(value, trainable))}
    found = {}
    for entry in mapped:
        arrays = {key: np.zeros(v.shape, v.dtype) if by_id[id(v)] is None else  # an Embedding's IndexedSlices, dense
                  np.asarray(tf.convert_to_tensor(by_id[id(v)])) for key, v in owned[entry["unit"]].items()
                  if id(v) in by_id}
        for role, grad in layouts.to_canonical(entry["kind"], arrays, entry["config"]).items():
            found[_joined(entry["tensor"], role)] = grad
    return float(value), found


def train_steps(model: keras.Model, inputs: np.ndarray, targets: np.ndarray | None, loss: str, layout: dict,
                lr: float, steps: int, on_step: Callable[[int], Any]) -> list[float]:
    """`steps` steps of plain SGD in training mode (BatchNorm on batch statistics), dropout switched off (its
    masks cannot match across frameworks); on_step(k) after step k. The losses, step by step."""
    x = _tensor_of(inputs, layout)
    t = None if targets is None else ops.convert_to_tensor(targets)
    optimizer = keras.optimizers.SGD(learning_rate=lr)
    dropouts = [layer for layer in model._flatten_layers(include_self=False)
                if isinstance(layer, keras.layers.Dropout)]
    rates = [layer.rate for layer in dropouts]
    for layer in dropouts:
        layer.rate = 0.0
    losses = []
    try:
        for step in range(steps):
            with tf.GradientTape() as tape:
                value = loss_of(model_output(model(x, training=True), layout), t, loss)
            pairs = [(g, v) for g, v in zip(tape.gradient(value, model.trainable_variables),
                                            model.trainable_variables) if g is not None]
            optimizer.apply_gradients(pairs)
            losses.append(float(value))
            on_step(step + 1)
    finally:
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate
    return losses
