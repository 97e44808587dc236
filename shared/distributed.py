"""Data-parallel training without a framework: rank and world size from the environment, the split of a global
batch across ranks, loopback ports, TF_CONFIG, the job file, and the launchers of N local processes that
torch_impl/distributed.py (torchrun) and tf_impl/distributed.py (one process per TF_CONFIG worker) run under."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

import numpy as np

from shared.data import carvana
from shared.data.batches import batch_indices
from shared.errors import UserError
from shared.init import init_weights
from shared.atomic import write_json
from shared.tasks import make_spec
from shared.weights import Weights, load_weights_file, save_weights, unet_layout

LOOPBACK = "127.0.0.1"
# Each local process gets one intra-op thread unless told otherwise: N processes on N cores, no oversubscription.
THREADS_PER_PROCESS = 1


# ---- who am I ----------------------------------------------------------------------------------------------

def tf_config() -> dict | None:
    """The parsed TF_CONFIG of this process (TensorFlow's multi-worker convention), or None."""
    text = os.environ.get("TF_CONFIG")
    return json.loads(text) if text else None


def world_size() -> int:
    """Processes taking part: WORLD_SIZE (torchrun), else the workers of TF_CONFIG, else 1."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    config = tf_config()
    return len(config["cluster"].get("chief", [])) + len(config["cluster"]["worker"]) if config else 1


def rank() -> int:
    """This process' place among them: RANK (torchrun), else the TF_CONFIG task (a chief, if any, comes first)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    config = tf_config()
    if not config:
        return 0
    task = config["task"]
    chiefs = len(config["cluster"].get("chief", []))
    return int(task["index"]) if task["type"] == "chief" else chiefs + int(task["index"])


def is_chief(process_rank: int | None = None) -> bool:
    """Rank 0 alone writes checkpoints, weights and the submission; the others hold identical copies."""
    return (rank() if process_rank is None else process_rank) == 0


# ---- the split of a global batch ---------------------------------------------------------------------------

def check_divisible(global_batch: int, world: int) -> int:
    """The per-rank batch; equal shards are what makes the mean of the ranks' mean losses the global mean."""
    if world < 1:
        raise UserError(f"--nproc must be at least 1, got {world}")
    if global_batch % world:
        raise UserError(f"a global batch of {global_batch} does not split equally across {world} processes; "
                        f"choose a --batch-size that is a multiple of {world}")
    return global_batch // world


def shard(items: np.ndarray, process_rank: int, world: int) -> np.ndarray:
    """Rank r's contiguous share items[r * b : (r + 1) * b] of a global batch of indices (or samples)."""
    per_rank = check_divisible(len(items), world)
    if not 0 <= process_rank < world:
        raise UserError(f"rank {process_rank} is outside a world of {world} processes")
    return items[process_rank * per_rank:(process_rank + 1) * per_rank]


def global_batches(n: int, batch_size: int, seed: int, epoch: int, world: int,
                   shuffle: bool = True) -> list[np.ndarray]:
    """The global batches of one epoch in the shared order of shared.data.batches. The last one, when smaller,
    is cut to a multiple of the world size (at most world - 1 samples of the epoch left out), so that its
    shards stay equal too; with one process nothing is left out."""
    check_divisible(batch_size, world)
    batches = [indices[:len(indices) - len(indices) % world]
               for indices in batch_indices(n, batch_size, seed, epoch, shuffle)]
    return [indices for indices in batches if len(indices)]


def epoch_shards(n: int, batch_size: int, seed: int, epoch: int, process_rank: int, world: int,
                 shuffle: bool = True) -> list[np.ndarray]:
    """This rank's share of every global batch of the epoch."""
    return [shard(indices, process_rank, world) for indices in global_batches(n, batch_size, seed, epoch, world,
                                                                               shuffle)]


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


# ---- the job a launched process runs -----------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """What every process of a distributed run reads: the same file for all ranks.
    kind "step": one train step from `weights` on the global batch in `batch` (.npz: images NHWC, masks NHW);
    kind "train": a whole training run on the data in `data_dir`. Rank 0 writes into `output`."""

    kind: str  # "step" or "train"
    spec: dict  # the UNetSpec's fields
    output: str  # folder
    weights: str | None = None  # canonical .safetensors to start from (None: the seeded initial weights)
    batch: str | None = None  # .npz of the global batch (kind "step")
    data_dir: str | None = None  # the Carvana folder (kind "train")
    device: str = "cpu"  # "cpu" (gloo, one replica per process) or "cuda" (nccl, one GPU per process)

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def read_job(path: str | os.PathLike) -> Job:
    try:
        fields = json.loads(Path(path).read_text())
        job = Job(**fields)
    except FileNotFoundError:
        raise UserError(f"{path}: no such job file") from None
    except (ValueError, TypeError) as error:
        raise UserError(f"{path}: not a job file ({error})") from None
    if job.kind not in ("step", "train"):
        raise UserError(f"{path}: job kind must be step or train, got {job.kind!r}")
    return job


def save_batch(path: str | os.PathLike, images: np.ndarray, masks: np.ndarray) -> Path:
    """A global batch as .npz: images (N, H, W, 3), masks (N, H_out, W_out)."""
    np.savez(path, images=images, masks=masks)
    return Path(path)


def load_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as saved:
        return saved["images"].astype(np.float32), saved["masks"].astype(np.float32)


def carvana_sets(spec, data_dir: str | os.PathLike) -> tuple[carvana.TrainImageDataset,
                                                            carvana.TrainImageDataset | None]:
    """The training set (augmented, keyed by (epoch, index)) and the validation set (or None) of harness.run_unet."""
    layout = carvana.resolve_carvana(data_dir, include_test=False)
    train_samples, valid_samples = carvana.get_train_files(layout, spec.sample_size, spec.validation_size, spec.seed)
    pad = (spec.image_size - spec.output_size) // 2  # 0 for the padded U-Net
    train_set = carvana.TrainImageDataset(train_samples, spec.output_size, augment=spec.augment, seed=spec.seed,
                                          pad=pad)
    valid_set = (carvana.TrainImageDataset(valid_samples, spec.output_size, augment=False, seed=spec.seed, pad=pad)
                 if valid_samples else None)
    return train_set, valid_set


def load_samples(dataset, indices: np.ndarray, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stacked samples of a shared dataset: images (n, H, W, 3), masks (n, H_out, W_out)."""
    pairs = [dataset.get(int(index), epoch) for index in indices]
    return np.stack([image for image, _ in pairs]), np.stack([mask for _, mask in pairs])


def save_training(output: str | os.PathLike, weights: Weights, run: dict, world: int) -> None:
    """What the chief writes when a distributed training run ends: the weights and the history (with the
    timing and the number of processes), which the harness reads back."""
    save_weights(weights, Path(output) / "weights.safetensors")
    write_json(Path(output) / "history.json", {"history": run["history"], "batch_losses": run["batch_losses"],
                                               "timing": run["timing"], "world": world})


def save_on_chief(weights: Weights, path: str | os.PathLike, process_rank: int | None = None) -> Path | None:
    """Rank 0 writes the canonical weights; every other rank writes nothing and gets None."""
    if not is_chief(process_rank):
        return None
    return save_weights(weights, path)


# ---- launchers ---------------------------------------------------------------------------------------------

def child_env(threads: int = THREADS_PER_PROCESS, extra: dict | None = None) -> dict:
    """The parent's environment, with the checkout importable and one thread count for every process."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
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
                               stderr=None if stream else subprocess.STDOUT, text=True, start_new_session=True)
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
    with tempfile.TemporaryDirectory() as folder:
        # Output to files, not pipes: a worker blocked on a full pipe would stall the collective of all of them.
        logs = [open(Path(folder) / f"worker-{index}.log", "w+") for index in range(nproc)]
        processes = [subprocess.Popen([sys.executable, *args], stdout=None if stream and index == 0 else log,
                                      stderr=None if stream and index == 0 else subprocess.STDOUT,
                                      env=child_env(threads, {**(env or {}), "TF_CONFIG": json.dumps(config)}))
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
            log.close()
    return Launched([process.returncode for process in processes], outputs)


def run_job_file(argv: Sequence[str], side: ModuleType, set_threads: Callable[[int], None], usage: str) -> int:
    """One process of a distributed job, on either side (`side` is tf_impl.distributed or torch_impl.distributed):
    read the job, join the others, run the step or the training, leave; a bad job ends in one line, exit 2."""
    try:
        if len(argv) != 1:
            raise UserError(f"usage: {usage}")
        job = read_job(argv[0])
        set_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        context = side.setup(job.device)
        spec = make_spec("unet", **job.spec)
        canonical = load_weights_file(job.weights) if job.weights else init_weights(unet_layout(spec), spec.seed)
        try:
            if job.kind == "step":
                images, masks = load_batch(job.batch)
                written = side.run_step(context, spec, canonical, images, masks, job.output)
            else:
                side.train(context, spec, job.data_dir, job.output, canonical)
                written = job.output if context.rank == 0 else None
            print(f"rank {context.rank}/{context.world}: {'wrote ' + str(written) if written else 'wrote nothing'}")
        finally:
            side.teardown(context)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_status
    return 0


# ---- several machines: the commands the README shows -------------------------------------------------------

def multi_machine_commands(nnodes: int = 2, nproc: int = 2, host: str = "node0.example:29500",
                           job: str = "job.json") -> str:
    """What to type on each machine to run the same job across several machines (the same on every node,
    but for TF_CONFIG's task index)."""
    workers = [f"node{i}.example:12345" for i in range(nnodes)]
    example = json.dumps(make_tf_config(workers, 0))
    return "\n".join([
        f"# PyTorch, on each of the {nnodes} machines ({nproc} processes each; nccl on GPUs, gloo on CPUs):",
        f"torchrun --nnodes {nnodes} --nproc-per-node {nproc} --rdzv-backend c10d --rdzv-id twinnets "
        f"--rdzv-endpoint {host} -m torch_impl.distributed {job}",
        f"# TensorFlow, one worker per machine (MultiWorkerMirroredStrategy); task.index is 0..{nnodes - 1}:",
        f"TF_CONFIG='{example}' python -m tf_impl.distributed {job}",
    ])
