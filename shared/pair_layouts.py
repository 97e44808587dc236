"""Your own pair's layouts (--pair), in numpy: each layer kind's parameters between Keras' layout and the canonical
one (PyTorch's names and arrays), the input and the layer outputs between the Keras model's layout and PyTorch's,
and the checks of a normalisation or dropout layer's behaviour. tf_impl/pair.py and torch_impl/pair.py use them."""
from __future__ import annotations

import re

import numpy as np

from shared.weights import linear_from_keras, linear_to_keras

# Keras variable name -> canonical (PyTorch) role, per kind; a kind not listed keeps the Keras names.
ROLES = {
    "linear": {"kernel": "weight", "bias": "bias"},
    "conv": {"kernel": "weight", "bias": "bias"},
    "conv_transpose": {"kernel": "weight", "bias": "bias"},
    "depthwise_conv": {"kernel": "weight", "bias": "bias"},
    "batch_norm": {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                   "moving_variance": "running_var"},
    "layer_norm": {"gamma": "weight", "beta": "bias"},
    "embedding": {"embeddings": "weight"},
}
STATE = ("running_mean", "running_var")  # buffers: mapped and compared, never trained
LAYOUTS = ("channels_last", "channels_first")  # channels_first: the input goes to Keras as PyTorch takes it


def family(kind: str) -> str:
    """The kind without its dimension and depthwise prefix: "conv" of "conv2d" and of "depthwise_conv2d"."""
    return re.sub(r"[123]d$", "", kind.removeprefix("depthwise_"))


def normalise(name: str) -> str:
    """A layer name compared across frameworks: lower case, separators and the usual suffixes gone
    ("enc1.conv1", "enc1_conv1" and "enc1/conv1" agree)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _spatial_axes(kernel: np.ndarray, leading: int) -> tuple[int, ...]:
    return tuple(range(leading, kernel.ndim))


def _conv_to_canonical(kernel: np.ndarray) -> np.ndarray:
    """Conv kernel (*k, in, out) -> (out, in, *k); transposed (*k, out, in) -> (in, out, *k): the same axes."""
    n = kernel.ndim - 2
    return np.ascontiguousarray(kernel.transpose(n + 1, n, *range(n)))


def _conv_from_canonical(weight: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(weight.transpose(*_spatial_axes(weight, 2), 1, 0))


def _depthwise_to_canonical(kernel: np.ndarray) -> np.ndarray:
    """DepthwiseConv kernel (*k, C, M) -> Conv with groups=C (C*M, 1, *k): output channel c*M + m on both sides."""
    n = kernel.ndim - 2
    c, m = kernel.shape[-2:]
    return np.ascontiguousarray(kernel.transpose(n, n + 1, *range(n)).reshape(c * m, 1, *kernel.shape[:n]))


def _depthwise_from_canonical(weight: np.ndarray, channels: int) -> np.ndarray:
    spatial = weight.shape[2:]
    grouped = weight.reshape(channels, weight.shape[0] // channels, *spatial)
    return np.ascontiguousarray(grouped.transpose(*_spatial_axes(grouped, 2), 0, 1))


def _flattened_to_canonical(kernel: np.ndarray, flatten_from: list[int]) -> np.ndarray:
    """The Dense after a Flatten of a channels-last tensor (*S, C): its rows in (*S, C) order, PyTorch's Linear
    columns in (C, *S) order, so the rows are permuted as well as transposed."""
    *spatial, channels = flatten_from
    rows = kernel.reshape(*spatial, channels, kernel.shape[1])
    return np.ascontiguousarray(np.moveaxis(rows, -2, 0).reshape(kernel.shape[0], kernel.shape[1]).T)


def _flattened_from_canonical(weight: np.ndarray, flatten_from: list[int]) -> np.ndarray:
    *spatial, channels = flatten_from
    columns = weight.T.reshape(channels, *spatial, weight.shape[0])
    return np.ascontiguousarray(np.moveaxis(columns, 0, -2).reshape(weight.shape[1], weight.shape[0]))


def _heads_to_canonical(kernel: np.ndarray) -> np.ndarray:
    """MultiHeadAttention's query/key/value kernel (E, heads, head_dim) -> a Linear weight (heads * head_dim, E)."""
    return np.ascontiguousarray(kernel.reshape(kernel.shape[0], -1).T)


def _mha_to_canonical(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras' per-head query/key/value kernels -> PyTorch's packed in_proj_weight (3E, E) when the three inputs
    have one width, else q_proj_weight, k_proj_weight, v_proj_weight; biases packed in in_proj_bias; the output
    kernel (heads, head_dim, E) -> out_proj.weight (E, heads * head_dim)."""
    found: dict[str, np.ndarray] = {}
    kernels = [arrays.get(f"{part}/kernel") for part in ("query", "key", "value")]
    if all(k is not None for k in kernels):
        weights = [_heads_to_canonical(k) for k in kernels]
        if len({w.shape for w in weights}) == 1 and weights[0].shape[0] == weights[0].shape[1]:
            found["in_proj_weight"] = np.concatenate(weights)
        else:
            found.update({f"{p}_proj_weight": w for p, w in zip("qkv", weights)})
    biases = [arrays.get(f"{part}/bias") for part in ("query", "key", "value")]
    if all(b is not None for b in biases):
        found["in_proj_bias"] = np.concatenate([b.reshape(-1) for b in biases])
    if "attention_output/kernel" in arrays:
        output = arrays["attention_output/kernel"]
        found["out_proj.weight"] = np.ascontiguousarray(output.reshape(-1, output.shape[-1]).T)
    if "attention_output/bias" in arrays:
        found["out_proj.bias"] = arrays["attention_output/bias"]
    return found


def _mha_from_canonical(arrays: dict[str, np.ndarray], shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """The reverse of _mha_to_canonical, into the Keras variables' shapes (shapes: Keras name -> shape)."""
    found: dict[str, np.ndarray] = {}
    parts = ("query", "key", "value")
    if "in_proj_weight" in arrays:
        weights = np.split(arrays["in_proj_weight"], 3)
    else:
        weights = [arrays.get(f"{p}_proj_weight") for p in "qkv"]
    for part, weight in zip(parts, weights):
        if weight is not None and f"{part}/kernel" in shapes:
            found[f"{part}/kernel"] = np.ascontiguousarray(weight.T.reshape(shapes[f"{part}/kernel"]))
    if "in_proj_bias" in arrays:
        sizes = np.cumsum([int(np.prod(shapes[f"{p}/bias"])) for p in parts if f"{p}/bias" in shapes])[:-1]
        for part, bias in zip(parts, np.split(arrays["in_proj_bias"], sizes)):
            if f"{part}/bias" in shapes:
                found[f"{part}/bias"] = bias.reshape(shapes[f"{part}/bias"])
    if "out_proj.weight" in arrays:
        shape = shapes["attention_output/kernel"]
        found["attention_output/kernel"] = np.ascontiguousarray(arrays["out_proj.weight"].T.reshape(shape))
    if "out_proj.bias" in arrays:
        found["attention_output/bias"] = arrays["out_proj.bias"]
    return found


def to_canonical(kind: str, arrays: dict[str, np.ndarray], config: dict) -> dict[str, np.ndarray]:
    """A Keras layer's variables (or their gradients), by Keras name, as canonical roles in PyTorch's layout."""
    if kind == "mha":
        return _mha_to_canonical(arrays)
    roles = ROLES.get(family(kind), {})
    found = {}
    for name, value in arrays.items():
        role = roles.get(name, name)
        if role == "weight" and family(kind) == "linear":
            flatten_from = config.get("flatten_from")
            value = _flattened_to_canonical(value, flatten_from) if flatten_from else linear_from_keras(value)
        elif role == "weight" and kind.startswith("depthwise_"):
            value = _depthwise_to_canonical(value)
        elif role == "weight" and family(kind) in ("conv", "conv_transpose"):
            value = _conv_to_canonical(value)
        found[role] = value
    return found


def from_canonical(kind: str, arrays: dict[str, np.ndarray], config: dict,
                   shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Canonical roles as the Keras layer's variables (shapes: its variables' shapes by Keras name)."""
    if kind == "mha":
        return _mha_from_canonical(arrays, shapes)
    names = {role: name for name, role in ROLES.get(family(kind), {}).items()}
    found = {}
    for role, value in arrays.items():
        name = names.get(role, role)
        if name not in shapes:
            continue
        if role == "weight" and family(kind) == "linear":
            flatten_from = config.get("flatten_from")
            value = _flattened_from_canonical(value, flatten_from) if flatten_from else linear_to_keras(value)
        elif role == "weight" and kind.startswith("depthwise_"):
            value = _depthwise_from_canonical(value, shapes[name][-2])
        elif role == "weight" and family(kind) in ("conv", "conv_transpose"):
            value = _conv_from_canonical(value)
        found[name] = value
    return found


def keras_input(x: np.ndarray, layout: str) -> np.ndarray:
    """PyTorch's input (N, C, *S) as the Keras model takes it: (N, *S, C) channels-last, or as it is."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)) if layout == "channels_last" and x.ndim >= 3 else x


def canonical_output(x: np.ndarray, spatial: bool, flatten_from: list[int] | None = None) -> np.ndarray:
    """A Keras layer's output in PyTorch's layout: a channels-last tensor with its channels moved to axis 1; a
    Flatten of one (*S, C) reordered as PyTorch flattens (C, *S)."""
    if flatten_from:
        unflat = x.reshape(x.shape[0], *flatten_from)
        return np.ascontiguousarray(np.moveaxis(unflat, -1, 1).reshape(x.shape[0], -1))
    return np.ascontiguousarray(np.moveaxis(x, -1, 1)) if spatial and x.ndim >= 3 else x


def canonical_shape(shape: list[int], spatial: bool) -> list[int]:
    """A Keras tensor's shape (without the batch axis) in PyTorch's layout."""
    return [shape[-1], *shape[:-1]] if spatial and len(shape) >= 2 else list(shape)


def keras_layout_after(kind: str, data_format: str | None, in_spatial: bool, in_shape: list[int] | None,
                       out_rank: int) -> tuple[bool, list[int] | None]:
    """Whether a Keras layer's output is channels-last (its data_format says so, or it keeps the rank of a
    channels-last input), and for a Flatten the (*S, C) it flattens a channels-last tensor as (None: PyTorch's
    order)."""
    shape = list(in_shape or [])
    if kind == "flatten":
        if len(shape) >= 2 and in_spatial and data_format != "channels_first":
            return False, shape
        if len(shape) >= 2 and not in_spatial and data_format == "channels_first":
            return False, shape[1:] + shape[:1]  # Keras moves the channels last before flattening
        return False, None
    if data_format in LAYOUTS and out_rank >= 3:
        return data_format == "channels_last", None
    return (in_spatial and kind not in ("reshape", "permute") and in_shape is not None
            and out_rank == len(shape) + 1), None


def detect_layout(keras_shape: tuple | None, torch_shape: tuple, data_format: str | None) -> str | None:
    """The Keras model's input layout from its declared input shape (without the batch axis) against PyTorch's
    (N, C, *S): channels-last (*S, C), or channels-first (as PyTorch's); when both fit (or no shape is declared),
    its first spatial layer's data_format; None: the declared shape fits neither."""
    torch_shape = tuple(torch_shape[1:])
    last = torch_shape[1:] + torch_shape[:1] if len(torch_shape) >= 2 else torch_shape
    fits = [layout for layout, shape in (("channels_last", last), ("channels_first", torch_shape))
            if keras_shape is None or _fits(keras_shape, shape)]
    if len(fits) == 2 or (fits and len(torch_shape) < 2):
        return data_format if data_format in LAYOUTS and len(torch_shape) >= 2 else "channels_first"
    return fits[0] if fits else None


def _fits(declared: tuple, shape: tuple) -> bool:
    return len(declared) == len(shape) and all(d is None or d == s for d, s in zip(declared, shape))


def drops(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether a dropout layer changed its input in an inference pass: it was left in training mode."""
    return x.shape == y.shape and not np.array_equal(x, y)


def uses_batch_statistics(x: np.ndarray, y: np.ndarray, axis: int, mean, var, gamma, beta, eps: float) -> bool:
    """Whether a BatchNorm's output in an inference pass is not what its running statistics give (it normalised
    with the batch's own): the layer was left in training mode, or keeps no running statistics."""
    if mean is None or var is None:
        return True
    shape = [1] * x.ndim
    shape[axis] = -1
    scale = (np.ones_like(var) if gamma is None else gamma) / np.sqrt(var + eps)
    shift = (np.zeros_like(mean) if beta is None else beta) - mean * scale
    expected = x * scale.reshape(shape) + shift.reshape(shape)
    return float(np.max(np.abs(expected - y), initial=0.0)) > 1e-3 * max(float(np.max(np.abs(y), initial=0.0)), 1.0)
