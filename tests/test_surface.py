"""The task surface: each side satisfies the protocols of shared/surface.py (members and parameter names), so the
harness and the benchmark call both the same way; and nothing outside the registry branches on a task's name."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT
from shared.registry import REGISTRY
from shared.surface import AutogradLesson, NeuronLesson, Runtime, TrainedTask, protocol_mismatches
from shared.tasks import make_spec

PROTOCOLS = {"neuron": NeuronLesson, "autograd": AutogradLesson, "mlp": TrainedTask, "cnn": TrainedTask,
             "unet": TrainedTask}


@pytest.mark.parametrize("task", list(REGISTRY))
def test_each_side_satisfies_the_task_protocol(side, task):
    surface = REGISTRY[task].surface(side, make_spec(task))
    protocol = PROTOCOLS[task]
    assert isinstance(surface.task, protocol)
    assert protocol_mismatches(surface.task, protocol) == []
    assert isinstance(surface.runtime, Runtime) and protocol_mismatches(surface.runtime, Runtime) == []


def test_the_protocol_check_names_a_departure():
    """A side whose train takes other parameters, and one that lacks predict, are both reported."""
    class Departing:
        def train(self, model, spec, data):  # the old signature: arrays instead of loaders
            pass

    problems = protocol_mismatches(Departing(), TrainedTask)
    assert "predict: missing" in problems
    assert any(p.startswith("train: parameters ['model', 'spec', 'data']") for p in problems)


def test_no_dispatch_on_task_names_outside_the_registry():
    """What differs between tasks lives in shared/registry.py; elsewhere no `spec.name ==` or `task ==`."""
    pattern = re.compile(r"spec\.name ==|task ==")
    files = [ROOT / "compare.py", *sorted((ROOT / "shared").rglob("*.py"))]
    hits = [f"{path.relative_to(ROOT)}:{number}" for path in files if path.name != "registry.py"
            for number, line in enumerate(Path(path).read_text().splitlines(), start=1) if pattern.search(line)]
    assert hits == []
