"""The benchmark, orchestrated from the parent: the parity gate first (no timing unless both sides do the same
work), then each (framework, mode, precision, batch size) row in a fresh process, then the summary and reports."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from harness import parity
from harness.benchmark import arms, inference, presets, stock, summary
from harness.benchmark import golden as benchmark_golden
from harness.benchmark import peak as benchmark_peak
from harness.benchmark import profile as bench_profile
from harness.benchmark import report as benchmark_report
from harness.benchmark import rows as benchmark
from harness.benchmark.cpu_load import PEAK_ROW, busy_line, cpu_snapshot, machine_load, other_share
from harness.benchmark.fairness import manifest
from harness.benchmark.stats import comparisons
from harness.environment import benchmark_environment, cpu_info, package_version
from harness.flags import comma_list, frameworks
from harness.jobs import WorkerOrder, write_job
from harness.launch import SideFailed, launch_worker
from harness.ownership import output_folder
from harness.registry import task_of, tolerance
from harness.report import SIDE_NAMES
from harness.surface import ARMS, SIDES
from shared.atomic import write_json
from shared.errors import UserError
from shared.execution import MODES, PRECISIONS
from shared.tasks import TaskSpec

# The benchmark's precisions: the training ones, and "tf32" (float32 tensors, TF32 products and convolutions on a GPU).
BENCH_PRECISIONS = ("fp32", "tf32", *PRECISIONS[1:])
GPU_PRECISIONS = ("tf32", "fp16")
DEFAULT_PRECISIONS = {"cuda": "fp32,tf32,bf16,fp16", "cpu": "fp32,bf16"}
BF16_UNITS = ("avx512_bf16", "amx_bf16")  # CPU flags of bf16 arithmetic; without them bf16 is emulated, slowly


def check_benchmark_args(args, spec: TaskSpec, trains: bool) -> None:
    """Turn the benchmark flags into lists (kept on args); one-line errors for anything off."""
    if not trains:
        raise UserError(f"--benchmark applies to mlp, cnn and unet, not {spec.name!r}")
    inference.check_args(args)
    preset = presets.PRESETS[getattr(args, "preset", None) or "default"]
    args.bench_preset, args.bench_pipeline, args.bench_not_run = preset.name, preset.pipeline, []
    args.warmup = preset.warmup if args.warmup is None else args.warmup
    args.steps = preset.steps if args.steps is None else args.steps
    preset_modes = ",".join(modes for modes in (preset.modes, preset.arm_modes) if modes) or "all"
    args.modes = preset_modes if args.modes is None else args.modes
    for flag, least in (("warmup", 0), ("steps", 1), ("repeat", 1)):
        if getattr(args, flag) < least:
            raise UserError(f"--{flag} must be {'0 or more' if least == 0 else 'positive'}, got {getattr(args, flag)}")
    batch_sizes = comma_list(args.batch_sizes, "--batch-sizes", convert=int) if args.batch_sizes else [spec.batch_size]
    if min(batch_sizes) <= 0:
        raise UserError(f"--batch-sizes must be positive, got {args.batch_sizes}")
    # "eager" picks eager on every side that has it; "tf:function" or "keras-torch:compile" only on one.
    every_mode = sorted({mode for modes in MODES.values() for mode in modes})
    every_mode += [f"{side}:{mode}" for side, modes in MODES.items() for mode in modes]
    chosen = every_mode if args.modes == "all" else comma_list(args.modes, "--modes", every_mode)
    args.bench_batch_sizes = batch_sizes
    sides = frameworks(args.frameworks, SIDES)  # compare.py has checked them
    args.bench_modes = {side: [m for m in MODES[side] if m in chosen or f"{side}:{m}" in chosen] for side in sides}
    args.bench_precisions = bench_precisions(args, preset)
    if getattr(args, "profile", False):
        if task_of(spec).category_flops is None:
            raise UserError(f"--profile sorts a U-Net's step into its layers' categories: use --task unet, "
                            f"not {spec.name!r}")
        if set(sides) - set(bench_profile.SIDES):
            args.bench_not_run.append("--profile for the Keras arms: not implemented (tf and torch are profiled)")


def bench_precisions(args, preset: presets.Preset) -> list[str]:
    """--precisions, or the device's default (a GPU: fp32, tf32, bf16, fp16); a preset that needs bf16 units drops
    bf16 on a CPU without them (and says so); --tf32 makes the fp32 rows tf32 rows."""
    device = "cuda" if args.device == "cuda" else "cpu"
    chosen = comma_list(args.precisions or DEFAULT_PRECISIONS[device], "--precisions", BENCH_PRECISIONS)
    for precision in GPU_PRECISIONS:
        if precision in chosen and args.device != "cuda":
            raise UserError(f"--precisions {precision} needs --device cuda: "
                            + ("CPUs have no fast float16 arithmetic (use bf16)" if precision == "fp16"
                               else "TF32 is a GPU's tensor-core format"))
    if getattr(args, "tf32", False):
        if args.device == "cpu":
            raise UserError("--tf32 applies to a GPU (--device cuda or auto): CPUs have no TF32")
        chosen = list(dict.fromkeys("tf32" if precision == "fp32" else precision for precision in chosen))
    flags = cpu_info().get("flags", "").split()
    if args.precisions is None and preset.bf16_needs_units and device == "cpu" and not set(BF16_UNITS) & set(flags):
        chosen = [precision for precision in chosen if precision != "bf16"]
        args.bench_not_run.append("bf16: this CPU has no bf16 arithmetic (no avx512_bf16 or amx_bf16), a step would "
                                  "take minutes; --precisions fp32,bf16 runs it anyway")
    if device == "cpu":
        args.bench_not_run.append("tf32 and fp16 rows, peak device memory, and any published GPU reference line: they "
                                  "need --device cuda")
    return chosen


def check_sides(spec: TaskSpec, sides: list[str], options) -> benchmark_golden.Golden | None:
    """Both sides, or one side checked against a golden file; --write-golden needs both. Returns the golden file,
    read and matched to the spec (one-line errors)."""
    golden_path, write_path = getattr(options, "golden", None), getattr(options, "write_golden", None)
    if golden_path is not None and write_path is not None:
        raise UserError("--golden checks against a file and --write-golden writes one: choose one")
    arms.check_arm_sides(sides, golden_path is not None, write_path is not None)
    if write_path is not None and len(sides) != 2:
        raise UserError("--write-golden records both sides: leave --frameworks at tf,torch")
    if len(sides) < 2 and golden_path is None:
        raise UserError("--benchmark with one framework needs --golden FILE (written by --write-golden on a machine "
                        "with both): otherwise nothing shows that it does the same work as the other side")
    if golden_path is None:
        return None
    golden = benchmark_golden.read_golden(golden_path)
    benchmark_golden.check_spec(golden, spec)
    return golden


class RowRunner:
    """Runs the planned rows one by one, each in its own worker process, keeping their results by row name."""

    def __init__(self, spec: TaskSpec, data: dict, folder: Path, settings: dict, threads: int, total: int,
                 repeat: int):
        self.spec, self.data, self.folder, self.settings = spec, data, folder, settings
        self.threads, self.total, self.repeat = threads, total, repeat
        self.results: dict[str, dict] = {}

    def __call__(self, index: int, row: benchmark.Row) -> dict:
        spec = stock.row_spec(self.spec, row)  # the stock rows' spec swaps the BatchNorm
        job = {"task": spec.name, "spec": spec.to_dict(), "threads": self.threads, "data": self.data,
               "row": row.to_dict(), "settings": self.settings, "out": str(self.folder.resolve())}
        job_path = write_job(self.folder / f"{row.name}.job.json", job)
        print(f"[{index}/{self.total}] {SIDE_NAMES[row.side]} {row.kind} {row.mode} {row.precision} "
              f"batch {row.batch_size}" + (f" (run {row.run})" if self.repeat > 1 else ""), end=" ... ", flush=True)
        started, before = time.perf_counter(), cpu_snapshot()
        try:
            launch_worker(WorkerOrder("bench", row.side, str(job_path)), nproc=row.nproc,
                          threads=max(1, self.threads // row.nproc))
            result = json.loads((self.folder / f"{row.name}.json").read_text())
        except SideFailed as failure:  # an arm's engine died (a crash, not an error it raised): its row says so
            if ARMS[row.side].native:
                raise
            result = arms.failure_result(row.to_dict(), row.name, str(failure))
        self.results[row.name] = result
        result["other_cpu_share"] = other_share(before, cpu_snapshot())
        stats = result.get("stats")
        print(f"{time.perf_counter() - started:.0f} s" + (f", median step {stats['median_s']:.4f} s" if stats else "")
              + (f", could not run: {result['failure']}" if result.get("failure") else ""), flush=True)
        return result

    def of_kind(self, kind: str) -> list[dict]:
        """The rows of a kind that ran (a row an engine could not run has a "failure" line instead)."""
        return [result for result in self.results.values()
                if result["row"]["kind"] == kind and not result.get("failure")]


def run_benchmark(spec: TaskSpec, sides: list[str], options) -> dict:
    """options carries the command line: out, overwrite, data_dir, download, threads, device, warmup, steps,
    repeat, nproc, all_combinations and the lists bench_batch_sizes, bench_modes, bench_precisions."""
    if getattr(options, "inference", False):
        return inference.run_inference(spec, sides, options)
    golden = check_sides(spec, sides, options)
    write_path = getattr(options, "write_golden", None)
    task = task_of(spec)
    data = None if write_path else task.prepare_data(spec, options.data_dir, options.download)
    with output_folder(options.out, spec.name, options.overwrite) as out:
        return benchmark_into(out, spec, sides, options, golden, data)


def benchmark_into(out: Path, spec: TaskSpec, sides: list[str], options, golden, data: dict | None) -> dict:
    """run_benchmark in the output folder it owns."""
    write_path, task = getattr(options, "write_golden", None), task_of(spec)
    rows = benchmark.plan_rows(sides, options.bench_modes, options.bench_precisions, options.bench_batch_sizes,
                               options.repeat, options.all_combinations, options.bench_pipeline, options.nproc,
                               bench_profile.SIDES if getattr(options, "profile", False) else ())
    rows = stock.plan(rows, spec, options.bench_modes, options.bench_precisions)
    if write_path:  # the golden file needs the parity rows only
        rows = [row for row in rows if row.kind == "parity"]
    folder = out / "rows"
    folder.mkdir(exist_ok=True)
    env = benchmark_environment(options.threads)
    with_arms = bool(arms.arms_of(sides))
    if with_arms:
        env["jax"] = package_version("jax")  # Keras on JAX's engine; the others' versions are there already
    preset = presets.PRESETS[options.bench_preset]
    config = {**spec.to_dict(), "benchmark": True, "frameworks": sides, "preset": preset.name,
              "warmup": options.warmup, "steps": options.steps,
              "repeat": options.repeat, "batch_sizes": options.bench_batch_sizes, "modes": options.bench_modes,
              "precisions": options.bench_precisions, "all_combinations": options.all_combinations,
              "threads": options.threads, "device": options.device, "tf32": bool(getattr(options, "tf32", False)),
              "pipeline": options.bench_pipeline, "golden": None if golden is None else str(golden.path),
              "write_golden": None if write_path is None else str(write_path), "not_run": options.bench_not_run,
              "profile": bool(getattr(options, "profile", False))}
    described = presets.describe(preset, spec, with_arms)
    print(benchmark_report.header({"task": spec.name, "environment": env, "config": config, "preset": described}),
          flush=True)
    settings = {"warmup": options.warmup, "steps": options.steps, "batch_sizes": options.bench_batch_sizes,
                "device": options.device, "tf32": config["tf32"], "golden": config["golden"],
                "profile_dir": str((out / "profiles").resolve()), "profile_steps": bench_profile.PROFILE_STEPS}
    run = RowRunner(spec, data, folder, settings, options.threads, len(rows), options.repeat)
    started = time.perf_counter()

    parity_rows = {row.side: run(index, row) for index, row in enumerate(rows, start=1) if row.kind == "parity"}
    dropped = {side: result["failure"] for side, result in parity_rows.items() if result.get("failure")}
    parity_rows = {side: result for side, result in parity_rows.items() if side not in dropped}
    probes = {side: np.load(folder / f"{result['row_name']}.probe.npy") for side, result in parity_rows.items()}
    gate = parity_gate(task, spec, golden, parity_rows, probes, dropped if with_arms else None)
    if not gate["passed"]:
        write_json(out / "results.json", {"task": spec.name, "mode": "benchmark", "config": config,
                                          "environment": env, "parity": gate, "rows": []})
        raise benchmark_report.ParityFailed("; ".join(gate["problems"]))
    for line in parity_lines(gate):
        print(line, flush=True)
    stock_gate = stock.run_gate(run, rows, parity_rows, probes, task.tolerances)  # once the twins' gate has passed
    if stock_gate is not None:
        print("\n".join(stock.gate_lines(stock_gate)), flush=True)
    if write_path:
        return write_golden_file(write_path, task, spec, options, parity_rows, probes, gate, out, config, env)
    before = cpu_snapshot()
    numpy_peak = benchmark_peak.numpy_peak(options.threads)  # in this process, now idle: nothing runs beside it
    peak_load = {"row_name": PEAK_ROW, "other_cpu_share": other_share(before, cpu_snapshot())}
    print(f"numpy matrix multiply: fp32 {numpy_peak['fp32']['gflop_per_s']:.1f} GFLOP/s "
          f"(n={numpy_peak['fp32']['n']})", flush=True)
    stock_timed = bool(stock_gate and stock_gate["passed"])
    timed = [row for row in rows if row.kind not in ("parity", "stock-parity") and row.side not in dropped
             and (row.kind != "stock" or stock_timed)]  # an arm without parity: none; the stock row, behind its gate
    run.total = len(parity_rows) + len(dropped) + (stock_gate is not None) + len(timed)
    for index, row in enumerate(timed, start=run.total - len(timed) + 1):
        run(index, row)

    step_results = run.of_kind("step")
    device = next(iter(parity_rows.values()))["execution"]["device"]  # --device auto resolved by the sides
    own_peaks = {r["row"]["side"]: r["matmul_peak"] for r in step_results if "matmul_peak" in r}
    own_peaks["numpy"] = numpy_peak
    machine = benchmark_peak.machine_peak(own_peaks, device)
    flops = summary.flop_counts(task, spec, parity_rows, options.bench_batch_sizes)
    summary_rows = summary.summarize_rows(step_results, flops, machine, own_peaks)
    checks = summary.precision_checks(summary_rows)
    env["build"] = {side: r["build"] for side, r in parity_rows.items()}
    results = {"task": spec.name, "mode": "benchmark", "data": data["description"], "config": config,
               "preset": described, "environment": env, "parity": gate, "flops": flops, "matmul_peak": own_peaks,
               "machine_peak": machine, "rows": summary_rows, "precision_checks": checks,
               "comparisons": comparisons(summary_rows),
               "targets": summary.targets(summary_rows, checks),
               "fairness": manifest(list(run.results.values()), options.threads, config["tf32"], device),
               "reference_line": presets.reference_line(preset, summary_rows, device),
               "scaling": summary.scaling_summary(run.of_kind("data-parallel")),
               "pipeline": summary.pipeline_summary(run.of_kind("pipeline"), summary_rows),
               "machine_load": machine_load([peak_load, *run.results.values()]),
               "wall_s": time.perf_counter() - started}
    if config["profile"]:
        category_flops = {str(batch): task.category_flops(spec, batch) for batch in options.bench_batch_sizes}
        results["profile"] = bench_profile.summarize(run.of_kind("profile"), summary_rows, category_flops, machine)
    if with_arms:
        results.update(arm_ratios=arms.arm_ratios(summary_rows), failed_rows=arms.failed_rows(run.results.values()))
    if stock_gate is not None:
        results["stock"] = stock.summarize(run.of_kind("stock"), summary_rows, stock_gate, flops, machine, own_peaks)
    benchmark_report.write_reports(out, results)
    print()
    print(benchmark_report.table(results))
    if results.get("profile"):
        print("\n" + "\n".join(bench_profile.console_lines(results["profile"])))
    if busy_line(results["machine_load"]):
        print(busy_line(results["machine_load"]))
    print(f"\nwrote {out}/results.json, {out}/report.md and plots ({results['wall_s']:.0f} s)")
    return results


def parity_gate(task, spec: TaskSpec, golden, parity_rows: dict, probes: dict, dropped: dict | None = None) -> dict:
    """Between the two sides when both ran; against the golden file when there is one (and then both); with the
    Keras arms (dropped: those whose parity row failed), each arm against the tf side too (arms.gate)."""
    if dropped is not None:
        return arms.gate(parity_rows, probes, task.tolerance, dropped)
    both = parity.benchmark_parity(parity_rows, probes, task.tolerance) if len(parity_rows) == 2 else None
    if golden is None:
        return both
    return benchmark_golden.golden_gate(golden, parity_rows, probes, task.tolerance, tolerance(spec.name, "loss"),
                                        both)


def parity_lines(gate: dict) -> list[str]:
    if "arms" in gate:
        return arms.gate_lines(gate)
    lines = []
    between = benchmark_golden.between_sides(gate)
    if between:
        lines.append(f"parity passed: {between['parameters']['tf']:,} parameters on both sides, bit-identical weights, "
                     f"max |tf - torch| {between['max_abs_diff']:.2g} <= {between['tolerance']:g}")
    if gate.get("against"):
        lines.append(f"parity passed against the golden file {gate['file']}:")
        lines += [f"  {line}" for line in benchmark_golden.chain(gate)]
    return lines


def write_golden_file(path: Path, task, spec: TaskSpec, options, parity_rows: dict, probes: dict, gate: dict,
                      out: Path, config: dict, env: dict) -> dict:
    """--write-golden: the benchmark batch, both outputs and first-step losses; no timing."""
    images, targets = task.benchmark_batch(spec, options.bench_batch_sizes[0], spec.seed)
    tolerances = {"parity": task.tolerance, "loss": tolerance(spec.name, "loss")}
    benchmark_golden.write_golden(Path(path), spec, images, targets, probes, parity_rows, gate, tolerances, task.probe)
    results = {"task": spec.name, "mode": "benchmark", "config": config, "environment": env, "parity": gate,
               "golden_written": str(path), "rows": []}
    write_json(out / "results.json", results)
    print(f"wrote the golden file {path} and {benchmark_golden.sidecar(Path(path))} (no timing with --write-golden; "
          f"check one side against it with --frameworks torch --golden {path})")
    return results


def add_flags(parser: argparse.ArgumentParser) -> None:
    """compare.py's flags of a benchmark (--benchmark)."""
    bench = parser.add_argument_group("benchmark (--benchmark)").add_argument
    bench("--benchmark", action="store_true",
          help="time the train step of mlp, cnn or unet on both sides instead of training")
    bench("--preset", choices=list(presets.PRESETS),
          help="benchmark shapes and steps: " + "; ".join(f"{p.name}: {p.source}" for p in presets.PRESETS.values())
               + " (explicit flags override it)")
    bench("--warmup", type=int, help=f"untimed steps after the first (default {benchmark.WARMUP_STEPS}, or the "
                                     "preset's)")
    bench("--steps", type=int, help=f"timed steps per row (default {benchmark.TIMED_STEPS}, or the preset's)")
    bench("--tf32", action="store_true", help="TF32 on for both sides in the timed fp32 rows (GPU; default off)")
    bench("--golden", type=Path, metavar="FILE",
          help="check the side(s) against this golden file before timing (--frameworks torch needs one)")
    bench("--write-golden", type=Path, metavar="FILE",
          help="write the benchmark batch, both sides' outputs and first-step losses to FILE (.safetensors + "
               ".json) and stop, without timing")
    bench("--repeat", type=int, default=1, help="processes per row; the median one is reported")
    bench("--batch-sizes", help="comma-separated batch sizes to sweep (default: the task's batch size)")
    bench("--modes",
          help="comma-separated modes, each for the sides that have it, or side:mode for one (default all, or the "
               "preset's): " + "; ".join(f"{side}: {', '.join(m)}" for side, m in MODES.items()))
    bench("--precisions", help=f"comma-separated: {', '.join(BENCH_PRECISIONS)} (default fp32,bf16; on cuda "
                               "fp32,tf32,bf16,fp16; with --inference fp32 or fp32,bf16, default fp32)")
    bench("--profile", action="store_true",
          help="also run each step row once under the framework's own profiler (in its own process, after the timed "
               "rows): where the step goes by category, a trace per row, and the stacked bars (docs/profile.md)")
    bench("--inference", action="store_true",
          help="time the forward pass instead of the train step: each framework's modes, its exported file "
               "(SavedModel, .pt2), both ONNX files in ONNX Runtime and OpenVINO, each gated first "
               "(docs/inference.md)")
    bench("--all-combinations", action="store_true",
          help="every mode in every precision (default: bf16/fp16 only in each side's training mode)")
