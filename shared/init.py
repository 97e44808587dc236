"""Seeded initial weights as numpy arrays in the canonical layout, so both sides start from the same point."""
from __future__ import annotations

import numpy as np

from shared.weights import Param, Weights


def init_weights(layout: dict[str, Param], seed: int) -> Weights:
    """PyTorch's default initialisation, drawn from numpy: weights of Linear/Conv layers
    kaiming_uniform(a=sqrt(5)), which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases the same bound;
    BatchNorm weight 1, bias 0, running mean 0, running var 1. float32, drawn in layout order."""
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for name, param in layout.items():
        if param.kind in ("weight", "bias"):
            bound = 1.0 / np.sqrt(param.fan_in)
            weights[name] = rng.uniform(-bound, bound, size=param.shape).astype(np.float32)
        elif param.kind in ("bn_weight", "bn_var"):
            weights[name] = np.ones(param.shape, np.float32)
        elif param.kind in ("bn_bias", "bn_mean"):
            weights[name] = np.zeros(param.shape, np.float32)
        else:
            raise ValueError(f"unknown parameter kind {param.kind!r} for {name}")
    return weights
