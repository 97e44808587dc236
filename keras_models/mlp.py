"""The 784-200-200-10 MNIST classifier as a portable keras.Model (any Keras backend); twin of torch_impl/mlp.py."""
from __future__ import annotations

import keras
from keras import ops

from shared.tasks import MLPSpec


class MLP(keras.Model):
    """Dense 784->200, ReLU, 200->200, ReLU, 200->10, log_softmax (the loss is NLL)."""

    def __init__(self, layer_sizes: tuple[int, ...]):
        super().__init__(name="mlp")
        _, hidden1, hidden2, classes = layer_sizes  # Keras infers each layer's input width on the first call
        self.flatten = keras.layers.Flatten()
        # Kernels start at zero: the canonical weights are loaded next (a random initializer costs JAX a compile).
        self.fc1 = keras.layers.Dense(hidden1, name="fc1", kernel_initializer="zeros")
        self.fc2 = keras.layers.Dense(hidden2, name="fc2", kernel_initializer="zeros")
        self.fc3 = keras.layers.Dense(classes, name="fc3", kernel_initializer="zeros")

    def call(self, x, training: bool = False):  # no layer behaves differently in training
        x = self.flatten(x)  # (N, 28, 28, 1) -> (N, 784)
        x = ops.relu(self.fc1(x))
        x = ops.relu(self.fc2(x))
        return ops.log_softmax(self.fc3(x), axis=1)  # (N, 10)


def build(spec: MLPSpec) -> MLP:
    """Keras creates the weights on a symbolic first call (nothing runs); the harness then loads the canonical ones."""
    model = MLP(spec.layer_sizes)
    model(keras.Input((spec.layer_sizes[0],), batch_size=1))  # the weights depend on the flat width only
    return model
