"""Threads, seeds and versions for the TensorFlow side; twin of torch_impl/runtime.py."""
from __future__ import annotations

import tensorflow as tf
import keras

from shared.errors import UserError
from shared.execution import Execution

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


def versions() -> dict:
    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def threads() -> int:
    return tf.config.threading.get_intra_op_parallelism_threads()
