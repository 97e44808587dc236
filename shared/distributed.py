"""The arithmetic of data-parallel training: who this process is (rank, world, chief), how a global batch splits,
and the job file every process of a distributed run reads."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from shared.data.batches import batch_indices
from shared.errors import UserError

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
