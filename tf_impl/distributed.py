"""Data-parallel U-Net training in TensorFlow: MirroredStrategy (several GPUs, one process) or
MultiWorkerMirroredStrategy (one process per TF_CONFIG worker), each replica taking an equal share of the same
global batch; twin of torch_impl/distributed.py.

    python -m tf_impl.distributed JOB.json     # once per worker, each with its own TF_CONFIG
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from shared import distributed
from shared.history import TrainingLog
from shared.init import init_weights
from shared.weights import Weights, unet_layout
from tf_impl import unet
from tf_impl.classifier import bce_dice_loss, dice_score, make_optimizer
from tf_impl.weights import checkpoint, export_weights, load_weights, resume


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among `world` processes, and the strategy its replicas run under."""

    rank: int
    world: int
    strategy: tf.distribute.Strategy


def setup(device: str = "cpu") -> Context:
    """The strategy, created before any other TensorFlow op (MultiWorkerMirroredStrategy reconfigures the
    runtime): one worker per process from TF_CONFIG; else the GPUs of this machine; else no distribution."""
    if distributed.tf_config() is not None:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif device == "cuda" and len(tf.config.list_physical_devices("GPU")) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()  # the default strategy: one replica, plain TensorFlow
    return Context(distributed.rank(), distributed.world_size(), strategy)


def teardown(context: Context) -> None:
    """Nothing to close: the workers' collectives end with their processes."""


def sync_batch_norm(model: keras.Model) -> keras.Model:
    """Every BatchNorm normalises with the statistics of the global batch (an all-reduce across replicas)."""
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, unet.BatchNorm):
            layer.synchronized = True
    return model


def replicate(context: Context, spec, canonical: Weights) -> tuple[keras.Model, keras.optimizers.Optimizer]:
    """The U-Net and its optimizer created under strategy.scope(), so their variables are mirrored on every
    replica; the canonical weights are loaded into all copies."""
    with context.strategy.scope():
        model = sync_batch_norm(unet.build(spec))
        load_weights(model, canonical)
        optimizer = make_optimizer(model, spec)
        optimizer.build(model.trainable_variables)  # its slots mirrored too, and not created inside the trace
    return model, optimizer


def unwrap(model: keras.Model) -> keras.Model:
    """The U-Net itself: Keras needs no wrapper, the strategy mirrors the model's variables."""
    return model


def local_batch(context: Context, indices: np.ndarray,
                load: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
                ) -> tuple[tf.distribute.DistributedValues, tf.distribute.DistributedValues]:
    """Each replica's equal share of a global batch of sample indices, by its place in the sync group, loaded
    (images NHWC, masks NHW, numpy) as tensors: each worker reads and augments only its own replicas' samples."""
    distributed.check_divisible(len(indices), context.strategy.num_replicas_in_sync)

    def replica_share(value_context: tf.distribute.experimental.ValueContext):
        images, masks = load(distributed.shard(indices, value_context.replica_id_in_sync_group,
                                               value_context.num_replicas_in_sync))
        return tf.constant(images), tf.constant(masks[..., None])  # (n, H, W, 3), (n, H, W, 1)

    return context.strategy.experimental_distribute_values_from_function(replica_share)


class _ReplicaPipelines:
    """Per epoch, the strategy's input pipelines (one per worker): tf.data yields the share of each global batch
    of every replica this worker holds, in the shared order, decoded and augmented by a parallel map."""

    def __init__(self, strategy: tf.distribute.Strategy, dataset, spec):
        self.strategy, self.dataset, self.spec = strategy, dataset, spec
        image, mask = dataset.get(0, 0)
        self.image_shape, self.mask_shape = (None, *image.shape), (None, *mask.shape, 1)

    def __len__(self) -> int:
        return len(distributed.global_batches(len(self.dataset), self.spec.batch_size, self.spec.seed, 1,
                                              self.strategy.num_replicas_in_sync))

    def batches(self, epoch: int):
        return iter(self.strategy.distribute_datasets_from_function(lambda context: self.pipeline(context, epoch)))

    def pipeline(self, input_context: tf.distribute.InputContext, epoch: int) -> tf.data.Dataset:
        replicas = input_context.num_replicas_in_sync
        local = replicas // input_context.num_input_pipelines  # replicas fed by this pipeline, in turn
        first = input_context.input_pipeline_id * local
        shares = [distributed.shard(indices, first + j, replicas)
                  for indices in distributed.global_batches(len(self.dataset), self.spec.batch_size, self.spec.seed,
                                                            epoch, replicas)
                  for j in range(local)]

        def load(position):
            images, masks = distributed.load_samples(self.dataset, shares[int(position)], epoch)
            return images, masks[..., None]  # (n, H, W, 3), (n, H, W, 1)

        def load_op(position):
            images, masks = tf.numpy_function(load, [position], [tf.float32, tf.float32])
            return tf.ensure_shape(images, self.image_shape), tf.ensure_shape(masks, self.mask_shape)

        parallel = {"num_parallel_calls": self.spec.workers, "deterministic": True} if self.spec.workers else {}
        return tf.data.Dataset.range(len(shares)).map(load_op, **parallel).prefetch(tf.data.AUTOTUNE)


def make_loader(context: Context, dataset, spec) -> _ReplicaPipelines:
    """This worker's batches of a shared training set: `batches(epoch)` yields distributed values, the share of
    each global batch of every replica, which strategy.run hands to the replicas."""
    return _ReplicaPipelines(context.strategy, dataset, spec)


def make_train_step(context: Context, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                    threshold: float) -> Callable[[object], tuple[float, float]]:
    """One tf.function: every replica runs forward, loss, gradients; the optimizer sums the replicas' gradients
    (an all-reduce) before it applies them, so each replica's mean loss is divided by the number of replicas:
    the sum is then the gradient of the global batch's mean loss. Returns the global batch's loss and Dice:
    equal shards, so the mean of the replicas' means."""
    strategy = context.strategy

    def replica_step(images: tf.Tensor, masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = bce_dice_loss(logits, masks)
            scaled = loss / strategy.num_replicas_in_sync
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, dice_score(logits, masks, threshold)

    @tf.function
    def train_step(batch) -> tuple[tf.Tensor, tf.Tensor]:
        loss, dice = strategy.run(replica_step, args=batch)
        return (strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.MEAN, dice, axis=None))

    def run(batch) -> tuple[float, float]:
        loss, dice = train_step(batch)
        return float(loss), float(dice)

    return run


def export(model: keras.Model) -> Weights:
    """The canonical weights of this process' replica (the same on every replica)."""
    return export_weights(unwrap(model))


def validate(context: Context, model: keras.Model, valid_set, batch_size: int, threshold: float) -> dict:
    """Loss and thresholded Dice over the validation set, per image, by one worker alone: the model called
    outside strategy.run, BatchNorm in inference mode, so no collective is involved."""
    losses, dices, counts = [], [], []
    for start in range(0, len(valid_set), batch_size):
        indices = np.arange(start, min(start + batch_size, len(valid_set)))
        images, masks = distributed.load_samples(valid_set, indices)
        logits = unwrap(model)(tf.constant(images), training=False)  # (n, H, W, 1)
        masks = tf.constant(masks[..., None])
        losses.append(float(bce_dice_loss(logits, masks)))
        dices.append(float(dice_score(logits, masks, threshold)))
        counts.append(len(indices))
    return {"val_loss": float(np.average(losses, weights=counts)), "val_dice": float(np.average(dices, weights=counts))}


def run_step(context: Context, spec, canonical: Weights, images: np.ndarray, masks: np.ndarray,
             output: str | os.PathLike) -> Path | None:
    """One step on the global batch from the canonical weights; rank 0 writes the updated weights (None elsewhere)."""
    model, optimizer = replicate(context, spec, canonical)
    train_step = make_train_step(context, model, optimizer, spec.threshold)
    train_step(local_batch(context, np.arange(len(images)), lambda share: (images[share], masks[share])))
    return distributed.save_on_chief(export(model), Path(output) / "weights.safetensors", context.rank)


def train(context: Context, spec, data_dir: str | os.PathLike, output: str | os.PathLike,
          canonical: Weights | None = None,
          callbacks: Callable[[keras.Model], list] | None = None) -> list[dict]:
    """spec.epochs epochs over the shared batch order, each replica taking its share of every global batch of
    spec.batch_size; rank 0 alone validates, runs the callbacks (made by `callbacks(model)`, the unwrapped
    model: they need it), writes a checkpoint after every epoch (a restart continues from it) and, at the end,
    the weights and the history."""
    train_set, valid_set = distributed.carvana_sets(spec, data_dir)
    canonical = init_weights(unet_layout(spec), spec.seed) if canonical is None else canonical
    model, optimizer = replicate(context, spec, canonical)
    train_step = make_train_step(context, model, optimizer, spec.threshold)
    loader = make_loader(context, train_set, spec)
    chief = distributed.is_chief(context.rank)
    checkpoint_dir = Path(output) / "checkpoint"
    log = TrainingLog("TensorFlow", spec.epochs, len(loader), callbacks(unwrap(model)) if chief and callbacks else None,
                      verbose=chief, seed=spec.seed)
    resume(checkpoint_dir, unwrap(model), optimizer, log)  # every worker, from the same files
    for epoch in range(log.epochs_done + 1, spec.epochs + 1):
        log.begin_epoch(epoch)
        for batch_index, (images, masks) in enumerate(loader.batches(epoch)):
            size = sum(int(local.shape[0]) for local in context.strategy.experimental_local_results(images))
            size *= context.world  # the global batch (one replica's share per worker here, several per GPU host)
            with log.timer.step(size):
                loss, dice = train_step((images, masks))
            log.end_batch(epoch, batch_index, size, loss=loss, dice=dice)
        log.end_epoch(epoch, validate(context, model, valid_set, spec.batch_size, spec.threshold)
                      if chief and valid_set else None)
        if chief:
            checkpoint(checkpoint_dir, epoch, unwrap(model), optimizer, log)
    run = log.result()
    if chief:
        distributed.save_training(output, export(model), run, context.world)
    return run["history"]


def _set_threads(threads: int) -> None:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def main(argv: list[str] | None = None) -> int:
    """Entry point of one process: `python -m tf_impl.distributed JOB.json`."""
    return distributed.run_job_file(sys.argv[1:] if argv is None else argv, sys.modules[__name__], _set_threads,
                                    "python -m tf_impl.distributed JOB.json")


if __name__ == "__main__":
    sys.exit(main())
