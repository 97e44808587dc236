"""Your own pair, one side in its worker process (python -m harness.worker, kind "pair"): your file imported, your
factory called, the model described (described.json; the source side's weights too), then, once the parent has
written plan.json, the mapped weights loaded and every number the comparison needs recorded: each layer's output and
the gradients in float32 and float64, one training step in both, and `steps` SGD steps with the 1-ulp control's.
With --benchmark, a worker of its own times the side's training step and forward pass (bench_side)."""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from harness.benchmark.rows import peak_rss_bytes, time_steps
from harness.drift import WeightSketch, flat_weights, perturb_ulp
from harness.jobs import read_job
from harness.pair.mapping import SIDE_TITLES
from harness.surface import ARMS
from shared.atomic import atomic_path, write_atomic, write_json
from shared.errors import UserError, one_line
from shared.execution import MODES, Execution
from shared.weights import load_weights_file, save_weights

PRECISIONS = {"float32": "", "float64": ".f64"}  # the files' suffixes
PLAN_POLL_S = 0.05


def pair_side(side: str, job_path: str) -> None:
    """A worker's whole part: describe, wait for the parent's plan, run."""
    job = read_job(Path(job_path))
    if "bench" in job:
        bench_side(side, job)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = describe_side(side, job, configure_threads=True)
        plan = wait_for_plan(Path(job["out"]))
        run_side(side, job, state, plan)
    write_atomic(Path(job["out"]) / side / "warnings.log", "".join(
        f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in caught))


def where(job: dict, side: str) -> str:
    return f"{Path(job[side]['file']).name}:{job[side]['factory']}"


def load_factory(job: dict, side: str) -> Callable:
    """Your file run as a module of its own (its folder importable, after the project's), and the factory in it."""
    path, name = job[side]["file"], job[side]["factory"]
    spec = importlib.util.spec_from_file_location(f"twinnets_pair_{side}", path)
    module = importlib.util.module_from_spec(spec)
    if str(Path(path).parent) not in sys.path:
        sys.path.append(str(Path(path).parent))
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - your file's own error, in one line
        raise UserError(f"{path}: importing it raised {type(error).__name__}: {one_line(error)}") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UserError(f"{path}: {'defines no' if factory is None else 'has a non-callable'} {name!r} (the "
                        f"{SIDE_TITLES[side]} factory --pair names)")
    return factory


def built(pair, factory: Callable, precision: str, job: dict, side: str):
    """The factory's model, or one line saying that it raised, or what it returned instead of a model."""
    try:
        model = pair.build(factory, precision)
    except Exception as error:  # noqa: BLE001 - your factory's own error, in one line
        raise UserError(f"{where(job, side)}: the factory raised {type(error).__name__}: {one_line(error)}") from None
    expected, package, base = ("keras.Model", "keras.", "Layer") if side == "tf" else ("torch.nn.Module", "torch.nn.",
                                                                                         "Module")
    if not any(c.__module__.startswith(package) and c.__name__ == base for c in type(model).__mro__):
        raise UserError(f"{where(job, side)}: the factory returned {type(model).__name__}, not a {expected}")
    return model


def side_module(side: str, topic: str):
    """The side's module by name, in the side's own process (harness/ imports no framework)."""
    return importlib.import_module(f"{ARMS[side].package}.{topic}")


def arrays_of(job: dict, precision: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The input (PyTorch's layout) and the target, in the precision of the run (integer arrays as they are)."""
    out = Path(job["out"])
    inputs = np.load(out / "input.npy")
    inputs = inputs.astype(precision) if inputs.dtype.kind == "f" else inputs
    if not (out / "target.npy").is_file():
        return inputs, None
    target = np.load(out / "target.npy")
    return inputs, target.astype("int64" if job["loss"] == "ce" else precision)


def recorded(pair, model, inputs: np.ndarray, layout: dict, job: dict, side: str) -> list[dict]:
    try:
        return pair.forward(model, inputs, layout)[1]
    except Exception as error:  # noqa: BLE001 - a shape the model refuses, in one line
        shape = ",".join(map(str, inputs.shape))
        raise UserError(f"--input-shape {shape}: the {SIDE_TITLES[side]} model {where(job, side)} refuses it "
                        f"({type(error).__name__}: {one_line(error)[:300]})") from None


def describe_side(side: str, job: dict, configure_threads: bool = False) -> dict:
    """The model built and described; the source side's weights in canonical layout (own.safetensors)."""
    pair, runtime = side_module(side, "pair"), side_module(side, "runtime")
    runtime.configure(job["threads"] if configure_threads else runtime.threads(), job["seed"])
    factory = load_factory(job, side)
    model = built(pair, factory, "float32", job, side)
    inputs, _ = arrays_of(job, "float32")
    found = job["keras_layout"] or pair.layout_of(model, tuple(inputs.shape))
    if found is None:
        shape = inputs.shape
        raise UserError(f"--input-shape {','.join(map(str, shape))}: the Keras model {where(job, side)} declares an "
                        f"input that is neither {(*shape[2:], shape[1])} (channels last) nor {tuple(shape[1:])}")
    layout = {"input": found}
    records = recorded(pair, model, inputs, layout, job, side)
    units = pair.describe(model, records)
    out = Path(job["out"]) / side
    if job["source"] == side:
        own = [{"unit": u["name"], "tensor": u["name"], "kind": u["kind"], "config": u["config"]} for u in units]
        save_weights(pair.export_weights(model, own), out / "own.safetensors")
    write_json(out / "described.json", {"side": side, "layout": layout, "units": units,
                                        "records": [meta(r) for r in records],
                                        "versions": runtime.versions(), "threads": runtime.threads()})
    return {"pair": pair, "model": model, "factory": factory, "layout": layout}


def meta(record: dict) -> dict:
    """A record without its array: what the comparison reads besides the numbers."""
    return {**{key: value for key, value in record.items() if key != "array"}, "shape": list(record["array"].shape)}


def wait_for_plan(out: Path) -> dict:
    """The parent writes plan.json (atomically) once both sides are described and mapped."""
    while not (out / "plan.json").is_file():
        time.sleep(PLAN_POLL_S)
    return json.loads((out / "plan.json").read_text())


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path, suffix=".npz") as temporary:
        np.savez(temporary, **{key: np.asarray(value) for key, value in arrays.items()})


def run_side(side: str, job: dict, state: dict, plan: dict) -> dict:
    """Both precisions' layer outputs, gradients and one training step, then the steps and the control's."""
    pair, layout, out = state["pair"], state["layout"], Path(job["out"]) / side
    mapped, common = plan["sides"][side], plan["common"]
    weights = load_weights_file(Path(job["out"]) / "weights.safetensors")
    summary: dict = {"side": side, "layout": layout}
    for precision, suffix in PRECISIONS.items():
        try:
            model = state["model"] if precision == "float32" else built(pair, state["factory"], precision, job, side)
            inputs, targets = arrays_of(job, precision)
            pair.forward(model, inputs, layout)  # builds what a subclassed model creates on its first call
            pair.set_weights(model, weights, mapped)
            _, records = pair.forward(model, inputs, layout)
            loss, grads = pair.gradients(model, inputs, targets, job["loss"], layout, mapped)
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001 - float64 is a help, not a requirement: float32 is judged alone
            if precision == "float32":
                raise
            summary["float64_error"] = f"{type(error).__name__}: {one_line(error)[:300]}"
            continue
        save_arrays(out / f"forward{suffix}.npz", {f"{i:05d}": r["array"] for i, r in enumerate(records)})
        save_arrays(out / f"gradients{suffix}.npz", grads)
        summary[f"records{suffix}"], summary[f"loss{suffix}"] = [meta(r) for r in records], loss
        if precision == "float64":
            summary["step_loss.f64"] = pair.train_steps(model, inputs, targets, job["loss"], layout, lr_of(job), 1,
                                                        lambda k: save_arrays(out / "step1.f64.npz", only(
                                                            pair.export_weights(model, mapped), common)))
    summary.update(train(pair, state["model"], job, side, layout, weights, mapped, common))
    write_json(out / "result.json", summary)
    return summary


def lr_of(job: dict) -> float:
    """The learning rate rounded to float32 for both sides: Keras keeps it in a float32 variable, also in a float64
    run, where PyTorch's Python float would differ from it by 2e-10 relative: a real difference in float64."""
    return float(np.float32(job["lr"]))


def only(weights: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    return {name: weights[name] for name in names}


def train(pair, model, job: dict, side: str, layout: dict, weights: dict, mapped: list[dict],
          common: list[str]) -> dict:
    """`steps` SGD steps from the mapped weights and again from them moved by one ulp (the control): the weights'
    sketch after every step (drift.npz in <side>/ and <side>-control/, as harness/drift.py reads them), the
    weights after the first step and at the end."""
    inputs, targets = arrays_of(job, "float32")
    losses = {}
    for run, start in ((side, weights), (f"{side}-control", perturb_ulp(weights))):
        pair.set_weights(model, start, mapped)
        vector = flat_weights(only(pair.export_weights(model, mapped), common))
        sketch = WeightSketch(len(vector))
        steps, sketches = [0], [sketch(vector)]

        def record(step: int, run: str = run, sketch: WeightSketch = sketch) -> None:
            exported = only(pair.export_weights(model, mapped), common)
            steps.append(step)
            sketches.append(sketch(flat_weights(exported)))
            if run == side and step == 1:
                save_arrays(Path(job["out"]) / side / "step1.npz", exported)
            if run == side and step == job["steps"]:
                save_arrays(Path(job["out"]) / side / "final.npz", exported)

        losses[run] = pair.train_steps(model, inputs, targets, job["loss"], layout, lr_of(job), job["steps"], record)
        with atomic_path(Path(job["out"]) / run / "drift.npz", suffix=".npz") as temporary:
            np.savez(temporary, steps=np.asarray(steps), sketches=np.stack(sketches), exact=sketch.exact)
    return {"batch_losses": losses}


def bench_side(side: str, job: dict, configure_threads: bool = True) -> dict:
    """--benchmark, in a fresh worker process: your model built again, given the mapped weights the check
    compared, its training step timed (harness/benchmark/rows.py's time_steps: the first call alone, the warm-up,
    the timed steps), then from the same weights its forward pass in inference mode; each side's training mode
    (TensorFlow: one tf.function; PyTorch: eager). <out>/benchmark/<side>-r<run>.json."""
    bench, out = job["bench"], Path(job["out"])
    pair, runtime = side_module(side, "pair"), side_module(side, "runtime")
    timing, side_benchmark = side_module(side, "pair_benchmark"), side_module(side, "benchmark")
    runtime.configure(job["threads"] if configure_threads else runtime.threads(), job["seed"])
    execution = Execution(MODES[side][0])
    harness_set = side_benchmark.configure_fairness(execution, False)  # TF32 off on both, before the model is built
    model = built(pair, load_factory(job, side), "float32", job, side)
    inputs, targets = arrays_of(job, "float32")
    layout = dict(bench["layout"])
    pair.forward(model, inputs, layout)  # builds what a subclassed model creates on its first call
    plan = json.loads((out / "plan.json").read_text())
    weights, mapped = load_weights_file(out / "weights.safetensors"), plan["sides"][side]
    pair.set_weights(model, weights, mapped)
    found = {"train": time_steps(timing.train_step(model, inputs, targets, job["loss"], layout, lr_of(job)),
                                 bench["warmup"], bench["steps"])}
    if bench["inference"]:
        pair.set_weights(model, weights, mapped)  # the same weights as the training step started from
        found["forward"] = time_steps(timing.inference_step(model, inputs, layout), bench["warmup"], bench["steps"])
    result = {"side": side, "run": bench["run"], "mode": execution.mode, **found, "threads": runtime.threads(),
              "versions": runtime.versions(), "build": side_benchmark.build_info(), "peak_rss_bytes": peak_rss_bytes(),
              "fairness": {"harness_set": harness_set, "settings": side_benchmark.fairness_settings(execution)}}
    write_json(out / "benchmark" / f"{side}-r{bench['run']}.json", result)
    return result
