"""Analytic FLOP counts of a training step: convolutions and matrix products, per layer of each task's model
(harness/registry.py names each task's count); the benchmark checks PyTorch's FlopCounterMode against them."""
from __future__ import annotations

from shared import weights
from shared.profiling import COMPILED_CONVOLUTIONS
from shared.tasks import CNNSpec, MLPSpec, UNetSpec


def conv_flops(batch: int, c_in: int, c_out: int, kernel: int, height: int, width: int) -> int:
    """A k x k convolution: one multiply and one add per weight per position. Pass the output size for a
    convolution, the input size for a transposed one (that is where its kernel is applied)."""
    return 2 * batch * c_in * c_out * kernel * kernel * height * width


def linear_flops(batch: int, n_in: int, n_out: int) -> int:
    return 2 * batch * n_in * n_out


def training_flops(forward: list[int]) -> int:
    """Forward, plus for each layer the weight gradient (as much as its forward) and the input gradient (the
    same again), except for the first layer: its input, the data, needs no gradient. Counted: convolutions
    and matrix products, as PyTorch's FlopCounterMode counts them (not BatchNorm, ReLU, pooling, the loss)."""
    return 3 * sum(forward) - forward[0]


def unet_forward_flops(spec: UNetSpec, batch: int) -> list[int]:
    return [count for _, count in unet_forward_layers(spec, batch)]


def unet_forward_layers(spec: UNetSpec, batch: int) -> list[tuple[str, int]]:
    """Each convolution's forward FLOPs, in order, with its kind: "conv" (the 3x3s and the 1x1 head) or "up"
    (the transposed 2x2s)."""
    widths = weights.unet_widths(spec.base_filters, spec.depth)
    shrink = 0 if spec.variant == "padded" else 2  # each valid 3x3 convolution loses 2 pixels
    (height, width_px), c_in, layers = spec.image_shape, spec.in_channels, []  # (H, W): Carvana's photos are not square
    for level, width in enumerate(widths, start=1):
        for conv in (1, 2):
            height, width_px = height - shrink, width_px - shrink
            layers.append(("conv", conv_flops(batch, c_in if conv == 1 else width, width, 3, height, width_px)))
        c_in = width
        if level <= spec.depth:
            height, width_px = height // 2, width_px // 2
    for level in range(spec.depth, 0, -1):
        width = widths[level - 1]
        # the 2x2 stride-2 up-convolution, counted at its input size
        layers.append(("up", conv_flops(batch, widths[level], width, 2, height, width_px)))
        height, width_px = height * 2, width_px * 2
        for conv in (1, 2):
            height, width_px = height - shrink, width_px - shrink
            layers.append(("conv", conv_flops(batch, 2 * width if conv == 1 else width, width, 3, height, width_px)))
    layers.append(("conv", conv_flops(batch, widths[0], 1, 1, height, width_px)))  # the 1x1 head
    return layers


def unet_category_flops(spec: UNetSpec, batch: int) -> dict[str, int]:
    """A training step's FLOPs by --profile's categories (shared/profiling.py): the forward convolutions; their
    backward (weight and input gradients, each as much as the forward; none for the first layer's input); the
    transposed convolutions, forward and backward; all of them, where a compiler's kernels do not say which."""
    layers = unet_forward_layers(spec, batch)
    forward = sum(count for kind, count in layers if kind == "conv")
    up = sum(count for kind, count in layers if kind == "up")
    backward = 2 * forward - layers[0][1]
    return {"convolution forward": forward, "convolution backward": backward, "transposed convolution": 3 * up,
            COMPILED_CONVOLUTIONS: forward + backward + 3 * up}


def unet_step_bytes(spec: UNetSpec, batch: int) -> int:
    """About the memory a U-Net training step keeps for its backward pass, in float32: each 3x3 convolution's output
    three times (convolution, BatchNorm, ReLU). It leaves out the input, pooling, concatenation, the gradients and
    the framework's own workspace, so a step needs more."""
    widths = weights.unet_widths(spec.base_filters, spec.depth)
    (height, width_px), elements = spec.image_shape, 0
    for level, width in enumerate(widths, start=1):  # contracting path; the expanding path mirrors it
        elements += 2 * batch * height * width_px * width * (2 if level <= spec.depth else 1)
        height, width_px = height // 2, width_px // 2
    return 3 * 4 * elements


def mlp_forward_flops(spec: MLPSpec, batch: int) -> list[int]:
    sizes = spec.layer_sizes
    return [linear_flops(batch, n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def cnn_forward_flops(spec: CNNSpec, batch: int) -> list[int]:
    c1, c2 = spec.channels
    size = spec.image_size  # 'same' 5x5 convolutions, each followed by a 2x2 max-pool
    return [conv_flops(batch, 1, c1, spec.kernel_size, size, size),
            conv_flops(batch, c1, c2, spec.kernel_size, size // 2, size // 2),
            linear_flops(batch, spec.flat_features, spec.hidden), linear_flops(batch, spec.hidden, spec.classes)]
