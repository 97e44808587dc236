"""One sigmoid neuron fitted by gradient descent in TensorFlow (tf.function); twin of torch_impl/neuron.py."""
from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from shared.tasks import NeuronSpec
from shared.timing import StepTimer


class Neuron(keras.Model):
    """O = sigmoid(phi * w + b). float64 so the two sides agree to 1e-6 after hundreds of steps."""

    def __init__(self, w0: float, b0: float):
        super().__init__(name="neuron", dtype="float64")
        self.w = self.add_weight(shape=(), initializer=keras.initializers.Constant(w0), dtype="float64", name="w")
        self.b = self.add_weight(shape=(), initializer=keras.initializers.Constant(b0), dtype="float64", name="b")

    def call(self, phi: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(phi * self.w + self.b)


def build(spec: NeuronSpec) -> Neuron:
    return Neuron(spec.w0, spec.b0)


def load_weights(model: Neuron, canonical: dict) -> None:
    model.w.assign(np.float64(canonical["w"]))
    model.b.assign(np.float64(canonical["b"]))


def export_weights(model: Neuron) -> dict:
    return {"w": np.array(model.w.numpy()), "b": np.array(model.b.numpy())}


def forward(model: Neuron, phi: float) -> float:
    return float(model(tf.constant(phi, tf.float64)))


def error(output: tf.Tensor, target: float) -> tf.Tensor:
    """E = 1/2 (O - t)^2."""
    return 0.5 * (output - target) ** 2


def gradients(model: Neuron, phi: float, target: float) -> tuple[float, float]:
    """(dE/dw, dE/db) by backpropagation through a GradientTape."""
    with tf.GradientTape() as tape:
        loss = error(model(tf.constant(phi, tf.float64)), target)
    dw, db = tape.gradient(loss, [model.w, model.b])
    return float(dw), float(db)


def train(spec: NeuronSpec) -> dict:
    """Plain gradient descent: the step is one tf.function, traced once and replayed as a graph."""
    model = build(spec)
    phi = tf.constant(spec.phi, tf.float64)
    optimizer = keras.optimizers.SGD(learning_rate=spec.lr)

    @tf.function
    def train_step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = error(model(phi), spec.target)
        optimizer.apply_gradients(zip(tape.gradient(loss, [model.w, model.b]), [model.w, model.b]))
        return loss

    def record(step: int) -> dict:
        output = model(phi)
        return {"step": step, "w": float(model.w.numpy()), "b": float(model.b.numpy()),
                "output": float(output), "error": float(error(output, spec.target))}

    # The descent: w, b, O and E before the first step and after each, every step timed (the same keys both sides).
    timer = StepTimer()
    trajectory = [record(0)]
    start = time.perf_counter()
    for step in range(1, spec.epochs + 1):
        with timer.step():
            float(train_step())  # the host copy waits for the step to finish
        trajectory.append(record(step))
    train_s = time.perf_counter() - start
    history = [{"epoch": point["step"], "loss": point["error"]} for point in trajectory[1:]]
    return {"model": model, "trajectory": trajectory, "history": history, "timing": timer.summary(train_s),
            "traces": train_step.experimental_get_tracing_count()}
