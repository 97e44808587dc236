"""Training and evaluation of the MNIST classifiers in TensorFlow: the train step is one tf.function
(GradientTape, apply_gradients), traced once and replayed as a graph; twin of torch_impl/train.py."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_models.weights import canonical_gradients, checkpointer
from shared.data.batches import LabelledImages, in_batches
from shared.execution import Execution, default_execution
from shared.history import TrainingLog
from shared.loaders import Loaders
from shared.progress import test_log_line
from shared.tasks import CNNSpec, MLPSpec
from tf_impl import data
from tf_impl.data import ArrayLoader, to_tensor_images
from tf_impl.runtime import compiled, traces


def nll_loss(log_probs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean negative log-likelihood of the true class (the model outputs log_softmax)."""
    return -tf.reduce_mean(tf.gather(log_probs, labels, batch_dims=1))


loss = nll_loss  # the task surface's name for this task's loss


def forward(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Log-probabilities (N, 10) for canonical NHWC images, in inference mode."""
    return model(to_tensor_images(images), training=False).numpy()


def gradients(model: keras.Model, images: np.ndarray, targets: np.ndarray) -> tuple[float, dict]:
    """Loss and d(loss)/d(parameter) by canonical name, for one batch in training mode."""
    with tf.GradientTape() as tape:
        batch_loss = nll_loss(model(to_tensor_images(images), training=True), tf.convert_to_tensor(targets))
    grads = tape.gradient(batch_loss, model.trainable_variables)
    by_variable = {id(variable): grad.numpy() for variable, grad in zip(model.trainable_variables, grads)}
    return float(batch_loss), canonical_gradients(model, by_variable)


def to_tensors(images: np.ndarray, targets: np.ndarray, execution: Execution) -> tuple[tf.Tensor, tf.Tensor]:
    """Canonical NHWC numpy is Keras' layout; TensorFlow places the tensors on its device."""
    return to_tensor_images(images), tf.convert_to_tensor(targets)


def make_loader(dataset: LabelledImages, batch_size: int, seed: int, shuffle: bool, workers: int = 0) -> ArrayLoader:
    """The digits in the shared batch order (in memory: no loading workers needed)."""
    return data.make_loader(dataset.images, dataset.labels, batch_size, seed, shuffle)


@tf.function(reduce_retracing=True)  # traced once per model and batch shape, not again every epoch
def _eval_step(model: keras.Model, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    log_probs = model(images, training=False)
    return -tf.reduce_sum(tf.gather(log_probs, labels, batch_dims=1)), tf.argmax(log_probs, axis=1)


def evaluate(model: keras.Model, loader: ArrayLoader) -> dict:
    """Average loss, accuracy and the predicted classes over a loader's batches."""
    total_loss, predictions = 0.0, []
    for images, labels in loader.batches(0):
        batch_loss, predicted = _eval_step(model, images, labels)
        total_loss += float(batch_loss)
        predictions.append(predicted.numpy())
    predicted, labels = np.concatenate(predictions), loader.labels.numpy()
    return {"loss": total_loss / len(labels), "accuracy": float(np.mean(predicted == labels)),
            "correct": int(np.sum(predicted == labels)), "predictions": predicted}


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted classes for canonical NHWC images."""
    return in_batches(lambda batch: forward(model, batch).argmax(axis=1), images, batch_size)


def make_optimizer(model: keras.Model, spec: MLPSpec | CNNSpec) -> keras.optimizers.Optimizer:
    optimizer = keras.optimizers.SGD(learning_rate=spec.lr, momentum=spec.momentum)
    optimizer.build(model.trainable_variables)  # momentum slots now: created inside train_step they force a 2nd trace
    return optimizer


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, spec: MLPSpec | CNNSpec,
                    execution: Execution | None = None):
    """The train step as one tf.function: tape, gradients, apply_gradients; returns the loss tensor."""
    execution = (execution or default_execution("tf")).check("tf")

    def train_step(images, labels):
        with tf.GradientTape() as tape:
            log_probs = model(images, training=True)
            batch_loss = nll_loss(tf.cast(log_probs, tf.float32), labels)  # float32 loss if mixed
        grads = tape.gradient(batch_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return batch_loss

    return compiled(train_step, execution)


def train(model: keras.Model, spec: MLPSpec | CNNSpec, loaders: Loaders, callbacks=None, checkpoint_dir=None,
          execution: Execution | None = None, verbose: bool = True) -> dict:
    """SGD with momentum over the shared batch order; a log line every log_interval batches, test after each epoch."""
    execution = (execution or default_execution("tf")).check("tf")
    train_loader, test_loader = loaders
    optimizer = make_optimizer(model, spec)
    train_step = make_train_step(model, optimizer, spec, execution)
    log = TrainingLog("TensorFlow", spec.epochs, len(train_loader), callbacks, verbose, spec.log_interval,
                      spec.batch_size, train_loader.samples, spec.seed)
    saved = checkpointer(checkpoint_dir, model, optimizer)
    saved.resume(log)
    for epoch in range(log.epochs_done + 1, spec.epochs + 1):
        log.begin_epoch(epoch)
        for batch_index, (images, labels) in enumerate(train_loader.batches(epoch)):
            with log.timer.step(int(labels.shape[0])):
                loss_value = float(train_step(images, labels))  # the host copy waits for the step
            log.end_batch(epoch, batch_index, int(labels.shape[0]), loss=loss_value)
        test = evaluate(model, test_loader)
        log.end_epoch(epoch, {"test_loss": test["loss"], "test_accuracy": test["accuracy"]},
                      test_log_line(test["loss"], test["correct"], len(test["predictions"])))
        saved.save(epoch, log)
    return {**log.result(), "traces": traces(train_step), "graph_ops": train_step.graph_ops(),
            "autograd_nodes": None}  # one static graph replayed; no graph is recorded per step
