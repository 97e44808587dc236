"""CarvanaClassifier as a Keras 3 user writes it, on any engine: model.compile(optimizer, loss, metrics,
jit_compile) and model.fit over the shared batch order; twin of tf_impl/classifier.py (the hand-written
tf.function step) and torch_impl/classifier.py (the eager loop)."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import keras
import numpy as np
from keras import ops

from keras_fit import data, engines
from keras_fit.data import CarvanaLoader
from keras_fit.fit import BatchMean, FitLog, fit
from keras_fit.fit import gradients as engine_gradients
from keras_fit.runtime import arm, compile_options, title
from keras_models.optimizers import make_optimizer, make_schedule
from keras_models.weights import canonical_gradients, checkpointer
from shared.data.carvana import TrainImageDataset
from shared.errors import UserError
from shared.execution import Execution, default_execution
from shared.history import TrainingLog
from shared.loaders import Loaders
from shared.metrics import sigmoid
from shared.tasks import UNetSpec


def bce_dice_loss(logits, masks, smooth: float = 1.0):
    """Binary cross-entropy from logits + (1 - soft Dice), the Dice taken per image and averaged."""
    masks = ops.cast(masks, "float32")
    bce = ops.mean(ops.binary_crossentropy(masks, logits, from_logits=True))
    batch = ops.shape(logits)[0]
    probabilities, truth = ops.reshape(ops.sigmoid(logits), (batch, -1)), ops.reshape(masks, (batch, -1))
    soft_dice = ((2 * ops.sum(probabilities * truth, 1) + smooth)
                 / (ops.sum(probabilities, 1) + ops.sum(truth, 1) + smooth))
    return bce + (1 - ops.mean(soft_dice))


loss = bce_dice_loss  # the task surface's name for this task's loss


def image_dice(logits, masks, threshold: float):
    """The Dice of each image's thresholded prediction (N,); an empty prediction of an empty mask scores 1."""
    batch = ops.shape(logits)[0]
    predicted = ops.reshape(ops.cast(ops.sigmoid(logits) > threshold, "float32"), (batch, -1))
    truth = ops.reshape(ops.cast(masks, "float32"), (batch, -1))
    total = ops.sum(predicted, 1) + ops.sum(truth, 1)
    return ops.where(total > 0, 2 * ops.sum(predicted * truth, 1) / ops.maximum(total, 1.0), ops.ones_like(total))


def dice_score(logits, masks, threshold: float):
    """Mean Dice of the thresholded predictions."""
    return ops.mean(image_dice(logits, masks, threshold))


def forward(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Logits (N, H, W, 1) for canonical NHWC images, BatchNorm in inference mode."""
    return ops.convert_to_numpy(ops.cast(model(images, training=False), "float32"))


def gradients(model: keras.Model, images: np.ndarray, targets: np.ndarray) -> tuple[float, dict]:
    """Loss and d(loss)/d(parameter) by canonical name for one batch, BatchNorm in training mode (the engine's
    autodiff)."""
    batch_loss, grads = engine_gradients(model, bce_dice_loss, images, targets)
    by_variable = {id(variable): grad for variable, grad in zip(model.trainable_variables, grads)}
    return batch_loss, canonical_gradients(model, by_variable)


def to_tensors(images: np.ndarray, targets: np.ndarray, execution: Execution) -> tuple[np.ndarray, np.ndarray]:
    """Canonical NHWC photos and masks are Keras' layout, and what model.fit and train_on_batch take."""
    return images, targets


def make_loader(dataset: TrainImageDataset, batch_size: int, seed: int, shuffle: bool,
                workers: int = 0) -> CarvanaLoader:
    """Batches of (photos (N, H, W, 3), masks (N, H, W, 1)) as a PyDataset."""
    return data.make_image_loader(dataset, batch_size, seed, shuffle, workers)


def predict(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Mask probabilities (N, H_out, W_out) for canonical NHWC images."""
    return sigmoid(forward(model, images)[..., 0])


class CarvanaClassifier:
    """The source text's trainer, `CarvanaClassifier(net, epochs).train(train_loader, valid_loader, epochs,
    callbacks)`, as compile and fit."""

    def __init__(self, net: keras.Model, epochs: int, spec: UNetSpec, verbose: bool = True, checkpoint_dir=None,
                 execution: Execution | None = None, optimizer: keras.optimizers.Optimizer | None = None):
        self.execution = (execution or default_execution(arm())).check(arm())
        if spec.schedule == "plateau":
            raise UserError(f"--schedule plateau is not implemented on the {arm()} arm (Keras' ReduceLROnPlateau "
                            "callback would need its state checkpointed); use constant, cosine or step")
        if self.execution.precision == "fp16":
            raise UserError(f"--precision fp16 is not implemented on the {arm()} arm; use fp32 or bf16")
        self.net, self.epochs, self.spec = net, epochs, spec
        self.optimizer = optimizer or make_optimizer(net, spec)
        self.verbose, self.checkpoint_dir = verbose, checkpoint_dir
        self.batch_losses: list[float] = []
        self.batch_lrs: list[float] = []
        self.timing: dict = {}
        self.graph: dict = {}
        self.traces = 0
        self.compiled = False

    def compile(self, steps_per_epoch: int, epochs: int) -> None:
        """model.compile: the optimizer with its schedule, the loss, the metrics; Keras traces the step later."""
        self.schedule = make_schedule(self.optimizer, self.spec, steps_per_epoch, epochs)  # the optimizer's now
        threshold = self.spec.threshold
        self.net.compile(optimizer=self.optimizer,
                         loss=lambda masks, logits: bce_dice_loss(ops.cast(logits, "float32"), masks),
                         metrics=[BatchMean(bce_dice_loss, "batch_loss"),
                                  BatchMean(partial(dice_score, threshold=threshold), "batch_dice"),
                                  keras.metrics.MeanMetricWrapper(partial(_dice_of, threshold=threshold), "dice")],
                         **compile_options(self.execution))
        self.compiled = True

    def learning_rate(self, step: int) -> float:
        """The learning rate of step `step` (counted from 0), from the schedule the optimizer evaluates."""
        return self.spec.lr if self.schedule is None else float(ops.convert_to_numpy(self.schedule(step)))

    def train_step(self, images: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
        """One step of Keras' own train function: model.train_on_batch."""
        if not self.compiled:
            self.compile(1, 1)
        logs = self.net.train_on_batch(images, masks, return_dict=True)
        return float(logs["batch_loss"]), float(logs["batch_dice"])

    def train(self, train_loader, valid_loader, epochs: int | None = None, callbacks=None) -> list[dict]:
        """model.fit over the epochs left; validation after each epoch (fit's validation_data)."""
        epochs = epochs or self.epochs
        self.compile(len(train_loader), epochs)
        log = TrainingLog(title(), epochs, len(train_loader), callbacks, self.verbose, seed=self.spec.seed)
        saved = checkpointer(self.checkpoint_dir, self.net, self.optimizer)
        saved.resume(log)

        def evaluation(logs: dict) -> tuple[dict | None, None]:
            if valid_loader is None:
                return None, None
            return {"val_loss": float(logs["val_loss"]), "val_dice": float(logs["val_dice"])}, None

        fit_log = FitLog(log, train_loader, saved, {"loss": "batch_loss", "dice": "batch_dice"}, evaluation,
                         self.learning_rate)
        calls = engines.StepCalls(self.net)
        fit(self.net, train_loader, valid_loader, log, fit_log, epochs)
        run = log.result()
        self.batch_losses, self.batch_lrs, self.timing = run["batch_losses"], run["batch_lrs"], run["timing"]
        images, masks = train_loader[0]
        engine = engines.describe_step(self.net, images, masks, bce_dice_loss, calls)
        self.traces = engine["traces"]
        self.graph = {"graph_ops": engine["graph_ops"], "autograd_nodes": engine["autograd_nodes"], "engine": engine}
        return run["history"]


def _dice_of(masks, logits, threshold: float):
    """image_dice in Keras' metric order (targets, outputs), for MeanMetricWrapper: averaged per image."""
    return image_dice(ops.cast(logits, "float32"), masks, threshold)


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, spec: UNetSpec,
                    execution: Execution | None = None) -> Callable[[Any, Any], float]:
    """One step of the trainer on a batch (the benchmark times it): model.train_on_batch; returns the loss."""
    classifier = CarvanaClassifier(model, 1, spec, verbose=False, execution=execution, optimizer=optimizer)
    return lambda images, masks: classifier.train_step(images, masks)[0]


def train(model: keras.Model, spec: UNetSpec, loaders: Loaders, callbacks=None, checkpoint_dir=None,
          execution: Execution | None = None, verbose: bool = True) -> dict:
    """The source text's `CarvanaClassifier(net, epochs).train(train_loader, valid_loader, epochs, callbacks)`."""
    classifier = CarvanaClassifier(model, spec.epochs, spec, verbose, checkpoint_dir, execution)
    history = classifier.train(loaders.train, loaders.valid, spec.epochs, callbacks)
    return {"history": history, "batch_losses": classifier.batch_losses, "batch_lrs": classifier.batch_lrs,
            "timing": classifier.timing, "traces": classifier.traces, **classifier.graph}
