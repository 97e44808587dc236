"""Training and evaluation of the MNIST classifiers as a Keras 3 user writes them, on any engine: model.compile
(optimizer, loss, metrics, jit_compile) and model.fit over the shared batch order; twin of tf_impl/train.py (the
hand-written tf.function step) and torch_impl/train.py (the eager loop)."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_fit import data, engines
from keras_fit.data import ArrayLoader
from keras_fit.fit import BatchMean, FitLog, fit
from keras_fit.fit import gradients as engine_gradients
from keras_fit.runtime import arm, compile_options, title
from keras_models.weights import canonical_gradients, checkpointer
from shared.data.batches import LabelledImages, in_batches
from shared.execution import Execution, default_execution
from shared.history import TrainingLog
from shared.loaders import Loaders
from shared.progress import test_log_line
from shared.tasks import CNNSpec, MLPSpec


def nll_loss(log_probs, labels):
    """Mean negative log-likelihood of the true class (the model outputs log_softmax)."""
    labels = ops.cast(ops.reshape(labels, (-1, 1)), "int32")
    return -ops.mean(ops.take_along_axis(log_probs, labels, axis=1))


loss = nll_loss  # the task surface's name for this task's loss


def forward(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Log-probabilities (N, 10) for canonical NHWC images, in inference mode."""
    return ops.convert_to_numpy(model(images, training=False))


def gradients(model: keras.Model, images: np.ndarray, targets: np.ndarray) -> tuple[float, dict]:
    """Loss and d(loss)/d(parameter) by canonical name, for one batch in training mode (the engine's autodiff)."""
    batch_loss, grads = engine_gradients(model, nll_loss, images, targets)
    by_variable = {id(variable): grad for variable, grad in zip(model.trainable_variables, grads)}
    return batch_loss, canonical_gradients(model, by_variable)


def to_tensors(images: np.ndarray, targets: np.ndarray, execution: Execution) -> tuple[np.ndarray, np.ndarray]:
    """Canonical NHWC numpy is Keras' layout, and what model.fit and train_on_batch take on every engine."""
    return images, targets


def make_loader(dataset: LabelledImages, batch_size: int, seed: int, shuffle: bool, workers: int = 0) -> ArrayLoader:
    """The digits in the shared batch order, as a PyDataset."""
    return data.make_loader(dataset.images, dataset.labels, batch_size, seed, shuffle)


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted classes for canonical NHWC images."""
    return in_batches(lambda batch: forward(model, batch).argmax(axis=1), images, batch_size)


def make_optimizer(model: keras.Model, spec: MLPSpec | CNNSpec) -> keras.optimizers.Optimizer:
    optimizer = keras.optimizers.SGD(learning_rate=spec.lr, momentum=spec.momentum)
    optimizer.build(model.trainable_variables)  # its slots now, so a checkpoint can be loaded into them
    return optimizer


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer, execution: Execution) -> None:
    """The Keras 3 user's one line: optimizer, loss (Keras calls it as loss(targets, outputs)), metrics."""
    model.compile(optimizer=optimizer, loss=lambda labels, log_probs: nll_loss(ops.cast(log_probs, "float32"), labels),
                  metrics=[BatchMean(nll_loss, "batch_loss"), keras.metrics.SparseCategoricalAccuracy("accuracy")],
                  **compile_options(execution))


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, spec: MLPSpec | CNNSpec,
                    execution: Execution | None = None):
    """One step of Keras' own compiled train function on a batch: model.train_on_batch; returns the loss."""
    execution = (execution or default_execution(arm())).check(arm())
    compile_model(model, optimizer, execution)
    return lambda images, labels: float(model.train_on_batch(images, labels, return_dict=True)["batch_loss"])


def train(model: keras.Model, spec: MLPSpec | CNNSpec, loaders: Loaders, callbacks=None, checkpoint_dir=None,
          execution: Execution | None = None, verbose: bool = True) -> dict:
    """model.fit: SGD with momentum over the shared batch order, a log line every log_interval batches, the test set
    evaluated after each epoch (fit's validation_data)."""
    execution = (execution or default_execution(arm())).check(arm())
    train_loader, test_loader = loaders
    optimizer = make_optimizer(model, spec)
    compile_model(model, optimizer, execution)
    log = TrainingLog(title(), spec.epochs, len(train_loader), callbacks, verbose, spec.log_interval,
                      spec.batch_size, train_loader.samples, spec.seed)
    saved = checkpointer(checkpoint_dir, model, optimizer)
    saved.resume(log)

    def evaluation(logs: dict) -> tuple[dict, str]:
        correct = int(round(logs["val_accuracy"] * test_loader.samples))
        return ({"test_loss": logs["val_loss"], "test_accuracy": logs["val_accuracy"]},
                test_log_line(logs["val_loss"], correct, test_loader.samples))

    fit_log = FitLog(log, train_loader, saved, {"loss": "batch_loss"}, evaluation)
    calls = engines.StepCalls(model)
    fit(model, train_loader, test_loader, log, fit_log, spec.epochs)
    images, labels = test_loader[0]
    engine = engines.describe_step(model, images, labels, nll_loss, calls)
    return {**log.result(), "traces": engine["traces"], "graph_ops": engine["graph_ops"],
            "autograd_nodes": engine["autograd_nodes"], "engine": engine}
