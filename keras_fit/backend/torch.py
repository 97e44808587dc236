"""The PyTorch engine's part of the Keras arms (keras-torch): threads, versions, each batch's gradients, what the
engine made of the train step, the benchmark's FLOPs, matrix product and TF32 switch, the served forward pass.
Imported by keras_fit/backend/ in a keras-torch process only; the same functions as tensorflow.py and jax.py."""
from __future__ import annotations

import random
from typing import Callable

import keras
import numpy as np
import torch
from keras import ops
from torch.utils.flop_counter import FlopCounterMode

from shared.graph_lessons import autograd_nodes, first_line


def configure(threads: int, seed: int) -> None:
    """PyTorch's intra-op threads (one inter-op thread) and seeds; Python's and numpy's (keras.utils.set_random_seed
    would import TensorFlow wherever it is installed; no layer draws random numbers, the weights are canonical)."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already started: keep what is set
        pass
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def versions() -> dict:
    return {"torch": torch.__version__}


def threads() -> int:
    return torch.get_num_threads()


def gradients(model: keras.Model, loss: Callable, images: np.ndarray, targets: np.ndarray) -> tuple:
    """The batch's loss in training mode and its gradients, by PyTorch's autograd."""
    value = loss(ops.cast(model(images, training=True), "float32"), ops.convert_to_tensor(targets))
    return value, torch.autograd.grad(value, [variable.value for variable in model.trainable_variables])


def describe_step(model: keras.Model, images: np.ndarray, targets: np.ndarray, loss: Callable,
                  compiled: bool) -> dict:
    """The autograd graph one step records, and what jit_compile=True would hand torch.compile: Dynamo's graphs of
    the same step and where it breaks them."""
    value = loss(ops.cast(model(images, training=True), "float32"), ops.convert_to_tensor(targets))
    found = {"kind": "dynamic", "records": "an autograd graph (grad_fn nodes), recorded anew on every step",
             "autograd_nodes": autograd_nodes(value.grad_fn)}
    try:
        explained = torch._dynamo.explain(model.train_step)((images, targets))
        found.update(dynamo_graphs=explained.graph_count, graph_breaks=explained.graph_break_count,
                     break_reasons=[str(reason.reason).splitlines()[0] for reason in explained.break_reasons][:5])
    except Exception as error:  # noqa: BLE001 - what Dynamo refused is the lesson, in one line
        found["dynamo_failure"] = first_line(error)
    if compiled:
        found.update(kind="static", records="torch.compile: Dynamo's FX graphs of model.train_step")
    return found


def count_flops(step: Callable, images: np.ndarray, targets: np.ndarray) -> int | None:
    """FlopCounterMode around Keras' step, as torch_impl counts its own, after one uncounted call: Keras' first
    train_on_batch also runs the model forward once more, to build its metrics."""
    step(images, targets)  # the step is a throwaway one (harness/benchmark/rows.py): its weights may move
    counter = FlopCounterMode(display=False)
    with counter:
        step(images, targets)
    return int(counter.get_total_flops())


def matmul(a, b) -> Callable[[], None]:
    def run() -> None:
        torch.mm(a, b)  # the arms run on the CPU, where torch.mm returns when it is done
    return run


def build_info() -> dict:
    return {"onednn (mkldnn)": torch.backends.mkldnn.is_available(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "inter_op_threads": torch.get_num_interop_threads()}


def configure_tf32(tf32: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def tf32_state() -> bool:
    return bool(torch.backends.cuda.matmul.allow_tf32)


def inference_function(model: keras.Model, mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """The Keras model on PyTorch called eagerly ("eager"; "compile": through torch.compile) in inference mode, under
    torch.inference_mode (no autograd record); numpy in, numpy out (float32)."""
    call = torch.compile(model) if mode == "compile" else model

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return call(torch.from_numpy(images), training=False).float().numpy()
    return run
