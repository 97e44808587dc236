"""What --diagnose records of one side, in its worker process: the first K training steps from the canonical
initial weights, in float32 and then in float64, each step's layer outputs, loss, gradients, weights and optimizer
state saved as <out>/<side>/step<k>.npz (the side's own diagnose.py records them)."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np

from harness.environment import side_variables
from harness.jobs import spec_of
from harness.registry import task_of
from shared.atomic import atomic_path, write_json
from shared.data.batches import LabelledImages, batch_indices
from shared.execution import default_execution
from shared.tasks import TaskSpec

# Each side runs the K steps twice: in float32, as it trains, and in float64 from the same weights and batches. A
# float32 difference beyond the table's tolerance is rounding when the float64 twins agree (TOLERANCES "float64"):
# rounding there is 5e8 times smaller, so only a different computation survives it. Two nets whose sums cancel
# (a BatchNorm's gradients) or whose ReLU and max-pool inputs sit within rounding of a kink or tie part in float32
# for that reason alone; each side's own float32 error, against its float64 run, shows how large that rounding is.
PRECISIONS = {"float32": "", "float64": ".f64"}  # the step files' suffixes

def first_batches(n: int, spec: TaskSpec, steps: int) -> list[tuple[int, np.ndarray]]:
    """The first `steps` training batches as (epoch, indices), in the shared order of the training loops (epochs
    count from 1); past the end of an epoch they go on into the next one."""
    batches: list[tuple[int, np.ndarray]] = []
    epoch = 1
    while len(batches) < steps:
        batches += [(epoch, indices) for indices in batch_indices(n, spec.batch_size, spec.seed, epoch)]
        epoch += 1
    return batches[:steps]


def batch_arrays(dataset, epoch: int, indices: np.ndarray, precision: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """One batch as canonical numpy in the given float precision: in-memory digits and their labels, or the photos
    and masks (N, H, W, 1) of a TrainImageDataset, augmented as that epoch augments them."""
    if isinstance(dataset, LabelledImages):
        return dataset.images[indices].astype(precision), dataset.labels[indices]
    pairs = [dataset.get(int(index), epoch) for index in indices]
    return (np.stack([photo for photo, _ in pairs]).astype(precision),
            np.stack([mask for _, mask in pairs])[..., None].astype(precision))


def save_step(path: Path, recorded: dict[str, dict[str, np.ndarray]]) -> None:
    """One step's arrays as "<quantity>:<name>" entries of an .npz, in the order recorded."""
    arrays = {f"{quantity}:{name}": np.asarray(value) for quantity, values in recorded.items()
              for name, value in values.items()}
    with atomic_path(path, suffix=".npz") as temporary:
        np.savez(temporary, **arrays)


def diagnose_side(side: str, job: dict) -> dict:
    """The first job["steps"] training steps of one side from the canonical initial weights, in float32 and then
    again in float64: each step's layer outputs (recorded during the step's own forward pass), loss, gradients
    (those the update applies), weights and optimizer state after the update, saved as <out>/<side>/step<k>.npz
    (float32) and step<k>.f64.npz; a summary in diagnose.json."""
    spec = spec_of(job)
    task = task_of(spec)
    surface = task.surface(side, spec)
    out = Path(job["out"]) / side
    out.mkdir(parents=True, exist_ok=True)
    surface.runtime.configure(job["threads"], spec.seed)
    execution = surface.runtime.configure_execution(default_execution(side, device=job.get("device", "cpu")))
    trained, recorder = surface.task, surface.module("diagnose")
    dataset, description = task.train_set(spec, job["data"])
    batches = first_batches(len(dataset), spec, job["steps"])
    summary = {"side": side, "steps": len(batches), "batch_sizes": [len(indices) for _, indices in batches],
               "train_set": description, "execution": execution.to_dict(), "threads": surface.runtime.threads(),
               "versions": surface.runtime.versions(), **side_variables()}
    initial = task.initial_weights(spec)
    for precision, suffix in PRECISIONS.items():
        with recorder.float64() if precision == "float64" else nullcontext():
            losses, summary["optimizer"] = record_steps(trained, recorder, spec, initial, dataset, batches,
                                                        precision, execution, out, suffix)
        summary["losses" if precision == "float32" else "losses_float64"] = losses
    write_json(out / "diagnose.json", summary)
    return summary


def record_steps(trained, recorder, spec: TaskSpec, initial: dict, dataset, batches: list, precision: str, execution,
                 out: Path, suffix: str) -> tuple[list[float], str]:
    """The steps in one precision, from a model and optimizer built in it; each step's numbers to its own file."""
    model = trained.build(spec)
    trained.load_weights(model, initial)
    optimizer = trained.make_optimizer(model, spec)
    if precision == "float64":  # the float32 values of lr and momentum, as both sides' float32 runs use them
        optimizer = recorder.float32_hyperparameters(optimizer)
    losses = []
    for step, (epoch, indices) in enumerate(batches):
        images, targets = batch_arrays(dataset, epoch, indices, precision)
        with recorder.recording(model) as outputs:
            loss, gradients = recorder.train_step(model, optimizer, trained.loss,
                                                  *trained.to_tensors(images, targets, execution))
        save_step(out / f"step{step}{suffix}.npz", {
            "output": outputs, "loss": {"loss": np.float64(loss)}, "gradient": gradients,
            "weight": trained.export_weights(model), "optimizer_state": recorder.optimizer_state(model, optimizer)})
        losses.append(loss)
    return losses, type(optimizer).__name__


