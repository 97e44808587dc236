"""The twins read as one program in two dialects (docs/architecture.md): the README's twin table names every pair and
only files that exist; each pair defines its shared names in the same order; a function of the same name takes
parameters of the same names on both sides. Read from the source with ast: no framework is imported."""
from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

from conftest import MODEL_MODULES, ROOT

KERAS_SIDES = ("tf_impl", "keras_models")  # the hand-written TensorFlow side, and the portable models it trains
TABLE_HEADER = ["TensorFlow / Keras file", "PyTorch file", "what it teaches"]


def twin_pairs() -> list[tuple[str, str]]:
    """(Keras-side file, PyTorch file) for every torch_impl/ module: its twin in tf_impl/, or for a model, weights.py
    and optimizers.py in keras_models/."""
    pairs = []
    for path in sorted((ROOT / "torch_impl").glob("*.py")):
        if path.name == "__init__.py":
            continue
        package = "keras_models" if path.stem in MODEL_MODULES else "tf_impl"
        pairs.append((f"{package}/{path.name}", f"torch_impl/{path.name}"))
    return pairs


def test_every_module_on_either_side_has_its_twin():
    keras_side = {f"{package}/{path.name}" for package in KERAS_SIDES for path in (ROOT / package).glob("*.py")
                  if path.name != "__init__.py"}
    pairs = twin_pairs()
    assert keras_side == {keras for keras, _ in pairs}
    assert all((ROOT / keras).is_file() for keras, _ in pairs)


def twin_table(readme: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first table under the README's "Read the twins" heading."""
    section = readme.split("## Read the twins", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    return cells[0], [row for row in cells[2:]]


def named_files(cell: str) -> list[str]:
    return re.findall(r"`([\w/]+\.py)`", cell)


def test_the_readme_twin_table_names_every_pair_and_only_files_that_exist():
    header, rows = twin_table((ROOT / "README.md").read_text())
    assert header == TABLE_HEADER
    missing = [name for row in rows for cell in row[:2] for name in named_files(cell) if not (ROOT / name).is_file()]
    assert missing == []
    listed = {(named_files(row[0])[0], named_files(row[1])[0]) for row in rows if named_files(row[0])}
    assert listed == set(twin_pairs()), f"not in the table: {sorted(set(twin_pairs()) - listed)}; " \
                                        f"not twins: {sorted(listed - set(twin_pairs()))}"
    assert all(row[2] for row in rows), "a row without what it teaches"


def test_the_table_reader_sees_a_missing_file_and_a_missing_pair():
    readme = textwrap.dedent("""
        ## Read the twins

        | TensorFlow / Keras file | PyTorch file | what it teaches |
        |---|---|---|
        | `tf_impl/nowhere.py` | `torch_impl/nowhere.py` | nothing |

        ## Next
    """)
    header, rows = twin_table(readme)
    assert header == TABLE_HEADER and len(rows) == 1
    assert not (ROOT / named_files(rows[0][0])[0]).is_file()
    assert {(named_files(rows[0][0])[0], named_files(rows[0][1])[0])} != set(twin_pairs())


def definitions(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """(name, node) of each definition in a module's or a class's body, in order: functions, classes, and names
    bound by a plain assignment (`loss = bce_dice_loss`)."""
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.append((node.name, node))
        elif isinstance(node, ast.Assign):
            found += [(target.id, node) for target in node.targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found.append((node.target.id, node))
    return found


def order_departures(keras: ast.AST, torch: ast.AST, where: str = "") -> list[str]:
    """Where the names both bodies define come in a different order; then the same for the members of each class
    both define."""
    keras_defs, torch_defs = definitions(keras), definitions(torch)
    common = {name for name, _ in keras_defs} & {name for name, _ in torch_defs}
    keras_order = [name for name, _ in keras_defs if name in common]
    torch_order = [name for name, _ in torch_defs if name in common]
    problems = [] if keras_order == torch_order else [f"{where}order {keras_order} against {torch_order}"]
    keras_classes = {name: node for name, node in keras_defs if isinstance(node, ast.ClassDef)}
    for name, node in torch_defs:
        if isinstance(node, ast.ClassDef) and name in keras_classes:
            problems += order_departures(keras_classes[name], node, f"{where}{name}.")
    return problems


def parameter_names(function: ast.FunctionDef) -> list[str]:
    arguments = function.args
    names = [a.arg for a in [*arguments.posonlyargs, *arguments.args]]
    names += [f"*{arguments.vararg.arg}"] if arguments.vararg else []
    names += [a.arg for a in arguments.kwonlyargs]
    return names + ([f"**{arguments.kwarg.arg}"] if arguments.kwarg else [])


def signature_departures(keras: ast.AST, torch: ast.AST) -> list[str]:
    """Each module-level function of one name on both sides whose parameters are named otherwise. (A class's
    members follow their framework's base class: a Keras layer infers its input width and takes `training` in its
    call, an nn.Module is told its input width and put in train() or eval() mode; their order is checked above.)"""
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    keras_defs = dict(definitions(keras))
    twins = [(keras_defs[name], node) for name, node in definitions(torch)
             if isinstance(node, functions) and isinstance(keras_defs.get(name), functions)]
    return [f"{node.name}: {parameter_names(twin)} against {parameter_names(node)}" for twin, node in twins
            if parameter_names(twin) != parameter_names(node)]


def parsed(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text())


@pytest.mark.parametrize("keras, torch", twin_pairs(), ids=[Path(torch).name for _, torch in twin_pairs()])
def test_twin_definitions_come_in_the_same_order(keras, torch):
    assert order_departures(parsed(keras), parsed(torch)) == []


@pytest.mark.parametrize("keras, torch", twin_pairs(), ids=[Path(torch).name for _, torch in twin_pairs()])
def test_twin_functions_take_parameters_of_the_same_names(keras, torch):
    assert signature_departures(parsed(keras), parsed(torch)) == []


PLANTED_KERAS = textwrap.dedent("""
    def forward(model, images): ...
    loss = forward
    class Trainer:
        def traces(self): ...
        def graph(self): ...
    def train(model, spec, loaders): ...
""")
PLANTED_TORCH = textwrap.dedent("""
    loss = None
    def forward(model, images): ...
    class Trainer:
        def graph(self): ...
        def traces(self): ...
    def train(model, spec, data, *, verbose): ...
    def only_here(x): ...
""")


def test_the_order_and_signature_checks_name_each_departure():
    """A planted pair: `loss` before `forward`, a class's members swapped, `train` with other parameters."""
    keras, torch = ast.parse(PLANTED_KERAS), ast.parse(PLANTED_TORCH)
    assert order_departures(keras, torch) == [
        "order ['forward', 'loss', 'Trainer', 'train'] against ['loss', 'forward', 'Trainer', 'train']",
        "Trainer.order ['traces', 'graph'] against ['graph', 'traces']"]
    assert signature_departures(keras, torch) == [
        "train: ['model', 'spec', 'loaders'] against ['model', 'spec', 'data', 'verbose']"]
    assert order_departures(keras, keras) == [] and signature_departures(torch, torch) == []
