"""The data-parallel training loop, once for both sides: epochs, global batches, the chief's validation and writes."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shared import distributed
from shared.atomic import write_json
from shared.checkpoint import Checkpointer
from shared.data import carvana, folders
from shared.errors import UserError
from shared.history import TrainingLog
from shared.init import init_weights
from shared.metrics import BatchAverage
from shared.tasks import UNetSpec, make_spec
from shared.weights import Weights, load_weights_file, save_weights, unet_layout

Loader = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # sample indices -> images NHWC, masks NHW


class Context(Protocol):
    """Where a process stands, as each side's setup() makes it."""

    @property
    def rank(self) -> int: ...

    @property
    def world(self) -> int:
        """Processes taking part."""

    @property
    def replicas(self) -> int:
        """Equal shares a global batch splits into: one per rank (PyTorch), per replica in sync (TensorFlow)."""


class Engine(Protocol):
    """A framework's data-parallel engine, what the loop cannot do without it: the module tf_impl.distributed or
    torch_impl.distributed itself. Models, optimizers and batches are the framework's own objects."""

    FRAMEWORK: str  # its name in the log lines

    def setup(self, device: str) -> Any:
        """This process joins the others (a process group, a strategy): its Context."""

    def teardown(self, context: Any) -> None: ...

    def replicate(self, context: Any, spec: UNetSpec, canonical: Weights) -> tuple[Any, Any]:
        """This process' replica of the U-Net with the canonical weights, and its optimizer."""

    def make_train_step(self, context: Any, model: Any, optimizer: Any,
                        threshold: float) -> Callable[[Any], tuple[float, float]]:
        """One synchronised step on this process' shares; returns the global batch's loss and Dice."""

    def local_batch(self, context: Any, indices: np.ndarray, load: Loader) -> Any:
        """This process' shares of a global batch of sample indices, as the step takes them."""

    def make_loader(self, context: Any, dataset: carvana.TrainImageDataset, spec: UNetSpec) -> Any:
        """The pipeline that reads and augments this process' shares of a training set, kept across epochs."""

    def epoch_batches(self, context: Any, model: Any, loader: Any, epoch: int,
                      batches: list[np.ndarray]) -> Iterable[Any]:
        """This process' shares of the epoch's global batches (sample indices), as the step takes them."""

    def evaluate(self, context: Any, model: Any, images: np.ndarray, masks: np.ndarray,
                 threshold: float) -> tuple[float, float]:
        """Loss and thresholded Dice of one validation batch, by this process alone (no collective)."""

    def unwrap(self, model: Any) -> Any:
        """The U-Net itself, without a data-parallel wrapper: what callbacks and checkpoints take."""

    def export(self, model: Any) -> Weights: ...

    def checkpointer(self, checkpoint_dir: Path, model: Any, optimizer: Any) -> Checkpointer: ...


def carvana_sets(spec: UNetSpec, data_dir: str | os.PathLike) -> tuple[carvana.TrainImageDataset,
                                                                       carvana.TrainImageDataset | None]:
    """The training set (augmented, keyed by (epoch, index)) and the validation set (or None) of harness.run_unet:
    Carvana's, or your own folder set's."""
    if folders.find_folder_set(data_dir) is not None:
        _, train_pairs, valid_pairs = folders.folder_split(spec, data_dir)
        return (folders.folder_dataset(spec, train_pairs, spec.augment),
                folders.folder_dataset(spec, valid_pairs) if valid_pairs else None)
    layout = carvana.resolve_carvana(data_dir, include_test=False)
    train_samples, valid_samples = carvana.get_train_files(layout, spec.sample_size, spec.validation_size, spec.seed)
    pad = spec.pad  # 0 for the padded U-Net
    train_set = carvana.TrainImageDataset(train_samples, spec.output_shape, augment=spec.augment, seed=spec.seed,
                                          pad=pad)
    valid_set = (carvana.TrainImageDataset(valid_samples, spec.output_shape, augment=False, seed=spec.seed, pad=pad)
                 if valid_samples else None)
    return train_set, valid_set


def load_samples(dataset: carvana.TrainImageDataset, indices: np.ndarray,
                 epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stacked samples of a shared dataset: images (n, H, W, C), masks (n, H_out, W_out)."""
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
    if not distributed.is_chief(process_rank):
        return None
    return save_weights(weights, path)


def run_step(engine: Engine, context: Context, spec: UNetSpec, canonical: Weights, images: np.ndarray,
             masks: np.ndarray, output: str | os.PathLike) -> Path | None:
    """One step on the global batch from the canonical weights; rank 0 writes the updated weights (None elsewhere)."""
    model, optimizer = engine.replicate(context, spec, canonical)
    train_step = engine.make_train_step(context, model, optimizer, spec.threshold)
    train_step(engine.local_batch(context, np.arange(len(images)), lambda share: (images[share], masks[share])))
    return save_on_chief(engine.export(model), Path(output) / "weights.safetensors", context.rank)


def validate(engine: Engine, context: Context, model: Any, valid_set: carvana.TrainImageDataset, batch_size: int,
             threshold: float) -> dict[str, float]:
    """Loss and thresholded Dice over the validation set, per image (a smaller last batch weighs by its size)."""
    average = BatchAverage()
    for start in range(0, len(valid_set), batch_size):
        indices = np.arange(start, min(start + batch_size, len(valid_set)))
        images, masks = load_samples(valid_set, indices)
        loss, dice = engine.evaluate(context, model, images, masks, threshold)
        average.add(len(indices), val_loss=loss, val_dice=dice)
    return average.result()


def train(engine: Engine, context: Context, spec: UNetSpec, data_dir: str | os.PathLike, output: str | os.PathLike,
          canonical: Weights | None = None, callbacks: Callable[[Any], list] | None = None) -> list[dict]:
    """spec.epochs epochs over the shared batch order, each process taking its shares of every global batch of
    spec.batch_size; rank 0 alone validates, runs the callbacks (made by `callbacks(model)`, the unwrapped
    model: they need it), writes a checkpoint after every epoch (a restart continues from it) and, at the end,
    the weights and the history."""
    train_set, valid_set = carvana_sets(spec, data_dir)
    canonical = init_weights(unet_layout(spec), spec.seed) if canonical is None else canonical
    model, optimizer = engine.replicate(context, spec, canonical)
    train_step = engine.make_train_step(context, model, optimizer, spec.threshold)
    loader = engine.make_loader(context, train_set, spec)
    chief = distributed.is_chief(context.rank)

    def epoch_order(epoch: int) -> list[np.ndarray]:
        return distributed.global_batches(len(train_set), spec.batch_size, spec.seed, epoch, context.replicas)

    log = TrainingLog(engine.FRAMEWORK, spec.epochs, len(epoch_order(1)),
                      callbacks(engine.unwrap(model)) if chief and callbacks else None, verbose=chief, seed=spec.seed)
    checkpoints = engine.checkpointer(Path(output) / "checkpoint", engine.unwrap(model), optimizer)
    checkpoints.resume(log)  # every process, from the same files
    for epoch in range(log.epochs_done + 1, spec.epochs + 1):
        batches = epoch_order(epoch)
        # Asked for before the epoch begins, read inside it: each side's pipeline starts on its first batch.
        shares = engine.epoch_batches(context, model, loader, epoch, batches)
        log.begin_epoch(epoch)
        for batch_index, share in enumerate(shares):
            size = len(batches[batch_index])  # the global batch: every process' shares
            with log.timer.step(size):
                loss, dice = train_step(share)
            log.end_batch(epoch, batch_index, size, loss=loss, dice=dice)
        log.end_epoch(epoch, validate(engine, context, model, valid_set, spec.batch_size, spec.threshold)
                      if chief and valid_set else None)
        if chief:
            checkpoints.save(epoch, log)
    run = log.result()
    if chief:
        save_training(output, engine.export(model), run, context.world)
    return run["history"]


def run_job_file(argv: Sequence[str], engine: Engine, set_threads: Callable[[int], None], usage: str) -> int:
    """One process of a distributed job, on either side (`engine` is tf_impl.distributed or torch_impl.distributed):
    read the job, join the others, run the step or the training, leave; a bad job ends in one line, exit 2."""
    try:
        if len(argv) != 1:
            raise UserError(f"usage: {usage}")
        job = distributed.read_job(argv[0])
        set_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        context = engine.setup(job.device)
        spec = make_spec("unet", **job.spec)
        canonical = load_weights_file(job.weights) if job.weights else init_weights(unet_layout(spec), spec.seed)
        try:
            if job.kind == "step":
                images, masks = distributed.load_batch(job.batch)
                written = run_step(engine, context, spec, canonical, images, masks, job.output)
            else:
                train(engine, context, spec, job.data_dir, job.output, canonical)
                written = job.output if context.rank == 0 else None
            print(f"rank {context.rank}/{context.world}: {'wrote ' + str(written) if written else 'wrote nothing'}")
        finally:
            engine.teardown(context)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_status
    return 0
