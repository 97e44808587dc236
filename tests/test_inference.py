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
from harness.benchmark import inference, serving
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
    with pytest.raises(UserError, match="not implemented yet: --runtime onnx for the U-Net's masks"):
        exported_files(tmp_path, "onnx", ["tf", "torch"], "masks")
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
