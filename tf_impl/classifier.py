"""CarvanaClassifier: trains, validates and predicts with a U-Net in TensorFlow; the train step is one
tf.function (GradientTape, apply_gradients) traced once and replayed; twin of torch_impl/classifier.py. At the end,
what TensorFlow alone needs: the U-Net's BatchNorms on TensorFlow's fused kernels (build)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from keras_models import unet
from keras_models.optimizers import make_optimizer, make_schedule
from keras_models.weights import canonical_gradients, checkpointer
from shared.atomic import write_json
from shared.data.carvana import TrainImageDataset
from shared.execution import Execution, default_execution
from shared.history import TrainingLog
from shared.loaders import Loaders
from shared.metrics import BatchAverage, sigmoid
from shared.tasks import UNetSpec
from tf_impl import data
from tf_impl.data import CarvanaLoader, to_tensor_images
from tf_impl.runtime import compiled, traces


def bce_dice_loss(logits: tf.Tensor, masks: tf.Tensor, smooth: float = 1.0) -> tf.Tensor:
    """Binary cross-entropy from logits + (1 - soft Dice), the Dice taken per image and averaged."""
    with tf.name_scope("loss"):  # names the ops for --profile (tf_impl/profile.py); free in a graph
        bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=masks, logits=logits))
        batch = tf.shape(logits)[0]
        probabilities, truth = tf.reshape(tf.sigmoid(logits), (batch, -1)), tf.reshape(masks, (batch, -1))
        soft_dice = ((2 * tf.reduce_sum(probabilities * truth, 1) + smooth)
                     / (tf.reduce_sum(probabilities, 1) + tf.reduce_sum(truth, 1) + smooth))
        return bce + (1 - tf.reduce_mean(soft_dice))


loss = bce_dice_loss  # the task surface's name for this task's loss


def dice_score(logits: tf.Tensor, masks: tf.Tensor, threshold: float) -> tf.Tensor:
    """Mean Dice of the thresholded predictions; an empty prediction of an empty mask scores 1."""
    with tf.name_scope("loss"):  # the batch's Dice is profiled with the loss
        batch = tf.shape(logits)[0]
        predicted = tf.reshape(tf.cast(tf.sigmoid(logits) > threshold, tf.float32), (batch, -1))
        truth = tf.reshape(masks, (batch, -1))
        total = tf.reduce_sum(predicted, 1) + tf.reduce_sum(truth, 1)
        return tf.reduce_mean(tf.where(total > 0, 2 * tf.reduce_sum(predicted * truth, 1) / tf.maximum(total, 1.0),
                                       tf.ones_like(total)))



def forward(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Logits (N, H, W, 1) for canonical NHWC images, BatchNorm in inference mode."""
    return model(to_tensor_images(images), training=False).numpy()


def gradients(model: keras.Model, images: np.ndarray, targets: np.ndarray) -> tuple[float, dict]:
    """Loss and d(loss)/d(parameter) by canonical name for one batch, BatchNorm in training mode."""
    with tf.GradientTape() as tape:
        batch_loss = bce_dice_loss(model(to_tensor_images(images), training=True), to_tensor_images(targets))
    grads = tape.gradient(batch_loss, model.trainable_variables)
    by_variable = {id(variable): grad.numpy() for variable, grad in zip(model.trainable_variables, grads)}
    return float(batch_loss), canonical_gradients(model, by_variable)


def to_tensors(images: np.ndarray, targets: np.ndarray, execution: Execution) -> tuple[tf.Tensor, tf.Tensor]:
    """Canonical NHWC photos and masks are Keras' layout; TensorFlow places the tensors on its device."""
    return to_tensor_images(images), to_tensor_images(targets)


def make_loader(dataset: TrainImageDataset, batch_size: int, seed: int, shuffle: bool,
                workers: int = 0) -> CarvanaLoader:
    """Batches of (photos (N, H, W, 3), masks (N, H, W, 1)); `workers` parallel map calls decode and augment."""
    return data.make_image_loader(dataset, batch_size, seed, shuffle, workers)


def predict(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Mask probabilities (N, H_out, W_out) for canonical NHWC images."""
    return sigmoid(forward(model, images)[..., 0])


class LearningRate:
    """The learning rate of each step, driven from the training loop. Keras schedules count optimizer steps, so
    the optimizer carries its schedule and nothing is stepped; ReduceLROnPlateau, a Keras callback that sets the
    optimizer's learning rate, is called after each epoch past the warm-up (and the warm-up, which it cannot
    combine with a schedule object, sets the rate before each of its steps)."""

    def __init__(self, optimizer: keras.optimizers.Optimizer, spec: UNetSpec, steps_per_epoch: int, epochs: int,
                 monitor: str = "val_loss"):
        self.optimizer, self.spec = optimizer, spec
        schedule = make_schedule(optimizer, spec, steps_per_epoch, epochs)  # set on the optimizer, but plateau's
        self.warmup, self.plateau = None, None
        if spec.schedule == "plateau":
            self.warmup = schedule
            self.plateau = keras.callbacks.ReduceLROnPlateau(
                monitor, factor=spec.plateau_factor, patience=spec.plateau_patience, mode="min",
                min_delta=spec.plateau_min_delta, cooldown=spec.plateau_cooldown, min_lr=spec.plateau_min_lr)
            # Keras callbacks reach the optimizer as self.model.optimizer; outside model.fit the net has none.
            self.plateau.set_model(SimpleNamespace(optimizer=optimizer))
            self.plateau.on_train_begin()

    def begin_batch(self) -> float:
        """The learning rate the next step uses."""
        if self.warmup is not None and int(self.optimizer.iterations) <= self.warmup.steps:
            self.optimizer.learning_rate = float(self.warmup(self.optimizer.iterations))
        return float(self.optimizer.learning_rate)  # a schedule's value at the optimizer's iterations

    def end_batch(self) -> None:
        """Nothing: apply_gradients advanced optimizer.iterations, which the schedule reads."""

    def end_epoch(self, epoch: int, logs: dict) -> None:
        if self.plateau is not None and epoch > self.spec.warmup_epochs:
            self.plateau.on_epoch_end(epoch - 1, dict(logs))  # Keras numbers epochs from 0; it adds to the logs

    def save(self, path: Path) -> None:
        """The plateau callback's counters (a schedule's position is optimizer.iterations, saved with it)."""
        if self.plateau is not None:
            state = {key: getattr(self.plateau, key) for key in PLATEAU_STATE}
            write_json(path.with_suffix(".json"), {**state, "best": None if state["best"] is None
                                                   else float(state["best"])})

    def load(self, path: Path) -> None:
        if self.plateau is not None:
            for key, value in json.loads(path.with_suffix(".json").read_text()).items():
                setattr(self.plateau, key, value)


PLATEAU_STATE = ("best", "wait", "cooldown_counter")  # what keras.callbacks.ReduceLROnPlateau counts


class CarvanaClassifier:
    """The source text's trainer:
    `CarvanaClassifier(net, epochs).train(train_loader, valid_loader, epochs, callbacks)`."""

    def __init__(self, net: keras.Model, epochs: int, spec: UNetSpec, verbose: bool = True, checkpoint_dir=None,
                 execution: Execution | None = None, optimizer: keras.optimizers.Optimizer | None = None):
        # The precision is the model's dtype policy (tf_impl.runtime.configure_execution, before building it);
        # the device is TensorFlow's placement: a visible GPU is used.
        self.execution = (execution or default_execution("tf")).check("tf")
        self.net, self.epochs, self.spec = net, epochs, spec
        self.optimizer = optimizer or make_optimizer(net, spec)
        if self.execution.precision == "fp16":  # fp16 gradients underflow without loss scaling; bf16's do not
            self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(net.trainable_variables)
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir  # a checkpoint after every epoch; a restart continues from it
        self.batch_losses: list[float] = []
        self.batch_lrs: list[float] = []  # the learning rate of every step
        self.timing: dict = {}
        self._train_step = compiled(self.train_step_graph, self.execution)  # traced on its first call
        self._eval_step = compiled(self.eval_step_graph, self.execution)

    def logits(self, images: tf.Tensor, training: bool) -> tf.Tensor:
        """The net's output in float32; under a mixed policy the convolutions run in bf16/fp16."""
        return tf.cast(self.net(images, training=training), tf.float32)

    def train_step_graph(self, images: tf.Tensor, masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """What tf.function traces once: tape, loss, gradients, apply_gradients."""
        with tf.GradientTape() as tape:
            logits = self.logits(images, training=True)
            batch_loss = bce_dice_loss(logits, masks)
            scaled = self.optimizer.scale_loss(batch_loss)  # the loss itself unless fp16 scaling is on
        grads = tape.gradient(scaled, self.net.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.net.trainable_variables))
        return batch_loss, dice_score(logits, masks, self.spec.threshold)

    def eval_step_graph(self, images: tf.Tensor, masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = self.logits(images, training=False)
        return bce_dice_loss(logits, masks), dice_score(logits, masks, self.spec.threshold)

    def train_step(self, images: tf.Tensor, masks: tf.Tensor) -> tuple[float, float]:
        batch_loss, dice = self._train_step(images, masks)
        return float(batch_loss), float(dice)  # the host copies wait for the step to finish

    def validate(self, valid_loader) -> dict:
        """Loss and thresholded Dice over the validation set, averaged per image."""
        average = BatchAverage()
        for images, masks in valid_loader.batches(0):
            batch_loss, dice = self._eval_step(images, masks)
            average.add(int(images.shape[0]), val_loss=float(batch_loss), val_dice=float(dice))
        return average.result()

    def train(self, train_loader, valid_loader, epochs: int | None = None, callbacks=None) -> list[dict]:
        """Per epoch: the training batches, then the validation set; returns the per-epoch history."""
        epochs = epochs or self.epochs
        log = TrainingLog("TensorFlow", epochs, len(train_loader), callbacks, self.verbose, seed=self.spec.seed)
        learning_rate = LearningRate(self.optimizer, self.spec, len(train_loader), epochs,
                                     "val_loss" if valid_loader is not None else "loss")
        saved = replace(checkpointer(self.checkpoint_dir, self.net, self.optimizer), save_schedule=learning_rate.save,
                        load_schedule=learning_rate.load)
        saved.resume(log)
        for epoch in range(log.epochs_done + 1, epochs + 1):
            log.begin_epoch(epoch)
            for batch_index, (images, masks) in enumerate(train_loader.batches(epoch)):
                lr = learning_rate.begin_batch()
                with log.timer.step(int(images.shape[0])):
                    batch_loss, dice = self.train_step(images, masks)
                learning_rate.end_batch()
                log.end_batch(epoch, batch_index, int(images.shape[0]), lr, loss=batch_loss, dice=dice)
            logs = log.end_epoch(epoch, self.validate(valid_loader) if valid_loader is not None else None)
            learning_rate.end_epoch(epoch, logs)
            saved.save(epoch, log)
        run = log.result()
        self.batch_losses, self.batch_lrs, self.timing = run["batch_losses"], run["batch_lrs"], run["timing"]
        return run["history"]

    @property
    def traces(self) -> int:
        """How often the train step was traced into a graph (once, for every batch of every epoch)."""
        return traces(self._train_step)

    @property
    def graph(self) -> dict:
        """The size of what runs each step: the ops of the one traced graph (no graph is recorded per step)."""
        return {"graph_ops": self._train_step.graph_ops(), "autograd_nodes": None}


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, spec: UNetSpec,
                    execution: Execution | None = None) -> Callable[[Any, Any], float]:
    """One step of the trainer on a batch of tensors (the benchmark times it); returns the loss."""
    classifier = CarvanaClassifier(model, 1, spec, verbose=False, execution=execution, optimizer=optimizer)
    return lambda images, masks: classifier.train_step(images, masks)[0]


def train(model: keras.Model, spec: UNetSpec, loaders: Loaders, callbacks=None, checkpoint_dir=None,
          execution: Execution | None = None, verbose: bool = True) -> dict:
    """The source text's `CarvanaClassifier(net, epochs).train(train_loader, valid_loader, epochs, callbacks)`."""
    classifier = CarvanaClassifier(model, spec.epochs, spec, verbose, checkpoint_dir, execution)
    history = classifier.train(loaders.train, loaders.valid, spec.epochs, callbacks)
    return {"history": history, "batch_losses": classifier.batch_losses, "batch_lrs": classifier.batch_lrs,
            "timing": classifier.timing, "traces": classifier.traces, **classifier.graph}


def _variance(x: tf.Tensor, mean: tf.Tensor) -> tf.Tensor:
    """The nested mean of (x - mean)^2, the squared difference taken on rows of W*C values against the mean tiled W
    times: TensorFlow's binary kernels broadcast a vector along a short innermost axis (C, 8-128 channels) at about
    half the speed (docs/profile.md). The same values, the same precision."""
    width = x.shape[2] if x.shape[2] is not None else tf.shape(x)[2]
    squares = tf.math.squared_difference(tf.reshape(x, [-1, width * x.shape[3]]), tf.tile(mean, [width]))
    return unet.nested_mean(tf.reshape(squares, tf.shape(x)))


class FusedBatchNorm(unet.BatchNorm):
    """keras_models/unet.py's BatchNorm trained on TensorFlow's own kernels: the same nested-mean statistics (the
    fused kernel's own, one float32 sum, are 20x less precise), then FusedBatchNormV3 in inference mode normalises
    with them, and FusedBatchNormGradV3 in training mode is the whole backward: one kernel each way where the portable
    form runs a dozen elementwise ops (docs/profile.md). Float32 only, as the kernels; else the portable form."""

    def _normalize_batch(self, x, gamma, beta) -> tuple:
        if x.dtype != tf.float32:
            return super()._normalize_batch(x, gamma, beta)
        epsilon, scope = self.epsilon, self.name

        @tf.custom_gradient
        def normalize(x, gamma, beta, mean, variance):
            y = tf.raw_ops.FusedBatchNormV3(x=x, scale=gamma, offset=beta, mean=mean, variance=variance,
                                            epsilon=epsilon, data_format="NHWC", is_training=False)[0]

            def gradient(dy):
                # PyTorch's closed form, dx = scale (dy - mean(dy) - x_hat mean(dy x_hat)): it holds the statistics'
                # part of the gradient, so none flows back into them. The CPU kernel reads reserve_space_2 as the
                # variance (cuDNN's as its inverse square root: fused_batch_norm keeps a GPU off this path).
                with tf.name_scope(scope):  # the backward runs outside the layer: named after it, for --profile
                    dx, d_gamma, d_beta = tf.raw_ops.FusedBatchNormGradV3(
                        y_backprop=dy, x=x, scale=gamma, reserve_space_1=mean, reserve_space_2=variance,
                        reserve_space_3=tf.zeros([0]), epsilon=epsilon, data_format="NHWC", is_training=True)[:3]
                return dx, d_gamma, d_beta, None, None
            return y, gradient

        mean = unet.nested_mean(x)
        variance = _variance(x, mean)
        return normalize(x, gamma, beta, mean, variance), mean, variance, tf.cast(tf.size(x) // x.shape[-1], x.dtype)


def fused_batch_norm(model: keras.Model) -> keras.Model:
    """Every precise BatchNorm of the model on TensorFlow's fused kernels (FusedBatchNorm), where TensorFlow runs on
    the CPU: with a GPU visible the portable form stays, as no GPU was at hand to check cuDNN's kernels. Keras locks
    a built model's layers, so each changes class in place, keeping its variables (as tf_impl/distributed.py does)."""
    if tf.config.get_visible_devices("GPU"):
        return model
    for layer in model._flatten_layers(include_self=False):
        if type(layer) is unet.BatchNorm:
            layer.__class__ = FusedBatchNorm
    return model


def build(spec: UNetSpec) -> keras.Model:
    """The portable U-Net (keras_models/unet.py), its BatchNorms trained on TensorFlow's fused kernels."""
    return fused_batch_norm(unet.build(spec))
