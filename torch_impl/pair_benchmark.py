"""--pair --benchmark's PyTorch half: your model's training step (forward, the pair's loss, backward, SGD update) in
eager mode, as PyTorch trains, and its forward pass under torch.inference_mode; each a call that returns once its
result reached the host. harness/benchmark/rows.py's time_steps times them; twin of tf_impl/pair_benchmark.py."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from torch_impl.pair import _inputs, kind_of, loss_of, model_output


def train_step(model: nn.Module, inputs: np.ndarray, targets: np.ndarray | None, loss: str, layout: dict,
               lr: float) -> Callable[[], float]:
    """One SGD step on the batch in train mode (BatchNorm on batch statistics), dropout and attention's dropout in
    eval mode as in the pair's checked steps; the loss as a Python float."""
    x = _inputs(model, inputs)
    t = None if targets is None else torch.from_numpy(targets)
    model.train()
    for module in model.modules():
        if kind_of(module) in ("dropout", "mha"):  # a MultiheadAttention's training mode only drops attention
            module.eval()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step() -> float:
        optimizer.zero_grad()
        value = loss_of(model_output(model(x), layout), t, loss)
        value.backward()
        optimizer.step()
        return value.item()

    return step


def inference_step(model: nn.Module, inputs: np.ndarray, layout: dict) -> Callable[[], float]:
    """The forward pass in eval mode under torch.inference_mode; one element of the output copied to the host."""
    x = _inputs(model, inputs)
    model.eval()

    def forward() -> float:
        with torch.inference_mode():
            return model_output(model(x), layout).reshape(-1)[0].item()

    return forward
