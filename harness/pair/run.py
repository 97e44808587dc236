"""--pair, your own Keras model against your PyTorch port: `python compare.py --pair K.py:build T.py:Net
--input-shape 2,3,64,64`, or check_pair(...) from a notebook or a test. Each side runs in a worker process of its
own (the Keras one with KERAS_BACKEND=tensorflow), both at once: each describes its model, the parent maps the
weights (harness/pair/mapping.py) and writes plan.json, each then records its numbers (harness/pair/side.py), and
the parent compares them (differences.py), names the traps (traps.py) and writes the report (report.py); with
--benchmark, behind the parity gate, both sides are timed (benchmark.py). A bad input stops it in one line and
leaves nothing behind."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.benchmark.report import ParityFailed
from harness.environment import environment
from harness.jobs import WorkerOrder, write_job
from harness.launch import ROOT, SideFailed, worker_env
from harness.lifetime import die_with_parent
from harness.ownership import held_locks, output_folder
from harness.pair.benchmark import run_benchmark
from harness.pair.differences import compare_pair
from harness.pair.flags import PairConfig, config_from_args, make_config
from harness.pair.mapping import (
    TABLE_HEADER,
    common_tensors,
    make_plan,
    mapped_weights,
    producers,
    read_pins,
    side_plans,
)
from harness.pair.mapping import table_rows as mapping_rows
from harness.pair.report import markdown, pair_results, picture, summary_lines
from harness.pair.side import describe_side, run_side
from harness.pair.traps import mapping_hint, traps_at
from shared import tables
from shared.atomic import atomic_path, write_atomic, write_json
from shared.errors import UserError
from shared.weights import load_weights_file, save_weights

JOB = "pair-job.json"
SIDES = ("tf", "torch")  # the Keras side runs as twinnets' TensorFlow side
# What a pair run writes in its folder besides the report: removed again when a bad input stops it.
WRITTEN = (JOB, "input.npy", "target.npy", "weights.safetensors", "plan.json", *SIDES,
           *(f"{side}-control" for side in SIDES))
POLL_S = 0.05


def check_pair(keras: str, torch: str, input_shape=None, *, keras_layout: str | None = None, input=None,
               source: str = "torch", zero_unmatched_bias: bool = False, mapping=None, loss: str | None = None,
               target=None, steps: int | None = None, lr: float | None = None, seed: int | None = None,
               threads: int | None = None, out=None, overwrite: bool = False, in_process: bool = False,
               quiet: bool = True, benchmark: bool = False, inference: bool = False, warmup: int | None = None,
               benchmark_steps: int | None = None, repeat: int | None = None) -> dict:
    """The whole check as one call: keras="models/k.py:build", torch="models/t.py:Net", input_shape=(2, 3, 64, 64)
    in PyTorch's layout (or input= a .npy file); the rest as the flags of docs/pair.md. Returns results.json's
    content; results["pair"]["verdict"] is "equal" or "different". Bad input raises UserError (one line).
    benchmark=True: both sides timed behind the parity gate, in results["pair"]["benchmark"] (its "gate" says
    whether they were)."""
    config = make_config(keras, torch, input_shape, keras_layout=keras_layout, input=input, source=source,
                         zero_unmatched_bias=zero_unmatched_bias, mapping=mapping, loss=loss, target=target,
                         steps=steps, lr=lr, seed=seed, threads=threads or max(1, (os.cpu_count() or 2) // 2),
                         out=out, overwrite=overwrite, in_process=in_process, benchmark=benchmark,
                         inference=inference, warmup=warmup, benchmark_steps=benchmark_steps, repeat=repeat)
    return run_pair(config, quiet)


def main(args) -> int:
    """compare.py --pair ...; with --benchmark, a pair the parity gate stops ends as the benchmark's does (exit 1)."""
    results = run_pair(config_from_args(args), quiet=False)
    gate = results["pair"].get("benchmark", {}).get("gate", {"passed": True})
    if not gate["passed"]:
        raise ParityFailed(gate["reason"])
    return 0


def run_pair(config: PairConfig, quiet: bool = False) -> dict:
    with output_folder(config.out, "pair", config.overwrite) as out:
        return run_into(out, config, (lambda *lines: None) if quiet else print)


def job_of(config: PairConfig, out: Path) -> dict:
    return {"out": str(out), "threads": config.threads, "seed": config.seed, "source": config.source,
            "tf": {"file": str(config.keras[0]), "factory": config.keras[1]},
            "torch": {"file": str(config.torch[0]), "factory": config.torch[1]}, "keras_layout": config.keras_layout,
            "loss": config.loss, "steps": config.steps, "lr": config.lr}


def save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as temporary:
        np.save(temporary, array)


def write_inputs(out: Path, config: PairConfig) -> None:
    """input.npy (yours, or seeded normal values) and target.npy, in PyTorch's layout, float32 or integers."""
    if config.input is None:
        inputs = np.random.default_rng(config.seed).standard_normal(config.input_shape).astype(np.float32)
    else:
        inputs = np.load(config.input)
        inputs = inputs.astype(np.float32 if inputs.dtype.kind == "f" else np.int64)
    save_array(out / "input.npy", inputs)
    if config.target is not None:
        target = np.load(config.target)
        save_array(out / "target.npy", target.astype(np.int64 if config.loss == "ce" else np.float32))


def start_workers(job_path: Path, threads: int) -> dict[str, tuple[subprocess.Popen, object]]:
    """Both sides' workers at once (harness/worker.py, kind "pair"), each its stderr in a file: a one-line error
    becomes this process's, a crash's traceback is shown."""
    workers = {}
    for side in SIDES:
        log = tempfile.TemporaryFile(mode="w+")
        order = WorkerOrder("pair", side, str(job_path))
        env = {**worker_env(side), "OMP_NUM_THREADS": str(threads)}
        workers[side] = (subprocess.Popen([sys.executable, "-m", "harness.worker", order.to_argument()], cwd=ROOT,
                                          env=env, stderr=log, pass_fds=held_locks(), preexec_fn=die_with_parent()),
                         log)
    return workers


def ended(side: str, process: subprocess.Popen, log) -> None:
    """A worker that stopped with an error: its one line as this process's UserError, or its crash shown."""
    log.seek(0)
    text = log.read()
    lines = [line for line in text.splitlines() if line.startswith("compare.py: error: ")]
    if process.returncode in (2, 3) and lines:
        error = UserError(lines[-1].removeprefix("compare.py: error: "))
        error.exit_status = process.returncode
        raise error
    sys.stderr.write(text[-20000:])
    raise SideFailed(f"the {'Keras' if side == 'tf' else 'PyTorch'} side failed with exit status "
                     f"{process.returncode} (its traceback is above)")


def wait(workers: dict, done) -> None:
    """Until done() holds, or a worker ends with an error."""
    while not done():
        for side, (process, log) in workers.items():
            if process.poll() not in (None, 0):
                ended(side, process, log)
        if all(process.poll() is not None for process, _ in workers.values()) and not done():
            raise SideFailed("the workers ended without writing their results")
        time.sleep(POLL_S)


def stop(workers: dict) -> None:
    for process, log in workers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def units_in_order(described: dict) -> list[dict]:
    """A side's units with weights, in the order its forward pass first called them (never called: last)."""
    first = {}
    for index, record in enumerate(described["records"]):
        first.setdefault(record["unit"], index)
    units = [u for u in described["units"] if u["params"]]
    return sorted(units, key=lambda u: first.get(u["name"], len(first)))


def plan_of(out: Path, config: PairConfig, described: dict[str, dict]) -> dict:
    """The mapping, each side's part of it, the common tensors; the weights file both sides load."""
    layout = described["tf"]["layout"]["input"]
    where = {"tf": f"{config.keras[0].name}:{config.keras[1]}", "torch": f"{config.torch[0].name}:{config.torch[1]}"}
    ordered = {side: units_in_order(described[side]) for side in SIDES}
    sources = {side: producers(described[side]["records"], {u["name"] for u in ordered[side]}) for side in SIDES}
    plan = make_plan(ordered["tf"], ordered["torch"], read_pins(config.mapping), config.zero_unmatched_bias, where,
                     config.mapping, lambda k, t: mapping_hint(k, t, layout), sources)
    units = {side: {u["name"]: u for u in described[side]["units"]} for side in SIDES}
    plan.update(sides=side_plans(plan, units["tf"], units["torch"]), common=common_tensors(plan))
    source = load_weights_file(out / config.source / "own.safetensors")
    save_weights(mapped_weights(plan, config.source, source), out / "weights.safetensors")
    return plan


def remove_written(out: Path) -> None:
    for name in WRITTEN:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def run_into(out: Path, config: PairConfig, say) -> dict:
    """The run in the folder it owns."""
    started, workers, job = time.perf_counter(), {}, job_of(config, out)
    try:
        write_inputs(out, config)
        job_path = write_job(out / JOB, job)
        if config.in_process:  # torch first: see torch_impl/__init__.py on loading both frameworks in one process
            states = {side: describe_side(side, job) for side in ("torch", "tf")}
        else:
            workers = start_workers(job_path, config.threads)
            wait(workers, lambda: all((out / side / "described.json").is_file() for side in SIDES))
        described = {side: json.loads((out / side / "described.json").read_text()) for side in SIDES}
        plan = plan_of(out, config, described)
        say(f"weights mapped, {config.to_dict()['source']}'s into the other side:")
        say(tables.console(TABLE_HEADER, mapping_rows(plan)))
        write_json(out / "plan.json", plan)  # the workers' signal to go on
        if config.in_process:
            for side in ("torch", "tf"):
                run_side(side, job, states[side], plan)
        else:
            wait(workers, lambda: all(process.poll() == 0 for process, _ in workers.values()))
    except UserError:
        stop(workers)
        remove_written(out)  # bad input: nothing half-written stays
        raise
    except BaseException:
        stop(workers)
        raise
    stop(workers)
    results = report(out, config, plan, described, time.perf_counter() - started)
    (out / JOB).unlink(missing_ok=True)
    for line in summary_lines(results):
        say(line)
    if config.benchmark:
        results = run_benchmark(out, config, job, described, results, say)
    say(f"\nwrote {out}/results.json, {out}/report.md and {out}/pair.png")
    return results


def report(out: Path, config: PairConfig, plan: dict, described: dict[str, dict], wall_s: float) -> dict:
    compared = compare_pair(out, plan, config.lr)
    units = {side: {u["name"]: u for u in described[side]["units"]} for side in SIDES}
    traps = traps_at(compared["first"], units["tf"], units["torch"], described["tf"]["layout"]["input"])
    results = {"mode": "pair", "pair": pair_results(compared, plan, traps, config.steps),
               "config": {**config.to_dict(), "keras_layout": described["tf"]["layout"]["input"]},
               "environment": environment(config.threads, config.in_process),
               "sides": {side: {key: value for key, value in described[side].items() if key in ("layout", "versions",
                                                                                                 "threads")}
                         for side in SIDES},
               "wall_s": wall_s}
    picture(results, out / "pair.png")
    write_json(out / "results.json", results)
    write_atomic(out / "report.md", markdown(results))
    return results
