"""What each engine made of the same Keras train step (the lesson of the portable arms): TensorFlow traces it
into a graph, JAX into a jaxpr that XLA compiles, PyTorch runs it eagerly and records an autograd graph on every
step (or, with jit_compile=True, hands it to torch.compile, whose Dynamo captures graphs and breaks them where it
must run Python). What each engine traces or records is read by its own module, keras_fit/backend/<engine>.py."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_fit.backend import engine
from shared.graph_lessons import first_line


class StepCalls:
    """Counts how often the Python of model.train_step runs in a fit: once per trace where the engine compiles it
    (tf.function, jax.jit), once per step where it runs eagerly. Installed before Keras builds its train function."""

    def __init__(self, model: keras.Model):
        self.calls = 0
        step = model.train_step

        def counted(*args, **kwargs):
            self.calls += 1
            return step(*args, **kwargs)

        model.train_step = counted


def describe_step(model: keras.Model, images: np.ndarray, targets: np.ndarray, loss, calls: StepCalls) -> dict:
    """The arm's entry of the engine lesson for one batch of the run's shapes: static or dynamic, what the engine
    traces or records, its size, how often the step's Python ran, and a drawing of the loss as the engine sees it."""
    name, compiled = keras.backend.backend(), bool(model.jit_compile)
    found = {"engine": name, "jit_compile": compiled, "run_eagerly": bool(model.run_eagerly),
             "step_python_runs": calls.calls, "traces": calls.calls, "graph_ops": None, "autograd_nodes": None}
    # Running a step to look at it (PyTorch's forward, Dynamo's explain) changes weights and statistics: kept aside.
    kept = [(variable, ops.convert_to_numpy(variable.value)) for variable in [*model.variables,
                                                                              *model.optimizer.variables]]
    try:
        found.update(engine.describe_step(model, images, targets, loss, compiled))
    except Exception as error:  # noqa: BLE001 - the lesson names what the engine refused, in one line
        found["failure"] = first_line(error)
    finally:
        for variable, value in kept:
            variable.assign(value)
    if model.run_eagerly or (name == "torch" and not compiled):
        found.update(kind="dynamic", traces=0)
    return found
