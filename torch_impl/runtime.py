"""Threads, seeds and versions for the PyTorch side; twin of tf_impl/runtime.py."""
from __future__ import annotations

import torch
from torch import nn

from shared.errors import UserError
from shared.execution import Execution
from shared.graph_lessons import autograd_nodes
from shared.tasks import TaskSpec


def configure(threads: int, seed: int) -> None:
    """Same intra-op thread count as the other side, one inter-op thread; must run before any op."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already initialised (in-process runs): keep what is set
        pass
    torch.manual_seed(seed)


def configure_execution(execution: Execution) -> Execution:
    """Resolve --device auto; the model, optimizer and batches then go to that device."""
    available = torch.cuda.is_available()
    device = ("cuda" if available else "cpu") if execution.device == "auto" else execution.device
    if device == "cuda" and not available:
        raise UserError("--device cuda: PyTorch sees no GPU here (torch.cuda.is_available() is False); "
                        "use --device cpu or auto")
    return execution.replace(device=device)


def training_execution(execution: Execution, spec: TaskSpec) -> Execution:
    """The execution a training run uses: on a GPU, cuDNN's fast convolutions take NHWC, so a convolutional
    net trains channels_last there (PyTorch's default layout is NCHW)."""
    if execution.device == "cuda" and spec.convolutional:
        return execution.replace(mode="channels_last")
    return execution


def compiled(model: nn.Module, execution: Execution) -> nn.Module:
    """The model as the step calls it: torch.compile's graph of it (built on the first call), or itself."""
    return torch.compile(model) if execution.mode == "compile" else model


def traces(model: nn.Module, execution: Execution) -> int:
    """How many graphs torch.compile captured in this process (0 in eager mode: autograd records each call anew)."""
    if execution.mode != "compile":
        return 0
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def graph_size(loss: torch.Tensor) -> int:
    """The nodes of the autograd graph the step recorded to compute this loss (grad_fn nodes and the
    AccumulateGrad leaves), walked back from loss.grad_fn: PyTorch records this graph anew on every step."""
    return autograd_nodes(loss.grad_fn)


def versions() -> dict:
    return {"torch": torch.__version__}


def threads() -> int:
    return torch.get_num_threads()
