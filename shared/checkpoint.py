"""Checkpoints to resume a run killed at any point: after every epoch, a new folder holds the model (canonical
safetensors), the optimizer state (the framework's own format) and the training log so far; `latest.json`,
replaced atomically once the folder is complete, names it. With a learning-rate schedule the folder also holds the
scheduler's state (the side's own format). A kill at any moment leaves the last complete one."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from shared.atomic import write_json
from shared.errors import DataError
from shared.weights import Weights, load_weights_file, save_weights

LATEST = "latest.json"
OPTIMIZER = "optimizer"  # the side adds its own suffix
SCHEDULE = "schedule"  # likewise


@dataclass(frozen=True)
class Checkpoint:
    epoch: int  # epochs completed
    weights: Weights
    optimizer: Path  # the side's own optimizer file, without suffix
    schedule: Path  # the side's own scheduler file, without suffix (none for a constant lr)
    log: dict  # TrainingLog.state()


def save_checkpoint(folder: Path | None, epoch: int, weights: Weights, save_optimizer: Callable[[Path], None],
                    log_state: dict, save_schedule: Callable[[Path], None] | None = None) -> None:
    """Write epoch-<n>/ completely, then point latest.json at it, then drop older epochs."""
    if folder is None:
        return
    folder = Path(folder)
    target = folder / f"epoch-{epoch}"
    if target.exists():
        shutil.rmtree(target)  # a half-written one from before a kill
    target.mkdir(parents=True)
    save_weights(weights, target / "model.safetensors")
    save_optimizer(target / OPTIMIZER)
    if save_schedule is not None:
        save_schedule(target / SCHEDULE)
    write_json(target / "log.json", log_state)
    write_json(folder / LATEST, {"epoch": epoch, "folder": target.name})
    for old in folder.glob("epoch-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class Checkpointer:
    """Saves one model and optimizer after every epoch and restores them on a restart; each side makes one from
    its own weights and optimizer functions (weights.checkpointer). A folder of None turns it off."""

    folder: Path | None
    export_weights: Callable[[], Weights]
    save_optimizer: Callable[[Path], None]
    load_weights: Callable[[Weights], None]
    load_optimizer: Callable[[Path], None]
    # The learning-rate scheduler's state (PyTorch's scheduler, Keras' plateau callback); None: nothing to keep.
    save_schedule: Callable[[Path], None] | None = None
    load_schedule: Callable[[Path], None] | None = None

    def save(self, epoch: int, log) -> None:
        """After an epoch: model, optimizer state and the training log, so a killed run can continue."""
        if self.folder is not None:
            save_checkpoint(self.folder, epoch, self.export_weights(), self.save_optimizer, log.state(),
                            self.save_schedule)

    def resume(self, log) -> None:
        """Continue from the last complete checkpoint, if there is one: weights, optimizer state, the log so far."""
        saved = load_checkpoint(self.folder)
        if saved is not None:
            self.load_weights(saved.weights)
            self.load_optimizer(saved.optimizer)
            if self.load_schedule is not None:
                self.load_schedule(saved.schedule)
            log.restore(saved.log)


def load_checkpoint(folder: Path | None) -> Checkpoint | None:
    """The last complete checkpoint, or None when there is none yet. A damaged latest.json (a disk that filled up,
    a hand edit) falls back to the newest epoch folder that was completed: its log.json is written last."""
    if folder is None or not (Path(folder) / LATEST).is_file():
        return None
    try:
        latest = json.loads((Path(folder) / LATEST).read_text())
        epoch, target = int(latest["epoch"]), Path(folder) / latest["folder"]
    except (ValueError, KeyError, TypeError):
        complete = sorted((int(found.name.split("-")[1]), found) for found in Path(folder).glob("epoch-*")
                          if found.name.split("-")[1].isdigit() and (found / "log.json").is_file())
        if not complete:
            raise DataError(Path(folder) / LATEST, "damaged, and no complete checkpoint beside it: start the run "
                                                   "again with --overwrite") from None
        epoch, target = complete[-1]
    return Checkpoint(epoch, load_weights_file(target / "model.safetensors"), target / OPTIMIZER, target / SCHEDULE,
                      json.loads((target / "log.json").read_text()))
