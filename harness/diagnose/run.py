"""--diagnose K, where two twins part: the first K training steps of mlp, cnn or unet on both sides, from the same
canonical weights on the same batches, every layer's numbers recorded at every step (diagnose_side, in one worker
process per side, with the side's own diagnose.py), then compared in the order a step computes them (run_diagnose):
the first (step, layer, quantity) whose difference exceeds the task's tolerance, a heat map, results.json,
report.md and a console summary."""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from shared.atomic import atomic_path, write_atomic, write_json
from shared.data.batches import LabelledImages, batch_indices
from shared.execution import default_execution
from shared.registry import task_of
from shared.report import SIDE_NAMES, pyplot, save_figure
from shared.run import output_folder
from shared.tasks import TaskSpec
from shared.tolerances import TOLERANCES
from shared.workers import job_spec, launch_worker

# The canonical layout is PyTorch's: each difference is taken relative to PyTorch's numbers.
REFERENCE, OTHER = "torch", "tf"

# What one step computes, in its order, and how each is held to shared/tolerances.py: (the table's row, whether it
# bounds the largest absolute difference or the relative one, largest |tf - torch| / largest |torch| of a tensor).
# The optimizer's state is a running sum of gradients (SGD's buffer b = momentum * b + g; Adam's moments), so its
# relative error is the gradients' own, and "grad" bounds it. A weight after the step is w - lr * b, and one step
# moves it by a small part of its size, so the same relative bound on it is strict yet far above float32's rounding
# of w (about 1e-7 of it); "trained_loss" (1e-3, for a loss after many steps) would let a wrong momentum through:
# 0.99 for 0.9 moves a weight by lr * 0.09 * b more, 3e-4 to 1e-3 of its size at step 1 in the mlp.
COMPARISONS = {
    "output": ("forward", "abs"),  # each canonical layer's output in the step's forward pass
    "loss": ("loss", "abs"),
    "gradient": ("grad", "rel"),
    "weight": ("grad", "rel"),  # every exported tensor after the step, BatchNorm's running statistics included
    "optimizer_state": ("grad", "rel"),  # "<param>.momentum"; "<param>.exp_avg", "<param>.exp_avg_sq"
}
QUANTITIES = tuple(COMPARISONS)
QUANTITY_NAMES = {"output": "output", "loss": "loss", "gradient": "gradient", "weight": "weight after the step",
                  "optimizer_state": "optimizer state after the step"}
PANEL_TITLES = {"output": "layer outputs", "gradient": "gradients", "weight": "weights after the step"}
HEAT_MAP = tuple(PANEL_TITLES)  # the panels of diagnose.png
FLOOR = -9.0  # log10 of a relative difference: float32 agrees to about 1e-7, so below 1e-9 is "equal"
# Each side runs the K steps twice: in float32, as it trains, and in float64 from the same weights and batches. A
# float32 difference beyond the table's tolerance is rounding when the float64 twins agree (TOLERANCES "float64"):
# rounding there is 5e8 times smaller, so only a different computation survives it. Two nets whose sums cancel
# (a BatchNorm's gradients) or whose ReLU and max-pool inputs sit within rounding of a kink or tie part in float32
# for that reason alone; each side's own float32 error, against its float64 run, shows how large that rounding is.
PRECISIONS = {"float32": "", "float64": ".f64"}  # the step files' suffixes


# ---- one side, in its worker process -------------------------------------------------------------------------

def first_batches(n: int, spec: TaskSpec, steps: int) -> list[tuple[int, np.ndarray]]:
    """The first `steps` training batches as (epoch, indices), in the shared order of the training loops (epochs
    count from 1); past the end of an epoch they go on into the next one."""
    batches: list[tuple[int, np.ndarray]] = []
    epoch = 1
    while len(batches) < steps:
        batches += [(epoch, indices) for indices in batch_indices(n, spec.batch_size, spec.seed, epoch)]
        epoch += 1
    return batches[:steps]


def batch_arrays(dataset, epoch: int, indices: np.ndarray, precision: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """One batch as canonical numpy in the given float precision: in-memory digits and their labels, or the photos
    and masks (N, H, W, 1) of a TrainImageDataset, augmented as that epoch augments them."""
    if isinstance(dataset, LabelledImages):
        return dataset.images[indices].astype(precision), dataset.labels[indices]
    pairs = [dataset.get(int(index), epoch) for index in indices]
    return (np.stack([photo for photo, _ in pairs]).astype(precision),
            np.stack([mask for _, mask in pairs])[..., None].astype(precision))


def save_step(path: Path, recorded: dict[str, dict[str, np.ndarray]]) -> None:
    """One step's arrays as "<quantity>:<name>" entries of an .npz, in the order recorded."""
    arrays = {f"{quantity}:{name}": np.asarray(value) for quantity, values in recorded.items()
              for name, value in values.items()}
    with atomic_path(path, suffix=".npz") as temporary:
        np.savez(temporary, **arrays)


def diagnose_side(side: str, job: dict) -> dict:
    """The first job["steps"] training steps of one side from the canonical initial weights, in float32 and then
    again in float64: each step's layer outputs (recorded during the step's own forward pass), loss, gradients
    (those the update applies), weights and optimizer state after the update, saved as <out>/<side>/step<k>.npz
    (float32) and step<k>.f64.npz; a summary in diagnose.json."""
    spec = job_spec(job)
    task = task_of(spec)
    surface = task.surface(side, spec)
    out = Path(job["out"]) / side
    out.mkdir(parents=True, exist_ok=True)
    surface.runtime.configure(job["threads"], spec.seed)
    execution = surface.runtime.configure_execution(default_execution(side, device=job.get("device", "cpu")))
    trained, recorder = surface.task, surface.module("diagnose")
    dataset, description = task.train_set(spec, job["data"])
    batches = first_batches(len(dataset), spec, job["steps"])
    summary = {"side": side, "steps": len(batches), "batch_sizes": [len(indices) for _, indices in batches],
               "train_set": description, "execution": execution.to_dict(), "threads": surface.runtime.threads(),
               "versions": surface.runtime.versions()}
    initial = task.initial_weights(spec)
    for precision, suffix in PRECISIONS.items():
        with recorder.float64() if precision == "float64" else nullcontext():
            losses, summary["optimizer"] = record_steps(trained, recorder, spec, initial, dataset, batches,
                                                        precision, execution, out, suffix)
        summary["losses" if precision == "float32" else "losses_float64"] = losses
    write_json(out / "diagnose.json", summary)
    return summary


def record_steps(trained, recorder, spec: TaskSpec, initial: dict, dataset, batches: list, precision: str, execution,
                 out: Path, suffix: str) -> tuple[list[float], str]:
    """The steps in one precision, from a model and optimizer built in it; each step's numbers to its own file."""
    model = trained.build(spec)
    trained.load_weights(model, initial)
    optimizer = trained.make_optimizer(model, spec)
    if precision == "float64":  # the float32 values of lr and momentum, as both sides' float32 runs use them
        optimizer = recorder.float32_hyperparameters(optimizer)
    losses = []
    for step, (epoch, indices) in enumerate(batches):
        images, targets = batch_arrays(dataset, epoch, indices, precision)
        with recorder.recording(model) as outputs:
            loss, gradients = recorder.train_step(model, optimizer, trained.loss,
                                                  *trained.to_tensors(images, targets, execution))
        save_step(out / f"step{step}{suffix}.npz", {
            "output": outputs, "loss": {"loss": np.float64(loss)}, "gradient": gradients,
            "weight": trained.export_weights(model), "optimizer_state": recorder.optimizer_state(model, optimizer)})
        losses.append(loss)
    return losses, type(optimizer).__name__


# ---- the comparison ------------------------------------------------------------------------------------------

def difference(a: np.ndarray, b: np.ndarray, scale: np.ndarray | None = None) -> tuple[float, float]:
    """The largest |a - b|, and that over the largest |b| (b the reference), or over the largest |scale| where that
    is larger; never over zero (a tensor of zeros against zeros differs by nothing)."""
    if a.size == 0:
        return 0.0, 0.0
    gap = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    largest = max(float(np.max(np.abs(b))), 0.0 if scale is None else float(np.max(np.abs(scale))))
    return gap, gap / max(largest, float(np.finfo(np.float32).tiny))


def weight_of(quantity: str, name: str) -> str | None:
    """What a bias's gradient (and the optimizer state made of it) is measured against: its layer's weight's. The
    bias of a convolution that a training-mode BatchNorm follows is subtracted again with the batch mean, so its
    gradient is zero but for rounding, and over its own size any rounding would look like a divergence (the
    equivalence tests measure it the same way). None: measured against its own size."""
    if quantity not in ("gradient", "optimizer_state") or ".bias" not in name:
        return None
    layer, _, state = name.rpartition(".bias")  # "fc1.bias.momentum" -> "fc1", ".momentum"
    return f"{quantity}:{layer}.weight{state}"


def layer_of(quantity: str, name: str) -> str:
    """The canonical layer a recorded name belongs to: "enc1.bn1" of "enc1.bn1.running_var" and of
    "enc1.bn1.weight.momentum"; outputs are named by their layer already."""
    if quantity == "output":
        return name
    if quantity == "loss":
        return "loss"
    return name.rsplit(".", 2 if quantity == "optimizer_state" else 1)[0]


def step_records(step: int, other: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                 tolerances: dict[str, dict]) -> list[dict]:
    """Every recorded (quantity, name) of one step, in the order the step computes them: the layer outputs in
    data-flow order (the order the reference's forward pass produced them), the loss, the gradients in the order
    backpropagation computes them (the last layer's first), then the weights and the optimizer state after the
    update, layer by layer in data-flow order."""
    keys = list(reference) + [key for key in other if key not in reference]
    flow = [key.split(":", 1)[1] for key in reference if key.startswith("output:")]
    position = {layer: index for index, layer in enumerate(flow)}
    records = []
    for quantity in QUANTITIES:
        names = [key.split(":", 1)[1] for key in keys if key.split(":", 1)[0] == quantity]
        backward = -1 if quantity == "gradient" else 1  # backpropagation computes the last layer's first
        names.sort(key=lambda name: backward * position.get(layer_of(quantity, name), len(position)))  # stable
        for name in names:
            key = f"{quantity}:{name}"
            record = {"step": step, "quantity": quantity, "layer": layer_of(quantity, name), "name": name}
            if key not in other or key not in reference:
                record.update(abs=None, rel=None, exceeds=True,
                              note=f"only on the {SIDE_NAMES[REFERENCE if key in reference else OTHER]} side")
            elif other[key].shape != reference[key].shape:
                record.update(abs=None, rel=None, exceeds=True,
                              note=f"shapes {other[key].shape} ({SIDE_NAMES[OTHER]}) and {reference[key].shape}")
            else:
                gap, relative = difference(other[key], reference[key], reference.get(weight_of(quantity, name)))
                measure = tolerances[quantity]["measure"]
                record.update(abs=gap, rel=relative,
                              exceeds=bool((gap if measure == "abs" else relative) > tolerances[quantity]["value"]))
            records.append(record)
    return records


def tolerances_of(task: str) -> dict[str, dict]:
    """Per quantity, its float32 row of the table and measure, and the float64 twins' relative tolerance."""
    return {quantity: {"row": row, "measure": measure, "value": TOLERANCES[task][row],
                       "float64": TOLERANCES[task]["float64"]}
            for quantity, (row, measure) in COMPARISONS.items()}


def loaded(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


def own_rounding(float32: dict[str, np.ndarray], float64: dict[str, np.ndarray], key: str) -> float | None:
    """One side's float32 error on a tensor, against its own float64 run: relative, as the twins are compared."""
    if key not in float32 or key not in float64 or float32[key].shape != float64[key].shape:
        return None
    quantity, name = key.split(":", 1)
    return difference(float32[key], float64[key], float64.get(weight_of(quantity, name)))[1]


def with_float64(records: list[dict], float64_records: list[dict], steps32: dict, steps64: dict) -> list[dict]:
    """Each float32 record with its float64 twin's difference and each side's own float32 error; it parts when the
    float64 twins differ beyond their tolerance (a float32 excess the float64 twins do not share is rounding)."""
    twins = {(r["quantity"], r["name"]): r for r in float64_records}
    for record in records:
        twin = twins.get((record["quantity"], record["name"]))
        key = f"{record['quantity']}:{record['name']}"
        record["float64_abs"], record["float64_rel"] = (None, None) if twin is None else (twin["abs"], twin["rel"])
        record["own_rel"] = {side: own_rounding(steps32[side], steps64[side], key) for side in (OTHER, REFERENCE)}
        record["parts"] = record["exceeds"] if twin is None else twin["exceeds"]
        record["rounding"] = record["exceeds"] and not record["parts"]
    return records


def compare_sides(out: Path, steps: int, tolerances: dict[str, dict]) -> list[dict]:
    """The records of every step, read step by step from the two sides' .npz files (bounded memory): float32, each
    with its float64 twin where both sides recorded one."""
    float64_tolerances = {quantity: {"row": "float64", "measure": "rel", "value": tolerance["float64"]}
                          for quantity, tolerance in tolerances.items()}
    records = []
    for step in range(steps):
        steps32 = {side: loaded(out / side / f"step{step}.npz") for side in (OTHER, REFERENCE)}
        found = step_records(step, steps32[OTHER], steps32[REFERENCE], tolerances)
        steps64 = {side: loaded(out / side / f"step{step}{PRECISIONS['float64']}.npz") for side in (OTHER, REFERENCE)}
        if all(value is not None for value in steps64.values()):
            found = with_float64(found, step_records(step, steps64[OTHER], steps64[REFERENCE], float64_tolerances),
                                 steps32, steps64)
        else:
            for record in found:
                record.update(parts=record["exceeds"], rounding=False)
        records += found
    return records


def first_divergence(records: list[dict], tolerances: dict[str, dict]) -> dict | None:
    """The first record, in the order the steps compute them, where the twins part: its float64 twins differ beyond
    their tolerance (or, without float64 runs, its float32 difference exceeds the table's)."""
    for record in records:
        if record["parts"]:
            tolerance = tolerances[record["quantity"]]
            found = {key: record.get(key) for key in ("step", "layer", "quantity", "name", "abs", "rel", "note",
                                                      "float64_abs", "float64_rel")}
            return {**found, "tolerance": tolerance["value"], "measure": tolerance["measure"], "row": tolerance["row"],
                    "float64_tolerance": tolerance.get("float64")}
    return None


def largest(records: list[dict]) -> dict[str, dict]:
    """Per quantity, the largest relative difference and the largest absolute one over every step, and where; the
    float64 twins' largest relative difference, and each side's largest own float32 error."""
    found = {}
    for quantity in QUANTITIES:
        compared = [r for r in records if r["quantity"] == quantity and r["rel"] is not None]
        if compared:
            worst = max(compared, key=lambda r: r["rel"])
            found[quantity] = {"rel": worst["rel"], "abs": max(r["abs"] for r in compared),
                               "step": worst["step"], "name": worst["name"],
                               "float64_rel": _most(r.get("float64_rel") for r in compared),
                               "own_rel": {side: _most(r.get("own_rel", {}).get(side) for r in compared)
                                           for side in (OTHER, REFERENCE)},
                               "rounding": sum(bool(r.get("rounding")) for r in compared)}
    return found


def _most(values) -> float | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def rounding_summary(records: list[dict]) -> dict:
    """The float32 differences beyond the table's tolerance that the float64 twins do not share."""
    rounded = [r for r in records if r.get("rounding")]
    return {"count": len(rounded), "float64_rel": _most(r["float64_rel"] for r in rounded),
            "rel": _most(r["rel"] for r in rounded),
            "own_rel": _most(value for r in rounded for value in r["own_rel"].values())}


# ---- what it writes ------------------------------------------------------------------------------------------

def heat_map(results: dict, path: Path) -> Path:
    """Layers down, steps across, colour log10 of the relative difference (the largest of a layer's tensors), one
    panel per quantity; a cross marks a cell beyond its tolerance, a red frame the first divergence."""
    plt = pyplot()
    records, steps = results["records"], results["config"]["steps"]
    layers = list(dict.fromkeys(r["layer"] for r in records if r["quantity"] == "output"))
    layers += [layer for layer in dict.fromkeys(r["layer"] for r in records if r["quantity"] in HEAT_MAP)
               if layer not in layers]
    row = {layer: index for index, layer in enumerate(layers)}
    width = max(2.2, 0.32 * steps + 1.2)
    figure, axes = plt.subplots(1, len(HEAT_MAP), figsize=(len(HEAT_MAP) * width + 2.5, 0.24 * len(layers) + 2.0),
                                sharey=True, squeeze=False, layout="constrained")
    first = results["first_divergence"]
    image = None
    for axis, quantity in zip(axes[0], HEAT_MAP):
        grid = np.full((len(layers), steps), np.nan)
        beyond = np.zeros_like(grid, dtype=bool)
        rounded = np.zeros_like(grid, dtype=bool)  # beyond the float32 tolerance, but the float64 twins agree
        for r in records:
            if r["quantity"] != quantity:
                continue
            i, j = row[r["layer"]], r["step"]
            value = 0.0 if r["rel"] is None else np.log10(max(r["rel"], 10.0 ** FLOOR))  # None: one side lacks it
            grid[i, j] = np.fmax(grid[i, j], value)  # the layer's worst tensor (fmax passes over the initial NaN)
            beyond[i, j] |= r["parts"]
            rounded[i, j] |= bool(r.get("rounding"))
        image = axis.imshow(np.clip(grid, FLOOR, 0.0), aspect="auto", cmap="viridis", vmin=FLOOR, vmax=0.0,
                            interpolation="nearest")
        for i, j in zip(*np.nonzero(beyond)):
            axis.text(j, i, "×", ha="center", va="center", color="white", fontsize=9, fontweight="bold")
        for i, j in zip(*np.nonzero(rounded & ~beyond)):
            axis.text(j, i, "○", ha="center", va="center", color="white", fontsize=7)
        if first is not None and first["quantity"] == quantity:
            axis.add_patch(plt.Rectangle((first["step"] - 0.5, row[first["layer"]] - 0.5), 1, 1, fill=False,
                                         edgecolor="red", linewidth=2.5))
        axis.set_title(PANEL_TITLES[quantity], fontsize=10)
        axis.set_xlabel("step")
        axis.set_xticks(range(steps) if steps <= 20 else range(0, steps, max(1, steps // 10)))
    axes[0][0].set_yticks(range(len(layers)), layers, fontsize=8)
    colorbar = figure.colorbar(image, ax=axes[0].tolist(), fraction=0.04, pad=0.02)
    colorbar.set_label("log10 max |tf - torch| / max |torch|")
    figure.suptitle(f"{results['task']}: TensorFlow against PyTorch, {steps} steps from the same weights in float32 "
                    f"(× the twins part: beyond tolerance in float64 too; ○ float32 rounding: beyond the float32 "
                    f"tolerance, the float64 twins agree)", fontsize=10)
    return save_figure(figure, path)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def summary_lines(results: dict) -> list[str]:
    """The console summary and the report's sentences: the largest difference per quantity, then the verdict."""
    steps, first = results["config"]["steps"], results["first_divergence"]
    lines = [f"{results['task']}, {steps} steps: TensorFlow against PyTorch, relative to PyTorch's numbers; own "
             "error: each side's float32 against its own float64 run", "",
             f"{'quantity':<17} {'held to':<20} {'largest abs':>11} {'largest rel':>11} {'float64 rel':>11} "
             f"{'own TF/PT':>19}  largest rel at (step, tensor)"]
    for quantity, tolerance in results["tolerances"].items():
        found = results["largest"].get(quantity) or {}
        held = f"{tolerance['row']} {tolerance['value']:.0e} {tolerance['measure']}"
        where = f"{found['step']}, {found['name']}" if found else ""
        own = found.get("own_rel") or {}
        lines.append(f"{quantity:<17} {held:<20} {_number(found.get('abs')):>11} {_number(found.get('rel')):>11} "
                     f"{_number(found.get('float64_rel')):>11} "
                     f"{_number(own.get(OTHER)) + '/' + _number(own.get(REFERENCE)):>19}  {where}")
    lines += ["", verdict(first, steps, results.get("rounding"))]
    if first is None and (results.get("rounding") or {}).get("count") and kink(results["records"]):
        lines.append(f"({KINK[0].lower()}{KINK[1:-1]})")
    return lines


KINK = ("In a step whose forward pass agrees, gradients that part in float32 alone are the mark of sums that cancel "
        "(a BatchNorm's gradients) or of a ReLU or max-pooling input within rounding of its kink or tie, which "
        "float32 decides differently on each side.")


def kink(records: list[dict]) -> bool:
    """Whether some float32 excess set apart as rounding is a gradient of a step whose outputs and loss agree."""
    return any(r.get("rounding") and r["quantity"] == "gradient" and not any(
        o["exceeds"] for o in records if o["step"] == r["step"] and o["quantity"] in ("output", "loss"))
        for r in records)


def verdict(first: dict | None, steps: int, rounding: dict | None = None) -> str:
    if first is None:
        text = f"nothing exceeds its tolerance in {steps} step{'s' if steps != 1 else ''}"
        if rounding and rounding["count"]:
            text += (f": {rounding['count']} float32 differences beyond the float32 tolerance (largest relative "
                     f"{rounding['rel']:.1e}) are rounding, for the float64 twins agree within "
                     f"{first_tolerance(rounding):.0e} (largest {_number(rounding['float64_rel'])}); each side's own "
                     f"float32 error against its float64 run reaches {_number(rounding['own_rel'])} on them")
        return text
    if first["note"]:
        measured = first["note"]
    elif first.get("float64_rel") is not None:
        measured = (f"float64 twins {first['float64_rel']:.2e} apart > {first['float64_tolerance']:.0e} (float64); "
                    f"in float32 {first[first['measure']]:.2e} ({first['measure']}, {first['row']} "
                    f"{first['tolerance']:.0e})")
    else:
        measured = (f"largest {'absolute' if first['measure'] == 'abs' else 'relative'} difference "
                    f"{first[first['measure']]:.2e} > {first['tolerance']:.0e} ({first['row']})")
    return (f"the twins part at step {first['step']}, layer {first['layer']}: {QUANTITY_NAMES[first['quantity']]} "
            f"{first['name']}, {measured}")


def first_tolerance(rounding: dict) -> float:
    return rounding.get("float64_tolerance", 1e-8)


def markdown(results: dict) -> str:
    steps, first = results["config"]["steps"], results["first_divergence"]
    lines = [f"# Where the twins part: {results['task']}, {steps} training steps", "",
             f"TensorFlow against PyTorch from the same canonical initial weights on the same {steps} training "
             f"batches ({results['data'].get('source', 'data')}). For every step and canonical layer: the layer's "
             "output in the step's forward pass, the loss, every parameter's gradient, every tensor after the "
             "optimizer step (BatchNorm's running statistics included) and the optimizer's state; each as the "
             "largest |tf - torch| (abs) and that over the largest |torch| (rel), in the order a step computes them.",
             "", "Both sides run the steps twice, in float32 and in float64. A float32 difference beyond the table's "
             "tolerance is float32 rounding when the float64 twins agree (rounding there is 5e8 times smaller); the "
             "twins part only where the float64 twins differ too. Each side's own error, its float32 numbers "
             "against its own float64 run, shows how large float32's rounding is on that tensor.",
             "", "## First divergence", ""]
    if first is None:
        lines.append(verdict(first, steps, results.get("rounding"))[0].upper()
                     + verdict(first, steps, results.get("rounding"))[1:] + ".")
        if (results.get("rounding") or {}).get("count") and kink(results["records"]):
            lines += ["", KINK]
    else:
        lines += ["| step | layer | quantity | tensor | float32 abs | float32 rel | float64 rel | tolerance |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {first['step']} | {first['layer']} | {QUANTITY_NAMES[first['quantity']]} | {first['name']} | "
                  f"{_number(first['abs'])} | {_number(first['rel'])} | {_number(first.get('float64_rel'))} | "
                  f"float64 rel <= {first.get('float64_tolerance') or 0:.0e}; float32 {first['measure']} <= "
                  f"{first['tolerance']:.0e} ({first['row']}) |"]
        if first["note"]:
            lines += ["", first["note"]]
    lines += ["", "## Largest difference per quantity", "",
              "| quantity | held to | largest abs | largest rel | float64 rel | own float32 error TF / PyTorch | "
              "float32 rounding | largest rel at step, tensor |", "|---|---|---|---|---|---|---|---|"]
    for quantity, tolerance in results["tolerances"].items():
        found = results["largest"].get(quantity, {})
        own = found.get("own_rel") or {}
        lines.append(f"| {QUANTITY_NAMES[quantity]} | {tolerance['measure']} <= {tolerance['value']:.0e} "
                     f"({tolerance['row']}) | {_number(found.get('abs'))} | {_number(found.get('rel'))} | "
                     f"{_number(found.get('float64_rel'))} | {_number(own.get(OTHER))} / "
                     f"{_number(own.get(REFERENCE))} | {found.get('rounding', 0)} | "
                     f"{found.get('step', '')}, {found.get('name', '')} |")
    lines += ["", "![log10 relative difference per layer and step](diagnose.png)", ""]
    return "\n".join(lines)


# ---- the command ---------------------------------------------------------------------------------------------

def run_diagnose(spec: TaskSpec, sides: list[str], args) -> dict:
    """compare.py --diagnose K: both sides' first K steps, each in its worker process (or this one with
    --in-process), compared; writes diagnose.png, results.json and report.md into the output folder."""
    steps = args.diagnose
    out = output_folder(args.out, spec.name, args.overwrite)
    task = task_of(spec)
    data = task.prepare_data(spec, args.data_dir, args.download)
    threads = max(1, args.threads or os.cpu_count() or 1)
    job = {"task": spec.name, "spec": spec.to_dict(), "threads": threads, "out": str(out.resolve()), "data": data,
           "steps": steps, "device": args.device}
    for side in sides:  # --overwrite: an earlier run's steps must not pass for this run's
        shutil.rmtree(out / side, ignore_errors=True)
    job_path = write_json(out / "diagnose-job.json", job)
    started = time.perf_counter()
    if args.in_process:  # torch_impl first: see torch_impl/__init__.py on loading both frameworks in one process
        for side in sorted(sides, key=lambda s: s != "torch"):
            task.surface(side, spec)
    for side in sides:
        print(f"== {SIDE_NAMES[side]}: {steps} training step{'s' if steps != 1 else ''} recorded ==", flush=True)
        diagnose_side(side, job) if args.in_process else launch_worker(side, job_path, "--diagnose", threads=threads)
    tolerances = tolerances_of(spec.name)
    records = compare_sides(out, steps, tolerances)
    results = {
        "task": spec.name,
        "data": (data or {}).get("description", {"source": "none"}),
        "config": {**spec.to_dict(), "steps": steps, "frameworks": sides, "threads": threads, "device": args.device},
        "reference": REFERENCE,
        "tolerances": tolerances,
        "first_divergence": first_divergence(records, tolerances),
        "largest": largest(records),
        "rounding": {**rounding_summary(records), "float64_tolerance": TOLERANCES[spec.name]["float64"]},
        "sides": {side: json.loads((out / side / "diagnose.json").read_text()) for side in sides},
        "records": records,
        "wall_s": time.perf_counter() - started,
    }
    heat_map(results, out / "diagnose.png")
    write_json(out / "results.json", results)
    write_atomic(out / "report.md", markdown(results))
    os.unlink(job_path)
    print()
    print("\n".join(summary_lines(results)))
    print(f"\nwrote {out}/results.json, {out}/report.md and {out}/diagnose.png")
    return results
