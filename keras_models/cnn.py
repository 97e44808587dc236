"""The small MNIST CNN as a portable keras.Model (any Keras backend); twin of torch_impl/cnn.py."""
from __future__ import annotations

import keras
from keras import ops

from shared.tasks import CNNSpec


class CNN(keras.Model):
    """conv5x5(32) ReLU maxpool2, conv5x5(64) ReLU maxpool2, fc 3136->1000 ReLU, fc 1000->10, log_softmax."""

    def __init__(self, channels: tuple[int, int], kernel_size: int, feature_map: tuple[int, int, int], hidden: int,
                 classes: int):
        super().__init__(name="cnn")
        c1, c2 = channels  # Keras infers each layer's input width on the first call
        # Kernels start at zero: the canonical weights are loaded next (a random initializer costs JAX a compile).
        self.conv1 = keras.layers.Conv2D(c1, kernel_size, padding="same", name="conv1", kernel_initializer="zeros")
        self.conv2 = keras.layers.Conv2D(c2, kernel_size, padding="same", name="conv2", kernel_initializer="zeros")
        self.flatten = keras.layers.Flatten()
        self.fc1 = keras.layers.Dense(hidden, name="fc1", kernel_initializer="zeros")
        self.fc2 = keras.layers.Dense(classes, name="fc2", kernel_initializer="zeros")
        # Flatten on NHWC gives (H, W, C) order; keras_models/weights.py permutes fc1's rows from PyTorch's (C, H, W).
        self.flattened_inputs = {"fc1": feature_map}

    def call(self, x, training: bool = False):  # no layer behaves differently in training
        x = ops.max_pool(ops.relu(self.conv1(x)), 2, 2, "valid")  # (N, 28, 28, 1) -> (N, 14, 14, 32)
        x = ops.max_pool(ops.relu(self.conv2(x)), 2, 2, "valid")  # -> (N, 7, 7, 64)
        x = self.flatten(x)  # -> (N, 3136), in (H, W, C) order
        x = ops.relu(self.fc1(x))
        return ops.log_softmax(self.fc2(x), axis=1)  # (N, 10)


def build(spec: CNNSpec) -> CNN:
    """Keras creates the weights on a symbolic first call (nothing runs); the harness then loads the canonical ones."""
    model = CNN(spec.channels, spec.kernel_size, spec.feature_map, spec.hidden, spec.classes)
    model(keras.Input((spec.image_size, spec.image_size, 1), batch_size=1))  # one grey channel, as MNIST
    return model
