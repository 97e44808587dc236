"""`--benchmark --inference`, orchestrated from the parent: each side exports its model (native format and ONNX) in
a process of its own, the ONNX referee compares the two ONNX files, then every runtime row runs in a fresh process
with the same threads, gated on its output before any timing (harness/benchmark/serving.py is their half): with
--frameworks all the Keras arms' rows too (keras-jax jit, keras-torch eager, gated against the tf side's eager output),
with --precisions fp32,bf16 a bf16 row per side; then the statistics, results.json, report.md and the figure
(harness/benchmark/inference_report.py)."""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

from harness.benchmark import inference_report
from harness.benchmark.cpu_load import BUSY_SHARE, busy_line, cpu_snapshot, machine_load, other_share
from harness.benchmark.report import ParityFailed
from harness.benchmark.serving import FORMATS, SINGLE_STREAM_QUERIES, gate_tolerance
from harness.benchmark.stats import CONFIDENCE, RESAMPLES, SEED, speed_ratio
from harness.environment import benchmark_environment, cpu_info
from harness.flags import comma_list
from harness.jobs import WorkerOrder, write_job
from harness.launch import SideFailed, launch_worker
from harness.ownership import output_folder
from harness.registry import task_of
from harness.surface import ARMS
from shared.atomic import write_json
from shared.errors import UserError
from shared.tasks import TaskSpec

# (runtime, the side whose model or export it runs, mode): the float32 rows, in the tables' order.
ROWS = (("tf", "tf", "eager"), ("tf", "tf", "function"), ("tf", "tf", "xla"), ("tf", "tf", "savedmodel"),
        ("torch", "torch", "eager"), ("torch", "torch", "compile"), ("torch", "torch", "pt2"),
        ("onnxruntime", "tf", "onnx"), ("onnxruntime", "torch", "onnx"),
        ("openvino", "tf", "onnx"), ("openvino", "torch", "onnx"))
# With --frameworks all (or an arm named), the Keras arms: the portable Keras model on the arm's engine, in its own
# process (KERAS_BACKEND), gated against the tf side's eager output, the same model on TensorFlow. keras-tf has no
# row of its own: the tf rows are that model on TensorFlow already.
ARM_ROWS = (("keras-jax", "keras-jax", "jit"), ("keras-torch", "keras-torch", "eager"))
# With --precisions fp32,bf16: each side's forward in bf16 (TensorFlow: tf.function of the Keras model under the
# mixed_bfloat16 policy; PyTorch: eager under torch.autocast), gated against its float32 eager output.
BF16_ROWS = (("tf", "tf", "function"), ("torch", "torch", "eager"))
PRECISIONS = ("fp32", "bf16")  # --precisions of the inference benchmark (default fp32: today's run time)
BF16_UNITS = ("avx512_bf16", "amx_bf16")  # CPU flags of bf16 arithmetic, as harness/benchmark/run.py's
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # optional runtimes: a row says when one is missing


def row_name(runtime: str, source: str, mode: str, precision: str = "fp32") -> str:
    """"tf-tf-function", "onnxruntime-torch-onnx"; a Keras arm runs its own model: "keras-jax-jit"; "-bf16" added."""
    head = runtime if runtime == source and not ARMS[runtime].native else f"{runtime}-{source}"
    return f"{head}-{mode}" + ("" if precision == "fp32" else f"-{precision}")


def planned_rows(sides: list[str], precisions: list[str]) -> list[dict]:
    """The rows to run, in the tables' order: ROWS and the arms' rows in float32, then BF16_ROWS."""
    def row(runtime: str, source: str, mode: str, precision: str = "fp32", **more) -> dict:
        return {"name": row_name(runtime, source, mode, precision), "runtime": runtime, "source": source,
                "mode": mode, "precision": precision, **more}

    plan = []
    if "fp32" in precisions:
        plan += [row(*planned) for planned in ROWS]
        plan += [row(*planned, reference="tf") for planned in ARM_ROWS if planned[0] in sides]
    if "bf16" in precisions:
        plan += [row(*planned, precision="bf16") for planned in BF16_ROWS]
    return plan


def missing_runtime(runtime: str) -> str | None:
    arm = ARMS.get(runtime)
    package = PACKAGES.get(runtime) or (arm.backend if arm and not arm.native else None)
    if package and importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install {package}, or pip install -e \".[test]\")"
    return None


def check_args(args) -> None:
    """--benchmark --inference: the training benchmark's flags it does not take, refused in one line."""
    if not getattr(args, "inference", False):
        return
    refused = [flag for flag, given in (("--profile", getattr(args, "profile", False)), ("--golden", args.golden),
                                        ("--write-golden", args.write_golden), ("--repeat", args.repeat != 1),
                                        ("--nproc", args.nproc != 1), ("--tf32", args.tf32),
                                        ("--all-combinations", args.all_combinations)) if given]
    if refused:
        raise UserError(f"--benchmark --inference does not take {', '.join(refused)} (not implemented yet for "
                        "inference: docs/inference.md)")
    given = getattr(args, "precisions", None)  # the training benchmark's flag, its own default (fp32) here
    args.inference_precisions = comma_list(given, "--precisions", PRECISIONS) if given else ["fp32"]


def run_piece(folder: Path, side: str, job: dict, name: str, threads: int) -> str | None:
    """One piece in a fresh worker process; a crash (not a one-line error) is returned as its line."""
    path = write_job(folder / f"{name}.job.json", job)
    try:
        launch_worker(WorkerOrder("infer", side, str(path)), threads=threads)
    except SideFailed as failure:
        return str(failure)
    return None


def run_inference(spec: TaskSpec, sides: list[str], options) -> dict:
    """options: the command line (out, overwrite, threads, steps, bench_batch_sizes, frameworks,
    inference_precisions)."""
    if set(sides) & {"tf", "torch"} != {"tf", "torch"}:
        raise UserError("--benchmark --inference compares both sides' exports: leave --frameworks at tf,torch (or all)")
    with output_folder(options.out, spec.name, options.overwrite) as out:
        return inference_into(out, spec, sides, options)


def inference_into(out: Path, spec: TaskSpec, sides: list[str], options) -> dict:
    threads, task = options.threads, task_of(spec)
    folder = out / "inference"
    folder.mkdir(exist_ok=True)
    settings = {"offline_batch": options.bench_batch_sizes[-1], "queries": SINGLE_STREAM_QUERIES,
                "offline_steps": options.steps, "precisions": getattr(options, "inference_precisions", ["fp32"])}
    base = {"task": spec.name, "spec": spec.to_dict(), "threads": threads, "data": None, "settings": settings,
            "out": str(folder.resolve())}
    env = benchmark_environment(threads)
    not_run = (["keras-tf: no row of its own, the tf rows run the same Keras model on TensorFlow (eager, tf.function, "
                "XLA, its SavedModel)"] if "keras-tf" in sides else [])
    print(inference_report.header(spec, env, settings, threads), flush=True)
    started = time.perf_counter()
    exports = {}
    for side in ("tf", "torch"):
        print(f"export {side} ...", end=" ", flush=True)
        crash = run_piece(folder, side, {**base, "piece": "export"}, f"{side}-export", threads)
        exports[side] = ({"formats": {fmt: {"failure": crash} for fmt in FORMATS[side]}} if crash else
                         json.loads((folder / f"{side}-export.json").read_text()))
        print(", ".join(f"{fmt} {entry['export_s']:.1f} s" if "export_s" in entry else f"{fmt} failed"
                        for fmt, entry in exports[side]["formats"].items()), flush=True)
    referee = {"failure": "no ONNX file on one side"}
    if all("export_s" in exports[side]["formats"]["onnx"] for side in ("tf", "torch")):
        crash = run_piece(folder, "torch", {**base, "piece": "referee"}, "referee", threads)
        referee = {"failure": crash} if crash else json.loads((folder / "referee.json").read_text())
        if "max_abs_diff" in referee:  # the graphs agree (same runtime, same kernels) within the forward tolerance
            referee.update(tolerance=task.tolerance, passed=referee["max_abs_diff"] <= task.tolerance)
    rows, plan = [], planned_rows(sides, settings["precisions"])
    for index, row in enumerate(plan, start=1):
        name, runtime, source, mode = row["name"], row["runtime"], row["source"], row["mode"]
        fmt = "onnx" if runtime in PACKAGES else mode if mode in FORMATS.get(source, ()) else None
        why = missing_runtime(runtime) or (fmt and exports[source]["formats"][fmt].get("failure"))
        print(f"[{index}/{len(plan)}] {name} ...", end=" ", flush=True)
        if why:
            result = {"row": row, "failure": f"not run: {why}"}
        else:
            before = cpu_snapshot()
            job = {**base, "piece": "row", "row": row, "tolerance": gate_tolerance(task, row)}
            crash = run_piece(folder, source, job, name, threads)  # source: the worker's side (an arm's engine)
            result = ({"row": row, "failure": f"crashed: {crash}"} if crash else
                      json.loads((folder / f"{name}.json").read_text()))
            result["other_cpu_share"] = other_share(before, cpu_snapshot())
        result.update(row_name=name, export=exports[source]["formats"].get(fmt) if fmt else None)
        rows.append(summarize_row(result, settings["offline_batch"]))
        print(result.get("failure") or f"median {rows[-1]['latency']['median_s'] * 1e3:.3f} ms", flush=True)
    gated = [row for row in rows if not row.get("failure")]
    results = {"task": spec.name, "mode": "benchmark-inference", "config": {**spec.to_dict(), **settings,
               "threads": threads, "frameworks": sides}, "environment": env,
               "cpu_flags": cpu_info().get("flags", ""), "bf16_units": bf16_units(),
               "exports": exports, "referee": referee, "rows": rows,
               "comparisons": comparisons(gated), "machine_load": machine_load(rows),
               "fairness": {"threads": threads, "rows": {row["row_name"]: row.get("settings") for row in rows}},
               "not_run": not_run, "gate_passed": all(row.get("gate", {}).get("passed", True) for row in rows),
               "wall_s": time.perf_counter() - started}
    write_json(out / "results.json", results)
    inference_report.write_reports(out, results)
    print()
    print(inference_report.console(results))
    if busy_line(results["machine_load"]):
        print(busy_line(results["machine_load"]))
    print(f"\nwrote {out}/results.json, {out}/report.md and {out}/inference.png ({results['wall_s']:.0f} s)")
    failed = [row["failure"] for row in rows if row.get("gate") and not row["gate"]["passed"]]
    if referee.get("passed") is False:
        failed.append(inference_report.referee_line(referee))
    if failed:  # the rows that passed are reported above; the exit status says the work was not all equal
        raise ParityFailed("; ".join(failed))
    return results


def bf16_units() -> list[str]:
    """The bf16 arithmetic this CPU has (/proc/cpuinfo's flags); without, a bf16 row runs emulated, not faster."""
    flags = cpu_info().get("flags", "").split()
    return [unit for unit in BF16_UNITS if unit in flags]


def median_interval(times: list[float]) -> tuple[float | None, float | None]:
    """The percentile bootstrap interval of the median (the benchmark's resamples, confidence and seed)."""
    if len(times) < 2:
        return None, None
    found = scipy_stats.bootstrap((np.asarray(times),), np.median, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                                  method="percentile", rng=np.random.default_rng(SEED)).confidence_interval
    return float(found.low), float(found.high)


def summarize_row(result: dict, offline_batch: int) -> dict:
    """Latency median, p90, p99 and the median's interval; offline throughput from the median batch time."""
    if result.get("failure"):
        return result
    latency = np.asarray(result["latency_s"])
    low, high = median_interval(result["latency_s"])
    p50, p90, p99 = np.percentile(latency, [50, 90, 99])
    offline = float(np.median(result["offline_s"]))
    return {**result, "latency": {"queries": int(latency.size), "median_s": float(p50), "p90_s": float(p90),
                                  "p99_s": float(p99), "median_low_s": low, "median_high_s": high},
            "offline": {"batch_size": offline_batch, "median_s": offline, "samples_per_s": offline_batch / offline,
                        "steps": len(result["offline_s"])}}


# Two rows compared when both ran: one Keras model on two engines, one engine behind two APIs, bf16 against float32.
PAIRS = (("one Keras model, JAX's jit against TensorFlow's tf.function", row_name("keras-jax", "keras-jax", "jit"),
          row_name("tf", "tf", "function")),
         ("the Keras API's cost on PyTorch (both eager)", row_name("keras-torch", "keras-torch", "eager"),
          row_name("torch", "torch", "eager")),
         ("bf16 against fp32, TensorFlow's tf.function", row_name("tf", "tf", "function", "bf16"),
          row_name("tf", "tf", "function")),
         ("bf16 against fp32, PyTorch eager", row_name("torch", "torch", "eager", "bf16"),
          row_name("torch", "torch", "eager")))


def comparisons(rows: list[dict]) -> list[dict]:
    """Batch-1 latency: the fastest float32 row running each side's model against the other's, ONNX Runtime on the
    two ONNX files (same runtime and settings: only the graphs differ), then PAIRS."""
    found, named = [], {row["row_name"]: row for row in rows}
    fp32 = [row for row in rows if row["row"].get("precision", "fp32") == "fp32"]
    by_source = {source: [row for row in fp32 if row["row"]["source"] == source] for source in ("tf", "torch")}
    if all(by_source.values()):  # found[0]: the one comparison the loop below must not repeat
        fastest = [min(group, key=lambda row: row["latency"]["median_s"]) for group in by_source.values()]
        found.append(pair(*fastest, "each side's fastest way to serve"))
    for runtime in PACKAGES:
        same = [row for row in rows if row["row"]["runtime"] == runtime]
        if len(same) == 2 and {row["row_name"] for row in same} != {found[0]["faster"], found[0]["slower"]}:
            found.append(pair(*same, f"{runtime} on the two ONNX files: the graphs differ, the kernels do not"))
    found += [pair(named[first], named[second], what) for what, first, second in PAIRS
              if first in named and second in named]
    return found


def pair(first: dict, second: dict, what: str) -> dict:
    a, b = sorted((first, second), key=lambda row: row["latency"]["median_s"])
    return {"what": what, "faster": a["row_name"], "slower": b["row_name"], "over": "batch-1 queries",
            **speed_ratio(a["latency_s"], b["latency_s"]),
            "trusted": all((row.get("other_cpu_share") or 0.0) <= BUSY_SHARE for row in (a, b))}
