"""The 784-200-200-10 MNIST classifier as an nn.Module; twin of keras_models/mlp.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.tasks import MLPSpec


class MLP(nn.Module):
    """Linear 784->200, ReLU, 200->200, ReLU, 200->10, log_softmax (the loss is NLL)."""

    def __init__(self, layer_sizes: tuple[int, ...]):
        super().__init__()
        n_in, hidden1, hidden2, classes = layer_sizes
        self.fc1 = nn.Linear(n_in, hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.fc3 = nn.Linear(hidden2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (N, 1, 28, 28) -> (N, 784)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)  # (N, 10)


def build(spec: MLPSpec) -> MLP:
    """PyTorch initialises on construction; the harness then loads the canonical weights."""
    return MLP(spec.layer_sizes)
