"""The lessons as notebooks: each jupytext source (notebooks/src/*.py, py:percent) executed top to bottom in a
fresh kernel and written beside it as notebooks/<name>.ipynb, outputs and figures included.

    python -m notebooks.build            # every notebook, executed and written
    python -m notebooks.build neuron     # one (or several) by name
    python -m notebooks.build --check    # exit 1 if a committed .ipynb no longer matches its source's cells

tests/test_notebooks.py executes every source the same way and runs the check."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCES = HERE / "src"
KERNEL = "python3"
CELL_TIMEOUT_S = 300


def sources() -> dict[str, Path]:
    """The notebooks by name, in their reading order (the file names start with their number)."""
    return {path.stem: path for path in sorted(SOURCES.glob("*.py"))}


def read_source(path: Path) -> nbformat.NotebookNode:
    notebook = jupytext.read(path)
    notebook.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    notebook.metadata.pop("jupytext", None)
    return notebook


def execute(notebook: nbformat.NotebookNode, timeout: int = CELL_TIMEOUT_S) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel started in the checkout's root; a cell that raises raises here."""
    NotebookClient(notebook, timeout=timeout, kernel_name=KERNEL, resources={"metadata": {"path": str(ROOT)}}).execute()
    return notebook


def cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """What the source decides: each cell's type and text (not its outputs, ids or execution counts)."""
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def stale(names: list[str]) -> list[str]:
    """The notebooks whose committed .ipynb is missing or whose cells differ from the source's."""
    found = []
    for name in names:
        committed = HERE / f"{name}.ipynb"
        source = cells(read_source(sources()[name]))
        if not committed.is_file() or cells(nbformat.read(committed, as_version=4)) != source:
            found.append(name)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notebooks.build", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"notebooks to build (default all: {', '.join(sources())})")
    parser.add_argument("--check", action="store_true", help="only check that every .ipynb matches its source")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(sources()))
    if unknown:
        parser.error(f"no notebook named {', '.join(unknown)}; choose from {', '.join(sources())}")
    names = args.names or list(sources())
    if args.check:
        behind = stale(names)
        for name in behind:
            print(f"notebooks/{name}.ipynb does not match notebooks/src/{name}.py: "
                  f"run python -m notebooks.build {name}")
        return 1 if behind else 0
    for name in names:
        start = time.perf_counter()
        notebook = execute(read_source(sources()[name]))
        nbformat.write(notebook, HERE / f"{name}.ipynb")
        print(f"notebooks/{name}.ipynb: executed in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
