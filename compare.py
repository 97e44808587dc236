#!/usr/bin/env python
"""twinnets: run one task on TensorFlow and PyTorch from the same weights and data, and compare them.

    python compare.py --task neuron
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
import types
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from shared import benchmark, benchmark_report, distributed, harness, metrics, report
from shared.errors import UserError
from shared.execution import DEVICES, MODES, PRECISIONS, default_execution
from shared.tasks import TASKS, make_spec

SIDES = ("tf", "torch")
SIDE_PACKAGES = {"tf": "tf_impl", "torch": "torch_impl"}
# Flags that set a field of the task's spec; a flag whose field the task lacks is refused.
SPEC_FLAGS = ("epochs", "batch_size", "lr", "seed", "sample_size", "validation_size", "image_size",
              "base_filters", "optimizer", "variant", "workers")


# The U-Net at the paper's width and a Carvana-like resolution; the original net takes the paper's 572 tile.
FULL_SIZE = {"image_size": 1024, "base_filters": 64}
FULL_SIZE_ORIGINAL_TILE = 572


class SideFailed(Exception):
    """A side's worker process crashed (its traceback is already on the console): exit status 1."""


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        """One line, exit status 2 (argparse would print the whole usage first)."""
        raise UserError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="compare.py", description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), help="which task to run on both sides")
    parser.add_argument("--frameworks", default="tf,torch", help="comma-separated sides to run: tf, torch")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-dir", type=Path, help="folder of the real dataset (default: the embedded one)")
    source.add_argument("--download", action="store_true", help="fetch the real dataset first")
    parser.add_argument("--epochs", type=int, help="training epochs (neuron: gradient steps)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--seed", type=int, help="seed of initial weights, data order and augmentation")
    parser.add_argument("--sample-size", type=int, help="training images kept (default: all)")
    parser.add_argument("--validation-size", type=float, help="share held out for validation")
    parser.add_argument("--image-size", type=int, help="input side in pixels")
    parser.add_argument("--base-filters", type=int, help="U-Net width of the first level")
    parser.add_argument("--optimizer", choices=["sgd", "adam"])
    parser.add_argument("--variant", choices=["padded", "original"], help="U-Net variant")
    parser.add_argument("--workers", type=int, help="data-loading workers per side")
    parser.add_argument("--full-size", action="store_true",
                        help=f"unet at full size: --image-size {FULL_SIZE['image_size']} ({FULL_SIZE_ORIGINAL_TILE} "
                             f"for --variant original) --base-filters {FULL_SIZE['base_filters']}; each can still "
                             "be set on its own")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads per side (default: all cores)")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<task>-<timestamp>)")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="where both sides run (auto: cuda if present)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="unet: data-parallel processes per side on this machine (torchrun + DDP; "
                             "MultiWorkerMirroredStrategy workers); the global batch is split across them")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="training precision of mlp, cnn, unet: bf16/fp16 mixed (float32 weights); fp16 with "
                             "loss scaling, on cuda only")
    bench = parser.add_argument_group("benchmark (--benchmark)")
    bench.add_argument("--benchmark", action="store_true",
                       help="time the train step of mlp, cnn or unet on both sides instead of training")
    bench.add_argument("--warmup", type=int, default=benchmark.WARMUP_STEPS, help="untimed steps after the first")
    bench.add_argument("--steps", type=int, default=benchmark.TIMED_STEPS, help="timed steps per row")
    bench.add_argument("--repeat", type=int, default=1, help="processes per row; the median one is reported")
    bench.add_argument("--batch-sizes", help="comma-separated batch sizes to sweep (default: the task's batch size)")
    bench.add_argument("--modes", default="all",
                       help="comma-separated modes, each for the sides that have it, or side:mode for one: "
                            + "; ".join(f"{side}: {', '.join(m)}" for side, m in MODES.items()))
    bench.add_argument("--precisions", default="fp32,bf16", help=f"comma-separated: {', '.join(PRECISIONS)}")
    bench.add_argument("--all-combinations", action="store_true",
                       help="every mode in every precision (default: bf16/fp16 only in each side's training mode)")
    parser.add_argument("--in-process", action="store_true", help="run both sides in this process (for debugging)")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out folder")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue a killed run from its last checkpoints, with its own settings")
    return parser


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, object, list[str]]:
    args = build_parser().parse_args(argv)
    if args.resume is not None:
        return args, None, []
    if args.task is None:
        raise UserError("the following arguments are required: --task (see --help)")
    sides = [s.strip() for s in args.frameworks.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        raise UserError(f"--frameworks {args.frameworks!r}: choose tf, torch or tf,torch")
    if args.threads is not None and args.threads <= 0:
        raise UserError(f"--threads must be positive, got {args.threads}")
    overrides = {flag: getattr(args, flag) for flag in SPEC_FLAGS if getattr(args, flag) is not None}
    if args.full_size:
        if args.task != "unet":
            raise UserError(f"--full-size does not apply to task {args.task!r}: it sizes the U-Net")
        full = {**FULL_SIZE, **({"image_size": FULL_SIZE_ORIGINAL_TILE} if args.variant == "original" else {})}
        overrides = {**full, **overrides}
    spec = make_spec(args.task, **overrides)
    if not spec.uses_data and (args.data_dir or args.download):
        raise UserError(f"--data-dir and --download do not apply to task {args.task!r}: it needs no dataset")
    if args.benchmark:
        check_benchmark_args(args, spec)
    if args.nproc < 1:
        raise UserError(f"--nproc must be positive, got {args.nproc}")
    if args.nproc > 1:
        if spec.name != "unet" or args.in_process:
            raise UserError("--nproc applies to --task unet, each side in its own processes (not --in-process)")
        if args.precision != "fp32":
            raise UserError("--nproc trains in fp32: leave out --precision")
        for batch_size in args.bench_batch_sizes[:1] if args.benchmark else [spec.batch_size]:
            distributed.check_divisible(batch_size, args.nproc)
    if args.precision != "fp32" and spec.name not in ("mlp", "cnn", "unet"):
        raise UserError(f"--precision does not apply to task {args.task!r}: it trains nothing")
    if args.precision == "fp16" and args.device != "cuda":
        raise UserError("--precision fp16 needs --device cuda: CPUs have no fast float16 arithmetic (use bf16)")
    if args.data_dir is not None and not args.data_dir.exists():
        raise UserError(f"{args.data_dir}: no such folder (--data-dir)")
    return args, spec, list(dict.fromkeys(sides))


def comma_list(text: str, flag: str, choices=None, convert=str) -> list:
    try:
        values = [convert(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected a comma-separated list") from None
    unknown = [v for v in values if choices is not None and v not in choices]
    if unknown or not values:
        raise UserError(f"{flag} {text!r}: choose from {', '.join(map(str, choices))}" if choices
                        else f"{flag} {text!r}: expected a comma-separated list")
    return list(dict.fromkeys(values))


def check_benchmark_args(args: argparse.Namespace, spec) -> None:
    """Turn the benchmark flags into lists (kept on args); one-line errors for anything off."""
    if spec.name not in ("mlp", "cnn", "unet"):
        raise UserError(f"--benchmark applies to mlp, cnn and unet, not {spec.name!r}")
    for flag in ("warmup", "steps", "repeat"):
        if getattr(args, flag) < (0 if flag == "warmup" else 1):
            raise UserError(f"--{flag} must be {'0 or more' if flag == 'warmup' else 'positive'}, got {getattr(args, flag)}")
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


def output_folder(args: argparse.Namespace) -> Path:
    out = args.out or Path("runs") / f"{args.task}-{datetime.now():%Y%m%d-%H%M%S}"
    if out.is_file():
        raise UserError(f"{out}: --out is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"{out}: the output folder is not empty; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def environment(threads: int, in_process: bool) -> dict:
    """Versions without importing either framework (the parent stays light)."""
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "tensorflow": version("tensorflow"), "keras": version("keras"),
            "torch": version("torch"), "numpy": version("numpy"), "cpu": cpu, "cores": os.cpu_count(),
            "threads": threads, "platform": platform.platform(),
            "process": "one shared process" if in_process else "its own subprocess"}


# ---- one side --------------------------------------------------------------------------------------------------

def side_modules(side: str, task: str) -> SimpleNamespace:
    package = SIDE_PACKAGES[side]
    modules = {"task": task, "runtime": "runtime", "weights": "weights", "data": "data", "train": "train"}
    if task == "unet":
        modules.update(classifier="classifier", callbacks="callbacks")
    return SimpleNamespace(name=side, **{key: importlib.import_module(f"{package}.{module}")
                                         for key, module in modules.items()})


def run_side(side: str, job: dict) -> dict:
    """Run the job on one side in this process; writes <out>/<side>/result.json and probe.npy."""
    spec = job_spec(job)
    out = Path(job["out"]) / side
    out.mkdir(parents=True, exist_ok=True)
    modules = side_modules(side, job["task"])
    modules.runtime.configure(job["threads"], spec.seed)
    if distributed.world_size() > 1:  # started by torchrun, or as one of several TF_CONFIG workers
        return run_side_distributed(side, job, spec, modules, out)
    requested = default_execution(side, **job.get("execution", {}))
    # Devices first, in float32: the parity probe runs before the model to train is built in its precision.
    execution = modules.runtime.configure_execution(requested.replace(precision="fp32")).replace(
        precision=requested.precision)
    if side == "torch" and execution.device == "cuda" and spec.name in ("cnn", "unet"):
        execution = execution.replace(mode="channels_last")  # cuDNN's fast convolutions take NHWC on a GPU
    result, probe = harness.run_task(modules, spec, out, job.get("data"), execution)
    result["execution"] = execution.to_dict()
    result["threads"] = modules.runtime.threads()
    result["versions"] = modules.runtime.versions()
    np.save(out / "probe.npy", probe)
    report.write_json(out / "result.json", result)
    return result


def run_side_distributed(side: str, job: dict, spec, modules: SimpleNamespace, out: Path) -> dict | None:
    """One rank of a data-parallel side; the chief alone writes result.json and probe.npy."""
    modules.distributed = importlib.import_module(f"{SIDE_PACKAGES[side]}.distributed")
    device = job.get("execution", {}).get("device", "cpu")
    context = modules.distributed.setup(device)  # before any other TensorFlow op: the strategy reconfigures it
    try:
        found = harness.run_unet_distributed(modules, spec, out, job["data"], context)
    finally:
        modules.distributed.teardown(context)
    if found is None:
        return None
    result, probe = found
    result.update(threads=modules.runtime.threads(), versions=modules.runtime.versions(),
                  execution={"mode": "data-parallel", "precision": "fp32", "device": device})
    np.save(out / "probe.npy", probe)
    report.write_json(out / "result.json", result)
    return result


def job_spec(job: dict):
    return make_spec(job["task"], **{k: tuple(v) if isinstance(v, list) else v for k, v in job["spec"].items()})


def agree_side(side: str, job: dict) -> None:
    """Predict the agreement images with the reference side's trained weights: <out>/<side>/agreement.npy."""
    spec = job_spec(job)
    modules = side_modules(side, job["task"])
    modules.runtime.configure(job["threads"], spec.seed)
    masks = harness.predict_with_weights(modules, spec, job["data"], Path(job["reference_weights"]))
    np.save(Path(job["out"]) / side / "agreement.npy", masks)


def keep_tensorflow_out() -> None:
    """TensorBoard's writer imports TensorFlow when it finds it; its own marker module says "no TensorFlow here".
    Set only in a PyTorch worker process: fair timing, clean memory, and the import boundary kept at run time
    (in a shared process it would hide TensorFlow from tf.summary too)."""
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


def worker_main(mode: str, side: str, job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    if side == "torch":
        keep_tensorflow_out()
    try:
        {"--agree": agree_side, "--bench": bench_side, "--worker": run_side}[mode](side, job)
    except UserError as error:
        print(f"compare.py: error: {error}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        return 130
    except Exception:  # noqa: BLE001 - reported here, so no live exception outlasts the worker (tf.data would hang at exit)
        traceback.print_exc()
        return 1
    return 0


def launch(side: str, job_path: Path, mode: str = "--worker", nproc: int = 1, threads: int = 1) -> None:
    """A fresh Python process per side: fair timing, no shared threads, clean memory figures. With nproc > 1,
    the side's own launcher: torchrun for PyTorch, N workers with their TF_CONFIG for TensorFlow."""
    script = [str(Path(__file__).resolve()), mode, side, str(job_path)]
    if nproc > 1:
        launcher = distributed.launch_torch if side == "torch" else distributed.launch_tf
        launched = launcher(nproc, script, threads=threads, stream=True)
        status = next((code for code in launched.returncodes if code != 0), 0)
        if status not in (0, 2, 3):
            print(launched.describe(), file=sys.stderr)
        completed = SimpleNamespace(returncode=status)
    else:
        completed = subprocess.run([sys.executable, *script], cwd=Path(__file__).resolve().parent)
    if completed.returncode in (2, 3):
        raise SystemExit(completed.returncode)  # the worker already printed its one-line error
    if completed.returncode != 0:
        raise SideFailed(f"the {report.SIDE_NAMES[side]} side failed with exit status {completed.returncode} "
                         "(its traceback is above)")


# ---- the whole run -----------------------------------------------------------------------------------------

def compare(args: argparse.Namespace, spec, sides: list[str]) -> dict:
    out = output_folder(args)
    data = harness.prepare_data(spec, args.data_dir, args.download) if spec.uses_data else None
    threads = max(1, args.threads // args.nproc)  # the cores shared by the side's processes
    job = {"task": spec.name, "spec": spec.to_dict(), "threads": threads, "out": str(out.resolve()),
           "data": data, "sides": sides, "execution": {"precision": args.precision, "device": args.device},
           "nproc": args.nproc}
    for side in sides:  # --overwrite: an earlier run's result or checkpoints must not pass for this run's
        shutil.rmtree(out / side, ignore_errors=True)
    return run_job(args, out, job)


def resume(args: argparse.Namespace) -> dict:
    """Continue a run whose job.json is still there (it goes when the run completes), from each side's last
    checkpoint; a side that had finished is not run again."""
    out = args.resume
    if not (out / "job.json").is_file():
        finished = (out / "results.json").is_file()
        raise UserError(f"{out}: nothing to resume ({'the run had finished' if finished else 'not a twinnets run folder'})")
    job = json.loads((out / "job.json").read_text())
    print(f"resuming {job['task']} in {out}", flush=True)
    return run_job(args, out, job)


def run_job(args: argparse.Namespace, out: Path, job: dict) -> dict:
    """Each side that has no result yet, then the comparison and the reports; job.json goes last."""
    spec, sides = job_spec(job), job["sides"]
    job_path = report.write_json(out / "job.json", job)
    started = time.perf_counter()
    if args.in_process:
        # torch_impl first: see torch_impl/__init__.py on loading both frameworks in one process.
        for side in sorted(sides, key=lambda s: s != "torch"):
            side_modules(side, spec.name)
    try:
        for side in sides:
            if (out / side / "result.json").is_file():
                print(f"== {report.SIDE_NAMES[side]}: finished before ==", flush=True)
                continue
            print(f"== {report.SIDE_NAMES[side]} ==", flush=True)
            if args.in_process:
                run_side(side, job)
            else:
                launch(side, job_path, nproc=job.get("nproc", 1), threads=job["threads"])
    except KeyboardInterrupt:
        write_partial_report(out, job)
        raise
    frameworks = {side: json.loads((out / side / "result.json").read_text()) for side in sides}
    agreement = None
    if spec.name == "unet" and len(sides) == 2:
        agreement = mask_agreement(args, job, job_path, frameworks, sides)
    results = {
        "task": spec.name,
        "data": (job["data"] or {}).get("description", {"source": "none"}),
        "config": {**spec.to_dict(), "frameworks": sides, "threads": job["threads"],
                   "nproc": job.get("nproc", 1), **job.get("execution", {"precision": "fp32", "device": "cpu"})},
        "environment": environment(job["threads"], args.in_process),
        "parity": parity(spec.name, out, sides),
        "frameworks": frameworks,
        "wall_s": time.perf_counter() - started,
    }
    if agreement is not None:
        results["agreement"] = agreement
    report.write_reports(out, results)
    os.unlink(job_path)
    print()
    print(report.table(results))
    print(f"\nwrote {out}/results.json, {out}/report.md and plots")
    return results


# ---- the benchmark -----------------------------------------------------------------------------------------

ENVIRONMENT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "KMP_AFFINITY", "KMP_BLOCKTIME", "TF_ENABLE_ONEDNN_OPTS",
                         "TF_XLA_FLAGS", "XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES",
                         "TORCHINDUCTOR_CACHE_DIR", "ONEDNN_VERBOSE", "DNNL_MAX_CPU_ISA")


def cpu_flags() -> str:
    """The vector and matrix extensions that decide the CPU kernels (AVX2, AVX-512, AMX, bf16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                                        "amx_tile", "amx_int8", "avx_vnni")]
    return " ".join(wanted) + ("" if any(f.startswith("amx") for f in flags) else " (no AMX)")


def run_benchmark(args: argparse.Namespace, spec, sides: list[str]) -> dict:
    """Parity gate, then each (framework, mode, precision, batch size) in a fresh process, then the loaders."""
    if len(sides) != 2:
        raise UserError("--benchmark compares both sides: leave --frameworks at tf,torch")
    out = output_folder(args)
    data = harness.prepare_data(spec, args.data_dir, args.download)
    settings = {"warmup": args.warmup, "steps": args.steps, "batch_sizes": args.bench_batch_sizes,
                "device": args.device}
    rows = benchmark.plan_rows(sides, args.bench_modes, args.bench_precisions, args.bench_batch_sizes, args.repeat,
                               args.all_combinations, nproc=args.nproc)
    folder = out / "rows"
    folder.mkdir(exist_ok=True)
    env = environment(args.threads, False)
    env.update(cpu_flags=cpu_flags(),
               variables={name: os.environ[name] for name in ENVIRONMENT_VARIABLES if name in os.environ})
    config = {**spec.to_dict(), "benchmark": True, "warmup": args.warmup, "steps": args.steps, "repeat": args.repeat,
              "batch_sizes": args.bench_batch_sizes, "modes": args.bench_modes, "precisions": args.bench_precisions,
              "all_combinations": args.all_combinations, "threads": args.threads, "device": args.device}
    print(benchmark_report.header({"task": spec.name, "environment": env, "config": config}), flush=True)
    results_of: dict[str, dict] = {}
    started = time.perf_counter()

    def run(index: int, row: benchmark.Row) -> dict:
        job = {"task": spec.name, "spec": spec.to_dict(), "threads": args.threads, "data": data,
               "row": row.to_dict(), "settings": settings, "out": str(folder.resolve())}
        job_path = report.write_json(folder / f"{row.name}.job.json", job)
        print(f"[{index}/{len(rows)}] {report.SIDE_NAMES[row.side]} {row.kind} {row.mode} {row.precision} "
              f"batch {row.batch_size}" + (f" (run {row.run})" if args.repeat > 1 else ""), end=" ... ", flush=True)
        row_started = time.perf_counter()
        launch(row.side, job_path, "--bench", nproc=row.nproc, threads=max(1, args.threads // row.nproc))
        result = results_of[row.name] = json.loads((folder / f"{row.name}.json").read_text())
        stats = result.get("stats")
        print(f"{time.perf_counter() - row_started:.0f} s" + (f", median step {stats['median_s']:.4f} s" if stats else ""),
              flush=True)
        return result

    parity_rows = {row.side: run(index, row) for index, row in enumerate(rows, start=1) if row.kind == "parity"}
    probes = {side: np.load(folder / f"{result['row_name']}.probe.npy") for side, result in parity_rows.items()}
    gate = benchmark_report.check_parity(spec.name, parity_rows, probes, harness.PARITY_TOLERANCE[spec.name])
    if not gate["passed"]:
        report.write_json(out / "results.json", {"task": spec.name, "mode": "benchmark", "config": config,
                                                 "environment": env, "parity": gate, "rows": []})
        raise benchmark_report.ParityFailed("; ".join(gate["problems"]))
    print(f"parity passed: {gate['parameters']['tf']:,} parameters on both sides, bit-identical weights, "
          f"max |tf - torch| {gate['max_abs_diff']:.2g} <= {gate['tolerance']:g}", flush=True)
    for index, row in enumerate(rows, start=1):
        if row.kind != "parity":
            run(index, row)
    step_results = [r for r in results_of.values() if r["row"]["kind"] == "step"]
    peaks = {r["row"]["side"]: r["matmul_peak"] for r in step_results if "matmul_peak" in r}
    flops = benchmark_report.flop_counts(spec, parity_rows, args.bench_batch_sizes)
    summary_rows = benchmark_report.summarize_rows(step_results, flops, peaks)
    checks = benchmark_report.precision_checks(summary_rows)
    env["build"] = {side: r["build"] for side, r in parity_rows.items()}
    results = {"task": spec.name, "mode": "benchmark", "data": data["description"], "config": config,
               "environment": env, "parity": gate, "flops": flops, "matmul_peak": peaks, "rows": summary_rows,
               "precision_checks": checks, "targets": benchmark_report.targets(summary_rows, checks),
               "scaling": benchmark_report.scaling_summary(
                   [r for r in results_of.values() if r["row"]["kind"] == "data-parallel"]),
               "pipeline": benchmark_report.pipeline_summary(
                   [r for r in results_of.values() if r["row"]["kind"] == "pipeline"], summary_rows),
               "wall_s": time.perf_counter() - started}
    benchmark_report.write_reports(out, results)
    print()
    print(benchmark_report.table(results))
    print(f"\nwrote {out}/results.json, {out}/report.md and plots ({results['wall_s']:.0f} s)")
    return results


def bench_side(side: str, job: dict) -> None:
    """One benchmark row in this (fresh) process: <out>/<row>.json, and <row>.probe.npy for a parity row."""
    spec = job_spec(job)
    modules = side_modules(side, job["task"])
    modules.benchmark = importlib.import_module(f"{SIDE_PACKAGES[side]}.benchmark")
    row = benchmark.Row(**job["row"])
    settings = job["settings"]
    modules.runtime.configure(max(1, job["threads"] // row.nproc), spec.seed)
    if row.kind == "data-parallel":
        modules.distributed = importlib.import_module(f"{SIDE_PACKAGES[side]}.distributed")
        settings = {**settings, "context": modules.distributed.setup(settings["device"])}  # before any other op
    result, probe = benchmark.run_row(modules, spec, row, settings, job["data"])
    if row.kind == "data-parallel":
        modules.distributed.teardown(settings["context"])
        if not distributed.is_chief(settings["context"].rank):
            return  # rank 0 writes the row
    result["row_name"] = row.name
    if probe is not None:
        np.save(Path(job["out"]) / f"{row.name}.probe.npy", probe)
    report.write_json(Path(job["out"]) / f"{row.name}.json", result)


def write_partial_report(out: Path, job: dict) -> None:
    """After Ctrl-C: what each side finished (its result, or the epochs its last checkpoint holds), and how to
    continue. job.json stays, so --resume can pick the run up."""
    frameworks = {}
    for side in job["sides"]:
        if (out / side / "result.json").is_file():
            frameworks[side] = {"status": "finished", **json.loads((out / side / "result.json").read_text())}
            continue
        latest = out / side / "checkpoint" / "latest.json"
        saved = json.loads(latest.read_text()) if latest.is_file() else None
        log = json.loads((out / side / "checkpoint" / saved["folder"] / "log.json").read_text()) if saved else {}
        frameworks[side] = {"status": f"interrupted after epoch {saved['epoch'] if saved else 0}",
                            "history": log.get("history", [])}
    hint = f"python compare.py --resume {out}"
    report.write_json(out / "results.json", {"task": job["task"], "status": "interrupted", "resume": hint,
                                             "config": job["spec"], "frameworks": frameworks})
    lines = [f"# twinnets: {job['task']} (interrupted)", "", f"Continue with `{hint}`.", ""]
    lines += [f"- {report.SIDE_NAMES[side]}: {result['status']}" for side, result in frameworks.items()]
    report.write_atomic(out / "report.md", "\n".join(lines) + "\n")
    print(f"\ninterrupted: wrote {out}/results.json and report.md; continue with {hint}", file=sys.stderr)


def mask_agreement(args, job: dict, job_path: Path, frameworks: dict, sides: list[str]) -> dict:
    """Share of validation pixels on which the two sides' masks agree: once with the same weights (the
    TensorFlow side's trained ones, loaded into both), once for each side's own trained model."""
    out = Path(job["out"])
    job = {**job, "reference_weights": frameworks["tf"]["artifacts"]["checkpoint"]}
    report.write_json(job_path, job)
    print("== both sides predict with the same (TensorFlow-trained) weights ==", flush=True)
    for side in sides:
        agree_side(side, job) if args.in_process else launch(side, job_path, "--agree")
    same = [np.load(out / side / "agreement.npy") for side in sides]
    own = [np.load(out / side / "preview.npz")["predicted"] > job_spec(job).threshold for side in sides]
    return {"same_weights": metrics.pixel_agreement(*same), "own_weights_preview": metrics.pixel_agreement(*own),
            "pixels": int(same[0].size), "reference": "tf"}


def parity(task: str, out: Path, sides: list[str]) -> dict:
    """max |tf - torch| of the sides' probe arrays (same weights, same input) against the task's tolerance."""
    tolerance = harness.PARITY_TOLERANCE[task]
    what = harness.PARITY_PROBES[task]
    if len(sides) < 2:
        return {"max_abs_diff": None, "tolerance": tolerance, "passed": None, "what": what}
    tf_probe, torch_probe = (np.load(out / side / "probe.npy") for side in ("tf", "torch"))
    diff = float(np.max(np.abs(tf_probe - torch_probe))) if tf_probe.shape == torch_probe.shape else float("inf")
    return {"max_abs_diff": diff, "tolerance": tolerance, "passed": bool(diff <= tolerance), "what": what}


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] in (["--worker"], ["--agree"], ["--bench"]):
        status = worker_main(argv[0], argv[1], argv[2])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # results are written; skip interpreter teardown, where tf.data threads can deadlock
    try:
        args, spec, sides = parse_args(argv)
        if args.resume is not None:
            resume(args)
        elif args.benchmark:
            run_benchmark(args, spec, sides)
        else:
            compare(args, spec, sides)
    except UserError as error:
        print(f"compare.py: error: {error}", file=sys.stderr)
        return error.exit_status
    except SideFailed as failure:
        print(f"compare.py: error: {failure}", file=sys.stderr)
        return 1
    except benchmark_report.ParityFailed as failure:
        print(f"compare.py: error: parity failed, so no timing is reported: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
