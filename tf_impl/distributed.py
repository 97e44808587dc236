"""Data-parallel U-Net training in TensorFlow: (MultiWorker)MirroredStrategy; twin of torch_impl/distributed.py."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from keras_models import unet, weights
from keras_models.weights import export_weights, load_weights
from shared import data_parallel, distributed
from shared.data.carvana import TrainImageDataset
from shared.tasks import UNetSpec
from shared.weights import Weights
from tf_impl.classifier import bce_dice_loss, dice_score, make_optimizer
from tf_impl.data import _own_threads


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among `world` processes, and the strategy its replicas run under."""

    rank: int
    world: int
    strategy: tf.distribute.Strategy

    @property
    def replicas(self) -> int:
        """The shares of a global batch: one per replica in sync (a worker with several GPUs holds several)."""
        return self.strategy.num_replicas_in_sync


FRAMEWORK = "TensorFlow"  # this side's name in shared.data_parallel's log lines
checkpointer = weights.checkpointer  # how shared.data_parallel saves and resumes a run of this side


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


class _SyncBatchNorm(unet.BatchNorm):
    """A training batch split across the replicas of a tf.distribute strategy normalised with the statistics of
    the whole global batch, as one process would compute them: every replica all-reduces its per-channel sum,
    sum of squares and count. Running statistics and the rest are keras_models.unet.BatchNorm's."""

    def _batch_moments(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        replica = tf.distribute.get_replica_context()  # None in a cross-replica context
        if replica is None or replica.num_replicas_in_sync == 1:
            return super()._batch_moments(x)
        # One collective for all three; its gradient is the all-reduce of the replicas' gradients.
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)
        channels = x.shape[-1]
        local = tf.concat([tf.reduce_sum(x, axis=[0, 1, 2]), tf.reduce_sum(tf.square(x), axis=[0, 1, 2]), [n]], 0)
        total = replica.all_reduce(tf.distribute.ReduceOp.SUM, local)
        count = total[-1]
        mean = total[:channels] / count
        variance = tf.maximum(total[channels:2 * channels] / count - tf.square(mean), 0.0)  # E[x^2] - E[x]^2
        return mean, variance, count


def sync_batch_norm(model: keras.Model) -> keras.Model:
    """Every BatchNorm normalises with the statistics of the global batch (an all-reduce across replicas).
    Keras locks a built layer's sub-layers, so each BatchNorm changes class in place, keeping its variables
    (PyTorch's twin swaps in new modules and copies their state)."""
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, unet.BatchNorm):
            layer.__class__ = _SyncBatchNorm
    return model


def replicate(context: Context, spec: UNetSpec, canonical: Weights) -> tuple[keras.Model, keras.optimizers.Optimizer]:
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
    distributed.check_divisible(len(indices), context.replicas)

    def replica_share(value_context: tf.distribute.experimental.ValueContext):
        images, masks = load(distributed.shard(indices, value_context.replica_id_in_sync_group,
                                               value_context.num_replicas_in_sync))
        return tf.constant(images), tf.constant(masks[..., None])  # (n, H, W, 3), (n, H, W, 1)

    return context.strategy.experimental_distribute_values_from_function(replica_share)


class _ReplicaPipelines:
    """The strategy's input pipelines (one per worker): tf.data yields the share of each global batch of every
    replica this worker holds, decoded and augmented by a parallel map."""

    def __init__(self, strategy: tf.distribute.Strategy, dataset: TrainImageDataset, workers: int):
        self.strategy, self.dataset, self.workers = strategy, dataset, workers
        image, mask = dataset.get(0, 0)
        self.image_shape, self.mask_shape = (None, *image.shape), (None, *mask.shape, 1)

    def batches(self, epoch: int, batches: list[np.ndarray]) -> Iterator:
        # A generator: the pipelines are made when the first batch is asked for, inside the epoch's timing.
        yield from self.strategy.distribute_datasets_from_function(
            lambda context: self.pipeline(context, epoch, batches))

    def pipeline(self, input_context: tf.distribute.InputContext, epoch: int,
                 batches: list[np.ndarray]) -> tf.data.Dataset:
        replicas = input_context.num_replicas_in_sync
        local = replicas // input_context.num_input_pipelines  # replicas fed by this pipeline, in turn
        first = input_context.input_pipeline_id * local
        shares = [distributed.shard(indices, first + j, replicas) for indices in batches for j in range(local)]

        def load(position):
            images, masks = data_parallel.load_samples(self.dataset, shares[int(position)], epoch)
            return images, masks[..., None]  # (n, H, W, 3), (n, H, W, 1)

        def load_op(position):
            images, masks = tf.numpy_function(load, [position], [tf.float32, tf.float32])
            return tf.ensure_shape(images, self.image_shape), tf.ensure_shape(masks, self.mask_shape)

        parallel = {"num_parallel_calls": self.workers, "deterministic": True} if self.workers else {}
        return _own_threads(tf.data.Dataset.range(len(shares)).map(load_op, **parallel).prefetch(tf.data.AUTOTUNE),
                            self.workers)


def make_loader(context: Context, dataset: TrainImageDataset, spec: UNetSpec) -> _ReplicaPipelines:
    """This worker's pipelines over a shared training set, kept across epochs."""
    return _ReplicaPipelines(context.strategy, dataset, spec.workers)


def epoch_batches(context: Context, model: keras.Model, loader: _ReplicaPipelines, epoch: int,
                  batches: list[np.ndarray]) -> Iterator:
    """Distributed values, the share of each of the epoch's global batches of every replica this worker holds,
    which strategy.run hands to the replicas."""
    return loader.batches(epoch, batches)


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


def evaluate(context: Context, model: keras.Model, images: np.ndarray, masks: np.ndarray,
             threshold: float) -> tuple[float, float]:
    """Loss and thresholded Dice of one validation batch, by one worker alone: the model called outside
    strategy.run, BatchNorm in inference mode, so no collective is involved."""
    logits = unwrap(model)(tf.constant(images), training=False)  # (n, H, W, 1)
    targets = tf.constant(masks[..., None])
    return float(bce_dice_loss(logits, targets)), float(dice_score(logits, targets, threshold))


def train(context: Context, spec: UNetSpec, data_dir: str | os.PathLike, output: str | os.PathLike,
          canonical: Weights | None = None, callbacks: Callable[[keras.Model], list] | None = None) -> list[dict]:
    """shared.data_parallel.train with the strategy's pieces above: each replica trains its share of every batch."""
    return data_parallel.train(sys.modules[__name__], context, spec, data_dir, output, canonical, callbacks)


def _set_threads(threads: int) -> None:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def main(argv: list[str] | None = None) -> int:
    """Entry point of one process: `python -m tf_impl.distributed JOB.json`, once per worker (its own TF_CONFIG)."""
    return data_parallel.run_job_file(sys.argv[1:] if argv is None else argv, sys.modules[__name__], _set_threads,
                                      "python -m tf_impl.distributed JOB.json")


if __name__ == "__main__":
    sys.exit(main())
