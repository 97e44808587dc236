"""The JAX engine's part of the Keras arms (keras-jax): threads, versions, each batch's gradients, what the engine
made of the train step (a jaxpr, drawn), the benchmark's matrix product and TF32 switch, the served forward pass.
Imported by keras_fit/backend/ in a keras-jax process only; the same functions as tensorflow.py and torch.py."""
from __future__ import annotations

import os
import random
from typing import Callable

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras import ops

from shared.graph_drawing import drawing, edge, node, panel


def configure(threads: int, seed: int) -> None:
    """JAX's CPU client sizes its thread pool from the cores the process may run on, so the process is pinned to
    `threads` cores (XLA has no thread-count setting for its CPU client); Python's and numpy's seeds (no layer draws
    random numbers, the weights are canonical)."""
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cores[:max(1, threads)])
    random.seed(seed)
    np.random.seed(seed)


def versions() -> dict:
    return {"jax": jax.__version__}


def threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else os.cpu_count()


def gradients(model: keras.Model, loss: Callable, images: np.ndarray, targets: np.ndarray) -> tuple:
    """The batch's loss in training mode and its gradients, by jax.value_and_grad of the model's stateless call,
    jitted: one XLA program, not one per op."""
    trainable = [variable.value for variable in model.trainable_variables]
    fixed = [variable.value for variable in model.non_trainable_variables]

    def loss_of(values):
        outputs, _ = model.stateless_call(values, fixed, images, training=True)
        return loss(ops.cast(outputs, "float32"), targets)

    return jax.jit(jax.value_and_grad(loss_of))(trainable)


def describe_step(model: keras.Model, images: np.ndarray, targets: np.ndarray, loss: Callable,
                  compiled: bool) -> dict:
    """Keras' train step as the jaxpr jax.jit traces (traced, not run), its size, and the loss's jaxpr drawn."""
    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in model.optimizer.variables], [v.value for v in model.metrics_variables])
    step = jax.make_jaxpr(model.train_step)(state, (images, targets))
    outputs = ops.convert_to_numpy(model(images[:1], training=False)).astype(np.float32)
    loss_jaxpr = jax.make_jaxpr(loss)(outputs, targets[:1])
    return {"kind": "static", "records": "a jaxpr of model.train_step (jax.jit), compiled by XLA once per input shape",
            "graph_ops": _count_equations(step.jaxpr), "jaxpr_top_level": len(step.jaxpr.eqns),
            "drawing": _jaxpr_drawing(loss_jaxpr.jaxpr)}


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


def count_flops(step: Callable, images: np.ndarray, targets: np.ndarray) -> int | None:
    """None: XLA's cost analysis counts every op, elementwise ones too, not the convolutions and matrix products
    the others count."""
    return None


def matmul(a, b) -> Callable[[], None]:
    def run() -> None:
        jnp.matmul(a, b).block_until_ready()
    return run


def build_info() -> dict:
    return {"devices": [str(device) for device in jax.devices()], "xla_flags": os.environ.get("XLA_FLAGS")}


def configure_tf32(tf32: bool) -> None:
    """JAX's default precision is left alone unless TF32 is asked for."""
    if tf32:
        jax.config.update("jax_default_matmul_precision", "tensorfloat32")


def tf32_state() -> bool:
    return jax.config.jax_default_matmul_precision == "tensorfloat32"


def inference_function(model: keras.Model, mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """The forward pass as a Keras user on JAX deploys it: model.stateless_call in inference mode, the weights passed in
    as arguments (not baked into the program as constants), jitted by jax.jit ("jit": one XLA program per input
    shape) or run op by op ("eager"); numpy in, numpy out (float32; np.asarray waits for the result)."""
    trainable = [variable.value for variable in model.trainable_variables]
    fixed = [variable.value for variable in model.non_trainable_variables]

    def forward(trainable, fixed, images):
        outputs, _ = model.stateless_call(trainable, fixed, images, training=False)
        return ops.cast(outputs, "float32")

    call = jax.jit(forward) if mode == "jit" else forward
    return lambda images: np.asarray(call(trainable, fixed, images))
