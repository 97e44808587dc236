"""Threads, seeds and versions for the PyTorch side; twin of tf_impl/runtime.py."""
from __future__ import annotations

import torch


def configure(threads: int, seed: int) -> None:
    """Same intra-op thread count as the other side, one inter-op thread; must run before any op."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already initialised (in-process runs): keep what is set
        pass
    torch.manual_seed(seed)


def versions() -> dict:
    return {"torch": torch.__version__}


def threads() -> int:
    return torch.get_num_threads()
