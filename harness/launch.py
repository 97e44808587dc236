"""Starting a side's processes: one worker (`python -m harness.worker ORDER`), or the processes of a data-parallel run
(loopback ports, TF_CONFIG, torchrun, TF workers)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from harness.jobs import WorkerOrder
from harness.lifetime import Terminated, die_with_parent
from harness.ownership import held_locks
from harness.report import SIDE_NAMES
from harness.surface import ARMS

ROOT = Path(__file__).resolve().parent.parent  # the checkout: workers import harness from here
LOOPBACK = "127.0.0.1"
# Each local process gets one intra-op thread unless told otherwise: N processes on N cores, no oversubscription.
THREADS_PER_PROCESS = 1


# ---- ports and TF_CONFIG -----------------------------------------------------------------------------------

def free_ports(count: int) -> list[int]:
    """Distinct ports free on the loopback interface now (all sockets held open until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def make_tf_config(workers: Sequence[str], index: int) -> dict:
    """TF_CONFIG of worker `index` in a cluster of "host:port" workers; worker 0 acts as the chief."""
    return {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}}


def local_tf_configs(nproc: int) -> list[dict]:
    """One TF_CONFIG per local worker, each on its own free loopback port."""
    workers = [f"{LOOPBACK}:{port}" for port in free_ports(nproc)]
    return [make_tf_config(workers, index) for index in range(nproc)]


# ---- launchers ---------------------------------------------------------------------------------------------

def child_env(threads: int = THREADS_PER_PROCESS, extra: dict | None = None) -> dict:
    """The parent's environment, with the checkout importable and one thread count for every process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update(extra or {})
    return env


def torchrun_command(nproc: int, args: Sequence[str], port: int | None = None) -> list[str]:
    """`torchrun --nproc-per-node N ARGS` on this machine (static rendezvous on a free loopback port).
    ARGS is what would follow `python`, e.g. ["-m", "torch_impl.distributed", "job.json"]."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
            "--master-addr", LOOPBACK, "--master-port", str(port or free_port()), *args]


@dataclass(frozen=True)
class Launched:
    """How the processes of one launch ended: exit status and output, one entry per process (torchrun: one)."""

    returncodes: list[int]
    outputs: list[str]

    @property
    def ok(self) -> bool:
        return all(code == 0 for code in self.returncodes)

    def describe(self) -> str:
        return "\n".join(f"--- process {i}: exit {code}\n{out[-3000:]}"
                         for i, (code, out) in enumerate(zip(self.returncodes, self.outputs)))


def launch_torch(nproc: int, args: Sequence[str], timeout: float | None = None, threads: int = THREADS_PER_PROCESS,
                 env: dict | None = None, stream: bool = False) -> Launched:
    """torchrun starts the N ranks (RANK, WORLD_SIZE, MASTER_ADDR/PORT set for each) and waits for them all;
    it stops the others when one fails. Out of time, its whole process group (it and its ranks) is stopped.
    stream: rank 0's output goes to this terminal as it comes (the others' is dropped) instead of being kept."""
    command = torchrun_command(nproc, args)
    if stream:
        command[3:3] = ["--local-ranks-filter", "0"]
    process = subprocess.Popen(command, env=child_env(threads, env), stdout=None if stream else subprocess.PIPE,
                               stderr=None if stream else subprocess.STDOUT, text=True, start_new_session=True,
                               preexec_fn=die_with_parent())
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the group of the session it leads: torchrun and its ranks
        output = (process.communicate()[0] or "") + "\n[stopped: out of time]"
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return Launched([process.returncode], [output or ""])


def launch_tf(nproc: int, args: Sequence[str], timeout: float | None = None, threads: int = THREADS_PER_PROCESS,
              env: dict | None = None, stream: bool = False) -> Launched:
    """N `python ARGS` processes, worker i with its own TF_CONFIG, and waits for them all; if one fails or the
    time runs out, the others (which would wait for it forever inside a collective) are stopped.
    stream: worker 0's output goes to this terminal as it comes; the others' is kept."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with tempfile.TemporaryDirectory() as folder, ExitStack() as files:
        # Output to files, not pipes: a worker blocked on a full pipe would stall the collective of all of them.
        logs = [files.enter_context(open(Path(folder) / f"worker-{index}.log", "w+")) for index in range(nproc)]
        processes = [subprocess.Popen([sys.executable, *args], stdout=None if stream and index == 0 else log,
                                      stderr=None if stream and index == 0 else subprocess.STDOUT,
                                      env=child_env(threads, {**(env or {}), "TF_CONFIG": json.dumps(config)}),
                                      preexec_fn=die_with_parent())
                     for index, (log, config) in enumerate(zip(logs, local_tf_configs(nproc)))]
        try:
            while any(p.poll() is None for p in processes):
                failed = any(p.poll() not in (None, 0) for p in processes)
                if failed or (deadline is not None and time.monotonic() > deadline):
                    break
                time.sleep(0.1)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
    return Launched([process.returncode for process in processes], outputs)


# ---- one worker per side ----------------------------------------------------------------------------------

class SideFailed(Exception):
    """A side's worker process crashed (its traceback is already on the console): exit status 1."""


def worker_env(side: str) -> dict:
    """The parent's environment, with the side's Keras engine chosen before its process imports Keras (the tf side's
    Keras models run on TensorFlow whatever the user's shell says)."""
    backend = ARMS[side].backend
    return dict(os.environ) if backend is None else {**os.environ, "KERAS_BACKEND": backend}


def launch_worker(order: WorkerOrder, nproc: int = 1, threads: int = 1) -> None:
    """A fresh Python process for the order; with nproc > 1, the side's own launcher: torchrun for PyTorch, N workers
    with their TF_CONFIG for TensorFlow. A worker's one-line error (status 2 or 3) ends this run too."""
    arguments = ["-m", "harness.worker", order.to_argument()]
    if nproc > 1:
        launcher = launch_torch if order.side == "torch" else launch_tf
        launched = launcher(nproc, arguments, threads=threads, env=worker_env(order.side), stream=True)
        status = next((code for code in launched.returncodes if code != 0), 0)
        if status not in (0, 2, 3):
            print(launched.describe(), file=sys.stderr)
    else:
        # The worker inherits the run folder's lock (held while any process of the run lives) and dies with this
        # process; it starts in the checkout, every path it reads already made absolute here (harness/paths.py).
        worker = subprocess.Popen([sys.executable, *arguments], cwd=ROOT, env=worker_env(order.side),
                                  pass_fds=held_locks(), preexec_fn=die_with_parent())
        try:
            status = worker.wait()
        except KeyboardInterrupt as interrupt:  # Ctrl-C reached the worker too; SIGTERM reached this process alone
            worker.send_signal(signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            raise
    if status in (2, 3):
        raise SystemExit(status)  # the worker already printed its one-line error
    if status != 0:
        raise SideFailed(f"the {SIDE_NAMES[order.side]} side failed with exit status {status} (its traceback is above)")


# ---- several machines: the commands docs/distributed.md shows ---------------------------------------------

def multi_machine_commands(nnodes: int = 2, nproc: int = 2, host: str = "node0.example:29500",
                           job: str = "job.json") -> str:
    """What to type on each machine to run the same job across several machines (the same on every node,
    but for TF_CONFIG's task index)."""
    workers = [f"node{i}.example:12345" for i in range(nnodes)]
    example = json.dumps(make_tf_config(workers, 0))
    return "\n".join([
        f"# PyTorch, on each of the {nnodes} machines ({nproc} processes each; nccl on GPUs, gloo on CPUs):",
        (f"torchrun --nnodes {nnodes} --nproc-per-node {nproc} --rdzv-backend c10d --rdzv-id twinnets "
         f"--rdzv-endpoint {host} -m torch_impl.distributed {job}"),
        f"# TensorFlow, one worker per machine (MultiWorkerMirroredStrategy); task.index is 0..{nnodes - 1}:",
        f"TF_CONFIG='{example}' python -m tf_impl.distributed {job}",
    ])
