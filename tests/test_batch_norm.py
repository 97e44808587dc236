"""The U-Net's BatchNorm (keras_models/unet.py) on every Keras engine: its gradient, by hand on TensorFlow and JAX,
is autodiff of the nested-mean form it replaced, in float64, also when a subclass takes the statistics its own way
(as tf_impl/distributed.py does); its float32 forward and moving statistics are the old form's; it is as precise as
the nested mean (docs/profile.md); and the spec's stock form is Keras' own layer with the twins' epsilon and momentum.
The TensorFlow side's on TensorFlow's fused kernels (tf_impl/classifier.py) computes the same, as precisely.
Each engine runs in a process of its own (KERAS_BACKEND is fixed when Keras is imported), all three at once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ROOT

ENGINES = ("tensorflow", "jax", "torch")
EPSILON, MOMENTUM = 1e-5, 0.9  # the twins' epsilon, and Keras' momentum (1 - PyTorch's 0.1)
# Keras 3.15 takes a float64 ops.mean in float32 on JAX and PyTorch (keras.src.backend.common.dtypes.result_type
# ("float64", "float32") is float32), and autodiff's backward of it too: there float64 holds to float32 rounding.
FLOAT64_GRADIENT = {"tensorflow": 1e-10, "jax": 1e-6, "torch": 1e-6}

# What a child process reports for its engine: the largest differences, new form against old.
CHILD = textwrap.dedent("""
    import json
    import numpy as np
    import keras
    from keras import ops
    from keras_models.unet import BY_HAND, BatchNorm, nested_mean

    EPSILON, MOMENTUM = float(__import__("sys").argv[1]), float(__import__("sys").argv[2])
    engine = keras.backend.backend()
    if engine == "tensorflow":
        import tensorflow as tf

        def vjp(f, args, dy):
            args = [tf.constant(a) for a in args]
            with tf.GradientTape() as tape:
                tape.watch(args)
                y = f(*args)
            return y.numpy(), [g.numpy() for g in tape.gradient(y, args, output_gradients=tf.constant(dy))]
    elif engine == "jax":
        import jax

        def vjp(f, args, dy):
            y, back = jax.vjp(f, *args)
            return np.asarray(y), [np.asarray(g) for g in back(dy)]
    else:
        import torch

        def vjp(f, args, dy):
            args = [torch.tensor(a, requires_grad=True) for a in args]
            y = f(*args)
            return y.detach().numpy(), [g.numpy() for g in torch.autograd.grad(y, args, torch.tensor(dy))]


    def old_form(x, gamma, beta):
        # keras_models/unet.py before issue 35: nested means, differentiated by the engine
        mean = nested_mean(x)
        variance = nested_mean(ops.square(x - mean))
        return ops.batch_normalization(x, mean, variance, axis=-1, offset=beta, scale=gamma, epsilon=EPSILON)


    class AutodiffMoments(BatchNorm):
        # statistics taken another way, differentiated by the engine (tf_impl/distributed.py's replicas do so)
        def _batch_moments(self, x):
            mean = nested_mean(x)
            return mean, nested_mean(ops.square(x - mean)), ops.cast(ops.size(x) // x.shape[-1], x.dtype)


    def layer_form(layer_class, x):
        layer = layer_class(epsilon=EPSILON, momentum=MOMENTUM, dtype=x.dtype.name)
        layer.build(x.shape)
        moving = [ops.convert_to_tensor(v) for v in layer.non_trainable_variables]

        def run(x, gamma, beta):
            y, updated = layer.stateless_call([gamma, beta], moving, x, training=True)
            run.moving = updated  # read after a plain call only: inside jax.vjp these are tracers
            return y
        return run


    def largest(a, b):
        return max(float(np.max(np.abs(p - q)) / max(float(np.max(np.abs(q))), 1e-300)) for p, q in zip(a, b))


    rng = np.random.default_rng(35)
    found = {"by_hand": BY_HAND}
    x = rng.normal(3.0, 2.0, (3, 5, 4, 6))  # float64
    gamma, beta, dy = rng.normal(1.0, 0.3, 6), rng.normal(0.0, 0.3, 6), rng.normal(0.0, 1.0, x.shape)
    y_old, grads_old = vjp(old_form, [x, gamma, beta], dy)
    for name, layer_class in (("new", BatchNorm), ("autodiff_moments", AutodiffMoments)):
        y, grads = vjp(layer_form(layer_class, x), [x, gamma, beta], dy)
        found[f"{name}_float64"] = {"output": largest([y], [y_old]), "gradient": largest(grads, grads_old),
                                    "dtype": str(y.dtype)}

    x32 = rng.normal(3.0, 2.0, (4, 8, 8, 5)).astype(np.float32)
    g32, b32 = rng.normal(1.0, 0.3, 5).astype(np.float32), rng.normal(0.0, 0.3, 5).astype(np.float32)
    t32, g32, b32 = (ops.convert_to_tensor(a) for a in (x32, g32, b32))
    new = layer_form(BatchNorm, x32)
    y = np.asarray(ops.convert_to_numpy(new(t32, g32, b32)))
    mean = nested_mean(t32)
    mean, variance = (np.asarray(ops.convert_to_numpy(t)) for t in (mean, nested_mean(ops.square(t32 - mean))))
    n = x32.size // x32.shape[-1]
    expected = [(1 - MOMENTUM) * mean, MOMENTUM + (1 - MOMENTUM) * variance * n / (n - 1)]
    found["float32"] = {"output": float(np.max(np.abs(y - np.asarray(ops.convert_to_numpy(old_form(t32, g32, b32)))))),
                        "moving": max(float(np.max(np.abs(np.asarray(ops.convert_to_numpy(a)) - b)))
                                      for a, b in zip(new.moving, expected))}
    print(json.dumps(found))
""")


@pytest.fixture(scope="module")
def engines() -> dict:
    """Each engine's report, from its own process; JAX keeps float64 only with jax_enable_x64."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_ENABLE_X64": "1"}
    children = {engine: subprocess.Popen([sys.executable, "-c", CHILD, str(EPSILON), str(MOMENTUM)], cwd=ROOT,
                                         env={**env, "KERAS_BACKEND": engine}, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
                for engine in ENGINES}
    found = {}
    for engine, child in children.items():
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, f"{engine}: {err[-3000:]}"
        found[engine] = json.loads(out.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize("engine", ENGINES)
def test_the_backward_by_hand_is_autodiff_of_the_nested_form_in_float64(engines, engine):
    """The closed form, in two parts (the statistics' and the normalisation's), against the engine's autodiff of
    the old form: equal to float64 rounding, with the layer's own statistics or a subclass's. On PyTorch the layer
    is left to autodiff (torch.compile recompiles a Keras custom gradient per layer shape): the same check holds."""
    assert engines[engine]["by_hand"] == (engine != "torch")
    for name in ("new_float64", "autodiff_moments_float64"):
        found = engines[engine][name]
        assert found["dtype"] == "float64", f"{engine} {name}: computed in {found['dtype']}"
        assert found["output"] <= 1e-12, f"{engine} {name}: output {found['output']:.2e} from the old form's"
        assert found["gradient"] <= FLOAT64_GRADIENT[engine], (
            f"{engine} {name}: gradient {found['gradient']:.2e} from autodiff's")


@pytest.mark.parametrize("engine", ENGINES)
def test_float32_forward_and_moving_statistics_are_the_old_forms(engines, engine):
    """The same nested means, PyTorch's unbiased running variance, and the output to float32 rounding."""
    found = engines[engine]["float32"]
    assert found["output"] <= 2e-6, f"{engine}: output {found['output']:.2e} from the old form's"
    assert found["moving"] <= 1e-6, f"{engine}: moving statistics {found['moving']:.2e} from the old form's"


def precision(x: np.ndarray) -> dict[str, tuple[float, float, float]]:
    """docs/profile.md's measurement: max |error| against float64 of the batch mean and of the training output
    (gamma 1, beta 0), and the output's root-mean-square error, for the old form, the new layer, the TensorFlow
    side's (the same statistics, TensorFlow's fused kernels) and Keras' stock BatchNormalization."""
    import keras
    import tensorflow as tf

    from keras_models.unet import BatchNorm, nested_mean
    from tf_impl.classifier import FusedBatchNorm

    x64 = x.astype(np.float64)
    mean64 = x64.mean(axis=(0, 1, 2))
    y64 = (x64 - mean64) / np.sqrt(x64.var(axis=(0, 1, 2)) + EPSILON)
    mean = nested_mean(tf.constant(x))
    old = tf.nn.batch_normalization(x, mean, nested_mean(tf.square(x - mean)), None, None, EPSILON)
    found = {"old": (mean.numpy(), old.numpy())}
    layers = (("new", BatchNorm), ("fused", FusedBatchNorm), ("stock", keras.layers.BatchNormalization))
    for name, layer_class in layers:
        layer = layer_class(epsilon=EPSILON, momentum=0.0)  # momentum 0: the moving mean is the batch mean
        layer.build(x.shape)
        output = layer(tf.constant(x), training=True).numpy()
        found[name] = (layer.moving_mean.numpy(), output)
    return {name: (float(np.max(np.abs(m - mean64))), float(np.max(np.abs(y - y64))),
                   float(np.sqrt(np.mean(np.square(y - y64))))) for name, (m, y) in found.items()}


def test_as_precise_as_the_nested_mean():
    """An (8, 64, 64, 8) activation of mean 3 and std 2, as in docs/profile.md: the new layer's mean and output are
    no further from float64 than the nested form's; Keras' stock layer (one reduce_mean) is further."""
    found = precision(np.random.default_rng(0).normal(3.0, 2.0, (8, 64, 64, 8)).astype(np.float32))
    assert found["new"][0] <= found["old"][0] and found["new"][1] <= found["old"][1], found
    assert found["stock"][0] > 3 * found["new"][0], found


def test_the_fused_kernels_are_as_precise_over_five_seeds():
    """The TensorFlow side's FusedBatchNorm on docs/profile.md's activations, seeds 0-4: the same mean as the nested
    form; its output at the same float32 rounding floor, closer on average (the root-mean-square error, averaged over
    the seeds) while a seed's largest error, a few values, may land one rounding step (an ulp of outputs under 8)
    further: the kernel rounds in another order."""
    found = [precision(np.random.default_rng(seed).normal(3.0, 2.0, (8, 64, 64, 8)).astype(np.float32))
             for seed in range(5)]
    assert all(seed["fused"][0] == seed["old"][0] for seed in found), found
    assert np.mean([seed["fused"][2] for seed in found]) <= np.mean([seed["old"][2] for seed in found]), found
    assert all(seed["fused"][1] <= seed["old"][1] + np.spacing(np.float32(4.0)) for seed in found), found


def fused_and_portable(x: np.ndarray, dy: np.ndarray, gamma: np.ndarray, dtype: str, graph: bool) -> dict:
    """The output, gradients (x, gamma, beta) and moving statistics of one training call of each layer class."""
    import tensorflow as tf

    from keras_models.unet import BatchNorm
    from tf_impl.classifier import FusedBatchNorm

    found = {}
    for name, layer_class in (("portable", BatchNorm), ("fused", FusedBatchNorm)):
        layer = layer_class(epsilon=EPSILON, momentum=MOMENTUM, dtype=dtype)
        layer.build(x.shape)
        layer.gamma.assign(gamma.astype(dtype))

        def run(x, dy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
            return [y, *tape.gradient(y, [x, layer.gamma, layer.beta], output_gradients=dy)]
        if graph:  # as the train step traces it: the batch dimension open
            run = tf.function(run, input_signature=[tf.TensorSpec((None, *x.shape[1:]), dtype)] * 2)
        results = run(tf.constant(x.astype(dtype)), tf.constant(dy.astype(dtype)))
        found[name] = [np.asarray(r, np.float64) for r in results] + [layer.moving_mean.numpy(),
                                                                         layer.moving_variance.numpy()]
    return found


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_the_fused_kernels_compute_what_the_portable_form_does(graph):
    """tf_impl/classifier.py's FusedBatchNorm against the portable layer in float64 (whose gradient is autodiff's, as
    above): output and gradients to float32 rounding (1e-5 of each tensor's largest value), the moving statistics
    bit for bit the portable float32 layer's (the same nested means); on a width that is not a power of two."""
    rng = np.random.default_rng(7)
    x, dy = rng.normal(3.0, 2.0, (3, 6, 10, 12)), rng.normal(0.0, 1.0, (3, 6, 10, 12))
    gamma = rng.uniform(0.5, 1.5, 12)
    exact = fused_and_portable(x, dy, gamma, "float64", graph)["portable"]
    float32 = fused_and_portable(x, dy, gamma, "float32", graph)
    for name, fused, want in zip(("output", "d x", "d gamma", "d beta"), float32["fused"], exact):
        assert np.max(np.abs(fused - want)) <= 1e-5 * np.max(np.abs(want)), name
    for fused, portable in zip(float32["fused"][4:], float32["portable"][4:]):
        np.testing.assert_array_equal(fused, portable)


def test_the_tensorflow_side_builds_its_batch_norms_on_the_fused_kernels():
    """The tf side's U-Net (tf_impl/classifier.py's build) trains on FusedBatchNorm; the stock form stays Keras' own,
    and the Keras arms keep the portable layer (keras_models/unet.py's build)."""
    import keras

    from harness.surface import open_surface
    from keras_models.unet import BatchNorm
    from shared.tasks import make_spec
    from tf_impl.classifier import FusedBatchNorm

    def norms(side: str, batch_norm: str) -> set[type]:
        spec = make_spec("unet", depth=1, image_size=16, base_filters=2, batch_norm=batch_norm)
        model = open_surface(side, spec, "classifier").task.build(spec)
        return {type(layer) for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)}
    assert norms("tf", "precise") == {FusedBatchNorm}
    assert norms("tf", "stock") == {keras.layers.BatchNormalization}
    assert norms("keras-tf", "precise") == {BatchNorm}


def test_the_stock_form_is_keras_own_layer_with_the_twins_settings():
    """spec.batch_norm "stock": keras.layers.BatchNormalization itself, PyTorch's epsilon, Keras' momentum = 1 -
    PyTorch's; the same canonical weights load into it."""
    import keras

    from harness.registry import REGISTRY
    from keras_models import unet
    from keras_models.weights import export_weights, load_weights
    from shared.tasks import make_spec

    spec = make_spec("unet", depth=1, image_size=16, base_filters=2, batch_norm="stock")
    model = unet.build(spec)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 6 and all(type(layer) is keras.layers.BatchNormalization for layer in norms)
    assert all(layer.epsilon == spec.bn_eps and layer.momentum == pytest.approx(1 - spec.bn_momentum)
               for layer in norms)
    canonical = REGISTRY["unet"].initial_weights(spec)
    load_weights(model, canonical)
    assert set(export_weights(model)) == set(canonical)
    precise = unet.build(spec.replace(batch_norm="precise"))
    assert all(type(layer) is unet.BatchNorm for layer in precise._flatten_layers()
               if isinstance(layer, keras.layers.BatchNormalization))
