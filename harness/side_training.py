"""A side's work inside its worker process: its training runs (the side, then its control), each written to
<out>/<run>/result.json and probe.npy, and the agreement masks predicted with the reference side's trained weights
(TensorFlow's, or the first side named without it)."""
from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from harness.drift import perturb_ulp
from harness.environment import side_variables
from harness.jobs import Run, RunJob, relative_to
from harness.parity import reference_side
from harness.registry import task_of
from shared import distributed
from shared.atomic import atomic_path, write_json
from shared.execution import default_execution


def run_group(runs: list[Run], job: RunJob) -> None:
    """A worker's runs in this process, in order (a side, then its 1-ulp control), each one not finished before;
    then, in a one-process comparison, the side's agreement masks, as soon as the reference side's trained weights
    exist."""
    out = Path(job.out)
    for run in runs:
        title = run.title(job.control)
        if (out / run.folder / "result.json").is_file():
            print(f"== {title}: finished before ==", flush=True)
            continue
        print(f"== {title} ==", flush=True)
        with warnings_logged(out / run.folder):
            run_side(run, job)
    reference = out / reference_side(job.sides) / "result.json"
    if job.agreement and job.nproc == 1 and reference.is_file() and not runs[0].control:
        agree_side(runs[0].side, job)


def run_side(run: Run, job: RunJob) -> dict | None:
    """Train (or run the lesson) for one run in this process; writes <out>/<run>/result.json and probe.npy."""
    spec = job.task_spec
    task = task_of(spec)
    surface = task.surface(run.side, spec)
    out = Path(job.out) / run.folder
    out.mkdir(parents=True, exist_ok=True)
    surface.runtime.configure(1 if run.control and job.control == "threads" else job.threads, spec.seed)
    if distributed.world_size() > 1:  # started by torchrun, or as one of several TF_CONFIG workers
        return run_side_distributed(surface, job, out)
    requested = default_execution(run.side, **job.execution)
    # Devices first, in float32: the parity probe runs before the model to train is built in its precision.
    execution = surface.runtime.configure_execution(requested.replace(precision="fp32")).replace(
        precision=requested.precision)
    execution = surface.runtime.training_execution(execution, spec)
    initial = task.initial_weights(spec)
    if run.control:
        initial = perturb_ulp(initial) if job.control == "ulp" else initial
        result, probe = task.run(surface, spec, initial, out, job.data, execution, control=True)
    else:
        result, probe = task.run(surface, spec, initial, out, job.data, execution)
    result.update(execution=execution.to_dict(), threads=surface.runtime.threads(),
                  versions=surface.runtime.versions(), **side_variables())
    return write_side_result(out, result, probe)


def run_side_distributed(surface, job: RunJob, out: Path) -> dict | None:
    """One rank of a data-parallel side; the chief alone writes result.json and probe.npy."""
    spec, device = job.task_spec, job.execution.get("device", "cpu")
    engine = surface.module("distributed")
    context = engine.setup(device)  # before any other TensorFlow op: the strategy reconfigures it
    task = task_of(spec)
    try:
        found = task.run_distributed(surface, spec, task.initial_weights(spec), out, job.data, context)
    finally:
        engine.teardown(context)
    if found is None:
        return None
    result, probe = found
    result.update(threads=surface.runtime.threads(), versions=surface.runtime.versions(),
                  execution={"mode": "data-parallel", "precision": "fp32", "device": device},
                  **side_variables())
    return write_side_result(out, result, probe)


def write_side_result(out: Path, result: dict, probe: np.ndarray) -> dict:
    """result.json and probe.npy; the files it names inside the run folder, relative to the run folder."""
    result = {**result, "artifacts": relative_to(result.get("artifacts", {}), out.parent.resolve())}
    with atomic_path(out / "probe.npy", suffix=".npy") as temporary:
        np.save(temporary, probe)
    write_json(out / "result.json", result)
    return result


def agree_side(side: str, job: RunJob) -> None:
    """Predict the agreement images with the reference side's trained weights (TensorFlow's, or the first side named
    without it: parity.reference_side): <out>/<side>/agreement.npy."""
    reference = reference_side(job.sides)
    reference = json.loads((Path(job.out) / reference / "result.json").read_text())["artifacts"]["checkpoint"]
    spec = job.task_spec
    task = task_of(spec)
    with warnings_logged(Path(job.out) / side):
        surface = task.surface(side, spec)
        surface.runtime.configure(job.threads, spec.seed)
        masks = task.agreement(surface, spec, job.data, Path(job.out) / reference)
    with atomic_path(Path(job.out) / side / "agreement.npy", suffix=".npy") as temporary:
        np.save(temporary, masks)


@contextlib.contextmanager
def warnings_logged(folder: Path) -> Iterator[None]:
    """The Python warnings of a run written to <folder>/warnings.log, and one console line saying how many. Sent to a
    file rather than filtered: they are the frameworks' (Dynamo's on Keras' own lru_cache calls, deprecations), a
    list of the harmless ones would go stale with every release, and in the run's folder none is lost."""
    count = 0

    def log(message, category, filename, lineno, file=None, line=None) -> None:
        nonlocal count
        count += 1
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "warnings.log", "a", encoding="utf-8") as written:
            written.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():  # showwarning and the filters as they were, afterwards
        warnings.showwarning = log
        try:
            yield
        finally:
            if count and distributed.is_chief():
                print(f"{count} warning{'s' if count > 1 else ''} from the frameworks: {folder.name}/warnings.log",
                      flush=True)
