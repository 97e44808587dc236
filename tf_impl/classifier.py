"""CarvanaClassifier: trains, validates and predicts with a U-Net in TensorFlow; the train step is one
tf.function (GradientTape, apply_gradients) traced once and replayed; twin of torch_impl/classifier.py."""
from __future__ import annotations

from functools import partial

import keras
import numpy as np
import tensorflow as tf

from shared import trainer
from shared.data.carvana import TrainImageDataset
from shared.execution import Execution, default_execution
from shared.history import TrainingLog
from shared.metrics import BatchAverage, sigmoid
from shared.tasks import UNetSpec
from tf_impl import data
from tf_impl.data import CarvanaDataset, to_tensor_images
from tf_impl.runtime import compiled, graph_size, traces
from tf_impl.weights import canonical_gradients, checkpointer


def bce_dice_loss(logits: tf.Tensor, masks: tf.Tensor, smooth: float = 1.0) -> tf.Tensor:
    """Binary cross-entropy from logits + (1 - soft Dice), the Dice taken per image and averaged."""
    bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=masks, logits=logits))
    batch = tf.shape(logits)[0]
    probabilities, truth = tf.reshape(tf.sigmoid(logits), (batch, -1)), tf.reshape(masks, (batch, -1))
    soft_dice = ((2 * tf.reduce_sum(probabilities * truth, 1) + smooth)
                 / (tf.reduce_sum(probabilities, 1) + tf.reduce_sum(truth, 1) + smooth))
    return bce + (1 - tf.reduce_mean(soft_dice))


loss = bce_dice_loss  # the task surface's name for this task's loss


def dice_score(logits: tf.Tensor, masks: tf.Tensor, threshold: float) -> tf.Tensor:
    """Mean Dice of the thresholded predictions; an empty prediction of an empty mask scores 1."""
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
                workers: int = 0) -> CarvanaDataset:
    """Batches of (photos (N, H, W, 3), masks (N, H, W, 1)); `workers` parallel map calls decode and augment."""
    return data.make_image_loader(dataset, batch_size, seed, shuffle, workers)


def predict(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Mask probabilities (N, H_out, W_out) for canonical NHWC images."""
    return sigmoid(forward(model, images)[..., 0])


def make_optimizer(model: keras.Model, spec: UNetSpec) -> keras.optimizers.Optimizer:
    if spec.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=spec.lr, epsilon=spec.adam_eps)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=spec.lr, momentum=spec.momentum)
    optimizer.build(model.trainable_variables)  # its slots now: created inside the first trace, they force a second
    return optimizer


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
        saved = checkpointer(self.checkpoint_dir, self.net, self.optimizer)
        saved.resume(log)
        for epoch in range(log.epochs_done + 1, epochs + 1):
            log.begin_epoch(epoch)
            for batch_index, (images, masks) in enumerate(train_loader.batches(epoch)):
                with log.timer.step(int(images.shape[0])):
                    batch_loss, dice = self.train_step(images, masks)
                log.end_batch(epoch, batch_index, int(images.shape[0]), loss=batch_loss, dice=dice)
            log.end_epoch(epoch, self.validate(valid_loader) if valid_loader is not None else None)
            saved.save(epoch, log)
        run = log.result()
        self.batch_losses, self.timing = run["batch_losses"], run["timing"]
        return run["history"]

    @property
    def traces(self) -> int:
        """How often the train step was traced into a graph (once, for every batch of every epoch)."""
        return traces(self._train_step, self.execution)

    @property
    def graph(self) -> dict:
        """The size of what runs each step: the ops of the one traced graph (no graph is recorded per step)."""
        return {"graph_ops": graph_size(self._train_step), "autograd_nodes": None}


# The task surface's train step and loop are the source text's trainer class (shared/trainer.py).
make_train_step = partial(trainer.make_train_step, CarvanaClassifier)
train = partial(trainer.train, CarvanaClassifier)
