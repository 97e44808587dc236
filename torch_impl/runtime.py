"""Threads, seeds and versions for the PyTorch side; twin of tf_impl/runtime.py."""
from __future__ import annotations

from typing import Callable

import torch

from shared.errors import UserError
from shared.execution import Execution
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


class _CompiledStep:
    """A function of tensors as torch.compile runs it (mode compile): Dynamo captures its graphs on the first call,
    and again for what it has not seen (a new shape), and Inductor compiles them; each capture is counted here. In
    any other mode the function itself runs, op by op, and autograd records its graph anew on every call."""

    def __init__(self, step: Callable, execution: Execution):
        self.step, self.graphs = step, 0
        if execution.mode == "compile":
            inductor = torch._dynamo.lookup_backend("inductor")  # torch.compile's default backend

            def counted(graph: torch.fx.GraphModule, example_inputs: list) -> Callable:
                self.graphs += 1
                return inductor(graph, example_inputs)

            self.step = torch.compile(step, backend=counted)

    def __call__(self, *tensors: torch.Tensor):
        return self.step(*tensors)


def compiled(step: Callable, execution: Execution) -> _CompiledStep:
    """A function of tensors as the execution mode runs it; on PyTorch the trainers hand it the model (an nn.Module
    is the function of its inputs), whose forward torch.compile captures, while backward and the optimizer step
    stay eager (see _CompiledStep)."""
    return _CompiledStep(step, execution)


def traces(step: _CompiledStep) -> int:
    """How often the execution mode turned the function into a graph: the graphs Dynamo captured of it (0 in eager
    mode: autograd records each call anew, nothing is captured)."""
    return step.graphs


def versions() -> dict:
    return {"torch": torch.__version__}


def threads() -> int:
    return torch.get_num_threads()
