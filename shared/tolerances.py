"""How far the two sides may differ, per task (float32): the one table the harness, the benchmark and every
test read (DESIGN.md "Equivalence is tested, not hoped")."""
from __future__ import annotations

TOLERANCES: dict[str, dict[str, float]] = {
    # parity: max |tf - torch| of the probe arrays that compare.py checks on every run (shared/parity.py);
    # forward: max abs of the model's outputs; loss: abs; grad: per tensor |a - b| <= grad * max |b|;
    # trained_loss: relative, per step, after identical SGD-with-momentum steps;
    # trained_weights: max abs of every exported tensor after those steps (BatchNorm statistics included);
    # reference_loss: |side - numpy reference| of the loss function;
    # data_parallel_step: max abs of every exported tensor, one step in 2 processes against 1 (a large lr makes an
    # error in the gradient show); data_parallel_epoch: relative losses and max abs weights after a whole epoch
    # (SGD with momentum 0.99 amplifies the summation order's rounding over several steps).
    # bf16_loss: relative, the two sides' batch losses when both train in bf16 mixed precision.
    # float64: relative, every quantity of --diagnose's float64 runs, where rounding is 5e8 times smaller than in
    # float32 (the default unet's 5 steps: float64 twins 1.4e-13 apart, where float32 parts by up to 2.3e-1 on a
    # gradient whose sums cancel); Keras' momentum cast through float32 (1e-8 off) would exceed it.
    "neuron": {"parity": 1e-6},
    "autograd": {"parity": 1e-6},
    "mlp": {"parity": 1e-5, "forward": 1e-5, "loss": 1e-6, "grad": 1e-4, "trained_loss": 1e-3, "bf16_loss": 3e-2,
            "float64": 1e-10},
    "cnn": {"parity": 1e-5, "forward": 1e-5, "loss": 1e-6, "grad": 1e-4, "trained_loss": 1e-3, "float64": 1e-10},
    "unet": {"parity": 1e-4, "forward": 1e-4, "loss": 1e-5, "grad": 1e-4, "trained_loss": 1e-3,
             "trained_weights": 1e-4, "reference_loss": 1e-5, "data_parallel_step": 1e-5,
             "data_parallel_epoch": 1e-3, "float64": 1e-10},
}


def tolerance(task: str, quantity: str = "parity") -> float:
    return TOLERANCES[task][quantity]
