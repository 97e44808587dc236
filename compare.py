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
import subprocess
import sys
import time
import traceback
import types
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from shared import harness, metrics, report
from shared.errors import UserError
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
    parser.add_argument("--benchmark", action="store_true", help="timed benchmark mode")
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
        raise UserError("--benchmark is not implemented yet (planned: issue 5); run without it")
    if args.data_dir is not None and not args.data_dir.exists():
        raise UserError(f"{args.data_dir}: no such folder (--data-dir)")
    return args, spec, list(dict.fromkeys(sides))


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
    result, probe = harness.run_task(modules, spec, out, job.get("data"))
    result["threads"] = modules.runtime.threads()
    result["versions"] = modules.runtime.versions()
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
        (agree_side if mode == "--agree" else run_side)(side, job)
    except UserError as error:
        print(f"compare.py: error: {error}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        return 130
    except Exception:  # noqa: BLE001 - reported here, so no live exception outlasts the worker (tf.data would hang at exit)
        traceback.print_exc()
        return 1
    return 0


def launch(side: str, job_path: Path, mode: str = "--worker") -> None:
    """A fresh Python process per side: fair timing, no shared threads, clean memory figures."""
    command = [sys.executable, str(Path(__file__).resolve()), mode, side, str(job_path)]
    completed = subprocess.run(command, cwd=Path(__file__).resolve().parent)
    if completed.returncode in (2, 3):
        raise SystemExit(completed.returncode)  # the worker already printed its one-line error
    if completed.returncode != 0:
        raise SideFailed(f"the {report.SIDE_NAMES[side]} side failed with exit status {completed.returncode} "
                         "(its traceback is above)")


# ---- the whole run -----------------------------------------------------------------------------------------

def compare(args: argparse.Namespace, spec, sides: list[str]) -> dict:
    out = output_folder(args)
    data = harness.prepare_data(spec, args.data_dir, args.download) if spec.uses_data else None
    job = {"task": spec.name, "spec": spec.to_dict(), "threads": args.threads, "out": str(out.resolve()),
           "data": data, "sides": sides}
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
                launch(side, job_path)
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
        "config": {**spec.to_dict(), "frameworks": sides, "threads": job["threads"]},
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
    if argv[:1] in (["--worker"], ["--agree"]):
        status = worker_main(argv[0], argv[1], argv[2])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # results are written; skip interpreter teardown, where tf.data threads can deadlock
    try:
        args, spec, sides = parse_args(argv)
        resume(args) if args.resume is not None else compare(args, spec, sides)
    except UserError as error:
        print(f"compare.py: error: {error}", file=sys.stderr)
        return error.exit_status
    except SideFailed as failure:
        print(f"compare.py: error: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
