"""Threads, seeds and versions for the TensorFlow side; twin of torch_impl/runtime.py."""
from __future__ import annotations

import tensorflow as tf
import keras


def configure(threads: int, seed: int) -> None:
    """Same intra-op thread count as the other side, one inter-op thread; must run before any op."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised (in-process runs): keep what is set
        pass
    keras.utils.set_random_seed(seed)


def versions() -> dict:
    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def threads() -> int:
    return tf.config.threading.get_intra_op_parallelism_threads()
