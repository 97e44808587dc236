"""Where the two sides' recorded steps differ, in the order a step computes them: each quantity of each layer
against the task's tolerance, each side's own float32 rounding against its float64 run, the first divergence."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.diagnose.steps import PRECISIONS
from harness.registry import TOLERANCES
from harness.report import SIDE_NAMES

# The canonical layout is PyTorch's: each difference is taken relative to PyTorch's numbers.
REFERENCE, OTHER = "torch", "tf"

# What one step computes, in its order, and how each is held to the task's tolerances (harness/registry.py): (the
# table's row, whether it bounds the largest absolute difference or the relative one, largest |tf - torch| /
# largest |torch| of a tensor).
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


