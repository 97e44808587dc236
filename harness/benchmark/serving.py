"""`--benchmark --inference`'s worker half, each piece in a fresh process of its own: a side's export (its native
format and ONNX, timed and sized), one runtime row (loaded, gated against its framework's eager output, then timed:
single-stream batch-1 latency and offline throughput; a Keras arm's row runs in the arm's process, gated against the
tf side's eager output, the same Keras model; a bf16 row against its side's float32 eager output, within the
registry's bf16_forward), and the ONNX referee (both sides' ONNX files in one ONNX Runtime session setting, and what
each graph holds). harness/benchmark/inference.py plans and starts them."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from harness.benchmark.rows import peak_rss_bytes
from harness.jobs import spec_of
from harness.registry import task_of
from harness.surface import ARMS
from shared.atomic import write_json
from shared.execution import default_execution
from shared.graph_lessons import first_line
from shared.weights import load_weights_file

SINGLE_STREAM_QUERIES = 200  # batch-1 queries timed one after another (MLPerf's single-stream scenario)
WARMUP_QUERIES = 10
FORMATS = {"tf": ("savedmodel", "onnx"), "torch": ("pt2", "onnx")}
SUFFIX = {"savedmodel": ".savedmodel", "pt2": ".pt2", "onnx": ".onnx"}
# What a reloaded file must not need: the models' own code.
MODEL_CODE = ("keras_models", "torch_impl.mlp", "torch_impl.cnn", "torch_impl.unet")
# How each side runs its forward in bf16 (tf_impl/export.py, torch_impl/export.py), in the row's settings.
BF16 = {"tf": "Keras' mixed_bfloat16 policy: float32 variables, bfloat16 compute, the output cast to float32",
        "torch": "torch.autocast('cpu', torch.bfloat16) under inference_mode: float32 weights, bfloat16 products"}


def export_module(side: str):
    """The side's export twin (tf_impl/export.py, torch_impl/export.py; a Keras arm's keras_fit/export.py); imported
    here so that one framework only enters this process."""
    return importlib.import_module(f"{ARMS[side].package}.export")


def exported_path(folder: Path, side: str, fmt: str) -> Path:
    return folder / f"{side}{'' if fmt != 'onnx' else '-onnx'}{SUFFIX[fmt]}"


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    return path.stat().st_size


def write_export(write: Callable[[Path], None], path: Path) -> float:
    """Write an export under a temporary name beside `path`, rename it when complete (a folder or a file): a
    reader never sees half an export. Returns the seconds it took."""
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        write(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - started
    if path.is_dir():
        shutil.rmtree(path)
    os.replace(partial, path)
    return seconds


def canonical_model(side: str, spec, weights=None, precision: str = "fp32"):
    """The side's model with the canonical weights (the task's initial ones, or a trained run's); in bf16 built under
    the side's mixed precision (TensorFlow fixes a Keras model's dtype policy when it builds it)."""
    task = task_of(spec)
    surface = task.surface(side, spec)
    if precision != "fp32":
        surface.runtime.configure_execution(default_execution(side, precision))
    model = surface.task.build(spec)
    surface.task.load_weights(model, task.initial_weights(spec) if weights is None else weights)
    return model, surface


def export_side(side: str, job: dict) -> None:
    """A side's export: the eager reference output on the gate batch, then each format written, timed and sized
    (a format that fails: its one line)."""
    spec, folder = spec_of(job), Path(job["out"])
    task = task_of(spec)
    surface = task.surface(side, spec)
    surface.runtime.configure(job["threads"], spec.seed)
    trained = job.get("weights")  # --export RUN_DIR: a trained run's canonical weights file
    model, _ = canonical_model(side, spec, load_weights_file(trained) if trained else None)
    if job.get("images"):  # --export RUN_DIR: the run's validation batch, saved by the parent (an .npy file)
        images = np.load(job["images"])
    else:
        images, _ = task.benchmark_batch(spec, job["settings"]["offline_batch"], spec.seed)
    np.save(folder / f"{side}-images.npy", images)  # the same batch on both sides (the referee checks)
    np.save(folder / f"{side}-reference.npy", surface.task.forward(model, images))
    export = export_module(side)
    example = export.to_input(np.concatenate([images, images])[:2])  # batch 2: a batch of 1 would be fixed at 1
    found = {"side": side, "input_layout": export.INPUT_LAYOUT, "formats": {}}
    for fmt in FORMATS[side]:
        path = exported_path(folder, side, fmt)
        write = export.export_native if fmt != "onnx" else export.export_onnx
        try:
            seconds = write_export(lambda target: write(model, example, target), path)
            found["formats"][fmt] = {"path": path.name, "export_s": seconds, "bytes": size_of(path)}
        except Exception as error:  # noqa: BLE001 - an exporter that cannot take this model: its row says why
            found["formats"][fmt] = {"failure": f"{fmt} export failed: {first_line(error)}"}
    write_json(folder / f"{side}-export.json", found)


# ---- the runtimes: each a loader of (path or model, threads) -> a numpy function ------------------------------

def onnxruntime_function(path: Path, threads: int) -> tuple[Callable, dict]:
    """An ONNX Runtime CPU session, intra-op threads = --threads, inter-op 1 (sequential graph)."""
    import onnxruntime as ort  # noqa: PLC0415 - only the ONNX Runtime rows load it

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda images: session.run(None, {name: images})[0]), {
        "onnxruntime": ort.__version__, "intra_op_num_threads": threads, "inter_op_num_threads": 1,
        "graph_optimization_level": str(options.graph_optimization_level)}


def openvino_function(path: Path, threads: int) -> tuple[Callable, dict]:
    """OpenVINO's CPU plugin on the ONNX file, INFERENCE_NUM_THREADS = --threads, float32 pinned (on a CPU with
    bf16 units its default precision is bf16, 1e-3 away from the others)."""
    import openvino as ov  # noqa: PLC0415 - only the OpenVINO rows load it

    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    return (lambda images: compiled(images)[0]), {"openvino": ov.__version__, **config}


def in_layout(images: np.ndarray, layout: str) -> np.ndarray:
    """Canonical NHWC images in a graph's input layout (each export records its own)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2) if layout == "NCHW" else images, dtype=np.float32)


def from_layout(outputs: np.ndarray, layout: str) -> np.ndarray:
    """A graph's outputs in the canonical layout: an NCHW mask to NHWC; class scores (N, 10) stay."""
    return outputs.transpose(0, 2, 3, 1) if layout == "NCHW" and outputs.ndim == 4 else outputs


def layout_of(folder: Path, source: str) -> str:
    return json.loads((folder / f"{source}-export.json").read_text())["input_layout"]


def runtime_function(row: dict, folder: Path, spec, threads: int) -> tuple[Callable, dict]:
    """The row's forward pass, loaded: its framework's model in a mode, its native export, or an ONNX file."""
    if row["runtime"] == "onnxruntime":
        return onnxruntime_function(exported_path(folder, row["source"], "onnx"), threads)
    if row["runtime"] == "openvino":
        return openvino_function(exported_path(folder, row["source"], "onnx"), threads)
    weights = load_weights_file(row["weights"]) if row.get("weights") else None
    export = export_module(row["source"])
    if not ARMS[row["source"]].native:  # a Keras arm: the portable model on its engine (keras_fit/export.py)
        model, _ = canonical_model(row["source"], spec, weights)
        return export.inference_function(model, row["mode"]), export.settings(row["mode"])
    if row["mode"] in FORMATS[row["source"]]:
        return export.load_native(exported_path(folder, row["source"], row["mode"])), {}
    precision = row.get("precision", "fp32")
    model, _ = canonical_model(row["source"], spec, weights, precision)
    return export.inference_function(model, row["mode"], precision), {
        "precision": precision, **({"bf16": BF16[row["source"]]} if precision == "bf16" else {})}


def reference_of(row: dict) -> str:
    """The side whose eager output (and seeded batch) gates the row: its own, or for a Keras arm the tf side's, the
    same Keras model on TensorFlow."""
    return row.get("reference", row["source"])


def gate_tolerance(task, row: dict) -> float:
    """The registry's forward tolerance; a bf16 row's own, bf16_forward, against the float32 eager output."""
    return task.tolerances["bf16_forward"] if row.get("precision", "fp32") == "bf16" else task.tolerance


def gated_against(row: dict) -> str:
    """What the row's gate compared it with, in words: "tf eager", "tf eager (float32)", "tf eager (the same Keras
    model)"."""
    what = f"{reference_of(row)} eager"
    if row.get("precision", "fp32") != "fp32":
        return f"{what} (float32)"
    return what if reference_of(row) == row["source"] else f"{what} (the same Keras model)"


def runtime_row(side: str, job: dict) -> None:
    """One row: load, first call, the gate on the whole batch, then single-stream latency and offline throughput.
    The gate's tolerance: job["tolerance"] when the parent gives one, else the registry's (gate_tolerance)."""
    spec, folder, row, settings = spec_of(job), Path(job["out"]), job["row"], job["settings"]
    task, reference_side = task_of(spec), reference_of(row)
    layout = layout_of(folder, reference_side)  # a Keras arm takes NHWC, as the tf side's graphs
    if row["runtime"] in ARMS:  # the framework's own threads (ONNX Runtime's and OpenVINO's: their loaders)
        importlib.import_module(f"{ARMS[row['runtime']].package}.runtime").configure(job["threads"], spec.seed)
    images = in_layout(np.load(folder / f"{reference_side}-images.npy"), layout)
    reference = np.load(folder / f"{reference_side}-reference.npy")
    tolerance = job.get("tolerance", gate_tolerance(task, row))
    found: dict = {"row": row, "threads": job["threads"]}
    try:
        started = time.perf_counter()
        call, found["settings"] = runtime_function(row, folder, spec, job["threads"])
        found["load_s"] = time.perf_counter() - started
        started = time.perf_counter()
        call(images[:1])
        found["first_call_s"] = time.perf_counter() - started
        difference = float(np.abs(from_layout(call(images), layout) - reference).max())
        found["gate"] = {"max_abs_diff": difference, "tolerance": tolerance, "passed": difference <= tolerance,
                         "against": gated_against(row)}
        if not found["gate"]["passed"]:
            found["failure"] = (f"gate failed: max |output - {gated_against(row)}| {difference:.3g} > "
                                f"{tolerance:g}; not timed")
        else:
            found["latency_s"] = time_queries(call, images, settings["queries"], WARMUP_QUERIES)
            found["offline_s"] = time_queries(call, images, settings["offline_steps"], 2, whole=True)
    except Exception as error:  # noqa: BLE001 - a runtime that cannot load or run the file: one line
        found["failure"] = f"{row['runtime']} could not run it: {first_line(error)}"
    found["model_code_imported"] = sorted(name for name in sys.modules if name.startswith(MODEL_CODE))
    found["frameworks_imported"] = [name for name in ("tensorflow", "torch", "onnxruntime", "openvino")
                                    if sys.modules.get(name) is not None]
    found["peak_rss_bytes"] = peak_rss_bytes()
    write_json(folder / f"{row['name']}.json", found)


def time_queries(call: Callable, images: np.ndarray, count: int, warmup: int, whole: bool = False) -> list[float]:
    """Seconds per call: batch-1 queries cycling through the batch's images, or the whole batch (offline)."""
    inputs = [images] if whole else [images[i:i + 1] for i in range(images.shape[0])]
    for index in range(warmup):
        call(inputs[index % len(inputs)])
    times = []
    for index in range(count):
        started = time.perf_counter()
        call(inputs[index % len(inputs)])
        times.append(time.perf_counter() - started)
    return times


# ---- the referee: the two ONNX files, one session setting -----------------------------------------------------

def graph_summary(path: Path) -> dict:
    """What an ONNX file holds: nodes by op type, the layout transposes, BatchNorm left as nodes or folded."""
    import onnx  # noqa: PLC0415 - the referee's process alone reads the graphs

    graph = onnx.load(str(path)).graph
    ops = Counter(node.op_type for node in graph.node)
    return {"nodes": len(graph.node), "ops": dict(ops.most_common()), "transposes": ops.get("Transpose", 0),
            "batch_norm_nodes": ops.get("BatchNormalization", 0), "initializers": len(graph.initializer),
            "input": [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim],
            "opset": max((o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")),
                         default=None)}


def referee(side: str, job: dict) -> None:
    """Both ONNX files in ONNX Runtime with the same session settings on the same batch: do the graphs agree?"""
    folder, threads = Path(job["out"]), job["threads"]
    images = np.load(folder / "tf-images.npy")
    found_batches = [np.load(folder / f"{source}-images.npy") for source in ("tf", "torch")]
    outputs, found = {}, {"graphs": {}, "threads": threads}
    for source in ("tf", "torch"):
        path = exported_path(folder, source, "onnx")
        if not path.exists():
            found["graphs"][source] = {"failure": f"no {source} ONNX file (its export failed)"}
            continue
        found["graphs"][source] = graph_summary(path)
        layout = layout_of(folder, source)
        call, found["settings"] = onnxruntime_function(path, threads)
        outputs[source] = from_layout(call(in_layout(images, layout)), layout)
    found["same_batch"] = bool(np.array_equal(*found_batches))
    if len(outputs) == 2:
        found["max_abs_diff"] = float(np.abs(outputs["tf"] - outputs["torch"]).max())
    write_json(folder / "referee.json", found)


def infer_side(side: str, job: dict) -> None:
    """A worker's "infer" order: job["piece"] says which of the three."""
    {"export": export_side, "row": runtime_row, "referee": referee}[job["piece"]](side, job)
