"""One sigmoid neuron fitted by gradient descent in PyTorch (eager autograd); twin of tf_impl/neuron.py."""
from __future__ import annotations

import time

import torch
from torch import nn

from shared.tasks import NeuronSpec
from shared.timing import StepTimer


class Neuron(nn.Module):
    """O = sigmoid(phi * w + b). float64 so the two sides agree to 1e-6 after hundreds of steps."""

    def __init__(self, w0: float, b0: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b0, dtype=torch.float64))

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(phi * self.w + self.b)


def build(spec: NeuronSpec) -> Neuron:
    return Neuron(spec.w0, spec.b0)


def load_weights(model: Neuron, canonical: dict) -> None:
    with torch.no_grad():
        model.w.copy_(torch.as_tensor(canonical["w"], dtype=torch.float64))
        model.b.copy_(torch.as_tensor(canonical["b"], dtype=torch.float64))


def export_weights(model: Neuron) -> dict:
    return {"w": model.w.detach().numpy().copy(), "b": model.b.detach().numpy().copy()}


def forward(model: Neuron, phi: float) -> float:
    with torch.no_grad():
        return model(torch.tensor(phi, dtype=torch.float64)).item()


def error(output: torch.Tensor, target: float) -> torch.Tensor:
    """E = 1/2 (O - t)^2."""
    return 0.5 * (output - target) ** 2


def gradients(model: Neuron, phi: float, target: float) -> tuple[float, float]:
    """(dE/dw, dE/db) by backpropagation; the graph is built by this very call and freed by backward."""
    model.zero_grad()
    error(model(torch.tensor(phi, dtype=torch.float64)), target).backward()
    return model.w.grad.item(), model.b.grad.item()


def train(spec: NeuronSpec) -> dict:
    """Plain gradient descent: the step runs eagerly (zero_grad, forward, backward, step), building its graph anew."""
    model = build(spec)
    phi = torch.tensor(spec.phi, dtype=torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr)

    def train_step() -> torch.Tensor:
        optimizer.zero_grad()
        loss = error(model(phi), spec.target)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def record(step: int) -> dict:
        with torch.no_grad():
            output = model(phi)
        return {"step": step, "w": model.w.item(), "b": model.b.item(),
                "output": output.item(), "error": error(output, spec.target).item()}

    # The descent: w, b, O and E before the first step and after each, every step timed (the same keys both sides).
    timer = StepTimer()
    trajectory = [record(0)]
    start = time.perf_counter()
    for step in range(1, spec.epochs + 1):
        with timer.step():
            float(train_step())  # the host copy waits for the step to finish
        trajectory.append(record(step))
    train_s = time.perf_counter() - start
    history = [{"epoch": point["step"], "loss": point["error"]} for point in trajectory[1:]]
    return {"model": model, "trajectory": trajectory, "history": history, "timing": timer.summary(train_s),
            "traces": 0}  # eager: nothing is traced, the graph is recorded on every call
