"""--benchmark --inference (docs/inference.md): the twin export files' exports load back and agree with the eager
model, both ONNX files agree in one ONNX Runtime setting, every row is gated before it is timed, and the figures
(latency percentiles, their interval, throughput) are what the times say. Each framework in its own process, as the
benchmark runs them: TensorFlow, PyTorch and ONNX Runtime in one process can crash."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from harness.benchmark import inference, inference_report, serving
from harness.predict.exported import exported_files
from harness.registry import task_of
from shared.errors import UserError
from shared.tasks import make_spec

MLP = make_spec("mlp")
TINY_UNET = make_spec("unet", image_size=32, base_filters=4)


def job_for(spec, folder: Path, **more) -> dict:
    settings = {"offline_batch": 4, "queries": 20, "offline_steps": 3}
    return {"task": spec.name, "spec": spec.to_dict(), "threads": 1, "data": None, "settings": settings,
            "out": str(folder.resolve()), **more}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The mlp exported by both sides' worker pieces (SavedModel, .pt2, two ONNX files), then the referee."""
    folder = tmp_path_factory.mktemp("inference")
    for side in ("tf", "torch"):
        assert inference.run_piece(folder, side, job_for(MLP, folder, piece="export"), f"{side}-export", 1) is None
    assert inference.run_piece(folder, "torch", job_for(MLP, folder, piece="referee"), "referee", 1) is None
    return folder


def test_each_side_writes_its_native_format_and_onnx_atomically(exported):
    for side, formats in serving.FORMATS.items():
        found = json.loads((exported / f"{side}-export.json").read_text())
        assert set(found["formats"]) == set(formats)
        for fmt, entry in found["formats"].items():
            assert "failure" not in entry, entry
            assert entry["bytes"] > 4 * 784 * 200  # the first layer's weights are inside
            assert (exported / entry["path"]).exists()
    assert not list(exported.glob("*.partial*"))  # nothing half-written left


def test_the_referee_finds_both_onnx_graphs_compute_the_same_function(exported):
    referee = json.loads((exported / "referee.json").read_text())
    assert referee["same_batch"] is True
    assert referee["max_abs_diff"] <= task_of(MLP).tolerance
    assert referee["settings"]["intra_op_num_threads"] == 1
    for side in ("tf", "torch"):
        graph = referee["graphs"][side]
        assert graph["initializers"] >= 6  # three weight matrices and three biases
        assert graph["batch_norm_nodes"] == 0
        assert sum(graph["ops"].get(op, 0) for op in ("Gemm", "MatMul")) == 3  # three fully connected layers


@pytest.mark.parametrize("runtime, source, mode", [("onnxruntime", "torch", "onnx"), ("tf", "tf", "savedmodel")])
def test_a_row_is_gated_then_timed_without_the_models_code(exported, runtime, source, mode):
    name = inference.row_name(runtime, source, mode)
    row = {"name": name, "runtime": runtime, "source": source, "mode": mode}
    assert inference.run_piece(exported, source, job_for(MLP, exported, piece="row", row=row), name, 1) is None
    result = json.loads((exported / f"{name}.json").read_text())
    assert "failure" not in result, result.get("failure")
    assert result["gate"]["passed"] and result["gate"]["max_abs_diff"] <= task_of(MLP).tolerance
    assert len(result["latency_s"]) == 20 and len(result["offline_s"]) == 3
    assert result["model_code_imported"] == []  # a reloaded file needs no twinnets model code
    assert "torch" not in result["frameworks_imported"] or source == "torch"
    summary = inference.summarize_row({**result, "row_name": name}, 4)
    assert summary["latency"]["median_s"] <= summary["latency"]["p90_s"] <= summary["latency"]["p99_s"]
    assert summary["offline"]["samples_per_s"] == pytest.approx(4 / np.median(result["offline_s"]))


def test_a_row_whose_output_differs_is_not_timed(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    reference = np.load(folder / "torch-reference.npy")
    np.save(folder / "torch-reference.npy", reference + 1e-3)  # 100x the mlp's forward tolerance
    row = {"name": "onnxruntime-torch-onnx", "runtime": "onnxruntime", "source": "torch", "mode": "onnx"}
    assert inference.run_piece(folder, "torch", job_for(MLP, folder, piece="row", row=row), row["name"], 1) is None
    result = json.loads((folder / f"{row['name']}.json").read_text())
    assert result["gate"]["passed"] is False and result["gate"]["max_abs_diff"] == pytest.approx(1e-3, rel=0.01)
    assert result["failure"].startswith("gate failed") and "latency_s" not in result


def run_row(folder: Path, row: dict, **job) -> dict:
    """One planned row in its worker process (the arm's process for a Keras arm); its result file."""
    assert inference.run_piece(folder, row["source"], job_for(MLP, folder, piece="row", row=row, **job), row["name"],
                               1) is None
    return json.loads((folder / f"{row['name']}.json").read_text())


def planned(name: str, precisions=("fp32", "bf16")) -> dict:
    return next(row for row in inference.planned_rows(["tf", "torch", "keras-jax", "keras-torch"], list(precisions))
                if row["name"] == name)


@pytest.mark.parametrize("name, engine_imported", [("keras-jax-jit", []), ("keras-torch-eager", ["torch"])])
def test_a_keras_arms_row_runs_on_its_engine_gated_against_the_tf_eager_output(exported, name, engine_imported):
    result = run_row(exported, planned(name))
    assert "failure" not in result, result.get("failure")
    gate = result["gate"]
    assert gate["passed"] and gate["max_abs_diff"] <= task_of(MLP).tolerance == gate["tolerance"]
    assert gate["against"] == "tf eager (the same Keras model)"
    assert len(result["latency_s"]) == 20 and len(result["offline_s"]) == 3
    assert result["frameworks_imported"] == engine_imported  # KERAS_BACKEND's engine alone: no TensorFlow
    assert result["settings"]["keras_backend"] == name.split("-")[1]


@pytest.mark.parametrize("name, against", [("tf-tf-function-bf16", "tf eager (float32)"),
                                           ("torch-torch-eager-bf16", "torch eager (float32)")])
def test_a_bf16_row_differs_from_float32_within_its_own_tolerance(exported, name, against):
    row = planned(name)
    result = run_row(exported, row, tolerance=serving.gate_tolerance(task_of(MLP), row))
    assert "failure" not in result, result.get("failure")
    gate, tolerances = result["gate"], task_of(MLP).tolerances
    # bfloat16's 8 bits: far over float32's forward tolerance, within bf16_forward
    assert 100 * tolerances["forward"] < gate["max_abs_diff"] <= tolerances["bf16_forward"] == gate["tolerance"]
    assert gate["passed"] and gate["against"] == against
    assert result["settings"]["precision"] == "bf16" and len(result["latency_s"]) == 20


def test_a_bf16_row_over_a_tighter_tolerance_is_failed_and_not_timed(exported):
    result = run_row(exported, planned("torch-torch-eager-bf16"), tolerance=task_of(MLP).tolerance)
    assert result["gate"]["passed"] is False and result["gate"]["max_abs_diff"] > task_of(MLP).tolerance
    assert result["failure"].startswith("gate failed: max |output - torch eager (float32)|")
    assert "latency_s" not in result and "offline_s" not in result


def test_the_arms_rows_come_with_frameworks_all_and_bf16_rows_with_precisions():
    names = [inference.row_name(*row) for row in inference.ROWS]
    assert [row["name"] for row in inference.planned_rows(["tf", "torch"], ["fp32"])] == names
    every = inference.planned_rows(["tf", "torch", "keras-tf", "keras-jax", "keras-torch"], ["fp32", "bf16"])
    assert [row["name"] for row in every] == names + ["keras-jax-jit", "keras-torch-eager", "tf-tf-function-bf16",
                                                     "torch-torch-eager-bf16"]
    assert [row["precision"] for row in every].count("bf16") == 2
    assert {row.get("reference") for row in every if row["runtime"].startswith("keras")} == {"tf"}
    assert [row["name"] for row in inference.planned_rows(["tf", "torch"], ["bf16"])] == [
        "tf-tf-function-bf16", "torch-torch-eager-bf16"]
    args = argparse.Namespace(inference=True, profile=False, golden=None, write_golden=None, repeat=1, nproc=1,
                              tf32=False, all_combinations=False, precisions=None)
    inference.check_args(args)
    assert args.inference_precisions == ["fp32"]  # the default keeps today's rows (and run time)
    args.precisions = "fp32,bf16"
    inference.check_args(args)
    assert args.inference_precisions == ["fp32", "bf16"]
    args.precisions = "fp32,fp16"
    with pytest.raises(UserError, match="--precisions 'fp32,fp16': choose from fp32, bf16"):
        inference.check_args(args)


def test_bf16_and_arm_rows_are_compared_with_their_float32_and_native_twins():
    def row(name: str, source: str, milliseconds: float, precision: str = "fp32") -> dict:
        return {"row_name": name, "row": {"source": source, "runtime": source, "precision": precision},
                "latency": {"median_s": milliseconds / 1e3}, "latency_s": [milliseconds / 1e3 * (1 + i % 5 / 100)
                                                                            for i in range(50)]}
    rows = [row("tf-tf-function", "tf", 0.3), row("torch-torch-eager", "torch", 0.06),
            row("keras-torch-eager", "keras-torch", 0.6), row("tf-tf-function-bf16", "tf", 0.03, "bf16")]
    found = {c["what"]: c for c in inference.comparisons(rows)}
    fastest = found["each side's fastest way to serve"]  # bf16 computes other numbers: not among the fp32 rows
    assert {fastest["faster"], fastest["slower"]} == {"torch-torch-eager", "tf-tf-function"}
    cost = found["the Keras API's cost on PyTorch (both eager)"]
    assert cost["faster"] == "torch-torch-eager" and cost["ratio"] == pytest.approx(10, rel=0.01)
    assert found["bf16 against fp32, TensorFlow's tf.function"]["faster"] == "tf-tf-function-bf16"
    assert "one Keras model, JAX's jit against TensorFlow's tf.function" not in found  # keras-jax did not run


def test_the_report_says_what_each_other_gate_was_and_whether_the_cpu_has_bf16_units():
    gated = {"row_name": "tf-tf-function-bf16", "row": {"source": "tf", "precision": "bf16"},
             "gate": {"max_abs_diff": 0.02, "tolerance": 0.05, "passed": True, "against": "tf eager (float32)"}}
    own = {"row_name": "tf-tf-eager", "row": {"source": "tf"},
           "gate": {"max_abs_diff": 0.0, "tolerance": 1e-5, "passed": True, "against": "tf eager"}}
    results = {"rows": [own, gated], "config": {"precisions": ["fp32", "bf16"]}, "bf16_units": []}
    assert inference_report.gate_lines(results) == [
        "gate of tf-tf-function-bf16: max |output - tf eager (float32)| 0.02 <= 0.05"]
    assert "no bf16 arithmetic" in inference_report.bf16_line(results)
    assert "avx512_bf16" in inference_report.bf16_line({**results, "bf16_units": ["avx512_bf16"]})
    assert inference_report.bf16_line({**results, "config": {"precisions": ["fp32"]}}) is None


def test_the_training_benchmarks_flags_are_refused_with_inference():
    args = argparse.Namespace(inference=True, profile=False, golden=None, write_golden=None, repeat=2, nproc=1,
                              tf32=False, all_combinations=True)
    with pytest.raises(UserError, match="does not take --repeat, --all-combinations"):
        inference.check_args(args)
    inference.check_args(argparse.Namespace(inference=False))  # a training benchmark: nothing to check


def test_latency_figures_are_the_percentiles_and_the_interval_holds_the_median():
    times = [0.001 * (1 + i % 10) for i in range(100)]  # 1..10 ms, ten of each
    row = inference.summarize_row({"row": {}, "latency_s": times, "offline_s": [0.5, 0.4, 0.6]}, 8)
    assert row["latency"]["median_s"] == pytest.approx(0.0055)
    assert row["latency"]["p90_s"] == pytest.approx(np.percentile(times, 90))
    assert row["latency"]["p99_s"] == pytest.approx(0.010)
    assert row["latency"]["median_low_s"] <= 0.0055 <= row["latency"]["median_high_s"]
    assert row["offline"]["samples_per_s"] == pytest.approx(8 / 0.5)
    failed = {"row": {}, "failure": "not run: openvino is not installed"}
    assert inference.summarize_row(failed, 8) is failed  # a row that did not run keeps its one line


def test_a_missing_runtime_is_one_line(monkeypatch):
    monkeypatch.setattr(inference.importlib.util, "find_spec", lambda name: None)
    line = inference.missing_runtime("openvino")
    assert "openvino is not installed" in line and "\n" not in line
    assert inference.missing_runtime("tf") is None


def test_layouts_round_trip():
    images = np.random.default_rng(0).random((2, 8, 6, 3), dtype=np.float32)  # NHWC
    nchw = serving.in_layout(images, "NCHW")
    assert nchw.shape == (2, 3, 8, 6) and nchw.flags.c_contiguous
    mask = nchw[:, :1]  # an NCHW mask comes back NHWC
    assert np.array_equal(serving.from_layout(mask, "NCHW"), images[..., :1])
    assert serving.from_layout(np.ones((2, 10)), "NCHW").shape == (2, 10)


@pytest.mark.slow
def test_the_inference_benchmark_of_a_tiny_unet_has_every_row_gated_or_explained(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(ROOT / "compare.py"), "--task", "unet", "--image-size", "32",
                           "--base-filters", "4", "--benchmark", "--inference", "--steps", "3", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert [row["row_name"] for row in results["rows"]] == [inference.row_name(*row) for row in inference.ROWS]
    for row in results["rows"]:
        assert row.get("failure") or row["gate"]["passed"], row["row_name"]
    assert results["referee"]["passed"] and results["referee"]["graphs"]["torch"]["batch_norm_nodes"] == 0
    assert (out / "inference.png").stat().st_size > 10_000
    assert "## The two ONNX graphs" in (out / "report.md").read_text()


def test_predict_with_an_exported_file_says_in_one_line_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="no exported files; run `python compare.py --export"):
        exported_files(tmp_path, "onnx", ["tf", "torch"], "classes")
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "export.json").write_text(json.dumps({"sides": {"tf": {"savedmodel": {
        "path": "tf.savedmodel", "kept": True}}}, "layouts": {"tf": "NHWC"}}))
    with pytest.raises(UserError, match="use --frameworks tf"):
        exported_files(tmp_path, "savedmodel", ["tf", "torch"], "classes")
    assert exported_files(tmp_path, "savedmodel", ["tf"], "classes")["tf"]["input_layout"] == "NHWC"


@pytest.mark.slow
def test_a_trained_run_exported_then_predicted_by_each_file_agrees_with_the_framework(tmp_path):
    import subprocess
    import sys

    def compare(*flags: str) -> str:
        done = subprocess.run([sys.executable, str(ROOT / "compare.py"), *flags], capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    run = tmp_path / "run"
    compare("--task", "mlp", "--epochs", "1", "--sample-size", "400", "--threads", "1", "--out", str(run))
    compare("--export", str(run), "--threads", "1")
    record = json.loads((run / "exported" / "export.json").read_text())
    for side, formats in record["sides"].items():
        for fmt, entry in formats.items():
            assert entry["kept"] and entry["max_abs_diff"] <= task_of(MLP).tolerance, (side, fmt, entry)
    framework = tmp_path / "framework"
    compare("--predict", str(run), "--out", str(framework))
    for runtime, sides in (("onnx", "tf,torch"), ("savedmodel", "tf"), ("pt2", "torch")):
        out = tmp_path / runtime
        printed = compare("--predict", str(run), "--runtime", runtime, "--frameworks", sides, "--out", str(out))
        assert "running" in printed
        for side in sides.split(","):
            mine = (out / side / "predictions.csv").read_text().splitlines()
            theirs = (framework / side / "predictions.csv").read_text().splitlines()
            assert [line.split(",")[1] for line in mine] == [line.split(",")[1] for line in theirs]  # same classes
