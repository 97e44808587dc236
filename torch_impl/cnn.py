"""The small MNIST CNN as an nn.Module; twin of keras_models/cnn.py."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shared.tasks import CNNSpec


class CNN(nn.Module):
    """conv5x5(32) ReLU maxpool2, conv5x5(64) ReLU maxpool2, fc 3136->1000 ReLU, fc 1000->10, log_softmax."""

    def __init__(self, channels: tuple[int, int], kernel_size: int, feature_map: tuple[int, int, int], hidden: int,
                 classes: int):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, kernel_size, padding=kernel_size // 2)  # one grey channel, as MNIST
        self.conv2 = nn.Conv2d(c1, c2, kernel_size, padding=kernel_size // 2)
        self.fc1 = nn.Linear(math.prod(feature_map), hidden)  # fc1 sees the (C, H, W) map flattened
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 1, 28, 28) -> (N, 32, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # -> (N, 64, 7, 7)
        x = x.flatten(1)  # -> (N, 3136), in (C, H, W) order
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)  # (N, 10)


def build(spec: CNNSpec) -> CNN:
    """PyTorch initialises on construction; the harness then loads the canonical weights."""
    return CNN(spec.channels, spec.kernel_size, spec.feature_map, spec.hidden, spec.classes)
