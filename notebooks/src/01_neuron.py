# %% [markdown]
# # 1. One neuron, twice
#
# One sigmoid unit, $O = \sigma(\varphi w + b)$, fitted to the target $t = 0.74$ by plain gradient descent on
# $E = \tfrac12 (O - t)^2$. Two unknowns, one equation: infinitely many $(w, b)$ fit, and descent picks one.
#
# Every cell pair below runs the same step of the project's own code twice: first TensorFlow
# (`tf_impl/neuron.py`), then PyTorch (`torch_impl/neuron.py`). Open the two files side by side while you read.
#
# **Processes.** Both frameworks live in this one kernel, as they do in the test suite: PyTorch's side is imported
# before TensorFlow's (`torch_impl` first; loading TensorFlow first makes triton, which `torch.optim` loads, crash
# the process; see `tests/conftest.py`). `compare.py` itself runs each side in a process of its own.

# %%
import sys
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "compare.py").is_file())
sys.path.insert(0, str(ROOT))  # the checkout's modules, wherever Jupyter was started

import torch_impl.neuron as torch_neuron  # PyTorch's side first, then TensorFlow's
import tf_impl.neuron as tf_neuron
from harness.tasks.lessons import analytic_neuron_gradient
from shared.tasks import make_spec

spec = make_spec("neuron")
spec

# %% [markdown]
# ## The model: a `keras.Model` with two `tf.Variable`s, an `nn.Module` with two `nn.Parameter`s
#
# TensorFlow: `Neuron.add_weight` makes `w` and `b` trainable variables. PyTorch: `nn.Parameter` makes them tensors
# with `requires_grad=True`. Both are float64, so the two descents can be compared to the last bits.

# %%
tf_model = tf_neuron.build(spec)
print(type(tf_model.w).__name__, tf_model.w.dtype, "trainable:", tf_model.w.trainable)
print("O =", tf_neuron.forward(tf_model, spec.phi))

# %%
torch_model = torch_neuron.build(spec)
print(type(torch_model.w).__name__, torch_model.w.dtype, "requires_grad:", torch_model.w.requires_grad)
print("O =", torch_neuron.forward(torch_model, spec.phi))

# %% [markdown]
# ## One gradient: `GradientTape` against `backward`
#
# TensorFlow records the forward pass on a tape and asks it for $\partial E/\partial w$ and $\partial E/\partial b$
# (`tf_impl/neuron.py` `gradients`). PyTorch records the graph while the forward runs; `backward()` walks it and
# leaves the gradients in `.grad` (`torch_impl/neuron.py` `gradients`). Both against the formula
# $\partial E/\partial b = (O - t)\,O\,(1 - O)$, $\partial E/\partial w = \varphi\,\partial E/\partial b$:

# %%
analytic = analytic_neuron_gradient(spec.w0, spec.b0, spec.phi, spec.target)
tf_grad = tf_neuron.gradients(tf_neuron.build(spec), spec.phi, spec.target)
print("GradientTape   (dE/dw, dE/db) =", tf_grad)
print("analytic                      =", analytic)

# %%
torch_grad = torch_neuron.gradients(torch_neuron.build(spec), spec.phi, spec.target)
print("backward/.grad (dE/dw, dE/db) =", torch_grad)
print("TensorFlow - PyTorch          =", [a - b for a, b in zip(tf_grad, torch_grad)])

# %% [markdown]
# ## The descent: a `tf.function` traced once, against the eager loop
#
# TensorFlow's `train` wraps the whole step (tape, gradient, `apply_gradients`) in one `tf.function`: the Python
# runs once, to trace a graph, and every later step replays that graph. PyTorch's step is
# `zero_grad / forward / backward / step`, run as plain Python: its graph is recorded anew on every call.

# %%
tf_run = tf_neuron.train(spec)
print(f"{len(tf_run['trajectory']) - 1} steps; the tf.function traced {tf_run['traces']} time(s)")
print("last point:", tf_run["trajectory"][-1])

# %%
torch_run = torch_neuron.train(spec)
print(f"{len(torch_run['trajectory']) - 1} steps; traces: {torch_run['traces']} (eager: a graph recorded per step)")
print("last point:", torch_run["trajectory"][-1])

# %% [markdown]
# ## Both trajectories on one figure
#
# Left: the path of $(w, b)$ from the start $(2, -1)$ to a point on the line of solutions
# $\varphi w + b = \sigma^{-1}(0.74)$. Right: the output $O$ step by step. The two sides are drawn over each other;
# you cannot tell them apart, and the next cell says by how much they differ.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

tf_path = np.array([[p["w"], p["b"], p["output"]] for p in tf_run["trajectory"]])
torch_path = np.array([[p["w"], p["b"], p["output"]] for p in torch_run["trajectory"]])
figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
w_line = np.linspace(tf_path[:, 0].min() - 0.5, tf_path[:, 0].max() + 0.5, 50)
logit = math.log(spec.target / (1 - spec.target))
left.plot(w_line, logit - spec.phi * w_line, color="0.7", lw=1, label="every solution: phi w + b = logit(0.74)")
left.plot(tf_path[:, 0], tf_path[:, 1], lw=4, alpha=0.5, label="TensorFlow")
left.plot(torch_path[:, 0], torch_path[:, 1], "--", color="black", lw=1, label="PyTorch")
left.set(xlabel="w", ylabel="b", title="(w, b) during descent")
left.legend(fontsize=8)
right.plot(tf_path[:, 2], lw=4, alpha=0.5, label="TensorFlow")
right.plot(torch_path[:, 2], "--", color="black", lw=1, label="PyTorch")
right.axhline(spec.target, color="0.7", lw=1, label="target 0.74")
right.set(xlabel="step", ylabel="O", title="the output")
right.legend(fontsize=8)
plt.show()

# %%
difference = np.abs(tf_path - torch_path)
relative = (difference / np.abs(torch_path)).max()
ulps = (difference / np.spacing(np.abs(torch_path))).max()
print(f"over every w, b and O of {len(tf_path)} points: largest |TensorFlow - PyTorch| = {difference.max():.3g}, "
      f"relative {relative:.3g}, {ulps:.0f} units in the last place")
assert difference.max() < 1e-14 and ulps <= 16, (difference.max(), ulps)  # rounding, not a difference

# %% [markdown]
# Equal to about 1e-15: after 200 steps the two float64 descents differ by a few units in the last place
# (about 1e-15 absolute), rounding in a different order inside the two libraries' sigmoid and update; a real
# difference (a wrong update, another learning rate) would show in the first steps and grow.
# `python compare.py --task neuron` runs the same two functions, each in its own process, and checks the
# trajectories within 1e-6 (docs/tasks.md). Next: the graph each side built on the way (notebook 2).
