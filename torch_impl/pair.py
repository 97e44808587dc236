"""Your own PyTorch model in a pair (--pair): built from your factory, described module by module, given the mapped
weights, run with every module's output recorded, its gradients, and SGD steps; twin of tf_impl/pair.py."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.pair_layouts import drops, uses_batch_statistics
from shared.weights import Weights

# PyTorch classes (or a base class of yours) -> the kind both sides name a layer by.
KINDS = {"Linear": "linear", "Conv1d": "conv1d", "Conv2d": "conv2d", "Conv3d": "conv3d",
         "ConvTranspose1d": "conv_transpose1d", "ConvTranspose2d": "conv_transpose2d",
         "ConvTranspose3d": "conv_transpose3d", "_BatchNorm": "batch_norm", "LayerNorm": "layer_norm",
         "Embedding": "embedding", "MultiheadAttention": "mha", "ReLU": "relu", "GELU": "gelu", "Sigmoid": "sigmoid",
         "Tanh": "tanh", "Softmax": "softmax", "SiLU": "silu", "LeakyReLU": "leaky_relu", "ELU": "elu",
         "_MaxPoolNd": "max_pool", "_AvgPoolNd": "avg_pool", "_AdaptiveAvgPoolNd": "global_avg_pool",
         "_AdaptiveMaxPoolNd": "global_max_pool", "Flatten": "flatten", "_DropoutNd": "dropout",
         "Upsample": "upsample", "_ConstantPadNd": "zero_pad", "Unflatten": "reshape", "Identity": "identity"}
CONFIG = ("kernel_size", "stride", "padding", "dilation", "groups", "output_padding", "padding_mode", "eps",
          "momentum", "affine", "track_running_stats", "approximate", "count_include_pad", "ceil_mode", "mode",
          "align_corners", "scale_factor", "size", "p", "num_heads", "batch_first", "output_size")


def build(factory: Callable, precision: str) -> nn.Module:
    """Your factory's module; in float64, its parameters and buffers converted (exactly) to float64."""
    model = factory()
    return model.to(torch.float64) if precision == "float64" else model


def layout_of(model: nn.Module, input_shape: tuple) -> str | None:
    """PyTorch's layout is the canonical one: the input goes in as given."""
    return "channels_first"


def kind_of(unit: nn.Module) -> str:
    """The kind of layer, by its class or the first PyTorch class it derives from."""
    return next((KINDS[cls.__name__] for cls in type(unit).__mro__ if cls.__name__ in KINDS),
                type(unit).__name__.lower())


def config_of(unit: nn.Module) -> dict:
    """The settings the traps read (stride, padding, eps, momentum, mode, approximate, ...)."""
    found = {}
    for key in CONFIG:
        value = getattr(unit, key, None)
        if isinstance(value, (bool, int, float, str, tuple, list)):
            found[key] = list(value) if isinstance(value, tuple) else value
    if isinstance(unit, (nn.Linear, nn.modules.conv._ConvNd)):
        found["use_bias"] = unit.bias is not None
    return found


def units(model: nn.Module) -> dict[str, nn.Module]:
    """The modules compared and mapped, by their state_dict prefix: those that own parameters or buffers or hold
    no modules (a MultiheadAttention is one: its out_proj is not called as a module)."""
    found, inside = {}, []
    for name, module in model.named_modules():
        if any(name.startswith(f"{prefix}.") or not prefix for prefix in inside):
            continue
        if isinstance(module, nn.MultiheadAttention):
            inside.append(name)
        if isinstance(module, nn.MultiheadAttention) or _own(module) or not list(module.children()):
            found[name] = module
    return found


def _own(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's parameters and floating-point buffers by name relative to it (num_batches_tracked, a count,
    is PyTorch's alone)."""
    recurse = isinstance(module, nn.MultiheadAttention)
    found = dict(module.named_parameters(recurse=recurse))
    found.update({name: buffer for name, buffer in module.named_buffers(recurse=recurse)
                  if buffer is not None and buffer.is_floating_point()})
    return found


def describe(model: nn.Module, records: list[dict]) -> list[dict]:
    """Each unit: its kind, class, settings, parameter shapes and which of them train."""
    return [{"name": name, "kind": kind_of(module), "class": type(module).__name__, "config": config_of(module),
             "params": {role: list(t.shape) for role, t in _own(module).items()},
             "trainable": sorted(role for role, t in _own(module).items() if isinstance(t, nn.Parameter)
                                 and t.requires_grad)}
            for name, module in units(model).items()]


def export_weights(model: nn.Module, mapped: list[dict]) -> Weights:
    """The mapped units' weights, named "<canonical unit>.<role>" (their state_dict names)."""
    modules = units(model)
    return {_joined(entry["tensor"], role): t.detach().cpu().numpy().copy()
            for entry in mapped for role, t in _own(modules[entry["unit"]]).items()}


def set_weights(model: nn.Module, weights: Weights, mapped: list[dict]) -> None:
    """Canonical weights into the mapped units, in the model's dtype; BatchNorm's step count back to zero; a zeroed
    bias Keras lacks is frozen."""
    modules = units(model)
    with torch.no_grad():
        for entry in mapped:
            module = modules[entry["unit"]]
            for role, tensor in _own(module).items():
                if _joined(entry["tensor"], role) in weights:
                    tensor.copy_(torch.from_numpy(np.asarray(weights[_joined(entry["tensor"], role)])))
                if role in entry.get("frozen", []):
                    tensor.requires_grad_(False)
            if getattr(module, "num_batches_tracked", None) is not None:
                module.num_batches_tracked.zero_()


def _joined(tensor: str, role: str) -> str:
    return f"{tensor}.{role}" if tensor else role


@contextmanager
def recording(model: nn.Module, layout: dict) -> Iterator[list[dict]]:
    """While open, every unit's calls land in the yielded list, in the order the forward pass makes them (already
    in the canonical layout): a forward hook on each unit, removed when the block ends."""
    records: list[dict] = []
    calls: dict[str, int] = {}
    made: dict[int, int] = {}  # id of an output -> its record: where each module's input came from
    keep: list[torch.Tensor] = []  # the outputs, alive, so that no later tensor reuses their ids

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple, output) -> None:
            output = output[0] if isinstance(output, (tuple, list)) else output
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            first = tensors[0] if tensors else None
            calls[name] = calls.get(name, 0) + 1
            kind, value = kind_of(module), output.detach().cpu().numpy().copy()
            behaviour = None
            if kind == "dropout" and first is not None and drops(first.detach().cpu().numpy(), value):
                behaviour = "drops its input: left in training mode"
            if kind == "batch_norm" and first is not None and uses_batch_statistics(
                    first.detach().cpu().numpy(), value, 1, *(_array(getattr(module, key, None)) for key in
                                                              ("running_mean", "running_var", "weight", "bias")),
                    module.eps):
                behaviour = "normalises with the batch's own statistics: left in training mode"
            records.append({"unit": name, "call": calls[name], "class": type(module).__name__, "spatial": False,
                            "inputs": [made.get(id(t), -1) for t in tensors], "behaviour": behaviour,
                            "input_shape": None if first is None else list(first.shape[1:]), "part": "output",
                            "kind": kind, "flatten_from": None, "array": value})
            made[id(output)] = len(records) - 1
            keep.append(output)

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in units(model).items()]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def _array(tensor: torch.Tensor | None) -> np.ndarray | None:
    return None if tensor is None else tensor.detach().cpu().numpy()


def _inputs(model: nn.Module, inputs: np.ndarray) -> torch.Tensor:
    """The numpy input in the model's float dtype (integer inputs, token ids, as they are)."""
    x = torch.from_numpy(np.ascontiguousarray(inputs))
    parameter = next(model.parameters(), None)
    return x.to(parameter.dtype) if x.is_floating_point() and parameter is not None else x


def model_output(outputs, layout: dict):
    """The model's first output, already in PyTorch's layout."""
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


@contextmanager
def _without_fast_path() -> Iterator[None]:
    """MultiheadAttention's fused inference path off: it would skip the hooks of a TransformerEncoderLayer's modules
    and compute otherwise than the layers it stands for."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def forward(model: nn.Module, inputs: np.ndarray, layout: dict) -> tuple[np.ndarray, list[dict]]:
    """The inference pass (eval mode): the output and every unit's recorded calls."""
    model.eval()
    with torch.no_grad(), _without_fast_path(), recording(model, layout) as records:
        outputs = model_output(model(_inputs(model, inputs)), layout)
    return outputs.detach().cpu().numpy().copy(), records


def loss_of(outputs, targets, loss: str):
    """The loss: the sum of squares, or the mean of mse, bce (of logits) or ce (of logits, classes on axis 1)."""
    if loss == "sum_squares":
        return outputs.square().sum()
    if loss == "mse":
        return F.mse_loss(outputs, targets)
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(outputs, targets)
    return F.cross_entropy(outputs, targets.long())


def gradients(model: nn.Module, inputs: np.ndarray, targets: np.ndarray | None, loss: str, layout: dict,
              mapped: list[dict]) -> tuple[float, Weights]:
    """The loss of the inference pass and its gradient for every mapped trainable tensor, by canonical name."""
    model.eval()
    model.zero_grad(set_to_none=True)
    with _without_fast_path():
        value = loss_of(model_output(model(_inputs(model, inputs)), layout),
                        None if targets is None else torch.from_numpy(targets), loss)
    value.backward()
    modules = units(model)
    return value.item(), {
        _joined(entry["tensor"], role): (torch.zeros_like(t) if t.grad is None else t.grad).cpu().numpy().copy()
        for entry in mapped for role, t in _own(modules[entry["unit"]]).items()
        if isinstance(t, nn.Parameter) and t.requires_grad}


def train_steps(model: nn.Module, inputs: np.ndarray, targets: np.ndarray | None, loss: str, layout: dict,
                lr: float, steps: int, on_step: Callable[[int], Any]) -> list[float]:
    """`steps` steps of plain SGD in train mode (BatchNorm on batch statistics), dropout modules and attention's
    dropout in eval mode (their masks cannot match across frameworks); on_step(k) after step k. The losses."""
    x = _inputs(model, inputs)
    t = None if targets is None else torch.from_numpy(targets)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for module in model.modules():
        if kind_of(module) in ("dropout", "mha"):  # a MultiheadAttention's training mode only drops attention
            module.eval()
    losses = []
    try:
        for step in range(steps):
            optimizer.zero_grad()
            value = loss_of(model_output(model(x), layout), t, loss)
            value.backward()
            optimizer.step()
            losses.append(value.item())
            on_step(step + 1)
    finally:
        model.eval()
    return losses
