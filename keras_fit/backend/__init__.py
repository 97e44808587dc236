"""What differs between Keras' engines, written once per engine in identically named modules (tensorflow.py, jax.py,
torch.py, each with the same functions) and chosen once, here, by the engine KERAS_BACKEND chose: as Keras imports
its own keras/src/backend/<engine>/. Only the chosen module is imported, so a keras-jax process never loads
TensorFlow, nor a keras-tf one PyTorch; the rest of keras_fit/ calls `engine.<function>` and never asks which."""
import importlib

import keras

# The framework of this process only: the module named after the engine Keras runs on.
engine = importlib.import_module(f"{__name__}.{keras.backend.backend()}")
