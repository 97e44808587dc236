"""The worker processes: each side runs in a fresh Python process of its own (fair timing, no shared threads,
clean memory figures), started as `compare.py --worker|--agree|--bench SIDE JOB.json`; a job file says what to
do, and the worker writes its result beside it. With nproc > 1 the side's own launcher starts several."""
from __future__ import annotations

import json
import subprocess
import sys
import traceback
import types
from pathlib import Path

import numpy as np

from shared import distributed, launch
from shared.atomic import write_json
from shared.benchmark import Row, run_row
from shared.drift import perturb_ulp
from shared.errors import UserError
from shared.execution import default_execution
from shared.registry import task_of
from shared.report import SIDE_NAMES
from shared.tasks import TaskSpec, make_spec

COMPARE = Path(__file__).resolve().parent.parent / "compare.py"
WORKER_MODES = ("--worker", "--agree", "--bench", "--diagnose", "--predict-worker")


class SideFailed(Exception):
    """A side's worker process crashed (its traceback is already on the console): exit status 1."""


def job_spec(job: dict) -> TaskSpec:
    return make_spec(job["task"], **{k: tuple(v) if isinstance(v, list) else v for k, v in job["spec"].items()})


def side_of(run: str) -> str:
    """The side a run, or a worker's comma-separated runs, belongs to: "tf", "tf-control" and "tf,tf-control" are
    TensorFlow's."""
    return run.split(",")[0].split("-")[0]


def run_title(run: str, control: str) -> str:
    side, is_control = SIDE_NAMES[side_of(run)], run.endswith("-control")
    return f"{side} control ({CONTROL_TITLES[control]})" if is_control else side


CONTROL_TITLES = {"ulp": "initial weights moved by 1 ulp", "threads": "1 thread", "none": ""}


def run_group(runs: list[str], job: dict) -> None:
    """A worker's runs in this process, in order (a side, then its 1-ulp control), each one not finished before;
    then, in a one-process comparison, the side's agreement masks, as soon as TensorFlow's trained weights exist."""
    out = Path(job["out"])
    for run in runs:
        title = run_title(run, job.get("control", "none"))
        if (out / run / "result.json").is_file():
            print(f"== {title}: finished before ==", flush=True)
            continue
        print(f"== {title} ==", flush=True)
        run_side(run, job)
    side, reference = side_of(runs[0]), out / "tf" / "result.json"
    if job.get("agreement") and job.get("nproc", 1) == 1 and reference.is_file() and not runs[0].endswith("-control"):
        agree_side(side, {**job, "reference_weights": json.loads(reference.read_text())["artifacts"]["checkpoint"]})


def run_side(run: str, job: dict) -> dict | None:
    """Train (or run the lesson) for one run in this process: a side ("tf", "torch") or its control
    ("tf-control": the same run from initial weights moved by one ulp, or with one thread, as job["control"]
    says); writes <out>/<run>/result.json and probe.npy."""
    spec, side, control = job_spec(job), side_of(run), run.endswith("-control")
    task = task_of(spec)
    surface = task.surface(side, spec)
    out = Path(job["out"]) / run
    out.mkdir(parents=True, exist_ok=True)
    surface.runtime.configure(1 if control and job["control"] == "threads" else job["threads"], spec.seed)
    if distributed.world_size() > 1:  # started by torchrun, or as one of several TF_CONFIG workers
        return run_side_distributed(surface, job, spec, out)
    requested = default_execution(side, **job.get("execution", {}))
    # Devices first, in float32: the parity probe runs before the model to train is built in its precision.
    execution = surface.runtime.configure_execution(requested.replace(precision="fp32")).replace(
        precision=requested.precision)
    execution = surface.runtime.training_execution(execution, spec)
    initial = task.initial_weights(spec)
    if control:
        initial = perturb_ulp(initial) if job["control"] == "ulp" else initial
        result, probe = task.run(surface, spec, initial, out, job.get("data"), execution, control=True)
    else:
        result, probe = task.run(surface, spec, initial, out, job.get("data"), execution)
    result.update(execution=execution.to_dict(), threads=surface.runtime.threads(),
                  versions=surface.runtime.versions())
    return write_side_result(out, result, probe)


def run_side_distributed(surface, job: dict, spec: TaskSpec, out: Path) -> dict | None:
    """One rank of a data-parallel side; the chief alone writes result.json and probe.npy."""
    device = job.get("execution", {}).get("device", "cpu")
    engine = surface.module("distributed")
    context = engine.setup(device)  # before any other TensorFlow op: the strategy reconfigures it
    task = task_of(spec)
    try:
        found = task.run_distributed(surface, spec, task.initial_weights(spec), out, job["data"], context)
    finally:
        engine.teardown(context)
    if found is None:
        return None
    result, probe = found
    result.update(threads=surface.runtime.threads(), versions=surface.runtime.versions(),
                  execution={"mode": "data-parallel", "precision": "fp32", "device": device})
    return write_side_result(out, result, probe)


def write_side_result(out: Path, result: dict, probe: np.ndarray) -> dict:
    np.save(out / "probe.npy", probe)
    write_json(out / "result.json", result)
    return result


def agree_side(side: str, job: dict) -> None:
    """Predict the agreement images with the reference side's trained weights: <out>/<side>/agreement.npy."""
    if "reference_weights" not in job:  # a worker of its own (run.agreement): TensorFlow's weights
        reference = json.loads((Path(job["out"]) / "tf" / "result.json").read_text())
        job = {**job, "reference_weights": reference["artifacts"]["checkpoint"]}
    spec = job_spec(job)
    task = task_of(spec)
    surface = task.surface(side, spec)
    surface.runtime.configure(job["threads"], spec.seed)
    masks = task.agreement(surface, spec, job["data"], Path(job["reference_weights"]))
    np.save(Path(job["out"]) / side / "agreement.npy", masks)


def bench_side(side: str, job: dict) -> None:
    """One benchmark row in this (fresh) process: <out>/<row>.json, and <row>.probe.npy for a parity row."""
    spec = job_spec(job)
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


def diagnose_side(side: str, job: dict) -> None:
    """The first K training steps of one side, every layer's numbers recorded (shared/diagnose.py)."""
    from shared import diagnose  # imports this module: loaded only in a --diagnose worker

    diagnose.diagnose_side(side, job)


def predict_side(side: str, job: dict) -> None:
    """One side's predictions of a trained run's weights (shared/predict.py)."""
    from shared import predict  # imports this module: loaded only in a --predict-worker

    predict.predict_side(side, job)


def keep_tensorflow_out() -> None:
    """TensorBoard's writer imports TensorFlow when it finds it; its own marker module says "no TensorFlow here".
    Set only in a PyTorch worker process: fair timing, clean memory, and the import boundary kept at run time
    (in a shared process it would hide TensorFlow from tf.summary too)."""
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


WORKERS = {"--worker": lambda runs, job: run_group(runs.split(","), job), "--agree": agree_side,
           "--bench": bench_side, "--diagnose": diagnose_side, "--predict-worker": predict_side}


def worker_main(mode: str, run: str, job_path: str) -> int:
    """A worker process's whole life: read the job, run it, say in one line what went wrong if anything did."""
    job = json.loads(Path(job_path).read_text())
    if side_of(run) == "torch":  # "torch", "torch-control" or "torch,torch-control"
        keep_tensorflow_out()
    try:
        WORKERS[mode](run, job)
    except UserError as error:
        print(f"compare.py: error: {error}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        return 130
    except Exception:  # noqa: BLE001 - reported here, so no live exception outlasts the worker (tf.data would hang at exit)
        traceback.print_exc()
        return 1
    return 0


def launch_worker(run: str, job_path: Path, mode: str = "--worker", nproc: int = 1, threads: int = 1) -> None:
    """A fresh Python process for the run (a side, its control, or both as "tf,tf-control"); with nproc > 1, the
    side's own launcher: torchrun for PyTorch, N workers with their TF_CONFIG for TensorFlow. A worker's one-line
    error (status 2 or 3) ends this run too."""
    side = side_of(run)
    script = [str(COMPARE), mode, run, str(job_path)]
    if nproc > 1:
        launcher = launch.launch_torch if side == "torch" else launch.launch_tf
        launched = launcher(nproc, script, threads=threads, stream=True)
        status = next((code for code in launched.returncodes if code != 0), 0)
        if status not in (0, 2, 3):
            print(launched.describe(), file=sys.stderr)
    else:
        status = subprocess.run([sys.executable, *script], cwd=COMPARE.parent).returncode
    if status in (2, 3):
        raise SystemExit(status)  # the worker already printed its one-line error
    if status != 0:
        raise SideFailed(f"the {SIDE_NAMES[side]} side failed with exit status {status} (its traceback is above)")
