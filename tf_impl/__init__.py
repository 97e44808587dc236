"""The TensorFlow/Keras side of twinnets (static graphs via tf.function); twin of torch_impl."""
import contextlib
import os

# Silence TensorFlow's C++ start-up chatter inside the project, not in the user's shell;
# a user who wants it back sets TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _stderr_silenced():
    """Lines logged before absl is initialised ignore TF_CPP_MIN_LOG_LEVEL; hide them during import."""
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("0", "1"):
        yield
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _stderr_silenced():
    import tensorflow  # noqa: F401  (imported once here, quietly)
