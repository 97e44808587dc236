"""The autograd task's graph lessons: the graphs drawn (shared/graph_drawing.py: layout and PNG), each side going the
other way (PyTorch static: torch.compile, torch.fx, torch.export, torch.cond; TensorFlow dynamic:
run_functions_eagerly) and the tf.function pitfalls with their PyTorch column, every number counted by running the
code. The lessons run once per module, on a small sample of the mlp's digits (3 batches: 200, 200 and 50)."""
from __future__ import annotations

import ast
import json
import re

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, side_module
from harness.registry import REGISTRY
from harness.tasks.digits import digits_epoch
from harness.tasks.lessons import autograd_lesson
from shared import graph_drawing as gd
from shared import graph_lessons
from shared.tasks import make_spec

SHAPE = (2, 2)
SAMPLE = 450  # digits: batches of 200, 200 and a partial one of 50


@pytest.fixture(scope="module")
def lessons():
    """Both sides' whole lesson (torch first: see conftest), the pitfalls on SAMPLE digits, as results.json has it."""
    spec = make_spec("autograd")
    found = {side: autograd_lesson(spec, REGISTRY["autograd"].surface(side, spec).task,
                                   digits_epoch(side, sample_size=SAMPLE)) for side in ("torch", "tf")}
    return json.loads(json.dumps(found))  # what the report reads: plain JSON


def nodes_by_label(panel: dict) -> dict:
    return {n["label"]: n for n in panel["nodes"]}


def incoming(panel: dict, node_id: str) -> list[dict]:
    return [e for e in panel["edges"] if e["target"] == node_id]


# ---- the layout, without a framework ----------------------------------------------------------------------------

def diamond() -> dict:
    """x feeds two paths of different length that meet again (z = 2 x^2 + 5 x), and a constant."""
    nodes = [gd.node("x", "x", "input"), gd.node("c", "2", "const"), gd.node("pow", "pow"), gd.node("mul", "mul"),
             gd.node("mul5", "mul 5"), gd.node("add", "add"), gd.node("out", "out", "output")]
    edges = [gd.edge("x", "pow"), gd.edge("pow", "mul"), gd.edge("c", "mul"), gd.edge("x", "mul5"),
             gd.edge("mul", "add"), gd.edge("mul5", "add"), gd.edge("add", "out")]
    return gd.panel("diamond", nodes, edges)


def test_layers_follow_the_data_flow_and_constants_sit_beside_their_reader():
    layer = gd.layers(diamond())
    assert layer == {"x": 0, "c": 1, "pow": 1, "mul": 2, "mul5": 1, "add": 3, "out": 4}


def test_every_arrow_runs_left_to_right_and_no_boxes_overlap():
    graph = diamond()
    placed = gd.layout(graph)
    for route in placed["edges"]:
        xs = [x for x, _ in route]
        assert xs == sorted(xs) and xs[0] < xs[-1], route
    boxes = list(placed["nodes"].values())
    for i, (x1, y1, w1, h1) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1:]:
            assert abs(x1 - x2) >= (w1 + w2) / 2 or abs(y1 - y2) >= (h1 + h2) / 2, (boxes[i], (x2, y2, w2, h2))
        width, height = placed["size"]
        assert 0 <= x1 - w1 / 2 and x1 + w1 / 2 <= width and 0 <= y1 - h1 / 2 and y1 + h1 / 2 <= height


def test_an_edge_that_skips_layers_is_routed_around_the_boxes():
    """mul5 -> add skips the layer of mul: its route bends through a reserved slot, clear of every box."""
    graph = diamond()
    placed = gd.layout(graph)
    route = placed["edges"][[(e["source"], e["target"]) for e in graph["edges"]].index(("mul5", "add"))]
    assert len(route) == 3
    for node_id, (x, y, w, h) in placed["nodes"].items():
        if node_id not in ("mul5", "add"):
            middle_x, middle_y = route[1]
            assert not (abs(middle_x - x) < w / 2 and abs(middle_y - y) < h / 2), node_id


def test_malformed_graphs_are_refused():
    with pytest.raises(ValueError, match="cycle"):
        gd.layers(gd.panel("loop", [gd.node("a", "a"), gd.node("b", "b")], [gd.edge("a", "b"), gd.edge("b", "a")]))
    with pytest.raises(ValueError, match="does not have"):
        gd.panel("dangling", [gd.node("a", "a")], [gd.edge("a", "b")])
    with pytest.raises(ValueError, match="kind"):
        gd.node("a", "a", "blob")


def test_drawing_is_a_png_of_a_readable_size(tmp_path):
    path = gd.draw_beside([gd.drawing("one", [diamond()], "a caption"), gd.drawing("two", [diamond(), diamond()])],
                          tmp_path / "two.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 600 < width < 3000 and 300 < height < 3000, image.size  # 9 pt text at 110 dpi: no zooming needed


# ---- the graphs of z, drawn from each side's own graph objects --------------------------------------------------

def test_tf_drawing_is_the_traced_graph_with_its_constants():
    panel = side_module("tf", "autograd").graph_drawings(2.0, SHAPE)["tf_function_z"]["panels"][0]
    kinds = [n["kind"] for n in panel["nodes"]]
    assert kinds.count("input") == 1 and kinds.count("const") == 3
    constants = sorted(n["label"].split("Const ")[1] for n in panel["nodes"] if n["kind"] == "const")
    assert constants == ["2", "2", "5"]
    ops = [n["label"].split("\n")[1] for n in panel["nodes"] if n["kind"] in ("op", "output")]
    assert sorted(ops) == ["AddV2", "Identity", "Mul", "Mul", "Pow"]
    x = next(n for n in panel["nodes"] if n["kind"] == "input")
    assert {e["label"] for e in panel["edges"] if e["source"] == x["id"]} == {"f32[2,2]"}  # tensors are the edges
    assert len([e for e in panel["edges"] if e["source"] == x["id"]]) == 2  # x^2 and 5x


def test_torch_autograd_drawing_has_one_leaf_with_two_incoming_gradients():
    panel = side_module("torch", "autograd").graph_drawings(2.0, SHAPE)["torch_autograd_z"]["panels"][0]
    leaves = [n for n in panel["nodes"] if n["kind"] == "leaf"]
    assert len(leaves) == 1 and leaves[0]["label"] == "AccumulateGrad\nx (2, 2)"  # the shared x, drawn once
    into_x = sorted(e["label"] for e in incoming(panel, leaves[0]["id"]))
    assert into_x == ["5 [2x2]", "8 [2x2]"]  # d(2x^2)/dx = 4x = 8 and d(5x)/dx = 5, summed into x.grad
    grad = next(e for e in panel["edges"] if e["source"] == leaves[0]["id"])
    assert grad["label"] == "13 [2x2]"
    grad_fns = sorted(n["label"].split("\n")[0] for n in panel["nodes"] if n["kind"] == "grad")
    assert grad_fns == ["AddBackward0", "MulBackward0", "MulBackward0", "PowBackward0"]
    assert {"MulBackward0\nother = 2", "MulBackward0\nother = 5", "PowBackward0\nexponent = 2"} <= set(
        nodes_by_label(panel))


def test_torch_dynamo_drawing_is_the_fx_graph_of_z():
    panel = side_module("torch", "autograd").graph_drawings(2.0, SHAPE)["torch_dynamo_z"]["panels"][0]
    targets = sorted(n["label"].split("\n")[1] for n in panel["nodes"] if n["kind"] == "op")
    assert targets == ["add", "mul", "mul", "pow"]
    assert sorted(n["label"] for n in panel["nodes"] if n["kind"] == "const") == ["2", "2", "5"]
    assert [n["kind"] for n in panel["nodes"]].count("input") == 1


# ---- going static and dynamic ------------------------------------------------------------------------------------

def test_tf_branch_is_one_graph_with_a_conditional(lessons):
    static = lessons["tf"]["static"]
    assert static["branch"]["traces"] == 1 and static["branch"]["conditionals"] == ["cond = StatelessIf"]
    assert static["branch_cond"]["conditionals"] == ["cond = StatelessIf"]  # tf.cond: the same op by hand
    assert static["without_autograph"]["error"].startswith("OperatorNotAllowedInGraphError: Using a symbolic")
    panels = lessons["tf"]["drawings"]["tf_function_branch"]["panels"]
    assert len(panels) == 3  # the graph, then_branch, else_branch
    assert {n["label"].split("\n")[1] for n in panels[1]["nodes"]} >= {"Mul"}
    assert {n["label"].split("\n")[1] for n in panels[2]["nodes"]} >= {"Neg"}


def test_torch_compile_breaks_the_graph_at_the_python_if(lessons):
    static = lessons["torch"]["static"]
    compiled = static["compile"]
    assert compiled["graphs"] == 2 and compiled["graph_breaks"] == 1
    assert compiled["reason"].startswith("Data-dependent branching"), compiled["reason"]
    assert compiled["where"].endswith("if x.sum() > 0:")
    assert compiled["graphs_captured_after_each_call"] == [2, 3, 3]  # one more graph for the other branch, then none
    assert static["symbolic_trace"]["error"].startswith("TraceError: symbolically traced variables cannot be used")
    assert static["export"]["error"] and "\n" not in static["export"]["error"]
    cond = static["cond"]
    assert cond["graphs"] == 1 and cond["graph_breaks"] == 0 and "cond" in cond["ops"]
    assert cond["branch_graphs"] == ["true_graph_0", "false_graph_0"]
    assert np.array_equal(cond["positive_input"], np.full(SHAPE, 4.0))
    assert np.array_equal(cond["negative_input"], np.full(SHAPE, 2.0))
    assert len(lessons["torch"]["drawings"]["torch_dynamo_branch"]["panels"]) == 3
    assert len(lessons["torch"]["drawings"]["torch_export_cond"]["panels"]) == 3


def test_tf_run_eagerly_takes_the_python_if_per_call(lessons):
    dynamic = lessons["tf"]["dynamic"]
    assert dynamic["graph"] == {"traces": 1, "python_branches_ran": ["x * 2", "-x"]}  # at the trace, both, once
    assert dynamic["eager"] == {"traces": 0, "python_branches_ran": ["x * 2", "-x", "x * 2", "-x"]}
    assert all(t > 0 for t in dynamic["time_per_call_s"].values())


def test_torch_runs_the_python_if_per_call(lessons):
    dynamic = lessons["torch"]["dynamic"]
    assert dynamic["eager"]["python_branches_ran"] == ["x * 2", "-x", "x * 2", "-x"]
    assert dynamic["compile"]["python_branches_ran"] == ["x * 2", "-x", "x * 2", "-x"]
    assert all(t > 0 for t in dynamic["time_per_call_s"].values())


# ---- the pitfalls ------------------------------------------------------------------------------------------------

def test_tf_pitfalls_are_counted(lessons):
    p = lessons["tf"]["pitfalls"]
    assert p["print"] == {"calls": 3, "traces": 1, "python_print": 1, "tf_print": 3}
    assert p["python_scalar"]["traces"] == 5 and p["tensor_argument"]["traces"] == 1
    batches = p["batch_shape"]
    assert (batches["steps"], batches["batch_size"], batches["last_batch"]) == (3, 200, 50)
    assert batches["input_signature"]["trace_steps"] == [1]
    assert batches["no_signature"]["trace_steps"] == [1, 3]
    assert batches["no_signature"]["trace_batch_sizes"] == [200, 50]
    assert all(t > 0 for t in batches["no_signature"]["trace_step_s"])
    assert {k: p["new_batch_sizes"][k] for k in ("default", "reduce_retracing", "input_signature")} == {
        "default": 5, "reduce_retracing": 2, "input_signature": 1}


def test_torch_pitfall_column_is_counted(lessons):
    p = lessons["torch"]["pitfalls"]
    assert p["print"]["eager"]["python_print"] == 3
    assert p["print"]["compile"]["python_print"] == 3 and p["print"]["compile"]["graph_breaks"] == 1
    scalar = p["python_scalar"]
    assert (scalar["compile"]["compiles"], scalar["compile_static"]["compiles"],
            scalar["compile_dynamic"]["compiles"]) == (2, 5, 1)
    assert p["tensor_argument"]["compile"]["compiles"] == 1
    batches = p["batch_shape"]
    assert batches["eager"]["traces"] == 0 and batches["eager"]["autograd_graphs"] == 3  # one graph per step
    assert batches["compile"]["trace_steps"] == [1, 3]
    assert batches["compile_marked_dynamic"]["trace_steps"] == [1]
    sizes = p["new_batch_sizes"]
    assert (sizes["compile"], sizes["compile_static"], sizes["compile_marked_dynamic"]) == (2, 5, 1)


def test_pitfall_table_has_every_case_and_says_what_did_not_run(lessons):
    rows = graph_lessons.pitfall_table(lessons)
    assert rows[0] == ["case", "TensorFlow: tf.function", "PyTorch: eager", "PyTorch: torch.compile"]
    assert len(rows) == 7 and all(len(row) == 4 for row in rows)
    assert "print ran 1x" in rows[1][1] and "tf.print ran 3x" in rows[1][1]
    only_torch = graph_lessons.pitfall_table({"torch": lessons["torch"]})
    assert all(row[1] == "not run" for row in only_torch[1:])
    table = graph_lessons.markdown(rows)
    assert table.count("\n") == 7


# ---- both sides' lessons and the report ---------------------------------------------------------------------------

def test_lesson_keys_and_values_agree_across_sides(lessons):
    assert set(lessons["tf"]) == set(lessons["torch"])
    assert lessons["tf"]["grad"] == lessons["torch"]["grad"] == [[13.0, 13.0], [13.0, 13.0]]
    basics = {s: lessons[s]["basics"] for s in lessons}
    assert set(basics["tf"]) == set(basics["torch"])
    for b in basics.values():
        assert np.array_equal(b["zeros"], np.zeros((2, 3))) and np.array_equal(b["ones"], np.ones((2, 3)))
        uniform = np.asarray(b["uniform"])
        assert uniform.shape == (2, 3) and np.all((uniform >= 0) & (uniform < 1))
        np.testing.assert_allclose(b["second_column"], uniform[:, 1])
        np.testing.assert_allclose(b["ones_times_3_plus_uniform"], 3 + uniform, rtol=1e-6)
        np.testing.assert_allclose(b["matmul_uniform_by_ones_T"], uniform @ np.ones((3, 2)), rtol=1e-6)
    assert set(lessons["tf"]["pitfalls"]) == set(lessons["torch"]["pitfalls"])


def test_report_draws_every_graph_and_tabulates_the_pitfalls(lessons, tmp_path):
    from harness.task_reports import autograd_report

    results = {"task": "autograd", "config": {"x_value": 2.0, "shape": [2, 2]}, "frameworks": lessons}
    section = autograd_report(results, tmp_path)
    assert section.images == ["graphs.png", "branch.png", "torch_export_cond.png"]
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == sorted(["graphs.png", "branch.png", "tf_function_z.png", "tf_function_branch.png",
                              "torch_autograd_z.png", "torch_dynamo_z.png", "torch_dynamo_branch.png",
                              "torch_export_cond.png"])
    for name in written:
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and min(image.size) > 200
    assert re.search(r"^\| case +\| TensorFlow: tf\.function +\| PyTorch: eager +\| PyTorch: torch\.compile +\|$",
                     section.extra, re.M)  # the header cells padded to their columns' widths
    assert "Data-dependent branching" in section.extra and "OperatorNotAllowedInGraphError" in section.extra
    assert section.extra.count("dz/dx = [[13.0, 13.0], [13.0, 13.0]] (expected 4x + 5 = 13)") == 2


def imported_modules(path) -> set[str]:
    """Every module an import statement of the file names, at any depth (lazy imports included)."""
    tree = ast.parse(path.read_text())
    return ({alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
            | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module})


def test_the_lessons_do_not_reach_up_into_the_harness():
    """The sides' lesson modules and the shared lesson helpers import no harness module (the harness hands them the
    digits), so the harness imports them without a cycle."""
    files = ["shared/graph_lessons.py", *(f"{package}/{module}.py" for package in ("tf_impl", "torch_impl")
                                          for module in ("autograd", "graph_modes", "neuron"))]
    reaching_up = {name: sorted(m for m in imported_modules(ROOT / name) if m.split(".")[0] == "harness")
                   for name in files}
    assert {name: found for name, found in reaching_up.items() if found} == {}
