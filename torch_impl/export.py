"""Inference and export, PyTorch's half: the forward pass eager under torch.inference_mode or under torch.compile,
the model exported by torch.export and compiled ahead of time by AOTInductor (.pt2), and as ONNX (the Dynamo
exporter), and a .pt2 loaded back with PyTorch alone; twin of tf_impl/export.py.

A Python `forward` is not a graph: torch.export runs it once under Dynamo, which records the tensor operations
and refuses data-dependent Python control flow (docs/autograd.md, the graph_modes lesson)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

# AOTInductor's C++ toolchain warns on a CPU-only machine that it found no CUDA runtime: true, and not a problem here.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

MODES = ("eager", "compile")  # how this side runs a forward pass (tf_impl/export.py: eager, function, xla)
# The forward's precisions: bf16 is torch.autocast's bfloat16 (float32 weights, matrix products and convolutions in
# bfloat16), as training's mixed precision; tf_impl/export.py: Keras' mixed_bfloat16 policy, fixed at build time.
PRECISIONS = ("fp32", "bf16")
_AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # what autocast runs its bfloat16 ops in, by precision
INPUT_LAYOUT = "NCHW"  # the exported graphs take what nn.Conv2d takes: channels first
NATIVE_FORMAT = "pt2"  # one file: the exported program, AOTInductor's compiled C++ kernels and the weights
_MAX_BATCH = 4096  # the exported graphs' batch dimension is symbolic, 1 to this


def to_input(images: np.ndarray) -> np.ndarray:
    """Canonical NHWC images in the layout this side's graphs take: NCHW."""
    return np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)), dtype=np.float32)  # (N, C, H, W)


def to_canonical(outputs: np.ndarray) -> np.ndarray:
    """This side's outputs in the canonical layout: a mask (N, 1, H, W) to (N, H, W, 1); (N, 10) stays."""
    return np.transpose(outputs, (0, 2, 3, 1)) if outputs.ndim == 4 else outputs


def inference_function(model, mode: str, precision: str = "fp32") -> Callable[[np.ndarray], np.ndarray]:
    """The forward pass in evaluation mode (BatchNorm's running statistics), op by op ("eager") or captured by
    Dynamo and compiled by Inductor ("compile"), under inference_mode (no autograd record); numpy in, float32 numpy
    out. In bf16 under torch.autocast: the float32 weights stay, autocast's bfloat16 ops run in bfloat16."""
    model.eval()
    call = torch.compile(model) if mode == "compile" else model
    dtype = _AUTOCAST_DTYPES[precision]

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            return call(torch.from_numpy(images)).float().numpy()  # .float(): no copy in float32
    return run


def export_native(model, example: np.ndarray, path: Path) -> None:
    """torch.export captures the graph (batch size symbolic), AOTInductor compiles it into a .pt2 package."""
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    program = torch.export.export(model, (torch.from_numpy(example),), dynamic_shapes=({0: batch},))
    torch._inductor.aoti_compile_and_package(program, package_path=str(path))


def load_native(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A .pt2 package loaded with PyTorch alone (no nn.Module, no twinnets model code): its compiled kernels."""
    runner = torch._inductor.aoti_load_package(str(path))

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return runner(torch.from_numpy(images)).numpy()
    return run


def export_onnx(model, example: np.ndarray, path: Path) -> None:
    """ONNX through the Dynamo exporter (torch.export, then onnxscript's translation), batch size symbolic."""
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    torch.onnx.export(model, (torch.from_numpy(example),), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                      input_names=["images"], output_names=["outputs"], external_data=False, verbose=False)
