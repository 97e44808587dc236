"""What --diagnose records of a PyTorch training step, in canonical names and layouts; twin of tf_impl/diagnose.py."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from shared.weights import Weights
from torch_impl.data import to_tensor_images
from torch_impl.weights import canonical_layers, parameter_gradients

# The optimizer's state by its canonical names: optimizer.state[p] keys SGD's buffer "momentum_buffer".
SLOTS = {"SGD": {"momentum": "momentum_buffer"}, "Adam": {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}}


@contextmanager
def float64() -> Iterator[None]:
    """While open, the modules built are float64: they create their parameters and buffers in the default dtype."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)


def float32_hyperparameters(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer with its learning rate and momentum rounded to float32, as a float32 run multiplies by them
    (and as Keras does in float64 too: it casts them from float32); PyTorch keeps Python floats."""
    for group in optimizer.param_groups:
        for key in ("lr", "momentum"):
            if isinstance(group.get(key), float):
                group[key] = float(np.float32(group[key]))
    return optimizer


@contextmanager
def recording(model: nn.Module) -> Iterator[dict[str, np.ndarray]]:
    """While open, each canonical layer's output lands in the yielded dict by name, in the order the forward pass
    computes them, images NCHW -> NHWC: a forward hook on each module, removed when the block ends."""
    outputs: dict[str, np.ndarray] = {}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            value = output.detach().cpu()
            outputs[name] = (value.permute(0, 2, 3, 1) if value.ndim == 4 else value).numpy().copy()

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in canonical_layers(model).items()]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def layer_outputs(model: nn.Module, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every canonical layer's output for canonical NHWC images as a training step's forward pass computes it
    (BatchNorm normalises with the batch's own statistics); the running statistics that this pass moves are put
    back, so the model is left as it was."""
    saved = {name: buffer.clone() for name, buffer in model.named_buffers()}
    training = model.training
    model.train()
    with torch.no_grad(), recording(model) as outputs:
        model(to_tensor_images(images).to(next(model.parameters()).device))
        for name, buffer in model.named_buffers():
            buffer.copy_(saved[name])
    model.train(training)
    return outputs


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: Callable, images: torch.Tensor,
               targets: torch.Tensor) -> tuple[float, Weights]:
    """One optimisation step as the training loop takes it (zero_grad, forward, loss, backward, step): the loss and
    the gradients the step applies, by canonical name."""
    model.to(images.device)  # to_tensors placed the batch; the model follows (a no-op when it is there)
    model.train()
    optimizer.zero_grad()
    batch_loss = loss(model(images), targets)
    batch_loss.backward()
    gradients = parameter_gradients(model)
    optimizer.step()
    return batch_loss.item(), gradients


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> Weights:
    """The optimizer's state after its last step, "<param name>.<state>": SGD's "momentum" buffer
    b = momentum * b + g (the step subtracts lr * b); Adam's moments "exp_avg" and "exp_avg_sq"."""
    kinds = SLOTS.get(type(optimizer).__name__, {})
    state = {}
    for name, parameter in model.named_parameters():
        for kind, key in kinds.items():
            value = optimizer.state.get(parameter, {}).get(key)
            if value is not None:  # SGD without momentum keeps none
                state[f"{name}.{kind}"] = value.detach().cpu().numpy().copy()
    return state
