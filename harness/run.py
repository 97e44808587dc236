"""One comparison run, orchestrated from the parent process: the output folder, the data checked once, each side
in its worker process (skipping a side that finished before, for --resume), the parity and agreement of the two,
then results.json, report.md and the console table."""
from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

from shared import drift, parity, report
from shared.atomic import write_json
from shared.environment import environment
from shared.errors import UserError
from shared.interrupted import write_partial_report
from shared.registry import task_of
from shared.tasks import TaskSpec
from shared.workers import agree_side, job_spec, launch_worker, run_group, run_title, side_of


def output_folder(out: Path | None, task: str, overwrite: bool) -> Path:
    """--out, or runs/<task>-<timestamp>; a folder holding files only with --overwrite."""
    out = out or Path("runs") / f"{task}-{datetime.now():%Y%m%d-%H%M%S}"
    if out.is_file():
        raise UserError(f"{out}: --out is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: the output folder is not empty; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def compare(spec: TaskSpec, sides: list[str], options) -> dict:
    """A new run: options carries the command line (out, overwrite, data_dir, download, threads, nproc,
    precision, device, in_process)."""
    out = output_folder(options.out, spec.name, options.overwrite)
    task = task_of(spec)
    data = task.prepare_data(spec, options.data_dir, options.download) if task.prepare_data else None
    threads = max(1, options.threads // options.nproc)  # the cores shared by the side's processes
    # A control sets the two sides' drift against each one's own: it needs both sides, a trained task and the
    # one-process loop (its per-step weights).
    control = options.control if task.trains and options.nproc == 1 and len(sides) == 2 else "none"
    job = {"task": spec.name, "spec": spec.to_dict(), "threads": threads, "out": str(out.resolve()),
           "data": data, "sides": sides, "execution": {"precision": options.precision, "device": options.device},
           "nproc": options.nproc, "control": control, "agreement": task.agreement is not None and len(sides) == 2}
    for run in runs_of(job):  # --overwrite: an earlier run's result or checkpoints must not pass for this run's
        shutil.rmtree(out / run, ignore_errors=True)
    return run_job(out, job, options.in_process)


def resume(out: Path, in_process: bool) -> dict:
    """Continue a run whose job.json is still there (it goes when the run completes), from each side's last
    checkpoint; a side that had finished is not run again."""
    if not (out / "job.json").is_file():
        why = "the run had finished" if (out / "results.json").is_file() else "not a twinnets run folder"
        raise UserError(f"{out}: nothing to resume ({why})")
    job = json.loads((out / "job.json").read_text())
    if job.get("mode") == "predict":  # a prediction's own job (shared/predict.py)
        from shared import predict

        return predict.resume(out, job)
    print(f"resuming {job['task']} in {out}", flush=True)
    return run_job(out, job, in_process)


def runs_of(job: dict) -> list[str]:
    """The sides, then each side's control run unless --control none."""
    controls = [] if job.get("control", "none") == "none" else [f"{side}-control" for side in job["sides"]]
    return [*job["sides"], *controls]


def process_groups(job: dict) -> list[list[str]]:
    """The runs each worker process runs, in order: a side and its 1-ulp control share one (TensorFlow is
    imported, the photos decoded and the graphs built once); a 1-thread control needs its own, since TensorFlow
    fixes its thread pools when it starts. TensorFlow goes first: the other side's agreement masks need its
    trained weights."""
    sides = sorted(job["sides"], key=lambda side: side != "tf")
    control = job.get("control", "none")
    if control == "ulp":
        return [[side, f"{side}-control"] for side in sides]
    return [[side] for side in sides] + ([[f"{side}-control"] for side in sides] if control != "none" else [])


def run_sides(out: Path, job: dict, job_path: Path, in_process: bool) -> None:
    """Each group of runs that has a run without a result yet, in its own process (or this one, for debugging);
    the worker says which runs it skips as finished before."""
    spec = job_spec(job)
    if not (out / "tf" / "result.json").is_file():  # masks predicted with an earlier run's weights must go
        for side in job["sides"]:
            (out / side / "agreement.npy").unlink(missing_ok=True)
    if in_process:  # torch_impl first: see torch_impl/__init__.py on loading both frameworks in one process
        for side in sorted(job["sides"], key=lambda s: s != "torch"):
            task_of(spec).surface(side, spec)
    for runs in process_groups(job):
        if all((out / run / "result.json").is_file() for run in runs):
            for run in runs:
                print(f"== {run_title(run, job.get('control', 'none'))}: finished before ==", flush=True)
            continue
        if in_process:
            run_group(runs, job)
        else:
            launch_worker(",".join(runs), job_path, nproc=job.get("nproc", 1), threads=job["threads"])


def agreement(out: Path, job: dict, job_path: Path, in_process: bool) -> dict:
    """Both sides' masks from the same (TensorFlow-trained) weights, compared pixel by pixel; each worker predicted
    them after training (run_group), and a side that could not (its run resumed before TensorFlow's finished)
    predicts them now in a process of its own."""
    missing = [side for side in job["sides"] if not (out / side / "agreement.npy").is_file()]
    if missing:
        print("== both sides predict with the same (TensorFlow-trained) weights ==", flush=True)
    for side in missing:
        agree_side(side, job) if in_process else launch_worker(side, job_path, "--agree")
    return parity.mask_agreement(out, job["sides"], job_spec(job).threshold, reference="tf")


def drift_of(out: Path, job: dict, frameworks: dict, controls: dict) -> dict:
    """The three pairs' drift (TensorFlow-PyTorch and each side against its control) and the verdict."""
    recorded = {side: drift.load_run(out / side, result["batch_losses"]) for side, result in frameworks.items()}
    recorded.update({f"{side}-control": drift.load_run(out / f"{side}-control", result["batch_losses"])
                     for side, result in controls.items()})
    measured = drift.measure({run: found for run, found in recorded.items() if found is not None})
    measured["control"] = job.get("control", "none")
    measured["exact"] = all(found["exact"] for found in recorded.values() if found is not None)
    return measured


def run_job(out: Path, job: dict, in_process: bool) -> dict:
    """The sides, then the comparison and the reports; job.json goes last (its presence means: resumable)."""
    spec, sides = job_spec(job), job["sides"]
    task = task_of(spec)
    job_path = write_json(out / "job.json", job)
    started = time.perf_counter()
    try:
        run_sides(out, job, job_path, in_process)
    except KeyboardInterrupt:
        write_partial_report(out, job)
        raise
    frameworks = {side: json.loads((out / side / "result.json").read_text()) for side in sides}
    results = {
        "task": spec.name,
        "data": (job["data"] or {}).get("description", {"source": "none"}),
        "config": {**spec.to_dict(), "frameworks": sides, "threads": job["threads"],
                   "nproc": job.get("nproc", 1), **job.get("execution", {"precision": "fp32", "device": "cpu"})},
        "environment": environment(job["threads"], in_process),
        "parity": parity.run_parity(out, sides, task.tolerance, task.probe),
        "frameworks": frameworks,
    }
    controls = {side_of(run): json.loads((out / run / "result.json").read_text())
                for run in runs_of(job) if run.endswith("-control")}
    if controls:
        results["controls"] = controls
    if len(sides) == 2 and all((out / side / "drift.npz").is_file() for side in sides):  # not data-parallel
        results["drift"] = drift_of(out, job, frameworks, controls)
    if job.get("agreement", task.agreement is not None and len(sides) == 2):  # a job.json from before the key
        results["agreement"] = agreement(out, job, job_path, in_process)
    results["wall_s"] = time.perf_counter() - started
    if "drift" in results:
        drift.plot_drift(results["drift"], out / "drift.png", job["control"])
    report.write_reports(out, results, task.report)
    os.unlink(job_path)
    print()
    print(report.table(results))
    print(f"\nwrote {out}/results.json, {out}/report.md and plots")
    return results
