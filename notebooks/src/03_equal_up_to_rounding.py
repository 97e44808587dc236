# %% [markdown]
# # 3. Equal up to rounding
#
# Two programs are twins when, given the same weights and the same input, they compute the same numbers. Not the
# same bits: float32 rounds after every operation, and the two libraries add in different orders. This notebook
# shows how twinnets tells rounding from a real difference, on the 784-200-200-10 digit classifier (`mlp`) and the
# small CNN (`cnn`):
#
# 1. parity: the same canonical weights in both models, the same digits, outputs compared;
# 2. a trap: the CNN's Flatten order, shown failing and fixed;
# 3. drift: a short training of both sides, each beside a control started 1 ulp away;
# 4. float64 twins: the verdict when float32 alone cannot say.
#
# **Processes.** Parts 1 and 2 build both models in this kernel (PyTorch's side imported first, see
# `tests/conftest.py`). Parts 3 and 4 train, so they run `compare.py`, which starts each side in a process of its
# own, and read its `results.json`: the numbers a run reports, made the way it makes them.

# %%
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "compare.py").is_file())
sys.path.insert(0, str(ROOT))  # the checkout's modules, wherever Jupyter was started
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's, about notebook progress bars

import numpy as np
import torch_impl.cnn as torch_cnn  # PyTorch's side first, then TensorFlow's
import torch_impl.mlp as torch_mlp
import torch_impl.train as torch_train
import torch_impl.weights as torch_weights
import keras_models.cnn as keras_cnn
import keras_models.mlp as keras_mlp
import keras_models.weights as keras_weights
import tf_impl.train as tf_train
from harness.tasks.digits import digit_sets
from IPython.display import Image, display
from shared.init import init_weights
from shared.tasks import make_spec
from shared.weights import cnn_layout, mlp_layout

WORK = tempfile.TemporaryDirectory(prefix="twinnets-notebook-")  # removed when the kernel stops
RUNS = Path(WORK.name)


def compare(*flags: str) -> dict:
    """python compare.py FLAGS --out <a fresh folder>: each side in its own process; its results.json."""
    out = RUNS / f"run{len(list(RUNS.iterdir()))}"
    subprocess.run([sys.executable, str(ROOT / "compare.py"), *flags, "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads((out / "results.json").read_text()) | {"folder": out}


# %% [markdown]
# ## 1. Parity: the same weights, the same digits
#
# The weights are canonical: generated once, in PyTorch's `state_dict` layout (`shared/init.py`). Keras stores a
# Dense kernel transposed, so `keras_models/weights.py` converts at the boundary; the Keras layers carry the PyTorch
# names (`fc1`, `fc2`, `fc3`), so the weights map by name.

# %%
spec = make_spec("mlp", sample_size=400)
canonical = init_weights(mlp_layout(spec), spec.seed)
_, test_set = digit_sets(spec, None)
images = test_set.images[:200]
print({name: array.shape for name, array in canonical.items()})

# %%
keras_model = keras_mlp.build(spec)
keras_weights.load_weights(keras_model, canonical)
tf_out = tf_train.forward(keras_model, images)
print("TensorFlow: log-probabilities", tf_out.shape, "kernel of fc1:", keras_model.get_layer("fc1").kernel.shape)

# %%
torch_model = torch_mlp.build(spec)
torch_weights.load_weights(torch_model, canonical)
torch_out = torch_train.forward(torch_model, images)
print("PyTorch:    log-probabilities", torch_out.shape, "weight of fc1:", tuple(torch_model.fc1.weight.shape))
print(f"max |TensorFlow - PyTorch| = {np.abs(tf_out - torch_out).max():.3g} (the mlp's tolerance: 1e-5)")
print("the same predicted digit for", int((tf_out.argmax(1) == torch_out.argmax(1)).sum()), "of", len(images))

# %% [markdown]
# ## 2. The Flatten trap
#
# The CNN flattens its last feature map into the first Dense layer. PyTorch's tensors are (C, H, W), Keras' are
# (H, W, C), so the two flattened vectors list the same numbers in different orders, and `fc1`'s rows must be
# permuted when the weights cross over. The Keras model says which Dense comes after a Flatten
# (`flattened_inputs`), and `keras_models/weights.py` permutes that one. Forget it, and the weights still load (the
# shapes agree) but the outputs are wrong:

# %%
cnn_spec = make_spec("cnn", sample_size=400)
cnn_weights = init_weights(cnn_layout(cnn_spec), cnn_spec.seed)
torch_cnn_model = torch_cnn.build(cnn_spec)
torch_weights.load_weights(torch_cnn_model, cnn_weights)
torch_cnn_out = torch_train.forward(torch_cnn_model, images)

trapped = keras_cnn.build(cnn_spec)
print("Keras' note of the Dense after Flatten, (C, H, W):", dict(trapped.flattened_inputs))
trapped.flattened_inputs = {}  # forget the permutation: fc1's rows load in PyTorch's order
keras_weights.load_weights(trapped, cnn_weights)
wrong = np.abs(tf_train.forward(trapped, images) - torch_cnn_out).max()
print(f"without the permutation: max |TensorFlow - PyTorch| = {wrong:.3g}  <- not rounding: a different network")
assert wrong > 1e-2

# %%
fixed = keras_cnn.build(cnn_spec)
keras_weights.load_weights(fixed, cnn_weights)  # the project's loader, permutation included
right = np.abs(tf_train.forward(fixed, images) - torch_cnn_out).max()
print(f"with the permutation:    max |TensorFlow - PyTorch| = {right:.3g}  <- rounding (tolerance 1e-5)")
assert right < 1e-5

# %% [markdown]
# ## 3. A short training, and 1-ulp controls
#
# Parity holds at step 0. During training, rounding differences grow: is the distance between TensorFlow and
# PyTorch after some steps a real difference? Each side also trains a **control** from weights moved by 1 unit in
# the last place (`harness/drift.py` `perturb_ulp`). The control's distance from its own side is what rounding alone
# does; the verdict compares the two frameworks' distance to it. One epoch of 1,000 digits (5 steps), tiny but the
# same code as the full run:

# %%
run = compare("--task", "mlp", "--sample-size", "1000", "--epochs", "1")
print(f"parity before training: max |tf - torch| = {run['parity']['max_abs_diff']:.3g}, "
      f"passed: {run['parity']['passed']}")
print(run["drift"]["verdict"]["sentence"])
for pair, drift in run["drift"]["pairs"].items():
    print(f"{pair:14s} weight distance at the last step: {drift['weights'][-1]:.3g}")

# %%
display(Image(filename=run["folder"] / "drift.png"))

# %% [markdown]
# ## 4. float64 twins: rounding or a real difference?
#
# A float32 difference beyond tolerance can still be rounding (a large gradient of a nearly cancelling sum). So
# `--diagnose K` runs each side's first K steps twice, in float32 and in float64 from the same weights and batches,
# and compares every layer's output, gradient and update. Rounding in float64 is about 5e8 times smaller, so a
# float32 difference whose float64 twins agree (relative 1e-10) is rounding; the twins *part* only where the
# float64 twins differ too.

# %%
diagnosis = compare("--task", "mlp", "--diagnose", "2", "--sample-size", "400")
print(f"{'quantity':16s} {'float32 rel':>12s} {'float64 rel':>12s} {'own float32 error TF / PyTorch':>31s}  where")
for quantity, worst in diagnosis["largest"].items():
    own = worst["own_rel"]
    print(f"{quantity:16s} {worst['rel']:12.3g} {worst['float64_rel']:12.3g} {own['tf']:15.3g} / {own['torch']:<13.3g}"
          f"  step {worst['step']}, {worst['name']}")
print("first (step, layer) where the twins part:", diagnosis["first_divergence"])

# %% [markdown]
# Each float32 difference is the size of each side's own float32 error (its float32 numbers against its own
# float64 run), and the float64 twins agree to about 1e-15: rounding, all of it. A broken twin (the Flatten
# permutation forgotten, a momentum of 0.99 against 0.9) shows in the float64 column too, and `--diagnose` names
# the step and layer (docs/equivalence.md). The picture: log10 of the relative difference, layers down, steps
# across.

# %%
display(Image(filename=diagnosis["folder"] / "diagnose.png"))
