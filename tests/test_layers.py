"""The layers of docs/architecture.md, read from the source with ast: compare.py -> harness -> the two sides ->
shared, no import cycles, project imports at the top of a module, small modules and a short README."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGES = ("harness", "keras_fit", "keras_models", "shared", "tf_impl", "torch_impl")
MAX_MODULE_LINES = 350
FRAMEWORKS = ("tensorflow", "keras", "torch", "torchvision", "jax")


def module_files() -> dict[str, Path]:
    """Every project module by dotted name (a package by its __init__.py), and compare.py."""
    found = {"compare": ROOT / "compare.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_modules(path: Path, name: str, modules: set[str], tree: ast.Module) -> list[tuple[ast.stmt, str]]:
    """(statement, project module) for each project module an import statement of the file's tree names, at any
    depth: `from a import b` names a.b when that is a module, else a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((node, target))
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: {target for _, target in imported_modules(path, name, set(files), ast.parse(path.read_text()))}
            for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("layer", ["shared", "keras_models", "keras_fit", "tf_impl", "torch_impl"])
def test_no_module_below_the_harness_imports_it(layer):
    graph = import_graph()
    upward = sorted(f"{name} -> {target}" for name, targets in graph.items() if name.split(".")[0] == layer
                    for target in targets if target.split(".")[0] in ("harness", "compare"))
    assert upward == []


def test_project_imports_sit_at_the_top_of_a_module():
    """A project import inside a function is allowed only where it keeps a framework out of a process, and then
    its line (or the one above) says so."""
    files = module_files()
    hidden = []
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        lines = path.read_text().splitlines()
        for node, target in imported_modules(path, name, set(files), tree):
            said = " ".join(lines[max(0, node.lineno - 2):node.lineno]).lower()
            if id(node) not in top and not ("#" in said and "framework" in said):
                hidden.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert sorted(set(hidden)) == []


def test_modules_are_small_and_the_readme_short():
    long = {str(path.relative_to(ROOT)): n for path in module_files().values()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}
    assert len((ROOT / "compare.py").read_text().splitlines()) <= 200
    assert len((ROOT / "README.md").read_text()) <= 15_000


def test_each_harness_mode_is_a_package_without_name_prefixes():
    for mode in ("benchmark", "predict", "diagnose"):
        assert (ROOT / "harness" / mode / "__init__.py").is_file()
        assert not list((ROOT / "harness").glob(f"{mode}_*.py")) and not list((ROOT / "shared").glob(f"{mode}*.py"))


def test_the_portable_keras_models_sit_below_both_keras_trainers():
    """keras_models/ (the portable Keras 3 models) is imported by tf_impl/ and by keras_fit/ (the Keras arms'
    model.fit training) and imports neither; keras_fit/ never imports a side; torch_impl never sees either."""
    graph = import_graph()

    def reaching(package: str, targets: tuple[str, ...]) -> list[str]:
        return sorted(f"{name} -> {target}" for name, found in graph.items() if name.split(".")[0] == package
                      for target in found if target.split(".")[0] in targets)

    assert reaching("keras_models", ("keras_fit", "tf_impl", "torch_impl", "harness", "compare")) == []
    assert reaching("keras_fit", ("tf_impl", "torch_impl", "harness", "compare")) == []
    assert reaching("torch_impl", ("keras_models", "keras_fit")) == []
    assert any(target.startswith("keras_models") for target in graph["tf_impl.classifier"])
    assert any(target.startswith("keras_models") for target in graph["keras_fit.classifier"])
