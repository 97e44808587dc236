"""The canonical weight layout (PyTorch state_dict names and array layouts), its numpy conversions to
Keras layouts, and safetensors files; keras_models/weights.py and torch_impl/weights.py apply it to models."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.atomic import atomic_path
from shared.errors import DataError
from shared.tasks import CNNSpec, MLPSpec, UNetSpec

Weights = dict[str, np.ndarray]  # canonical name -> array in PyTorch layout


@dataclass(frozen=True)
class Param:
    """One canonical tensor: its shape, what kind of layer owns it, and the fan-in its init uses."""

    shape: tuple[int, ...]
    kind: str  # "weight", "bias", "bn_weight", "bn_bias", "bn_mean", "bn_var"
    fan_in: int = 0


def linear(name: str, n_in: int, n_out: int) -> dict[str, Param]:
    """nn.Linear: weight (out, in), bias (out,)."""
    return {f"{name}.weight": Param((n_out, n_in), "weight", n_in), f"{name}.bias": Param((n_out,), "bias", n_in)}


def conv2d(name: str, n_in: int, n_out: int, k: int) -> dict[str, Param]:
    """nn.Conv2d: weight (out, in, kh, kw), bias (out,)."""
    fan_in = n_in * k * k
    return {
        f"{name}.weight": Param((n_out, n_in, k, k), "weight", fan_in),
        f"{name}.bias": Param((n_out,), "bias", fan_in),
    }


def conv_transpose2d(name: str, n_in: int, n_out: int, k: int) -> dict[str, Param]:
    """nn.ConvTranspose2d: weight (in, out, kh, kw); PyTorch takes its fan-in from dim 1 (out * kh * kw)."""
    fan_in = n_out * k * k
    return {
        f"{name}.weight": Param((n_in, n_out, k, k), "weight", fan_in),
        f"{name}.bias": Param((n_out,), "bias", fan_in),
    }


def batch_norm(name: str, n: int) -> dict[str, Param]:
    """nn.BatchNorm2d: affine weight/bias and running statistics (num_batches_tracked is not kept)."""
    return {
        f"{name}.weight": Param((n,), "bn_weight"),
        f"{name}.bias": Param((n,), "bn_bias"),
        f"{name}.running_mean": Param((n,), "bn_mean"),
        f"{name}.running_var": Param((n,), "bn_var"),
    }


def mlp_layout(spec: MLPSpec) -> dict[str, Param]:
    """fc1, fc2, ... for consecutive layer_sizes."""
    layout: dict[str, Param] = {}
    sizes = spec.layer_sizes
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        layout.update(linear(f"fc{i}", n_in, n_out))
    return layout


def cnn_layout(spec: CNNSpec) -> dict[str, Param]:
    """conv1, conv2, fc1, fc2."""
    c1, c2 = spec.channels
    return {
        **conv2d("conv1", 1, c1, spec.kernel_size),
        **conv2d("conv2", c1, c2, spec.kernel_size),
        **linear("fc1", spec.flat_features, spec.hidden),
        **linear("fc2", spec.hidden, spec.classes),
    }


def parameter_count(layout: dict[str, Param]) -> int:
    """Trainable parameters (BatchNorm running statistics are buffers, not parameters)."""
    return sum(int(np.prod(p.shape)) for p in layout.values() if p.kind not in ("bn_mean", "bn_var"))


# Layout conversions at the boundary. PyTorch (canonical) on the left, Keras on the right.

def linear_to_keras(w: np.ndarray) -> np.ndarray:
    """Linear (out, in) -> Dense kernel (in, out)."""
    return np.ascontiguousarray(w.T)


def linear_from_keras(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.T)


def conv_to_keras(w: np.ndarray) -> np.ndarray:
    """Conv2d (out, in, kh, kw) -> Conv2D kernel (kh, kw, in, out)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def conv_from_keras(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def conv_transpose_to_keras(w: np.ndarray) -> np.ndarray:
    """ConvTranspose2d (in, out, kh, kw) -> Conv2DTranspose kernel (kh, kw, out, in)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def conv_transpose_from_keras(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def flattened_linear_to_keras(w: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """The Linear after Flatten: PyTorch flattens (C, H, W), Keras on NHWC flattens (H, W, C),
    so the input rows are permuted as well as transposed: (out, C*H*W) -> (H*W*C, out)."""
    c, h, wd = chw
    out = w.shape[0]
    return np.ascontiguousarray(w.reshape(out, c, h, wd).transpose(2, 3, 1, 0).reshape(h * wd * c, out))


def flattened_linear_from_keras(w: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    c, h, wd = chw
    out = w.shape[1]
    return np.ascontiguousarray(w.reshape(h, wd, c, out).transpose(3, 2, 0, 1).reshape(out, c * h * wd))


def save_weights(weights: Weights, path: str | os.PathLike) -> Path:
    """Write a .safetensors file atomically (temporary file in the same folder, then rename)."""
    from safetensors.numpy import save_file

    with atomic_path(path) as temporary:
        save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(temporary))
    return Path(path)


def load_weights_file(path: str | os.PathLike) -> Weights:
    """Read a .safetensors file into canonical numpy arrays."""
    from safetensors.numpy import load_file

    if Path(path).is_dir():  # safetensors would say "No such device (os error 19)"
        inside = sorted(Path(path).glob("*.safetensors")) or sorted(Path(path).glob("*/*.safetensors"))
        raise DataError(path, "a folder, not a weights file: name the .safetensors file"
                              + (f" (such as {inside[0]})" if inside else " (a run's <side>/*.safetensors)"))
    try:
        return dict(load_file(str(path)))
    except FileNotFoundError:
        raise DataError(path, "no such weights file") from None
    except Exception as error:  # safetensors raises its own error types for a damaged header
        raise DataError(path, f"not a readable safetensors file ({error})") from None


def check_layout(weights: Weights, layout: dict[str, Param], source: str = "weights") -> None:
    """Every canonical name present with its shape; nothing extra."""
    missing = [k for k in layout if k not in weights]
    extra = [k for k in weights if k not in layout]
    wrong = [f"{k} {weights[k].shape} != {layout[k].shape}" for k in layout
             if k in weights and tuple(weights[k].shape) != tuple(layout[k].shape)]
    if missing or extra or wrong:
        raise DataError(source, f"weights do not match the model: missing {missing[:3]}, extra {extra[:3]}, "
                                f"shapes {wrong[:3]}")


def first_mismatch(weights: Weights, layout: dict[str, Param]) -> tuple[str, str, list[str]] | None:
    """The first way canonical weights do not fit a layout, in layout order: ("missing", name), ("shape", name),
    ("extra", name) or ("non-finite", name: a tensor holding NaN or infinity), with every tensor the layout lacks;
    None when they fit."""
    extra = [name for name in weights if name not in layout]
    for name, param in layout.items():
        if name not in weights:
            return "missing", name, extra
        if tuple(weights[name].shape) != tuple(param.shape):
            return "shape", name, extra
    if extra:
        return "extra", extra[0], extra
    broken = next((name for name in layout if not np.all(np.isfinite(weights[name]))), None)
    return None if broken is None else ("non-finite", broken, extra)


def mismatch_message(weights: Weights, layout: dict[str, Param], model: str = "model") -> str | None:
    """The first way the weights do not fit the model (first_mismatch) as one sentence, the same wherever weights
    are refused (--init-weights, --predict's --weights); None when they fit."""
    found = first_mismatch(weights, layout)
    if found is None:
        return None
    kind, name, extra = found
    if kind == "missing":
        also = f"; it holds {extra[0]} instead" if extra else ""
        return f"weights of another architecture: no tensor {name}, which the {model} needs{also}"
    if kind == "shape":
        return (f"weights of another architecture or width: {name} is {tuple(weights[name].shape)} but the {model} "
                f"needs {tuple(layout[name].shape)}")
    if kind == "non-finite":
        return f"tensor {name} holds NaN or infinite values: weights of a run that diverged"
    return f"weights of another architecture: {name} (and {len(extra) - 1} more) is not a tensor of the {model}"


def load_matching_weights(path: str | os.PathLike, layout: dict[str, Param]) -> Weights:
    """A canonical weights file to start training from (--init-weights), refused in one line naming the file and
    the first tensor that does not fit the model (another width, depth or task)."""
    loaded = load_weights_file(path)
    problem = mismatch_message(loaded, layout)
    if problem:
        raise DataError(path, problem)
    return {name: np.asarray(loaded[name], np.float32) for name in layout}


def unet_widths(base_filters: int, depth: int) -> list[int]:
    """Channels per level: base, 2 base, 4 base, ... down to the bottleneck (depth + 1 levels)."""
    return [base_filters * 2**level for level in range(depth + 1)]


def double_conv(name: str, n_in: int, n_out: int) -> dict[str, Param]:
    """conv3x3 - BN - ReLU, twice: the U-Net's building block."""
    return {**conv2d(f"{name}.conv1", n_in, n_out, 3), **batch_norm(f"{name}.bn1", n_out),
            **conv2d(f"{name}.conv2", n_out, n_out, 3), **batch_norm(f"{name}.bn2", n_out)}


def unet_layout(spec: UNetSpec) -> dict[str, Param]:
    """enc1..enc{depth+1} down the contracting path, up{l}/dec{l} back up, head 1x1 to one logit.
    The padded and the original (valid-convolution) variants share this layout; enc1 takes spec.in_channels."""
    widths = unet_widths(spec.base_filters, spec.depth)
    layout: dict[str, Param] = {}
    for level, width in enumerate(widths, start=1):
        layout.update(double_conv(f"enc{level}", spec.in_channels if level == 1 else widths[level - 2], width))
    for level in range(spec.depth, 0, -1):
        layout.update(conv_transpose2d(f"up{level}", widths[level], widths[level - 1], 2))
        layout.update(double_conv(f"dec{level}", 2 * widths[level - 1], widths[level - 1]))
    layout.update(conv2d("head", widths[0], 1, 1))
    return layout
