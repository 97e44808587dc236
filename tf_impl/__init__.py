"""The TensorFlow/Keras side of twinnets (static graphs via tf.function); twin of torch_impl."""
import os

from shared.quiet import stderr_silenced

# Silence TensorFlow's C++ start-up chatter inside the project, not in the user's shell;
# a user who wants it back sets TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN's CPU kernels, as PyTorch uses on every x86 CPU: TensorFlow turns them on by itself only where the CPU
# has AVX-512 VNNI or AMX; elsewhere its Eigen convolutions took 1.5x the step (docs/profile.md). =0 turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


with stderr_silenced():
    import tensorflow  # noqa: F401  (imported once here, quietly)
