"""The U-Net as nn.Modules; twin of keras_models/unet.py.

Two variants: padded, and Ronneberger's original with valid convolutions."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.tasks import UNetSpec
from shared.weights import unet_widths


class BatchNorm(nn.BatchNorm2d):
    """PyTorch's own BatchNorm2d, the reference its Keras twin imitates: a training batch is normalised with
    its biased variance, and running_var stores the unbiased one (n / (n - 1) times larger)."""


class DoubleConv(nn.Module):
    """(conv3x3 -> BatchNorm -> ReLU) twice; padding 1 keeps the size, padding 0 loses 2 pixels per conv."""

    def __init__(self, n_in: int, n_out: int, padding: int, bn_eps: float, bn_momentum: float):
        super().__init__()
        self.conv1 = nn.Conv2d(n_in, n_out, 3, padding=padding)
        self.bn1 = BatchNorm(n_out, eps=bn_eps, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(n_out, n_out, 3, padding=padding)
        self.bn2 = BatchNorm(n_out, eps=bn_eps, momentum=bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


def center_crop(skip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The original U-Net crops the encoder's larger feature map to the decoder's (height, width) before
    concatenating; each axis on its own, as the input need not be square."""
    top = (skip.shape[2] - size[0]) // 2
    left = (skip.shape[3] - size[1]) // 2
    return skip[:, :, top:top + size[0], left:left + size[1]]


class UNet(nn.Module):
    """Contracting path enc1..enc{depth+1} with 2x2 max-pooling, expanding path up{l} (2x2 transposed conv)
    + skip + dec{l}, and a 1x1 head to one logit per pixel."""

    def __init__(self, in_channels: int, base_filters: int, depth: int, padding: int, bn_eps: float,
                 bn_momentum: float):
        super().__init__()
        widths = unet_widths(base_filters, depth)
        self.depth = depth
        for level, width in enumerate(widths, start=1):
            n_in = in_channels if level == 1 else widths[level - 2]
            self.add_module(f"enc{level}", DoubleConv(n_in, width, padding, bn_eps, bn_momentum))
        for level in range(depth, 0, -1):
            self.add_module(f"up{level}", nn.ConvTranspose2d(widths[level], widths[level - 1], 2, stride=2))
            self.add_module(f"dec{level}", DoubleConv(2 * widths[level - 1], widths[level - 1], padding,
                                                      bn_eps, bn_momentum))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in range(1, self.depth + 1):  # (N, C, H, W) -> ... halving H, W at each level
            x = getattr(self, f"enc{level}")(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = getattr(self, f"enc{self.depth + 1}")(x)  # the bottleneck
        for level in range(self.depth, 0, -1):  # doubling H, W back up
            x = getattr(self, f"up{level}")(x)
            skip = center_crop(skips[level - 1], x.shape[2:])
            x = getattr(self, f"dec{level}")(torch.cat([skip, x], dim=1))
        return self.head(x)  # (N, 1, H_out, W_out) logits


class UNetOriginal(UNet):
    """Ronneberger et al. 2015: valid 3x3 convolutions, crop-and-concatenate skips; 572x572 in, 388x388 out."""

    def __init__(self, in_channels: int, base_filters: int, depth: int, bn_eps: float, bn_momentum: float):
        super().__init__(in_channels, base_filters, depth, padding=0, bn_eps=bn_eps, bn_momentum=bn_momentum)


class UNetPadded(UNet):
    """The common variant: 'same' 3x3 convolutions, so the mask has the input's size and skips need no crop."""

    def __init__(self, in_channels: int, base_filters: int, depth: int, bn_eps: float, bn_momentum: float):
        super().__init__(in_channels, base_filters, depth, padding=1, bn_eps=bn_eps, bn_momentum=bn_momentum)


def build(spec: UNetSpec) -> UNet:
    variant = UNetPadded if spec.variant == "padded" else UNetOriginal
    return variant(spec.in_channels, spec.base_filters, spec.depth, spec.bn_eps, spec.bn_momentum)
