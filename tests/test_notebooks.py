"""The notebooks (notebooks/src/*.py, jupytext py:percent) run top to bottom in a fresh kernel, as a student runs
them: a cell that raises fails the test. And each committed, executed notebooks/<name>.ipynb has its source's
cells (code and markdown; outputs are not compared): `python -m notebooks.build` rebuilds them."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from notebooks import build

NAMES = list(build.sources())
CELL_TIMEOUT_S = 240  # a cell that hangs fails instead of stalling the suite


def test_there_are_the_five_lessons():
    assert NAMES == ["01_neuron", "02_graphs", "03_equal_up_to_rounding", "04_unet", "05_keras_engines"]


def work_folders() -> set[Path]:
    """The notebooks' run folders (tempfile.TemporaryDirectory, removed when the kernel stops)."""
    return set(Path(tempfile.gettempdir()).glob("twinnets-notebook-*"))


@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_runs_top_to_bottom(name):
    start = time.perf_counter()
    before = work_folders()
    notebook = build.execute(build.read_source(build.sources()[name]), timeout=CELL_TIMEOUT_S)
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert errors == []
    assert work_folders() - before == set(), "the notebook left its run folders behind after its kernel stopped"
    print(f"{name}: {time.perf_counter() - start:.1f} s")


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_notebook_matches_its_source(name):
    committed = ROOT / "notebooks" / f"{name}.ipynb"
    assert committed.is_file(), f"run python -m notebooks.build {name}"
    executed = nbformat.read(committed, as_version=4)
    assert build.cells(executed) == build.cells(build.read_source(build.sources()[name])), (
        f"notebooks/{name}.ipynb is older than notebooks/src/{name}.py: run python -m notebooks.build {name}")
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), "committed unexecuted: build it, outputs and all"


def test_the_committed_notebooks_show_their_figures():
    """A reader on GitHub sees the pictures: PNGs inside the executed notebooks."""
    for name in NAMES:
        executed = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        pictures = [output for cell in executed.cells for output in cell.get("outputs", [])
                    if "image/png" in output.get("data", {})]
        assert pictures, f"notebooks/{name}.ipynb shows no figure"
