"""One comparison run, orchestrated from the parent process: the output folder, the data checked once, each side
in its worker process (skipping a side that finished before, for --resume), the parity of every side against the
reference, the drift and the agreement, then results.json, report.md and the console table."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from harness import drift, parity, report
from harness.environment import environment, recorded_variables
from harness.interrupted import write_partial_report
from harness.jobs import RunJob, WorkerOrder
from harness.launch import launch_worker
from harness.ownership import output_folder
from harness.registry import task_of
from harness.side_training import agree_side, run_group
from shared.data.fingerprint import fingerprint
from shared.tasks import TaskSpec


def compare(spec: TaskSpec, sides: list[str], options) -> dict:
    """A new run: options carries the command line (out, overwrite, data_dir, download, threads, nproc,
    precision, device, in_process)."""
    task = task_of(spec)
    data = task.prepare_data(spec, options.data_dir, options.download) if task.prepare_data else None
    if data is not None and data.get("data_dir"):  # what --resume RUN --data-dir NEW checks a moved folder against
        data = {**data, "fingerprint": fingerprint(data["data_dir"])}
    # A control sets the sides' drift against each one's own: it needs two sides or more, a trained task and the
    # one-process loop (its per-step weights).
    control = options.control if task.trains and options.nproc == 1 and len(sides) >= 2 else "none"
    with output_folder(options.out, spec.name, options.overwrite) as out:
        job = RunJob(task=spec.name, spec=spec.to_dict(), threads=max(1, options.threads // options.nproc),
                     out=str(out), data=data, sides=sides, nproc=options.nproc, control=control,
                     execution={"precision": options.precision, "device": options.device},
                     agreement=task.agreement is not None and len(sides) == 2)
        return run_job(out, job, options.in_process)


def run_sides(out: Path, job: RunJob, job_path: Path, in_process: bool) -> None:
    """Each group of runs that has a run without a result yet, in its own process (or this one, for debugging);
    the worker says which runs it skips as finished before."""
    spec = job.task_spec
    reference = out / parity.reference_side(job.sides) / "result.json"
    if not reference.is_file():  # masks predicted with an earlier run's weights must go
        for side in job.sides:
            (out / side / "agreement.npy").unlink(missing_ok=True)
    if in_process:  # torch_impl first: see torch_impl/__init__.py on loading both frameworks in one process
        for side in sorted(job.sides, key=lambda s: s != "torch"):
            task_of(spec).surface(side, spec)
    for runs in job.groups():
        if all((out / run.folder / "result.json").is_file() for run in runs):
            for run in runs:
                print(f"== {run.title(job.control)}: finished before ==", flush=True)
            continue
        if in_process:
            run_group(runs, job)
        else:
            launch_worker(WorkerOrder("train", runs[0].side, str(job_path), tuple(runs)), nproc=job.nproc,
                          threads=job.threads)


def agreement(out: Path, job: RunJob, job_path: Path, in_process: bool) -> dict:
    """Both sides' masks from the same weights (the reference side's trained ones: TensorFlow's, or the first side
    named without it), compared pixel by pixel; each worker predicted them after training (run_group), and a side
    that could not (its run resumed before the reference's finished) predicts them now in a process of its own."""
    reference = parity.reference_side(job.sides)
    missing = [side for side in job.sides if not (out / side / "agreement.npy").is_file()]
    if missing:
        print(f"== both sides predict with the same ({report.SIDE_NAMES[reference]}-trained) weights ==", flush=True)
    for side in missing:
        agree_side(side, job) if in_process else launch_worker(WorkerOrder("agree", side, str(job_path)))
    return parity.mask_agreement(out, job.sides, job.task_spec.threshold, reference=reference)


def drift_of(out: Path, job: RunJob, frameworks: dict, controls: dict) -> dict:
    """Every pair's drift (each side against the reference, each side against its control) and the verdicts."""
    recorded = {side: drift.load_run(out / side, result["batch_losses"]) for side, result in frameworks.items()}
    recorded.update({f"{side}-control": drift.load_run(out / f"{side}-control", result["batch_losses"])
                     for side, result in controls.items()})
    measured = drift.measure({run: found for run, found in recorded.items() if found is not None})
    measured["control"] = job.control
    measured["exact"] = all(found["exact"] for found in recorded.values() if found is not None)
    return measured


def compare_sides(out: Path, job: RunJob, job_path: Path, in_process: bool) -> dict:
    """results.json's content once every run has its result: parity, the controls, the drift, the agreement."""
    spec, sides = job.task_spec, job.sides
    task = task_of(spec)
    frameworks = {side: json.loads((out / side / "result.json").read_text()) for side in sides}
    results = {
        "task": spec.name,
        "data": (job.data or {}).get("description", {"source": "none"}),
        "config": {**spec.to_dict(), "frameworks": sides, "threads": job.threads, "nproc": job.nproc,
                   **job.execution},
        "environment": {**environment(job.threads, in_process), **recorded_variables(frameworks)},
        "parity": parity.run_parity(out, sides, task.tolerance, task.probe),
        "frameworks": frameworks,
    }
    controls = {run.side: json.loads((out / run.folder / "result.json").read_text()) for run in job.runs if run.control}
    if controls:
        results["controls"] = controls
    if len(sides) >= 2 and all((out / side / "drift.npz").is_file() for side in sides):  # not data-parallel
        results["drift"] = drift_of(out, job, frameworks, controls)
    if job.agreement:
        results["agreement"] = agreement(out, job, job_path, in_process)
    return results


def run_job(out: Path, job: RunJob, in_process: bool) -> dict:
    """The sides, then the comparison and the reports; job.json goes last (its presence means: resumable), and an
    interruption anywhere before leaves the partial report."""
    job_path = job.write(out / "job.json")
    started = time.perf_counter()
    try:
        run_sides(out, job, job_path, in_process)
        results = compare_sides(out, job, job_path, in_process)
        results["wall_s"] = time.perf_counter() - started
        if "drift" in results:
            drift.plot_drift(results["drift"], out / "drift.png", job.control)
        report.write_reports(out, results, task_of(job.task_spec).report)
    except KeyboardInterrupt:
        write_partial_report(out, asdict(job))
        raise
    os.unlink(job_path)
    print()
    print(report.table(results))
    print(f"\nwrote {out}/results.json, {out}/report.md and plots")
    return results
