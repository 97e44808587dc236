# %% [markdown]
# # 2. Static and dynamic graphs
#
# The same function, $z = 2x^2 + 5x$ at $x = 2\cdot\mathrm{ones}(2, 2)$, so $dz/dx = 4x + 5 = 13$. TensorFlow's
# `tf.function` **traces** the Python once into a graph and replays it (define-then-run: static). PyTorch **records**
# a graph while the code runs, anew on every call (define-by-run: dynamic). Then each side goes the other way, and
# the `tf.function` pitfalls are measured live.
#
# Each cell pair calls the project's own functions: `tf_impl/autograd.py` and `tf_impl/graph_modes.py` first,
# `torch_impl/autograd.py` and `torch_impl/graph_modes.py` second.
#
# **Processes.** Both frameworks live in this one kernel, PyTorch's side imported first (see `tests/conftest.py`).
# `python compare.py --task autograd` runs the same functions, each side in its own process, and writes
# `docs/autograd.md`'s pictures.

# %%
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "compare.py").is_file())
sys.path.insert(0, str(ROOT))  # the checkout's modules, wherever Jupyter was started
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's, about notebook progress bars

import torch_impl.autograd as torch_autograd  # PyTorch's side first, then TensorFlow's
import torch_impl.graph_modes as torch_modes
import tf_impl.autograd as tf_autograd
import tf_impl.graph_modes as tf_modes
from harness.tasks.digits import digits_epoch
from IPython.display import Image, display
from shared import graph_drawing
from shared.graph_lessons import markdown, pitfall_table
from shared.tasks import make_spec

spec = make_spec("autograd")
WORK = tempfile.TemporaryDirectory(prefix="twinnets-notebook-")  # removed when the kernel stops
FIGURES = Path(WORK.name)


def show(*drawings, stacked=False):
    """The project's graph drawings (shared/graph_drawing.py), as one PNG shown here."""
    display(Image(filename=graph_drawing.draw_beside(list(drawings), FIGURES / "graphs.png", stacked=stacked)))


# %% [markdown]
# ## The gradient: 13 on both sides

# %%
print("TensorFlow (GradientTape):", tf_autograd.gradient(spec.x_value, spec.shape)["grad"])

# %%
print("PyTorch (z.backward(ones)):", torch_autograd.gradient(spec.x_value, spec.shape)["grad"])

# %% [markdown]
# ## The graph: traced once, or recorded on every call
#
# TensorFlow's graph is a list of ops built by tracing `z_of`; PyTorch's is the chain of `grad_fn` nodes that
# running `z_of` left behind, walked back from `z` to the leaf `x`.

# %%
print(tf_autograd.graph(spec.x_value, spec.shape))

# %%
print(torch_autograd.graph(spec.x_value, spec.shape))

# %% [markdown]
# How many graphs do three calls build, with shapes (2, 2), (2, 2), (3, 3)? TensorFlow traces once per new input
# signature, so the repeated shape replays its graph; PyTorch records a fresh graph on every call, whatever the
# shape.

# %%
shapes = [spec.shape, spec.shape, (3, 3)]
print("TensorFlow:", tf_autograd.graphs_per_call(spec.x_value, shapes))

# %%
print("PyTorch:   ", torch_autograd.graphs_per_call(spec.x_value, shapes))

# %% [markdown]
# ## The graphs drawn
#
# Left, TensorFlow's traced graph: symbolic tensors on the edges, the constants 2, 2 and 5 baked in. Middle,
# PyTorch's autograd graph as `backward` walks it, the gradient that flowed along each edge written on it. Right,
# the FX graph `torch.compile`'s Dynamo captures from the same Python.

# %%
tf_drawn = tf_autograd.graph_drawings(spec.x_value, spec.shape)
torch_drawn = torch_autograd.graph_drawings(spec.x_value, spec.shape)
show(tf_drawn["tf_function_z"], torch_drawn["torch_autograd_z"], torch_drawn["torch_dynamo_z"])

# %% [markdown]
# ## A Python `if` on a tensor: each side going static
#
# `branch(x)` returns `x * 2` when `x.sum() > 0`, else `-x`. TensorFlow's AutoGraph turns that `if` into one
# conditional op, so one trace serves inputs of both signs. PyTorch's `torch.compile` **breaks the graph** at the
# `if` and hands the choice back to Python; `torch.export` refuses it; `torch.cond` keeps both branches in one graph
# that exports.

# %%
tf_static = tf_modes.going_static(spec.x_value, spec.shape)
print("tf.function of branch:", {k: tf_static["branch"][k] for k in ("calls", "traces", "conditionals")})
print("without AutoGraph:    ", tf_static["without_autograph"]["error"])

# %%
torch_static = torch_modes.going_static(spec.x_value, spec.shape)
compiled = torch_static["compile"]
print(f"torch.compile of branch: {compiled['graphs']} graphs, {compiled['graph_breaks']} graph break at "
      f"{compiled['where']}")
print("Dynamo's reason:         ", compiled["reason"])
print("torch.export of branch:  ", torch_static["export"]["error"])
print("torch.cond:              ", {k: torch_static["cond"][k] for k in ("graphs", "graph_breaks", "exported")})

# %%
show(tf_static["drawings"]["tf_function_branch"], torch_static["drawings"]["torch_dynamo_branch"],
     torch_static["drawings"]["torch_export_cond"], stacked=True)

# %% [markdown]
# ## Each side going dynamic
#
# `tf.config.run_functions_eagerly(True)` runs a `tf.function` as plain Python: no trace, and the `if` runs on every
# call. PyTorch is dynamic already; under `torch.compile` the `if` still runs in Python at the break. The time of
# one call, measured now, on this machine:

# %%
tf_dynamic = tf_modes.going_dynamic(spec.x_value, spec.shape, calls=100)
for mode in ("graph", "eager"):
    ran = tf_dynamic[mode]["python_branches_ran"]
    print(f"{mode:6s} traces {tf_dynamic[mode]['traces']}, Python branches that ran: {ran}")
print({mode: f"{seconds * 1e6:.0f} us" for mode, seconds in tf_dynamic["time_per_call_s"].items()})

# %%
torch_dynamic = torch_modes.going_dynamic(spec.x_value, spec.shape, calls=100)
print("eager,        Python branches that ran:", torch_dynamic["eager"]["python_branches_ran"])
print(f"torch.compile ({torch_dynamic['compile']['graphs']} graphs), Python branches that ran:",
      torch_dynamic["compile"]["python_branches_ran"])
print({mode: f"{seconds * 1e6:.0f} us" for mode, seconds in torch_dynamic["time_per_call_s"].items()})

# %% [markdown]
# ## The `tf.function` pitfalls, measured live
#
# A Python `print` inside a `tf.function` runs once per trace, `tf.print` on every call; a Python float argument
# retraces for every new value, a tensor does not; a new batch shape retraces unless the signature leaves the batch
# dimension `None`. The batch-shape rows run the project's real mlp train step (`tf_impl/train.py`,
# `torch_impl/train.py`) over an epoch of 500 digits in batches of 200, whose last batch has 100.

# %%
tf_pitfalls = tf_modes.pitfalls(spec.x_value, spec.shape, digits_epoch("tf", sample_size=500))
print("print:", tf_pitfalls["print"])
print("Python float argument:", tf_pitfalls["python_scalar"], " tensor argument:", tf_pitfalls["tensor_argument"])
print("new batch sizes, traces:", tf_pitfalls["new_batch_sizes"])

# %%
torch_pitfalls = torch_modes.pitfalls(spec.x_value, spec.shape, digits_epoch("torch", sample_size=500))
print("print:", torch_pitfalls["print"])
print("Python float argument:", torch_pitfalls["python_scalar"])
print("new batch sizes, compiles:", torch_pitfalls["new_batch_sizes"])

# %% [markdown]
# The table `report.md` of `compare.py --task autograd` prints, built by `shared/graph_lessons.py` from the two
# results above:

# %%
from IPython.display import Markdown

display(Markdown(markdown(pitfall_table({"tf": {"pitfalls": tf_pitfalls}, "torch": {"pitfalls": torch_pitfalls}}))))
