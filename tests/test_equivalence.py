"""Cross-framework equivalence, Hugging Face style: the same canonical weights into the Keras and the PyTorch
model, the same batch, and max |tf - torch| within the model's tolerance (the table below), with the diff in
the message. Also: weight round trips, the canonical names, the Flatten permutation trap, and the twin surface."""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import numpy as np
import pytest

from conftest import MODEL_MODULES, ROOT, side_module, train_digits
from harness.registry import (
    REGISTRY,
    TOLERANCES,  # docs/equivalence.md: one row per task
)
from shared import weights as layouts
from shared.tasks import make_spec

# Small widths keep the suite fast; test_full_* use the default specs.
SMALL = {"mlp": {"layer_sizes": (784, 32, 32, 10)}, "cnn": {"channels": (4, 8), "hidden": 32}}
MODELS = list(SMALL)
BATCH, STEPS, STEP_BATCH = 16, 20, 10
MEAN, STD = make_spec("mlp").mean, make_spec("mlp").std  # MNIST normalisation, as the sides' data pipelines


def small_spec(task: str, **changes):
    return make_spec(task, **{**SMALL[task], **changes})


def images_and_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random normalised NHWC images (N, 28, 28, 1) float32 and int64 labels."""
    rng = np.random.default_rng(seed)
    images = ((rng.random((n, 28, 28, 1), dtype=np.float32) - MEAN) / STD).astype(np.float32)
    return images, rng.integers(0, 10, n).astype(np.int64)


def loaded(side: str, spec, canonical):
    """The side's model for the task, with the canonical weights loaded."""
    model = side_module(side, spec.name).build(spec)
    side_module(side, "weights").load_weights(model, canonical)
    return model


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---- forward, loss, gradients ----------------------------------------------------------------------------

@pytest.mark.parametrize("task", MODELS)
def test_forward_outputs_equal(task):
    spec = small_spec(task)
    canonical = REGISTRY[spec.name].initial_weights(spec)
    images, _ = images_and_labels(BATCH, seed=1)
    out = {s: side_module(s, "train").forward(loaded(s, spec, canonical), images) for s in ("torch", "tf")}
    assert out["tf"].shape == out["torch"].shape == (BATCH, 10)
    diff = max_abs(out["tf"], out["torch"])
    assert diff <= TOLERANCES[task]["forward"], f"{task} forward: max |tf - torch| = {diff:.3e}"
    # log_softmax: each row's probabilities sum to one on both sides.
    for s in out:
        np.testing.assert_allclose(np.exp(out[s]).sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("task", MODELS)
def test_loss_and_gradients_equal(task):
    spec = small_spec(task)
    canonical = REGISTRY[spec.name].initial_weights(spec)
    images, labels = images_and_labels(BATCH, seed=2)
    results = {s: side_module(s, "train").gradients(loaded(s, spec, canonical), images, labels)
               for s in ("torch", "tf")}
    (tf_loss, tf_grads), (torch_loss, torch_grads) = results["tf"], results["torch"]
    diff = abs(tf_loss - torch_loss)
    assert diff <= TOLERANCES[task]["loss"], f"{task} loss: tf {tf_loss}, torch {torch_loss}, diff {diff:.3e}"
    assert 1.5 < torch_loss < 4.0  # about log(10) for random initial weights
    layout = REGISTRY[task].layout(spec)
    assert set(tf_grads) == set(torch_grads) == set(layout)
    for name in layout:
        assert tf_grads[name].shape == torch_grads[name].shape == layout[name].shape, name
        scale = float(np.max(np.abs(torch_grads[name])))
        assert scale > 0, f"{task} {name}: zero gradient proves nothing"
        diff = max_abs(tf_grads[name], torch_grads[name])
        assert diff <= TOLERANCES[task]["grad"] * scale, (
            f"{task} d loss / d {name}: max |tf - torch| = {diff:.3e}, relative {diff / scale:.3e}")


# ---- training --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", MODELS)
def test_losses_agree_after_identical_sgd_steps(task):
    spec = small_spec(task, batch_size=STEP_BATCH, epochs=1)
    canonical = REGISTRY[spec.name].initial_weights(spec)
    train_images, train_labels = images_and_labels(STEPS * STEP_BATCH, seed=3)
    test_images, test_labels = images_and_labels(20, seed=4)
    models, runs = {}, {}
    for s in ("torch", "tf"):
        models[s] = loaded(s, spec, canonical)
        runs[s] = train_digits(s, models[s], spec, train_images, train_labels, test_images, test_labels)
    tf_losses, torch_losses = (np.asarray(runs[s]["batch_losses"]) for s in ("tf", "torch"))
    assert len(tf_losses) == len(torch_losses) == STEPS
    relative = np.abs(tf_losses - torch_losses) / np.abs(torch_losses)
    worst = int(np.argmax(relative))
    assert relative[worst] <= TOLERANCES[task]["trained_loss"], (
        f"{task} batch {worst + 1}: loss tf {tf_losses[worst]}, torch {torch_losses[worst]}, "
        f"relative {relative[worst]:.3e}")
    # The optimizer really moved the weights, by the same amount on both sides.
    exported = {s: side_module(s, "weights").export_weights(models[s]) for s in models}
    assert max_abs(exported["torch"]["fc1.weight"], canonical["fc1.weight"]) > 1e-4
    for name in canonical:
        scale = float(np.max(np.abs(exported["torch"][name] - canonical[name])))
        diff = max_abs(exported["tf"][name], exported["torch"][name])
        assert diff <= 1e-3 * max(scale, 1e-6), f"{task} {name} after {STEPS} steps: diff {diff:.3e}"
    assert runs["tf"]["history"][0]["test_accuracy"] == runs["torch"]["history"][0]["test_accuracy"]
    assert runs["tf"]["traces"] == 1  # one graph replayed for all batches


# ---- weights: round trip, names, counts ------------------------------------------------------------------

@pytest.mark.parametrize("task", MODELS)
def test_weights_round_trip_exactly(side, task):
    spec = small_spec(task)
    canonical = REGISTRY[spec.name].initial_weights(spec)
    exported = side_module(side, "weights").export_weights(loaded(side, spec, canonical))
    assert set(exported) == set(canonical)
    for name, array in canonical.items():
        assert exported[name].dtype == np.float32, name
        assert np.array_equal(exported[name], array), f"{side} {name} changed in load/export"


@pytest.mark.parametrize("task", MODELS)
def test_exported_names_and_shapes_are_the_shared_layout(side, task):
    spec = small_spec(task)
    model = side_module(side, task).build(spec)  # as built, before any load
    exported = side_module(side, "weights").export_weights(model)
    layout = REGISTRY[task].layout(spec)
    assert {k: tuple(v.shape) for k, v in exported.items()} == {k: p.shape for k, p in layout.items()}


def test_full_mlp_counts_199210_parameters(side):
    spec = make_spec("mlp")
    assert spec.layer_sizes == (784, 200, 200, 10)
    model = side_module(side, "mlp").build(spec)
    assert side_module(side, "weights").count_parameters(model) == 199_210
    assert layouts.parameter_count(REGISTRY["mlp"].layout(spec)) == 199_210


def test_full_cnn_forward_and_parameter_count():
    """The default CNN (32, 64 filters, fc 3136 -> 1000): fc1 needs the (C, H, W) -> (H, W, C) row permutation."""
    spec = make_spec("cnn")
    assert spec.flat_features == 3136
    expected = (32 * 25 + 32) + (64 * 32 * 25 + 64) + (3136 * 1000 + 1000) + (1000 * 10 + 10)
    assert layouts.parameter_count(REGISTRY["cnn"].layout(spec)) == expected == 3_199_106
    canonical = REGISTRY[spec.name].initial_weights(spec)
    images, _ = images_and_labels(8, seed=5)
    out = {}
    for s in ("torch", "tf"):
        model = loaded(s, spec, canonical)
        assert side_module(s, "weights").count_parameters(model) == expected, s
        out[s] = side_module(s, "train").forward(model, images)
    diff = max_abs(out["tf"], out["torch"])
    assert diff <= TOLERANCES["cnn"]["forward"], f"full cnn forward: max |tf - torch| = {diff:.3e}"


def test_flatten_permutation_is_needed():
    """Loading fc1 with a plain transpose (no (C,H,W) -> (H,W,C) permutation) must break the parity test,
    which proves the test above would catch the trap."""
    spec = small_spec("cnn")
    canonical = REGISTRY[spec.name].initial_weights(spec)
    images, _ = images_and_labels(BATCH, seed=6)
    expected = side_module("torch", "train").forward(loaded("torch", spec, canonical), images)
    keras_model = loaded("tf", spec, canonical)
    right = side_module("tf", "train").forward(keras_model, images)
    assert max_abs(right, expected) <= TOLERANCES["cnn"]["forward"]
    keras_model.fc1.set_weights([layouts.linear_to_keras(canonical["fc1.weight"]), canonical["fc1.bias"]])
    wrong = side_module("tf", "train").forward(keras_model, images)
    diff = max_abs(wrong, expected)
    assert diff > 1e-3, f"without the permutation the outputs still agree (diff {diff:.3e}): the test is blind"
    # And the conversion itself: a feature at (c, h, w) lands on Keras row (h, w, c).
    c, h, w = spec.feature_map
    weight = canonical["fc1.weight"]
    kernel = layouts.flattened_linear_to_keras(weight, (c, h, w))
    assert kernel.shape == (h * w * c, spec.hidden)
    assert kernel[(2 * w + 3) * c + 1, 5] == weight[5, (1 * h + 2) * w + 3]
    assert np.array_equal(layouts.flattened_linear_from_keras(kernel, (c, h, w)), weight)


# ---- the twin surface --------------------------------------------------------------------------------------

def implementation_files(package: str) -> set[str]:
    return {path.name for path in (ROOT / package).glob("*.py")}


# The Keras side of the twins: tf_impl/, and the portable Keras files in keras_models/ that it trains (the models,
# weights.py, optimizers.py); keras_fit/ is the Keras arms' model.fit training, not a twin of a torch_impl file.
KERAS_MODEL_FILES = {f"{module}.py" for module in MODEL_MODULES}


def keras_side_files() -> set[str]:
    return implementation_files("tf_impl") | (implementation_files("keras_models") & KERAS_MODEL_FILES)


def public_names(module) -> set[str]:
    """Functions and classes defined in the module itself (an imported one is not the module's own lesson);
    tf.function objects count as functions."""
    names = set()
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        is_function = inspect.isfunction(obj) or inspect.isclass(obj) or (callable(obj) and hasattr(obj, "__wrapped__"))
        if is_function and getattr(obj, "__module__", None) == module.__name__:
            names.add(name)
    return names


def test_every_file_has_a_twin():
    tf_files, torch_files = keras_side_files(), implementation_files("torch_impl")
    assert tf_files - torch_files == set(), "Keras-side files without a torch_impl twin"
    assert torch_files - tf_files == set(), "torch_impl files without a tf_impl (or keras_models) twin"
    assert {"mlp.py", "cnn.py", "neuron.py", "autograd.py", "train.py", "weights.py", "data.py"} <= tf_files
    assert not implementation_files("tf_impl") & KERAS_MODEL_FILES, "a model written twice on the Keras side"


TWIN_MODULES = sorted(Path(name).stem for name in keras_side_files() & implementation_files("torch_impl")
                      if name != "__init__.py")


# The names one side alone defines, because the lesson differs and each is named for its own (docs/architecture.md).
ONE_SIDED = {
    "weights": ({"canonical_gradients"}, {"parameter_gradients"}),  # the tape returns gradients; .grad holds them
    "profile": ({"op_category"}, {"event_category"}),  # an op by its name scope; an event by its autograd link
    # TensorFlow trains the portable BatchNorm on its fused kernels; PyTorch's nn.BatchNorm2d already runs on its own.
    "classifier": ({"build", "FusedBatchNorm", "fused_batch_norm"}, set()),
    "unet": ({"nested_mean"}, set()),  # float32 means as precise as PyTorch's, which its reduction takes as they are
}


@pytest.mark.parametrize("module", TWIN_MODULES)
def test_both_sides_export_the_same_public_names(module):
    keras_only, torch_only = ONE_SIDED.get(module, (set(), set()))
    tf_names = public_names(side_module("tf", module))
    torch_names = public_names(side_module("torch", module))
    assert tf_names, f"the Keras side's {module}.py defines no public function or class"
    assert keras_only <= tf_names and torch_only <= torch_names, f"{module}.py: ONE_SIDED names a name it lacks"
    assert tf_names - keras_only == torch_names - torch_only, (
        f"{module}.py: only on the Keras side {sorted(tf_names - torch_names)}, "
        f"only in torch_impl {sorted(torch_names - tf_names)}")


def test_public_name_check_sees_tf_functions():
    """The check above counts tf.function objects as functions and ignores imported names."""
    autograd = importlib.import_module("tf_impl.autograd")
    names = public_names(autograd)
    assert {"branch", "z_of", "gradient"} <= names
    assert "tf" not in names and "annotations" not in names
    assert public_names(importlib.import_module("torch_impl.train")) >= {"train", "forward", "gradients", "evaluate"}


def test_tf_train_step_traces_once_with_a_ragged_last_batch():
    """25 samples in batches of 10: the last batch of 5 replays the graph (batch dimension None)."""
    spec = small_spec("mlp", batch_size=10, epochs=2)
    train_images, train_labels = images_and_labels(25, seed=7)
    model = loaded("tf", spec, REGISTRY[spec.name].initial_weights(spec))
    run = train_digits("tf", model, spec, train_images, train_labels, train_images[:5], train_labels[:5])
    assert len(run["batch_losses"]) == 6 and run["timing"]["steps"] == 6
    assert run["traces"] == 1
