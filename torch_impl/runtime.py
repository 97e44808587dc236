"""Threads, seeds and versions for the PyTorch side; twin of tf_impl/runtime.py."""
from __future__ import annotations

import torch

from shared.errors import UserError
from shared.execution import Execution


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


def versions() -> dict:
    return {"torch": torch.__version__}


def threads() -> int:
    return torch.get_num_threads()
