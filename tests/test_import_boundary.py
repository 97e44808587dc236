"""The import boundary of docs/architecture.md ("What may import what"): shared/ and the harness never import
tensorflow or torch (the harness opens a side's package by name, in the side's own process), tf_impl/ never imports
torch, torch_impl/ never imports tensorflow; checked by importing shared/, harness/ and compare.py with the
frameworks made unimportable, and by reading every file's import statements."""
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
    "shared": {"tensorflow", "keras", "torch", "torchvision", "jax", "tf_impl", "torch_impl", "keras_models",
               "keras_fit", "harness"},
    "harness": {"tensorflow", "keras", "torch", "torchvision", "jax", "tf_impl", "torch_impl", "keras_models",
                "keras_fit"},
    "tf_impl": {"torch", "torchvision", "jax", "torch_impl", "keras_fit", "harness"},
    "torch_impl": {"tensorflow", "keras", "jax", "tf_impl", "keras_models", "keras_fit", "harness"},
    # The portable models run on every Keras engine: they import none, not even inside a function.
    "keras_models": {"tensorflow", "torch", "torchvision", "jax", "tf_impl", "torch_impl", "keras_fit", "harness"},
    "keras_fit": {"tf_impl", "torch_impl", "harness"},
}
# keras_fit/ runs on every Keras engine: an engine is imported only by its own module in keras_fit/backend/ (as
# Keras' own keras/src/backend/<engine>/), which keras_fit/backend/__init__.py picks by KERAS_BACKEND.
ENGINES = {"tensorflow", "torch", "torchvision", "jax"}
BACKENDS = ROOT / "keras_fit" / "backend"

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


def engine_imports(path: Path) -> dict[str, set[str]]:
    """"file:line" -> the engines an import statement of the file names, at any depth."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            engines = {name.split(".")[0] for name in names} & ENGINES
            if engines:
                found[f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{node.lineno}"] = engines
    return found


def test_each_engine_is_imported_by_its_own_backend_module_alone():
    """A keras-jax process must not load TensorFlow: in keras_fit/, only backend/jax.py imports jax, only
    backend/torch.py torch, only backend/tensorflow.py TensorFlow; every other file imports no engine at all."""
    found = {}
    for path in sorted((ROOT / "keras_fit").rglob("*.py")):
        own = {path.stem} if path.parent == BACKENDS and path.stem in ENGINES else set()
        found.update({where: engines - own for where, engines in engine_imports(path).items() if engines - own})
    assert found == {}
    assert {path.stem for path in BACKENDS.glob("*.py")} == {"__init__", "tensorflow", "jax", "torch"}


def test_the_engine_check_sees_a_planted_engine_import(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import keras\ndef f():\n    import jax.numpy as jnp\nfrom torch import nn\n")
    assert engine_imports(planted) == {"planted.py:3": {"jax"}, "planted.py:4": {"torch"}}


def test_the_backends_define_the_same_functions_in_the_same_order():
    """keras_fit/ calls `engine.<function>` without asking which engine: each backend module defines them all."""
    def public(path: Path) -> list[tuple[str, list[str]]]:
        return [(node.name, [a.arg for a in node.args.args]) for node in ast.parse(path.read_text()).body
                if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]

    tensorflow, jax, torch = (public(BACKENDS / f"{engine}.py") for engine in ("tensorflow", "jax", "torch"))
    assert tensorflow == jax == torch
