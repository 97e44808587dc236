"""The benchmark's PyTorch half: a minimal reference loop, FLOPs, the matrix-multiply peak, device memory
and build facts; twin of tf_impl/benchmark.py."""
from __future__ import annotations

import os
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from shared.execution import Execution

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def reference_step(model: torch.nn.Module, loss: Callable, optimizer: torch.optim.Optimizer,
                   execution: Execution) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """The few lines anyone would write: zero_grad, forward, loss, backward, step (float32, eager)."""
    model.to(execution.device)

    def step(images: torch.Tensor, targets: torch.Tensor) -> float:
        optimizer.zero_grad()
        batch_loss = loss(model(images), targets)
        batch_loss.backward()
        optimizer.step()
        return batch_loss.item()

    return step


def loader_batches(loader, epoch: int):
    """One epoch of the real DataLoader."""
    loader.sampler.set_epoch(epoch)
    return iter(loader)


def count_flops(step: Callable, images: torch.Tensor, targets: torch.Tensor) -> int | None:
    """Convolution and matrix-product FLOPs of one train step, forward and backward, as PyTorch dispatches them."""
    counter = FlopCounterMode(display=False)
    with counter:
        step(images, targets)
    return int(counter.get_total_flops())


def matmul(n: int, precision: str, execution: Execution) -> Callable[[], None]:
    """One (n x n) @ (n x n) product in the given precision, waiting for the device."""
    device = torch.device(execution.device)
    a, b = (torch.randn(n, n, device=device).to(DTYPES[precision]) for _ in range(2))

    def run() -> None:
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def peak_device_memory(execution: Execution) -> int | None:
    return int(torch.cuda.max_memory_allocated()) if execution.device == "cuda" else None


def build_info() -> dict:
    """What decides the kernels: versions, oneDNN / CUDA / cuDNN, the CPU's vector unit, threads."""
    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "onednn (mkldnn)": torch.backends.mkldnn.is_available(), "mkl": torch.backends.mkl.is_available(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "intra_op_threads": torch.get_num_threads(), "inter_op_threads": torch.get_num_interop_threads(),
            "pid": os.getpid()}
