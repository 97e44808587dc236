"""Benchmark methodology both sides share: the rows to run, the timing loop, the statistics, and each kind of row
as run in its own process (run_row); harness/benchmark/run.py orchestrates them."""
from __future__ import annotations

import hashlib
import math
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness.benchmark import golden
from harness.benchmark.peak import measure_matmul_rates, peak_precisions
from harness.jobs import spec_of
from harness.registry import Task, task_of
from harness.surface import ARMS, Surface
from shared import distributed
from shared.atomic import write_json
from shared.execution import MODES, Execution
from shared.graph_lessons import first_line
from shared.tasks import TaskSpec

WARMUP_STEPS = 10
TIMED_STEPS = 30
# The loss after this many steps on the same batch, bf16 against fp32 (same side, same mode, same weights).
PRECISION_CHECK_STEP = 20
PRECISION_LOSS_RTOL = {"bf16": 0.05, "fp16": 0.02, "tf32": 0.02}  # bf16 keeps 8 significant bits, fp16/tf32 11
# Precisions that keep float32 storage and run in every chosen mode ("tf32": float32 tensors, TF32 products on a GPU).
FULL_PRECISIONS = ("fp32", "tf32")
# Each side's own minimal loop is timed next to this mode's twinnets step.
REFERENCE_MODE = {side: modes[0] for side, modes in MODES.items()}


@dataclass(frozen=True)
class Row:
    """One timed configuration; each runs in a fresh process."""

    side: str
    kind: str  # "parity", "step" (twinnets step, + the reference loop in REFERENCE_MODE fp32), "pipeline",
    #            "data-parallel" (the side's distributed step in `nproc` processes on the global batch),
    #            "profile" (a step row's step under the framework's profiler, --profile), or "stock-parity" and
    #            "stock" (the parity and step rows of the model with stock BatchNorm, harness/benchmark/stock.py)
    mode: str
    precision: str = "fp32"
    batch_size: int = 0
    run: int = 1  # which of the --repeat processes
    nproc: int = 1
    reference: bool = False  # a step row that also times the reference loop and measures the matmul peak

    @property
    def name(self) -> str:
        return f"{self.side}-{self.kind}-{self.mode}-{self.precision}-b{self.batch_size}-p{self.nproc}-r{self.run}"

    @property
    def execution(self) -> Execution:
        return Execution(self.mode, "fp32" if self.precision == "tf32" else self.precision)

    def tf32(self, settings: dict) -> bool:
        """TF32 in this row: a tf32 row, or --tf32 for every timed row; never in the parity row (checked in fp32)."""
        return self.precision == "tf32" or (bool(settings.get("tf32")) and "parity" not in self.kind)

    def to_dict(self) -> dict:
        return asdict(self)


def plan_rows(sides: list[str], modes: dict[str, list[str]], precisions: list[str], batch_sizes: list[int],
              repeat: int, all_combinations: bool = False, pipeline: bool = True, nproc: int = 1,
              profile: tuple[str, ...] = ()) -> list[Row]:
    """Parity first (it gates the rest), then the step rows per side, then the loaders. fp32 (and tf32) runs in
    every chosen mode; a lower precision only in the side's training mode unless all_combinations. The training
    mode's fp32 row (tf32 where fp32 is not asked for) also times the reference loop and measures the peak.
    `profile`: the sides whose step rows are each profiled once more, in a process of its own, after all timing."""
    rows = [Row(side, "parity", REFERENCE_MODE[side], batch_size=batch_sizes[0]) for side in sides]
    reference = next((p for p in ("fp32", "tf32") if p in precisions), None)
    for batch_size in batch_sizes:
        for side in sides:
            for precision in precisions:
                for mode in modes[side]:
                    if precision not in FULL_PRECISIONS and mode != REFERENCE_MODE[side] and not all_combinations:
                        continue
                    rows += [Row(side, "step", mode, precision, batch_size, run,
                                 reference=mode == REFERENCE_MODE[side] and precision == reference)
                             for run in range(1, repeat + 1)]
    rows += [Row(row.side, "profile", row.mode, row.precision, row.batch_size) for row in rows
             if row.kind == "step" and row.run == 1 and row.side in profile]
    if pipeline:
        rows += [Row(side, "pipeline", REFERENCE_MODE[side], "fp32", batch_sizes[0]) for side in sides]
    if nproc > 1:  # the same global batch in 1 and in nproc processes, the cores shared out
        rows += [Row(side, "data-parallel", "data-parallel", "fp32", batch_sizes[0], run, processes)
                 for side in sides for processes in (1, nproc) for run in range(1, repeat + 1)]
    return rows


# ---- timing and statistics -------------------------------------------------------------------------------

def time_steps(step: Callable[[], float], warmup: int, steps: int,
               clock: Callable[[], float] = time.perf_counter) -> dict:
    """The first call alone (it traces or compiles), then `warmup` untimed calls, then `steps` timed ones.
    `step` returns the loss as a Python float: that host copy is what makes the timer wait for the device."""
    start = clock()
    losses = [step()]
    first = clock() - start
    for _ in range(warmup):
        losses.append(step())
    times = []
    for _ in range(steps):
        start = clock()
        losses.append(step())
        times.append(clock() - start)
    return {"first_step_s": first, "times_s": times, "losses": losses}


def time_interleaved(steps_by_name: dict[str, Callable[[], float]], warmup: int, steps: int,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    """time_steps for several steps at once, alternating them step by step after each one's first call and
    warm-up: a drift of the machine (clock boost, a neighbour's load) then weighs on all of them alike."""
    timings = {}
    for name, step in steps_by_name.items():
        start = clock()
        losses = [step()]
        timings[name] = {"first_step_s": clock() - start, "times_s": [], "losses": losses}
        for _ in range(warmup):
            losses.append(step())
    for _ in range(steps):
        for name, step in steps_by_name.items():
            start = clock()
            timings[name]["losses"].append(step())
            timings[name]["times_s"].append(clock() - start)
    return timings


def step_statistics(times: list[float], batch_size: int) -> dict:
    """Median, p10-p90 and mean +- standard error of the step time; samples/s from the median and the range."""
    t = np.asarray(times, dtype=float)
    if t.size == 0:
        raise ValueError("no timed steps")
    p10, median, p90 = np.percentile(t, [10, 50, 90])
    stderr = float(t.std(ddof=1) / math.sqrt(t.size)) if t.size > 1 else 0.0
    return {"steps": int(t.size), "median_s": float(median), "p10_s": float(p10), "p90_s": float(p90),
            "mean_s": float(t.mean()), "stderr_s": stderr, "samples_per_s": batch_size / float(median),
            "samples_per_s_p10": batch_size / float(p90), "samples_per_s_p90": batch_size / float(p10)}


def median_run(runs: list[dict]) -> dict:
    """Of the --repeat processes of one row, the one with the median median step time (the lower middle one)."""
    ordered = sorted(runs, key=lambda run: run["stats"]["median_s"])
    return ordered[(len(ordered) - 1) // 2]


# ---- measurements -------------------------------------------------------------------------------------------

def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def weights_digest(canonical: dict) -> str:
    """sha256 of the canonical weights (names, shapes, float32 bytes): equal digests, bit-identical weights."""
    digest = hashlib.sha256()
    for name in sorted(canonical):
        array = np.ascontiguousarray(canonical[name], dtype=np.float32)
        digest.update(f"{name}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def side_peaks(side_benchmark, execution: Execution, tf32: bool) -> dict:
    """This side's matrix-multiply rates in each precision the device has (harness/benchmark/peak.py), TF32 on only
    for the tf32 product; then the row's own TF32 policy again."""
    peaks = {}
    for precision in peak_precisions(execution.device):
        side_benchmark.configure_fairness(execution, precision == "tf32")
        peaks[precision] = measure_matmul_rates(lambda n, p=precision: side_benchmark.matmul(n, p, execution))
    side_benchmark.configure_fairness(execution, tf32)
    return peaks


# ---- one row, in its own process ----------------------------------------------------------------------------

def fresh_model(surface: Surface, task: Task, spec: TaskSpec):
    model = surface.task.build(spec)
    surface.task.load_weights(model, task.initial_weights(spec))
    return model


def fresh_step(surface: Surface, task: Task, spec: TaskSpec, execution: Execution) -> Callable:
    """The train step twinnets trains with, on a fresh model from the canonical initial weights."""
    model = fresh_model(surface, task, spec)
    return surface.task.make_train_step(model, surface.task.make_optimizer(model, spec), spec, execution)


def parity_row(surface: Surface, task: Task, spec: TaskSpec, row: Row, settings: dict, data: dict | None,
               execution: Execution) -> tuple[dict, np.ndarray]:
    """Parameters, the weights' digest, the initial model's output on the batch (the probe, on the rows' device)
    and the loss of a first train step on it; the batch is the golden file's when there is one. Then the FLOPs of a
    step per batch size, counted on throwaway models (counting runs a step)."""
    model = fresh_model(surface, task, spec)
    if settings.get("golden"):
        images, targets = golden.read_golden(settings["golden"]).batch
    else:
        images, targets = task.benchmark_batch(spec, row.batch_size, spec.seed)
    side_benchmark = surface.module("benchmark")
    result = {"parameters": surface.task.count_parameters(model),
              "weights_sha256": weights_digest(surface.task.export_weights(model)), "flops": {}}
    probe = surface.task.forward(side_benchmark.place(model, execution), images)
    step = fresh_step(surface, task, spec, execution)
    result["first_step_loss"] = float(step(*surface.task.to_tensors(images, targets, execution)))
    for batch_size in settings["batch_sizes"]:
        batch = surface.task.to_tensors(*task.benchmark_batch(spec, batch_size, spec.seed), execution)
        result["flops"][str(batch_size)] = side_benchmark.count_flops(
            fresh_step(surface, task, spec, execution), *batch)
    return result, probe


def step_row(surface: Surface, task: Task, spec: TaskSpec, row: Row, settings: dict, data: dict | None,
             execution: Execution) -> tuple[dict, None]:
    """The twinnets step timed; in the reference mode, interleaved with the few lines anyone would write (the
    same model and batch), and the machine's matrix-multiply peak measured by this side."""
    batch = surface.task.to_tensors(*task.benchmark_batch(spec, row.batch_size, spec.seed), execution)
    step = fresh_step(surface, task, spec, execution)
    steps = {"twinnets": lambda: float(step(*batch))}
    side_benchmark = surface.module("benchmark")
    if row.reference:
        model = fresh_model(surface, task, spec)
        reference = side_benchmark.reference_step(model, surface.task.loss, surface.task.make_optimizer(model, spec),
                                                  execution)
        steps["reference"] = lambda: reference(*batch)
    timings = time_interleaved(steps, settings["warmup"], settings["steps"])
    result = {**timings["twinnets"], "stats": step_statistics(timings["twinnets"]["times_s"], row.batch_size)}
    if row.reference:
        result["reference"] = {**timings["reference"],
                               "stats": step_statistics(timings["reference"]["times_s"], row.batch_size)}
        result["matmul_peak"] = side_peaks(side_benchmark, execution, row.tf32(settings))
    return result, None


def data_parallel_row(surface: Surface, task: Task, spec: TaskSpec, row: Row, settings: dict, data: dict | None,
                      execution: Execution) -> tuple[dict, None]:
    """The side's distributed step on the global batch, in row.nproc processes (set up before any other op)."""
    engine, context = surface.module("distributed"), settings["context"]
    images, targets = task.benchmark_batch(spec, row.batch_size, spec.seed)
    model, optimizer = engine.replicate(context, spec, task.initial_weights(spec))
    step = engine.make_train_step(context, model, optimizer, spec.threshold)
    shard = engine.local_batch(context, np.arange(row.batch_size),
                               lambda share: (images[share], targets[share][..., 0]))
    timing = time_steps(lambda: step(shard)[0], settings["warmup"], settings["steps"])
    return {**timing, "stats": step_statistics(timing["times_s"], row.batch_size), "processes": context.world}, None


def pipeline_row(surface: Surface, task: Task, spec: TaskSpec, row: Row, settings: dict, data: dict | None,
                 execution: Execution) -> tuple[dict, None]:
    """An epoch from the files through the side's own loader (the one training uses), after one warm-up step."""
    batch = surface.task.to_tensors(*task.benchmark_batch(spec, row.batch_size, spec.seed), execution)
    step = fresh_step(surface, task, spec, execution)
    step(*batch)
    train_set, description = task.train_set(spec, data or {})
    loader = surface.task.make_loader(train_set, row.batch_size, spec.seed, True, getattr(spec, "workers", 0))
    samples, start = 0, time.perf_counter()
    for images, targets in surface.module("benchmark").loader_batches(loader, 1):
        float(step(images, targets))
        samples += int(images.shape[0])
    elapsed = time.perf_counter() - start
    return {"epoch": {"samples": samples, "seconds": elapsed, "samples_per_s": samples / elapsed,
                      "loader": description,
                      "workers": getattr(spec, "workers", 0)}}, None


def profile_row(surface: Surface, task: Task, spec: TaskSpec, row: Row, settings: dict, data: dict | None,
                execution: Execution) -> tuple[dict, None]:
    """The step row's step again, after the same warm-up, for PROFILE_STEPS steps under the side's own profiler
    (tf_impl/profile.py, torch_impl/profile.py): its trace files and the step by category. The wall clock of each
    profiled step is kept to check that the categories add up to it."""
    batch = surface.task.to_tensors(*task.benchmark_batch(spec, row.batch_size, spec.seed), execution)
    step = fresh_step(surface, task, spec, execution)
    for _ in range(1 + settings["warmup"]):
        float(step(*batch))
    times: list[float] = []

    def timed() -> None:
        start = time.perf_counter()
        float(step(*batch))
        times.append(time.perf_counter() - start)

    out_dir = Path(settings["profile_dir"]) / row.name
    out_dir.mkdir(parents=True, exist_ok=True)
    found = surface.module("profile").profile_steps(timed, settings["profile_steps"], out_dir)
    return {"profile": found, "times_s": times}, None


def stock_parity_row(surface: Surface, task: Task, spec: TaskSpec, row: Row, settings: dict, data: dict | None,
                     execution: Execution) -> tuple[dict, np.ndarray]:
    """The parity row of the model with stock BatchNorm (the job's spec; harness/benchmark/stock.py gates it), and
    how far it is from the twins' model: max |stock - twins| of every layer's output in a training step's forward
    pass (BatchNorm on the batch's statistics), from the same weights."""
    result, probe = parity_row(surface, task, spec, row, settings, data, execution)
    images, _ = task.benchmark_batch(spec, row.batch_size, spec.seed)
    stock, twins = (surface.module("diagnose").layer_outputs(fresh_model(surface, task, form), images)
                    for form in (spec, spec.replace(batch_norm="precise")))
    result["training_diff"] = max(float(np.max(np.abs(stock[name] - twins[name]))) for name in twins)
    return result, probe


ROW_KINDS = {"parity": parity_row, "step": step_row, "data-parallel": data_parallel_row, "pipeline": pipeline_row,
             "profile": profile_row, "stock-parity": stock_parity_row, "stock": step_row}


def run_row(surface: Surface, spec: TaskSpec, row: Row, settings: dict,
            data: dict | None) -> tuple[dict, np.ndarray | None]:
    """Run one row in this process; returns its result and, for the parity row, the probe (the initial model's
    output on the batch)."""
    execution = surface.runtime.configure_execution(row.execution.replace(device=settings["device"]))
    side_benchmark = surface.module("benchmark")
    harness_set = side_benchmark.configure_fairness(execution, row.tf32(settings))  # before the model is built
    try:
        found, probe = ROW_KINDS[row.kind](surface, task_of(spec), spec, row, settings, data, execution)
    except Exception as error:  # noqa: BLE001 - an engine that cannot run the program: one line, the other rows go on
        if ARMS[surface.side].native:
            raise  # the native sides' own code: a bug to see whole
        found, probe = {"failure": first_line(error)}, None
    result = {"row": row.to_dict(), "execution": execution.to_dict(), **found, "peak_rss_bytes": peak_rss_bytes(),
              "peak_device_bytes": side_benchmark.peak_device_memory(execution), "build": side_benchmark.build_info(),
              "fairness": {"harness_set": harness_set, "settings": side_benchmark.fairness_settings(execution)}}
    return result, probe


def bench_side(side: str, job: dict) -> None:
    """One benchmark row in this (fresh) worker process: <out>/<row>.json, and <row>.probe.npy for a parity row."""
    spec = spec_of(job)
    surface = task_of(spec).surface(side, spec)
    row = Row(**job["row"])
    settings = job["settings"]
    surface.runtime.configure(max(1, job["threads"] // row.nproc), spec.seed)
    engine = surface.module("distributed") if row.kind == "data-parallel" else None
    if engine is not None:
        settings = {**settings, "context": engine.setup(settings["device"])}  # before any other op
    result, probe = run_row(surface, spec, row, settings, job["data"])
    if engine is not None:
        engine.teardown(settings["context"])
        if not distributed.is_chief(settings["context"].rank):
            return  # rank 0 writes the row
    result["row_name"] = row.name
    if probe is not None:
        np.save(Path(job["out"]) / f"{row.name}.probe.npy", probe)
    write_json(Path(job["out"]) / f"{row.name}.json", result)
