"""Portable Keras 3: the models, their canonical weights and Keras' own training loop, on any engine.

Nothing here imports TensorFlow, JAX or PyTorch at module level: the same files run under KERAS_BACKEND=tensorflow,
jax or torch. TensorFlow's hand-written train step (tf.function + GradientTape) and tf.data stay in tf_impl/, which
trains these models; the keras-tf, keras-jax and keras-torch arms train them with model.compile and model.fit."""
import os

from shared.quiet import stderr_silenced

# On TensorFlow, importing Keras imports TensorFlow: quietly here, as tf_impl/ does (TF_CPP_MIN_LOG_LEVEL=0 shows it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN's CPU kernels, as PyTorch uses on every x86 CPU: TensorFlow turns them on by itself only where the CPU
# has AVX-512 VNNI or AMX; elsewhere its Eigen convolutions took 1.5x the step (docs/profile.md). =0 turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    with stderr_silenced():
        import keras  # noqa: F401
