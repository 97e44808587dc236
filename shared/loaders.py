"""Loaders: what a training loop reads, on either side."""
from __future__ import annotations

from typing import Any, NamedTuple


class Loaders(NamedTuple):
    """What a training loop reads: the training batches, and the set evaluated after every epoch (validation
    photos for the U-Net, the test digits for mlp and cnn; None: no evaluation)."""

    train: Any
    valid: Any | None = None
