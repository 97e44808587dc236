"""--diagnose K, where two twins part: the first K training steps of mlp, cnn or unet on both sides, from the same
canonical weights on the same batches, every layer's numbers recorded at every step (diagnose_side, in one worker
process per side, with the side's own diagnose.py), then compared in the order a step computes them (run_diagnose):
the first (step, layer, quantity) whose difference exceeds the task's tolerance, a heat map, results.json,
report.md and a console summary."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from harness.diagnose.differences import (
    REFERENCE,
    compare_sides,
    first_divergence,
    largest,
    rounding_summary,
    tolerances_of,
)
from harness.diagnose.report import heat_map, markdown, summary_lines
from harness.diagnose.steps import diagnose_side
from harness.environment import environment, recorded_variables
from harness.jobs import WorkerOrder, write_job
from harness.launch import launch_worker
from harness.ownership import output_folder
from harness.registry import TOLERANCES, task_of
from harness.report import SIDE_NAMES
from shared.atomic import write_atomic, write_json
from shared.tasks import TaskSpec


def run_diagnose(spec: TaskSpec, sides: list[str], args) -> dict:
    """compare.py --diagnose K: both sides' first K steps, each in its worker process (or this one with
    --in-process), compared; writes diagnose.png, results.json and report.md into the output folder."""
    task = task_of(spec)
    data = task.prepare_data(spec, args.data_dir, args.download)
    with output_folder(args.out, spec.name, args.overwrite) as out:
        return diagnose_into(out, spec, sides, args, data)


def diagnose_into(out: Path, spec: TaskSpec, sides: list[str], args, data: dict | None) -> dict:
    """run_diagnose in the output folder it owns."""
    steps, task = args.diagnose, task_of(spec)
    threads = max(1, args.threads or os.cpu_count() or 1)
    job = {"task": spec.name, "spec": spec.to_dict(), "threads": threads, "out": str(out), "data": data,
           "steps": steps, "device": args.device}
    job_path = write_job(out / "diagnose-job.json", job)
    started = time.perf_counter()
    if args.in_process:  # torch_impl first: see torch_impl/__init__.py on loading both frameworks in one process
        for side in sorted(sides, key=lambda s: s != "torch"):
            task.surface(side, spec)
    for side in sides:
        print(f"== {SIDE_NAMES[side]}: {steps} training step{'s' if steps != 1 else ''} recorded ==", flush=True)
        diagnose_side(side, job) if args.in_process else launch_worker(WorkerOrder("diagnose", side, str(job_path)),
                                                                          threads=threads)
    tolerances = tolerances_of(spec.name)
    records = compare_sides(out, steps, tolerances)
    recorded = {side: json.loads((out / side / "diagnose.json").read_text()) for side in sides}
    results = {
        "task": spec.name,
        "data": (data or {}).get("description", {"source": "none"}),
        "config": {**spec.to_dict(), "steps": steps, "frameworks": sides, "threads": threads, "device": args.device},
        "environment": {**environment(threads, args.in_process), **recorded_variables(recorded)},
        "reference": REFERENCE,
        "tolerances": tolerances,
        "first_divergence": first_divergence(records, tolerances),
        "largest": largest(records),
        "rounding": {**rounding_summary(records), "float64_tolerance": TOLERANCES[spec.name]["float64"]},
        "sides": recorded,
        "records": records,
        "wall_s": time.perf_counter() - started,
    }
    heat_map(results, out / "diagnose.png")
    write_json(out / "results.json", results)
    write_atomic(out / "report.md", markdown(results))
    os.unlink(job_path)
    print()
    print("\n".join(summary_lines(results)))
    print(f"\nwrote {out}/results.json, {out}/report.md and {out}/diagnose.png")
    return results
