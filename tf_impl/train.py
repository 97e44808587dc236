"""Training and evaluation of the MNIST classifiers in TensorFlow: the train step is one tf.function
(GradientTape, apply_gradients), traced once and replayed as a graph; twin of torch_impl/train.py."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from shared.execution import Execution, default_execution
from shared.history import TrainingLog
from shared.progress import test_log_line
from tf_impl.data import make_loader, to_tensor_images
from tf_impl.weights import canonical_gradients, checkpoint, resume


def nll_loss(log_probs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean negative log-likelihood of the true class (the model outputs log_softmax)."""
    return -tf.reduce_mean(tf.gather(log_probs, labels, batch_dims=1))


def forward(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Log-probabilities (N, 10) for canonical NHWC images, in inference mode."""
    return model(to_tensor_images(images), training=False).numpy()


def gradients(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    """Loss and d(loss)/d(parameter) by canonical name, for one batch in training mode."""
    with tf.GradientTape() as tape:
        loss = nll_loss(model(to_tensor_images(images), training=True), tf.convert_to_tensor(labels))
    grads = tape.gradient(loss, model.trainable_variables)
    by_variable = {id(variable): grad.numpy() for variable, grad in zip(model.trainable_variables, grads)}
    return float(loss), canonical_gradients(model, by_variable)


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray, batch_size: int) -> dict:
    """Average test loss, accuracy and the predicted classes."""
    loader = make_loader(images, labels, batch_size, seed=0, shuffle=False)

    @tf.function(input_signature=loader.element_spec)
    def eval_step(batch_images, batch_labels):
        log_probs = model(batch_images, training=False)
        return -tf.reduce_sum(tf.gather(log_probs, batch_labels, batch_dims=1)), tf.argmax(log_probs, axis=1)

    total_loss, predictions = 0.0, []
    for batch_images, batch_labels in loader.batches(0):
        loss, predicted = eval_step(batch_images, batch_labels)
        total_loss += float(loss)
        predictions.append(predicted.numpy())
    predicted = np.concatenate(predictions)
    return {"loss": total_loss / len(labels), "accuracy": float(np.mean(predicted == labels)),
            "correct": int(np.sum(predicted == labels)), "predictions": predicted}


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted classes for canonical NHWC images."""
    return np.concatenate([forward(model, images[i:i + batch_size]).argmax(axis=1)
                           for i in range(0, len(images), batch_size)])


def make_optimizer(model: keras.Model, spec) -> keras.optimizers.Optimizer:
    optimizer = keras.optimizers.SGD(learning_rate=spec.lr, momentum=spec.momentum)
    optimizer.build(model.trainable_variables)  # momentum slots now: created inside train_step they force a 2nd trace
    return optimizer


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, element_spec,
                    execution: Execution | None = None):
    """The train step as one tf.function: tape, gradients, apply_gradients; returns the loss tensor.
    A batch dimension of None: the smaller last batch replays the same graph instead of tracing a second one."""
    execution = (execution or default_execution("tf")).check("tf")

    def train_step(images, labels):
        with tf.GradientTape() as tape:
            loss = nll_loss(tf.cast(model(images, training=True), tf.float32), labels)  # float32 loss if mixed
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    if execution.mode == "eager":  # the same Python, op by op
        return train_step
    return tf.function(train_step, input_signature=element_spec, jit_compile=execution.mode == "xla")


def train(model: keras.Model, spec, data, callbacks=None, verbose: bool = True, checkpoint_dir=None,
          execution: Execution | None = None) -> dict:
    """SGD with momentum over the shared batch order; a log line every log_interval batches, test after each epoch."""
    train_data = make_loader(data.train_images, data.train_labels, spec.batch_size, spec.seed, shuffle=True)
    optimizer = make_optimizer(model, spec)
    log = TrainingLog("TensorFlow", spec.epochs, len(train_data), callbacks, verbose, spec.log_interval,
                      spec.batch_size, len(data.train_labels), spec.seed)
    train_step = make_train_step(model, optimizer, train_data.element_spec, execution)

    resume(checkpoint_dir, model, optimizer, log)
    for epoch in range(log.epochs_done + 1, spec.epochs + 1):
        log.begin_epoch(epoch)
        for batch_index, (images, labels) in enumerate(train_data.batches(epoch)):
            with log.timer.step(int(labels.shape[0])):
                loss_value = float(train_step(images, labels))  # the host copy waits for the step
            log.end_batch(epoch, batch_index, int(labels.shape[0]), loss=loss_value)
        test = evaluate(model, data.test_images, data.test_labels, spec.batch_size)
        log.end_epoch(epoch, {"test_loss": test["loss"], "test_accuracy": test["accuracy"]},
                      test_log_line(test["loss"], test["correct"], len(data.test_labels)))
        checkpoint(checkpoint_dir, epoch, model, optimizer, log)
    return {**log.result(), "traces": train_step.experimental_get_tracing_count()}

