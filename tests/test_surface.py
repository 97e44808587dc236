"""The task surface: each side satisfies the protocols of harness/surface.py (members and parameter names), so the
harness and the benchmark call both the same way; and nothing outside the registry branches on a task's name."""
from __future__ import annotations

import ast
import textwrap

import pytest

from conftest import ROOT
from harness.registry import REGISTRY
from harness.surface import AutogradLesson, NeuronLesson, Runtime, TrainedTask, protocol_mismatches
from shared.tasks import TASKS, make_spec

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


def task_name_uses(source: str) -> list[tuple[int, str]]:
    """(line, name) of each task name written as a literal that is compared (==, in), used as a dict key or an
    index, or listed with another task name: the ways code branches on a task or keys a table by it."""
    def literals(node: ast.AST) -> list[ast.Constant]:
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return [item for item in items if isinstance(item, ast.Constant) and item.value in TASKS]

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            found += [hit for operand in (node.left, *node.comparators) for hit in literals(operand)]
        elif isinstance(node, ast.Dict):
            found += [hit for key in node.keys if key is not None for hit in literals(key)]
        elif isinstance(node, ast.Subscript):
            found += literals(node.slice)
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(literals(node)) >= 2:
            found += literals(node)
    return sorted({(hit.lineno, hit.value) for hit in found})


def test_the_task_name_finder_sees_each_way_of_branching():
    planted = textwrap.dedent("""
        if task == "unet":
            pass
        unit = "photos" if spec.name in ("mlp", "cnn") else "images"
        FILES = {"neuron": 1}
        weights = TABLE["autograd"]
        spec = make_spec("unet", epochs=1)  # naming one task to build its spec is not a branch
    """)
    assert task_name_uses(planted) == [(2, "unet"), (4, "cnn"), (4, "mlp"), (5, "neuron"), (6, "autograd")]


def test_no_dispatch_on_task_names_outside_the_registry():
    """What differs between tasks lives in harness/registry.py; no other module compares a task's name or keys a
    table by it."""
    files = [ROOT / "compare.py", *(path for package in ("harness", "shared", "tf_impl", "torch_impl")
                                   for path in sorted((ROOT / package).rglob("*.py")))]
    hits = [f"{path.relative_to(ROOT)}:{line} {name!r}" for path in files if path != ROOT / "harness" / "registry.py"
            for line, name in task_name_uses(path.read_text())]
    assert hits == []
