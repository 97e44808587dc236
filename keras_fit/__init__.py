"""Portable Keras 3: the models, their canonical weights and Keras' own training loop, on any engine.

Nothing here imports TensorFlow, JAX or PyTorch at module level: the same files run under KERAS_BACKEND=tensorflow,
jax or torch. TensorFlow's hand-written train step (tf.function + GradientTape) and tf.data stay in tf_impl/, which
trains these models; the keras-tf, keras-jax and keras-torch arms train them with model.compile and model.fit."""
import os

from shared.quiet import stderr_silenced, tensorflow_defaults

# On TensorFlow, importing Keras imports TensorFlow: with tf_impl/'s settings, quietly.
tensorflow_defaults()
if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    with stderr_silenced():
        import keras  # noqa: F401
