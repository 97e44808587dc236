"""What each engine made of the same Keras train step (the lesson of the portable arms): TensorFlow traces it
into a graph, JAX into a jaxpr that XLA compiles, PyTorch runs it eagerly and records an autograd graph on every
step (or, with jit_compile=True, hands it to torch.compile, whose Dynamo captures graphs and breaks them where it
must run Python). Each engine's module is imported inside the function for that engine alone."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from shared.graph_drawing import drawing, edge, node, panel
from shared.graph_lessons import autograd_nodes, first_line


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
    engine, compiled = keras.backend.backend(), bool(model.jit_compile)
    found = {"engine": engine, "jit_compile": compiled, "run_eagerly": bool(model.run_eagerly),
             "step_python_runs": calls.calls, "traces": calls.calls, "graph_ops": None, "autograd_nodes": None}
    # Running a step to look at it (PyTorch's forward, Dynamo's explain) changes weights and statistics: kept aside.
    kept = [(variable, ops.convert_to_numpy(variable.value)) for variable in [*model.variables,
                                                                              *model.optimizer.variables]]
    try:
        if engine == "tensorflow":
            found.update(_tensorflow(model, images, targets))
        elif engine == "jax":
            found.update(_jax(model, images, targets, loss))
        else:
            found.update(_torch(model, images, targets, loss, compiled))
    except Exception as error:  # noqa: BLE001 - the lesson names what the engine refused, in one line
        found["failure"] = first_line(error)
    finally:
        for variable, value in kept:
            variable.assign(value)
    if model.run_eagerly or (engine == "torch" and not compiled):
        found.update(kind="dynamic", traces=0)
    return found


def _tensorflow(model: keras.Model, images: np.ndarray, targets: np.ndarray) -> dict:
    import tensorflow as tf  # this engine's own process only

    data = (tf.constant(images), tf.constant(targets))
    graph = tf.function(model.train_step).get_concrete_function(data).graph  # traced, not run: no weight changes
    return {"kind": "static", "records": "a tf.function graph of model.train_step, traced once per input shape",
            "graph_ops": len(graph.get_operations())}


def _count_equations(jaxpr) -> int:
    """Equations of a jaxpr and of every jaxpr nested in one (pjit, custom_vjp, while bodies)."""
    total = 0
    for equation in jaxpr.eqns:
        total += 1
        for value in equation.params.values():
            for inner in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    total += _count_equations(inner)
    return total


def _jax(model: keras.Model, images: np.ndarray, targets: np.ndarray, loss) -> dict:
    import jax  # this engine's own process only

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in model.optimizer.variables], [v.value for v in model.metrics_variables])
    step = jax.make_jaxpr(model.train_step)(state, (images, targets))
    outputs = ops.convert_to_numpy(model(images[:1], training=False)).astype(np.float32)
    loss_jaxpr = jax.make_jaxpr(loss)(outputs, targets[:1])
    return {"kind": "static", "records": "a jaxpr of model.train_step (jax.jit), compiled by XLA once per input shape",
            "graph_ops": _count_equations(step.jaxpr), "jaxpr_top_level": len(step.jaxpr.eqns),
            "drawing": _jaxpr_drawing(loss_jaxpr.jaxpr)}


def _jaxpr_drawing(jaxpr) -> dict:
    """The loss's jaxpr as a graph: its inputs, one node per equation (its primitive), its outputs."""
    nodes, edges, producer = [], [], {}
    for index, var in enumerate(jaxpr.invars):
        producer[id(var)] = f"in{index}"
        role = ("outputs", "targets")[index] if index < 2 else "input"
        nodes.append(node(f"in{index}", f"{role}\n{var.aval.str_short()}", "input"))
    for index, equation in enumerate(jaxpr.eqns):
        name = f"eq{index}"
        nodes.append(node(name, equation.primitive.name))
        for var in equation.invars:
            if id(var) in producer:
                edges.append(edge(producer[id(var)], name, var.aval.str_short() if hasattr(var, "aval") else ""))
        for var in equation.outvars:
            producer[id(var)] = name
    for index, var in enumerate(jaxpr.outvars):
        nodes.append(node(f"out{index}", "loss", "output"))
        if id(var) in producer:
            edges.append(edge(producer[id(var)], f"out{index}"))
    return drawing("Keras on JAX: the loss as jax.jit sees it (a jaxpr)",
                   [panel(f"jaxpr of the loss: {len(jaxpr.eqns)} equations", nodes, edges)],
                   "Each box is one equation of the jaxpr JAX traced from the Keras loss written with keras.ops; "
                   "XLA compiles the whole train step's jaxpr once per input shape.")


def _torch(model: keras.Model, images: np.ndarray, targets: np.ndarray, loss, compiled: bool) -> dict:
    import torch  # this engine's own process only

    value = loss(ops.cast(model(images, training=True), "float32"), ops.convert_to_tensor(targets))
    found = {"kind": "dynamic", "records": "an autograd graph (grad_fn nodes), recorded anew on every step",
             "autograd_nodes": autograd_nodes(value.grad_fn)}
    # What jit_compile=True would hand torch.compile: Dynamo's graphs of the same step and where it breaks them.
    try:
        explained = torch._dynamo.explain(model.train_step)((images, targets))
        found.update(dynamo_graphs=explained.graph_count, graph_breaks=explained.graph_break_count,
                     break_reasons=[str(reason.reason).splitlines()[0] for reason in explained.break_reasons][:5])
    except Exception as error:  # noqa: BLE001 - what Dynamo refused is the lesson, in one line
        found["dynamo_failure"] = first_line(error)
    if compiled:
        found.update(kind="static", records="torch.compile: Dynamo's FX graphs of model.train_step")
    return found
