"""CarvanaClassifier: trains, validates and predicts with a U-Net in TensorFlow; the train step is one
tf.function (GradientTape, apply_gradients) traced once and replayed; twin of torch_impl/classifier.py."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from shared.execution import Execution, default_execution
from shared.history import TrainingLog
from shared.metrics import sigmoid
from tf_impl.data import to_tensor_images
from tf_impl.weights import canonical_gradients, checkpoint, resume


def bce_dice_loss(logits: tf.Tensor, masks: tf.Tensor, smooth: float = 1.0) -> tf.Tensor:
    """Binary cross-entropy from logits + (1 - soft Dice), the Dice taken per image and averaged."""
    bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=masks, logits=logits))
    batch = tf.shape(logits)[0]
    probabilities, truth = tf.reshape(tf.sigmoid(logits), (batch, -1)), tf.reshape(masks, (batch, -1))
    soft_dice = ((2 * tf.reduce_sum(probabilities * truth, 1) + smooth)
                 / (tf.reduce_sum(probabilities, 1) + tf.reduce_sum(truth, 1) + smooth))
    return bce + (1 - tf.reduce_mean(soft_dice))


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


def gradients(model: keras.Model, images: np.ndarray, masks: np.ndarray) -> tuple[float, dict]:
    """Loss and d(loss)/d(parameter) by canonical name for one batch, BatchNorm in training mode."""
    with tf.GradientTape() as tape:
        loss = bce_dice_loss(model(to_tensor_images(images), training=True), to_tensor_images(masks))
    grads = tape.gradient(loss, model.trainable_variables)
    return float(loss), canonical_gradients(model, {id(v): g.numpy() for v, g in zip(model.trainable_variables, grads)})


def make_optimizer(model: keras.Model, spec, precision: str = "fp32") -> keras.optimizers.Optimizer:
    if spec.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=spec.lr, epsilon=1e-8)  # PyTorch's epsilon
    else:
        optimizer = keras.optimizers.SGD(learning_rate=spec.lr, momentum=spec.momentum)
    # fp16 gradients underflow without loss scaling; bf16 has float32's exponent range and needs none.
    return keras.optimizers.LossScaleOptimizer(optimizer) if precision == "fp16" else optimizer


class CarvanaClassifier:
    """The source text's trainer: `CarvanaClassifier(net, epochs).train(train_loader, valid_loader, epochs, callbacks)`."""

    def __init__(self, net: keras.Model, epochs: int, spec, verbose: bool = True, checkpoint_dir=None,
                 execution: Execution | None = None):
        # The precision is the model's dtype policy (tf_impl.runtime.configure_execution, before building it);
        # the device is TensorFlow's placement: a visible GPU is used.
        self.execution = (execution or default_execution("tf")).check("tf")
        self.net, self.epochs, self.spec = net, epochs, spec
        self.optimizer = make_optimizer(net, spec, self.execution.precision)
        self.optimizer.build(net.trainable_variables)  # its slots now: created inside the first trace, they force a second
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir  # a checkpoint after every epoch; a restart continues from it
        self.batch_losses: list[float] = []
        self.timing: dict = {}
        self._train_step = self._eval_step = None

    def logits(self, images: tf.Tensor, training: bool) -> tf.Tensor:
        """The net's output in float32; under a mixed policy the convolutions run in bf16/fp16."""
        return tf.cast(self.net(images, training=training), tf.float32)

    def _compile(self, element_spec) -> None:
        """One graph for each step; the batch dimension is None, so a smaller last batch does not retrace.
        Mode eager runs the same Python eagerly, op by op; xla compiles the graph with jit_compile."""

        def train_step(images, masks):
            with tf.GradientTape() as tape:
                logits = self.logits(images, training=True)
                loss = bce_dice_loss(logits, masks)
                scaled = self.optimizer.scale_loss(loss)  # the loss itself unless fp16 scaling is on
            grads = tape.gradient(scaled, self.net.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.net.trainable_variables))
            return loss, dice_score(logits, masks, self.spec.threshold)

        def eval_step(images, masks):
            logits = self.logits(images, training=False)
            return bce_dice_loss(logits, masks), dice_score(logits, masks, self.spec.threshold)

        if self.execution.mode == "eager":
            self._train_step, self._eval_step = train_step, eval_step
            return
        graph = {"input_signature": element_spec, "jit_compile": self.execution.mode == "xla"}
        self._train_step, self._eval_step = tf.function(train_step, **graph), tf.function(eval_step, **graph)

    def train_step(self, images: tf.Tensor, masks: tf.Tensor) -> tuple[float, float]:
        if self._train_step is None:  # called on its own (the benchmark): the signature of this batch, any batch size
            self._compile(tuple(tf.TensorSpec((None, *t.shape[1:]), t.dtype) for t in (images, masks)))
        loss, dice = self._train_step(images, masks)
        return float(loss), float(dice)  # the host copies wait for the step to finish

    def validate(self, valid_loader) -> dict:
        """Loss and thresholded Dice over the validation set, averaged per image."""
        if self._eval_step is None:
            self._compile(valid_loader.element_spec)
        losses, dices, counts = [], [], []
        for images, masks in valid_loader.batches(0):
            loss, dice = self._eval_step(images, masks)
            losses.append(float(loss)), dices.append(float(dice)), counts.append(int(images.shape[0]))
        return {"val_loss": float(np.average(losses, weights=counts)), "val_dice": float(np.average(dices, weights=counts))}

    def train(self, train_loader, valid_loader, epochs: int | None = None, callbacks=None) -> list[dict]:
        """Per epoch: the training batches, then the validation set; returns the per-epoch history."""
        epochs = epochs or self.epochs
        self._compile(train_loader.element_spec)
        log = TrainingLog("TensorFlow", epochs, len(train_loader), callbacks, self.verbose, seed=self.spec.seed)
        resume(self.checkpoint_dir, self.net, self.optimizer, log)
        for epoch in range(log.epochs_done + 1, epochs + 1):
            log.begin_epoch(epoch)
            for batch_index, (images, masks) in enumerate(train_loader.batches(epoch)):
                with log.timer.step(int(images.shape[0])):
                    loss, dice = self.train_step(images, masks)
                log.end_batch(epoch, batch_index, int(images.shape[0]), loss=loss, dice=dice)
            log.end_epoch(epoch, self.validate(valid_loader) if valid_loader is not None else None)
            checkpoint(self.checkpoint_dir, epoch, self.net, self.optimizer, log)
        run = log.result()
        self.batch_losses, self.timing = run["batch_losses"], run["timing"]
        return run["history"]

    @property
    def traces(self) -> int:
        traced = hasattr(self._train_step, "experimental_get_tracing_count")  # not in eager mode
        return self._train_step.experimental_get_tracing_count() if traced else 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, H_out, W_out) for canonical NHWC images."""
        return sigmoid(forward(self.net, images)[..., 0])
