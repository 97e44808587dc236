"""The benchmark's PyTorch half: a minimal reference loop, FLOPs, the matrix-multiply peak, device memory,
build facts and the settings that change timings (the fairness manifest); twin of tf_impl/benchmark.py."""
from __future__ import annotations

import os
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from shared.execution import Execution

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Environment variables that change what the settings below do (read by PyTorch, OpenMP/MKL, oneDNN, cuBLAS).
VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "KMP_AFFINITY", "KMP_BLOCKTIME", "DNNL_MAX_CPU_ISA",
             "ONEDNN_DEFAULT_FPMATH_MODE", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
             "TORCHINDUCTOR_MAX_AUTOTUNE", "TORCHINDUCTOR_CACHE_DIR", "CUDA_VISIBLE_DEVICES")


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
    """One (n x n) @ (n x n) product in the given precision ("tf32": float32 tensors, under the TF32 policy in
    force), waiting for the device."""
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


def place(model: torch.nn.Module, execution: Execution) -> torch.nn.Module:
    """The model on the execution's device (the parity probe runs where the rows run)."""
    return model.to(execution.device)


def configure_fairness(execution: Execution, tf32: bool) -> dict:
    """What the harness sets, the same on both sides: TF32 for float32 matrix products and convolutions as asked
    (PyTorch's own defaults differ: matmul off, cuDNN convolutions on), and on a GPU cuDNN's autotuner on, as
    TensorFlow autotunes its convolutions by default. Returns what it set."""
    torch.backends.cuda.matmul.allow_tf32 = tf32  # the legacy switches keep the newer fp32_precision getters in step
    torch.backends.cudnn.allow_tf32 = tf32
    harness = {"tf32_matmul": tf32, "tf32_convolution": tf32}
    if execution.device == "cuda":
        torch.backends.cudnn.benchmark = True
        harness["cudnn_benchmark"] = True
    return harness


def fairness_settings(execution: Execution) -> dict:
    """The settings in force in this process that change a timing, and the variables that change them."""
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_convolution": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "onednn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
            "compile": ("torch.compile(model), mode 'default' (no CUDA graphs)" if execution.mode == "compile"
                        else "not used"),
            "memory_format": "channels_last" if execution.mode == "channels_last" else "contiguous (NCHW)",
            "cuda_graphs": "not used", "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "variables": {name: os.environ.get(name) for name in VARIABLES}}
