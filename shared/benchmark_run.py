"""The benchmark, orchestrated from the parent: the parity gate first (no timing unless both sides do the same
work), then each (framework, mode, precision, batch size) row in a fresh process, then the summary and reports."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from shared import benchmark, benchmark_report, parity
from shared.atomic import write_json
from shared.environment import benchmark_environment
from shared.errors import UserError
from shared.execution import MODES, PRECISIONS
from shared.registry import task_of
from shared.report import SIDE_NAMES
from shared.run import output_folder
from shared.surface import SIDES
from shared.tasks import TaskSpec
from shared.workers import launch_worker


def comma_list(text: str, flag: str, choices=None, convert=str) -> list:
    try:
        values = [convert(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected a comma-separated list") from None
    if not values or any(choices is not None and value not in choices for value in values):
        raise UserError(f"{flag} {text!r}: " + (f"choose from {', '.join(map(str, choices))}" if choices
                                                else "expected a comma-separated list"))
    return list(dict.fromkeys(values))


def check_benchmark_args(args, spec: TaskSpec, trains: bool) -> None:
    """Turn the benchmark flags into lists (kept on args); one-line errors for anything off."""
    if not trains:
        raise UserError(f"--benchmark applies to mlp, cnn and unet, not {spec.name!r}")
    for flag, least in (("warmup", 0), ("steps", 1), ("repeat", 1)):
        if getattr(args, flag) < least:
            raise UserError(f"--{flag} must be {'0 or more' if least == 0 else 'positive'}, got {getattr(args, flag)}")
    batch_sizes = comma_list(args.batch_sizes, "--batch-sizes", convert=int) if args.batch_sizes else [spec.batch_size]
    if min(batch_sizes) <= 0:
        raise UserError(f"--batch-sizes must be positive, got {args.batch_sizes}")
    # "eager" picks eager on both sides; "tf:function" only on one.
    every_mode = sorted({mode for modes in MODES.values() for mode in modes})
    every_mode += [f"{side}:{mode}" for side, modes in MODES.items() for mode in modes]
    chosen = every_mode if args.modes == "all" else comma_list(args.modes, "--modes", every_mode)
    args.bench_batch_sizes = batch_sizes
    args.bench_modes = {side: [m for m in MODES[side] if m in chosen or f"{side}:{m}" in chosen] for side in SIDES}
    args.bench_precisions = comma_list(args.precisions, "--precisions", PRECISIONS)
    if "fp16" in args.bench_precisions and args.device != "cuda":
        raise UserError("--precisions fp16 needs --device cuda: CPUs have no fast float16 arithmetic (use bf16)")


class RowRunner:
    """Runs the planned rows one by one, each in its own worker process, keeping their results by row name."""

    def __init__(self, spec: TaskSpec, data: dict, folder: Path, settings: dict, threads: int, total: int,
                 repeat: int):
        self.spec, self.data, self.folder, self.settings = spec, data, folder, settings
        self.threads, self.total, self.repeat = threads, total, repeat
        self.results: dict[str, dict] = {}

    def __call__(self, index: int, row: benchmark.Row) -> dict:
        job = {"task": self.spec.name, "spec": self.spec.to_dict(), "threads": self.threads, "data": self.data,
               "row": row.to_dict(), "settings": self.settings, "out": str(self.folder.resolve())}
        job_path = write_json(self.folder / f"{row.name}.job.json", job)
        print(f"[{index}/{self.total}] {SIDE_NAMES[row.side]} {row.kind} {row.mode} {row.precision} "
              f"batch {row.batch_size}" + (f" (run {row.run})" if self.repeat > 1 else ""), end=" ... ", flush=True)
        started = time.perf_counter()
        launch_worker(row.side, job_path, "--bench", nproc=row.nproc, threads=max(1, self.threads // row.nproc))
        result = self.results[row.name] = json.loads((self.folder / f"{row.name}.json").read_text())
        stats = result.get("stats")
        print(f"{time.perf_counter() - started:.0f} s" + (f", median step {stats['median_s']:.4f} s" if stats else ""),
              flush=True)
        return result

    def of_kind(self, kind: str) -> list[dict]:
        return [result for result in self.results.values() if result["row"]["kind"] == kind]


def run_benchmark(spec: TaskSpec, sides: list[str], options) -> dict:
    """options carries the command line: out, overwrite, data_dir, download, threads, device, warmup, steps,
    repeat, nproc, all_combinations and the lists bench_batch_sizes, bench_modes, bench_precisions."""
    if len(sides) != 2:
        raise UserError("--benchmark compares both sides: leave --frameworks at tf,torch")
    task = task_of(spec)
    out = output_folder(options.out, spec.name, options.overwrite)
    data = task.prepare_data(spec, options.data_dir, options.download)
    rows = benchmark.plan_rows(sides, options.bench_modes, options.bench_precisions, options.bench_batch_sizes,
                               options.repeat, options.all_combinations, nproc=options.nproc)
    folder = out / "rows"
    folder.mkdir(exist_ok=True)
    env = benchmark_environment(options.threads)
    config = {**spec.to_dict(), "benchmark": True, "warmup": options.warmup, "steps": options.steps,
              "repeat": options.repeat, "batch_sizes": options.bench_batch_sizes, "modes": options.bench_modes,
              "precisions": options.bench_precisions, "all_combinations": options.all_combinations,
              "threads": options.threads, "device": options.device}
    print(benchmark_report.header({"task": spec.name, "environment": env, "config": config}), flush=True)
    settings = {"warmup": options.warmup, "steps": options.steps, "batch_sizes": options.bench_batch_sizes,
                "device": options.device}
    run = RowRunner(spec, data, folder, settings, options.threads, len(rows), options.repeat)
    started = time.perf_counter()

    parity_rows = {row.side: run(index, row) for index, row in enumerate(rows, start=1) if row.kind == "parity"}
    probes = {side: np.load(folder / f"{result['row_name']}.probe.npy") for side, result in parity_rows.items()}
    gate = parity.benchmark_parity(parity_rows, probes, task.tolerance)
    if not gate["passed"]:
        write_json(out / "results.json", {"task": spec.name, "mode": "benchmark", "config": config,
                                          "environment": env, "parity": gate, "rows": []})
        raise benchmark_report.ParityFailed("; ".join(gate["problems"]))
    print(f"parity passed: {gate['parameters']['tf']:,} parameters on both sides, bit-identical weights, "
          f"max |tf - torch| {gate['max_abs_diff']:.2g} <= {gate['tolerance']:g}", flush=True)
    for index, row in enumerate(rows, start=1):
        if row.kind != "parity":
            run(index, row)

    step_results = run.of_kind("step")
    peaks = {r["row"]["side"]: r["matmul_peak"] for r in step_results if "matmul_peak" in r}
    flops = benchmark_report.flop_counts(task, spec, parity_rows, options.bench_batch_sizes)
    summary_rows = benchmark_report.summarize_rows(step_results, flops, peaks)
    checks = benchmark_report.precision_checks(summary_rows)
    env["build"] = {side: r["build"] for side, r in parity_rows.items()}
    results = {"task": spec.name, "mode": "benchmark", "data": data["description"], "config": config,
               "environment": env, "parity": gate, "flops": flops, "matmul_peak": peaks, "rows": summary_rows,
               "precision_checks": checks, "targets": benchmark_report.targets(summary_rows, checks),
               "scaling": benchmark_report.scaling_summary(run.of_kind("data-parallel")),
               "pipeline": benchmark_report.pipeline_summary(run.of_kind("pipeline"), summary_rows),
               "wall_s": time.perf_counter() - started}
    benchmark_report.write_reports(out, results)
    print()
    print(benchmark_report.table(results))
    print(f"\nwrote {out}/results.json, {out}/report.md and plots ({results['wall_s']:.0f} s)")
    return results
