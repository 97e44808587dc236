"""Canonical weights (PyTorch state_dict layout, numpy) in and out of nn.Modules; twin of tf_impl/weights.py."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shared.weights import Weights

# BatchNorm's step counter is a buffer of PyTorch only; the canonical layout does not keep it.
SKIPPED = ("num_batches_tracked",)


def load_weights(model: nn.Module, canonical: Weights) -> None:
    """The canonical layout *is* the state_dict layout: names and shapes match one to one."""
    state = {name: torch.from_numpy(np.asarray(array).copy()) for name, array in canonical.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.endswith(SKIPPED)]
    if missing or unexpected:
        raise KeyError(f"weights do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")


def export_weights(model: nn.Module) -> Weights:
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in model.state_dict().items()
            if not name.endswith(SKIPPED)}


def canonical_gradients(model: nn.Module) -> Weights:
    """The .grad of every parameter after backward(), by canonical name (already in canonical layout)."""
    return {name: p.grad.detach().cpu().numpy().copy() for name, p in model.named_parameters()
            if not name.endswith(SKIPPED)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
