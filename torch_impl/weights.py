"""Canonical weights (PyTorch state_dict layout, numpy) in and out of nn.Modules; twin of keras_models/weights.py."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shared.atomic import atomic_path
from shared.checkpoint import Checkpointer
from shared.weights import Weights

# The layers whose weights have a canonical layout; containers (models, blocks) only hold them.
CANONICAL_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)
# BatchNorm's step counter is a buffer of PyTorch only; the canonical layout does not keep it.
SKIPPED = ("num_batches_tracked",)


def canonical_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The modules that own canonical weights (Linear, Conv2d, ConvTranspose2d, BatchNorm), by canonical name (their
    state_dict prefix); containers only hold them."""
    return {name: module for name, module in model.named_modules() if isinstance(module, CANONICAL_LAYERS)}


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


def parameter_gradients(model: nn.Module) -> Weights:
    """The .grad each parameter holds after backward() (PyTorch keeps a gradient on its parameter; TensorFlow's
    tape returns them: keras_models/weights.py's canonical_gradients), by canonical name, in canonical layout."""
    return {name: p.grad.detach().cpu().numpy().copy() for name, p in model.named_parameters()
            if not name.endswith(SKIPPED)}


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """The optimizer's state (momentum buffers, step counts) in PyTorch's own format."""
    with atomic_path(path.with_suffix(".pt")) as temporary:
        torch.save(optimizer.state_dict(), temporary)


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    optimizer.load_state_dict(torch.load(path.with_suffix(".pt"), weights_only=True))


def checkpointer(checkpoint_dir, model: nn.Module, optimizer: torch.optim.Optimizer) -> Checkpointer:
    """Saves and restores this model and optimizer after each epoch, so a killed run can continue (None: off)."""
    return Checkpointer(checkpoint_dir, partial(export_weights, model), partial(save_optimizer, optimizer),
                        partial(load_weights, model), partial(load_optimizer, optimizer))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
