# %% [markdown]
# # 5. One Keras program, three engines
#
# Every difference between the TensorFlow and PyTorch twins mixes two things: the **API** (Keras layers and
# optimizers against `torch.nn`) and the **engine** (a traced TensorFlow graph against eager PyTorch). Keras 3
# separates them: the same Keras program runs on TensorFlow, JAX or PyTorch, chosen by `KERAS_BACKEND` before Keras
# is imported. twinnets runs that program as three more arms, `keras-tf`, `keras-jax` and `keras-torch`, beside the
# native PyTorch side (docs/engines.md).
#
# **Processes.** `KERAS_BACKEND` is read once, when Keras is imported, so one process holds one engine: this
# notebook cannot switch engines in its kernel. It runs the project's command, which starts one worker process per
# arm, and reads what they wrote (`results.json`). Nothing here imports a framework.

# %%
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "compare.py").is_file())
sys.path.insert(0, str(ROOT))  # the checkout's modules, wherever Jupyter was started

from harness.task_reports import engine_section
from IPython.display import Image, Markdown, display


def source(path: str, start: str, lines: int) -> None:
    """A few lines of one of the project's files, from the first line that starts with `start`."""
    text = (ROOT / path).read_text().splitlines()
    first = next(i for i, line in enumerate(text) if line.startswith(start))
    print(f"# {path}\n" + "\n".join(text[first:first + lines]))


# %% [markdown]
# ## The model, written once in Keras and once in PyTorch
#
# `keras_models/mlp.py` uses `keras.layers` and `keras.ops` only: no `import tensorflow`, so the same file builds
# the model on every engine. `torch_impl/mlp.py` is the native PyTorch twin.

# %%
source("keras_models/mlp.py", "class", 21)

# %%
source("torch_impl/mlp.py", "class", 19)

# %% [markdown]
# ## Training: `model.compile` and `model.fit` on each engine, the eager loop natively
#
# The arms train as a Keras 3 user does (`keras_fit/train.py`); the PyTorch side runs its own
# `zero_grad / backward / step` loop (`torch_impl/train.py`).

# %%
source("keras_fit/train.py", "def train", 25)

# %% [markdown]
# ## The run: four arms, one process each
#
# The mlp on 400 digits for one epoch (two steps of 200): tiny, but the same command as
# `python compare.py --task mlp --frameworks all`. Before training, every arm runs the same canonical weights on the
# same digits and must agree with the first one named within 1e-5 (parity).

# %%
WORK = tempfile.TemporaryDirectory(prefix="twinnets-notebook-")  # removed when the kernel stops
out = Path(WORK.name) / "engines"
flags = ["--task", "mlp", "--frameworks", "keras-tf,keras-jax,keras-torch,torch", "--sample-size", "400",
         "--epochs", "1", "--control", "none", "--out", str(out)]
print("python compare.py", " ".join(flags[:-2]))
finished = subprocess.run([sys.executable, str(ROOT / "compare.py"), *flags], capture_output=True, text=True)
finished.check_returncode()
results = json.loads((out / "results.json").read_text())
reference = results["parity"]["reference"]
for arm, parity in results["parity"]["sides"].items():
    print(f"parity: max |{reference} - {arm}| = {parity['max_abs_diff']:.3g}, passed: {parity['passed']}")
for arm, result in results["frameworks"].items():
    print(f"{arm:12s} losses of its steps: {[round(loss, 6) for loss in result['batch_losses']]}, "
          f"test accuracy {result['metrics']['test_accuracy']:.4f}")

# %% [markdown]
# ## What each engine made of the same train step
#
# TensorFlow traces Keras' `train_step` into a `tf.function` graph once per input shape; JAX traces it into a jaxpr
# that XLA compiles; PyTorch runs it eagerly, recording an autograd graph on every step, like the native side.
# Counted in each arm's own process (`keras_fit/engines.py`), tabled by the run's report
# (`harness/task_reports.py`):

# %%
lines, images = engine_section(results, out)
display(Markdown("\n".join(lines[2:])))
native = results["frameworks"]["torch"]
graph, median = native["graph"], native["timing"]["step_s_median"]
print(f"native PyTorch (torch_impl/train.py): {graph['traces']} traces; an autograd graph of "
      f"{graph['autograd_nodes']} nodes recorded on every step; median step {median:.4f} s")

# %% [markdown]
# The jaxpr of the loss, as JAX traced it from the `keras.ops` code:

# %%
for image in images:
    display(Image(filename=out / image))

# %% [markdown]
# Same program, other engine: `keras-tf`, `keras-jax` and `keras-torch` differ only by the engine. Same engine,
# other API: `keras-torch` against `torch` differ only by the API. `python compare.py --task unet --benchmark
# --frameworks all` times the five train steps behind the same parity gate (docs/benchmark.md).
