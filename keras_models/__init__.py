"""The portable Keras 3 models, written once for every Keras engine: mlp.py, cnn.py, unet.py, their canonical weights
(weights.py) and the U-Net's optimizer and schedules (optimizers.py). The tf side (tf_impl/) trains them with its own
tf.function step; the Keras arms (keras_fit/) with model.compile and model.fit.

Nothing here imports TensorFlow, JAX or PyTorch: the same files run under KERAS_BACKEND=tensorflow, jax or torch."""
import os

from shared.quiet import stderr_silenced, tensorflow_defaults

# On TensorFlow, importing Keras imports TensorFlow: with tf_impl/'s settings, quietly.
tensorflow_defaults()
if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    with stderr_silenced():
        import keras  # noqa: F401
