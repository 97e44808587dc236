"""The TensorFlow/Keras side of twinnets (static graphs via tf.function); twin of torch_impl."""
from shared.quiet import stderr_silenced, tensorflow_defaults

tensorflow_defaults()  # before TensorFlow is imported: quiet logs, oneDNN kernels

with stderr_silenced():
    import tensorflow  # noqa: F401  (imported once here, quietly)
