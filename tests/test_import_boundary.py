"""The import boundary of DESIGN.md: shared/ and the harness never import tensorflow or torch (the harness opens a
side's package by name, in the side's own process), tf_impl/ never imports torch, torch_impl/ never imports
tensorflow; checked by importing shared/, harness/ and compare.py with the frameworks made unimportable, and by
reading every file's import statements."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

FRAMEWORKS = ("tensorflow", "keras", "torch", "torchvision")
FORBIDDEN = {
    "shared": {"tensorflow", "keras", "torch", "torchvision", "jax", "tf_impl", "torch_impl", "keras_impl", "harness"},
    "harness": {"tensorflow", "keras", "torch", "torchvision", "jax", "tf_impl", "torch_impl", "keras_impl"},
    "tf_impl": {"torch", "torchvision", "jax", "torch_impl", "harness"},
    "torch_impl": {"tensorflow", "keras", "jax", "tf_impl", "keras_impl", "harness"},
    "keras_impl": {"tf_impl", "torch_impl", "harness"},
}
# keras_impl/ runs on every Keras engine: no engine at module level; inside a function, only with this comment.
ENGINES = {"tensorflow", "torch", "torchvision", "jax"}
ENGINE_COMMENT = "this engine's own process only"

BLOCKED_RUN = textwrap.dedent(f"""
    import importlib, json, pkgutil, sys

    BLOCKED = {FRAMEWORKS!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]

    import harness, shared
    imported, failed = ["shared", "harness"], {{}}
    def onerror(name):
        failed[name] = repr(sys.exc_info()[1])
    for package in (shared, harness):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".", onerror=onerror):
            try:
                importlib.import_module(info.name)
                imported.append(info.name)
            except Exception as error:
                failed[info.name] = repr(error)
    try:
        import compare  # the parent process must stay light too
        imported.append("compare")
    except Exception as error:
        failed["compare"] = repr(error)
    try:
        import torch
        failed["<blocker>"] = "torch imported despite the blocker"
    except ImportError:
        pass
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
    print(json.dumps({{"imported": imported, "failed": failed, "frameworks_loaded": loaded}}))
""")


def module_names(package: str) -> set[str]:
    names = {package}
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_shared_and_the_harness_import_without_any_framework():
    completed = subprocess.run([sys.executable, "-c", BLOCKED_RUN], cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, report["failed"]
    assert report["frameworks_loaded"] == []
    # walk_packages found every module on disk (shared.data.*, harness.benchmark.* included), and compare.py too.
    expected = module_names("shared") | module_names("harness")
    assert expected <= set(report["imported"]), expected - set(report["imported"])
    assert {"harness.benchmark.run", "shared.data.mnist", "compare"} <= set(report["imported"])


def imported_roots(path: Path) -> set[str]:
    """Top-level package names of every import statement in the file (at any depth, lazy ones included)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            roots.add(node.args[0].value.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_imports(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no python files under {package}/"
    offenders = {str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package]) for path in files}
    offenders = {path: names for path, names in offenders.items() if names}
    assert offenders == {}, f"{package}/ must not import {sorted(FORBIDDEN[package])}: {offenders}"


def test_static_check_sees_imports(tmp_path):
    """The parser catches plain, dotted, from- and lazy (in-function) imports."""
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nimport torch.nn as nn\nfrom tensorflow import keras\n"
                      "def f():\n    import keras.layers\n    return __import__('torchvision')\n"
                      "from . import sibling\n")
    assert imported_roots(sample) == {"os", "torch", "tensorflow", "keras", "torchvision"}


def test_the_portable_keras_files_import_an_engine_only_inside_a_function():
    """A keras-jax process must not load TensorFlow: keras_impl's module-level imports name no engine, and each
    import of one inside a function says whose process it is for."""
    found = {}
    for path in sorted((ROOT / "keras_impl").rglob("*.py")):
        tree = ast.parse(path.read_text())
        lines = path.read_text().splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if not {name.split(".")[0] for name in names} & ENGINES:
                continue
            if node in tree.body or ENGINE_COMMENT not in lines[node.lineno - 1]:
                found[f"{path.relative_to(ROOT)}:{node.lineno}"] = names
    assert found == {}
