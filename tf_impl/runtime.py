"""Threads, seeds and versions for the TensorFlow side; twin of torch_impl/runtime.py."""
from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from shared.errors import UserError
from shared.execution import Execution
from shared.tasks import TaskSpec

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}  # mixed: float32 variables


def configure(threads: int, seed: int) -> None:
    """Same intra-op thread count as the other side, one inter-op thread; must run before any op."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised (in-process runs): keep what is set
        pass
    keras.utils.set_random_seed(seed)


def configure_execution(execution: Execution) -> Execution:
    """Before the model is built: its dtype policy, and the devices TensorFlow may place ops on."""
    keras.mixed_precision.set_global_policy(POLICIES[execution.precision])
    gpus = tf.config.list_physical_devices("GPU")
    device = ("cuda" if gpus else "cpu") if execution.device == "auto" else execution.device
    if device == "cuda" and not gpus:
        raise UserError("--device cuda: TensorFlow sees no GPU here (a CUDA build of TensorFlow and a driver are "
                        "needed); use --device cpu or auto")
    if device == "cpu" and tf.config.get_visible_devices("GPU"):
        tf.config.set_visible_devices([], "GPU")  # before any op runs; a second call finds none left
    return execution.replace(device=device)


def training_execution(execution: Execution, spec: TaskSpec) -> Execution:
    """The execution a training run uses: Keras convolutions take NHWC on every device, so nothing changes."""
    return execution


class _GraphStep:
    """A step function as one tf.function, traced on its first call and replayed after (mode eager: called as
    Python, op by op; xla: compiled with jit_compile). The input signature is the first batch's with the batch
    dimension left open (None), so a smaller last batch replays the graph instead of tracing a second one."""

    def __init__(self, step: Callable, execution: Execution):
        self.step, self.execution = step, execution
        self.graph = None

    def __call__(self, *tensors: tf.Tensor):
        if self.execution.mode == "eager":
            return self.step(*tensors)
        if self.graph is None:
            signature = [tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype) for tensor in tensors]
            self.graph = tf.function(self.step, input_signature=signature, jit_compile=self.execution.mode == "xla")
        return self.graph(*tensors)

    def graph_ops(self) -> int | None:
        """The ops of the traced graph: forward, gradients and the optimizer update, in one graph that every step
        replays; None in eager mode, where no graph exists."""
        if self.graph is None:
            return None
        concrete = self.graph.get_concrete_function()  # the one input signature it was traced for
        return len(concrete.graph.get_operations())


def compiled(step: Callable, execution: Execution) -> _GraphStep:
    """A function of tensors as the execution mode runs it; on TensorFlow the trainers hand it their whole train
    step, which becomes one tf.function graph, traced on the first call (see _GraphStep)."""
    return _GraphStep(step, execution)


def traces(step: _GraphStep) -> int:
    """How often the execution mode turned the function into a graph: TensorFlow's traces of it (0 in eager mode:
    it never traces)."""
    return 0 if step.graph is None else step.graph.experimental_get_tracing_count()


def versions() -> dict:
    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def threads() -> int:
    return tf.config.threading.get_intra_op_parallelism_threads()

