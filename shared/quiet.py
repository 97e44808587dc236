"""TensorFlow's process settings, and native libraries' chatter kept out of the user's terminal: lines logged before
absl is initialised ignore TF_CPP_MIN_LOG_LEVEL, so stderr is closed while TensorFlow is imported (tf_impl/, and
keras_models/ on TensorFlow)."""
from __future__ import annotations

import contextlib
import os

# The variables tensorflow_defaults set in this process because the user had not: results.json says which values
# were twinnets' (harness/environment.py).
SET_HERE: dict[str, str] = {}


def tensorflow_defaults() -> None:
    """What TensorFlow reads once, at import, set unless the user set it: its C++ logs off inside the project
    (TF_CPP_MIN_LOG_LEVEL=0 brings them back), and oneDNN's CPU kernels, as PyTorch uses on every x86 CPU.
    TensorFlow turns oneDNN on by itself only where the CPU has AVX-512 VNNI or AMX; elsewhere its Eigen
    convolutions took 1.5x the step (docs/profile.md). TF_ENABLE_ONEDNN_OPTS=0 turns them off."""
    for name, value in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("TF_ENABLE_ONEDNN_OPTS", "1")):
        if name not in os.environ:
            os.environ[name] = SET_HERE[name] = value


@contextlib.contextmanager
def stderr_silenced():
    """File descriptor 2 pointed at /dev/null for the block, unless the user asked for TensorFlow's logs
    (TF_CPP_MIN_LOG_LEVEL=0 or 1)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") in ("0", "1"):
        yield
        return
    with native_stderr_closed():
        yield


@contextlib.contextmanager
def native_stderr_closed():
    """File descriptor 2 pointed at /dev/null for the block: C++ libraries' own lines (torch.profiler's Kineto prints
    its start and stop, with no setting to stop it) never reach the terminal."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
