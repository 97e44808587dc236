"""The framework-free halves of the two first lessons, called by both sides: the neuron's gradient-descent loop
(tf_impl/neuron.py, torch_impl/neuron.py) and the autograd lesson's report (tf_impl/autograd.py,
torch_impl/autograd.py)."""
from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType

from shared.tasks import AutogradSpec, NeuronSpec
from shared.timing import StepTimer


def descend(spec: NeuronSpec, train_step: Callable[[], object], record: Callable[[int], dict]) -> dict:
    """spec.epochs timed calls of the side's train_step; record(step) reads w, b, O and E before the first and
    after each. The trajectory, the per-step history and the timing, in the same keys on both sides."""
    timer = StepTimer()
    trajectory = [record(0)]
    start = time.perf_counter()
    for step in range(1, spec.epochs + 1):
        with timer.step():
            float(train_step())  # the host copy waits for the step to finish
        trajectory.append(record(step))
    train_s = time.perf_counter() - start
    return {
        "trajectory": trajectory,
        "history": [{"epoch": p["step"], "loss": p["error"]} for p in trajectory[1:]],
        "timing": timer.summary(train_s),
    }


def autograd_lesson(spec: AutogradSpec, autograd: ModuleType) -> dict:
    """Everything the autograd task reports, in the same keys on both sides; `autograd` is tf_impl.autograd or
    torch_impl.autograd, whose functions compute each part: the tensors and the gradient, the graphs (as text and
    drawn), the side going static (torch.compile, torch.export, torch.cond) or staying static (AutoGraph), going
    dynamic (run_functions_eagerly) or staying dynamic, and the tf.function pitfalls on the mlp's real digits."""
    from shared.graph_lessons import digits_epoch
    from shared.surface import PACKAGES

    side = next(s for s, package in PACKAGES.items() if autograd.__name__.startswith(package + "."))
    # The same shape twice, then a new one: TensorFlow replays its trace once and traces again.
    shapes = [spec.shape, spec.shape, (spec.shape[0] + 1, spec.shape[1] + 1)]
    static = autograd.going_static(spec.x_value, spec.shape)
    return {
        "basics": autograd.tensor_basics(spec.seed),
        **autograd.gradient(spec.x_value, spec.shape),
        "constant": autograd.gradient_of_constant(spec.x_value, spec.shape),
        "graph": autograd.graph(spec.x_value, spec.shape),
        "tracing": autograd.graphs_per_call(spec.x_value, shapes),
        "control_flow": autograd.control_flow(spec.x_value, spec.shape),
        "drawings": {**autograd.graph_drawings(spec.x_value, spec.shape), **static.pop("drawings")},
        "static": static,
        "dynamic": autograd.going_dynamic(spec.x_value, spec.shape),
        "pitfalls": autograd.pitfalls(spec.x_value, spec.shape, digits_epoch(side)),
        "notes": autograd.NOTES,
    }
