"""What --diagnose writes: the heat map of the differences (diagnose.png), the console summary, the verdict
and report.md."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.diagnose.differences import FLOOR, HEAT_MAP, OTHER, PANEL_TITLES, QUANTITY_NAMES, REFERENCE
from harness.report import pyplot, save_figure, variables_line
from shared import tables


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
             "error: each side's float32 against its own float64 run", ""]
    rows = []
    for quantity, tolerance in results["tolerances"].items():
        found = results["largest"].get(quantity) or {}
        own = found.get("own_rel") or {}
        rows.append([quantity, f"{tolerance['row']} {tolerance['value']:.0e} {tolerance['measure']}",
                     _number(found.get("abs")), _number(found.get("rel")), _number(found.get("float64_rel")),
                     _number(own.get(OTHER)) + "/" + _number(own.get(REFERENCE)),
                     f"{found['step']}, {found['name']}" if found else ""])
    lines += tables.console(["quantity", "held to", "largest abs", "largest rel", "float64 rel", "own TF/PT",
                             "largest rel at (step, tensor)"], rows,
                            ("left", "left", "right", "right", "right", "right", "left")).splitlines()
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
    if results.get("environment", {}).get("variables"):
        lines[2:2] = [variables_line(results["environment"]), ""]
    if first is None:
        lines.append(verdict(first, steps, results.get("rounding"))[0].upper()
                     + verdict(first, steps, results.get("rounding"))[1:] + ".")
        if (results.get("rounding") or {}).get("count") and kink(results["records"]):
            lines += ["", KINK]
    else:
        lines.append(tables.markdown(
            ["step", "layer", "quantity", "tensor", "float32 abs", "float32 rel", "float64 rel", "tolerance"],
            [[first["step"], first["layer"], QUANTITY_NAMES[first["quantity"]], first["name"], _number(first["abs"]),
              _number(first["rel"]), _number(first.get("float64_rel")),
              f"float64 rel <= {first.get('float64_tolerance') or 0:.0e}; float32 {first['measure']} <= "
              f"{first['tolerance']:.0e} ({first['row']})"]]))
        if first["note"]:
            lines += ["", first["note"]]
    rows = []
    for quantity, tolerance in results["tolerances"].items():
        found = results["largest"].get(quantity, {})
        own = found.get("own_rel") or {}
        held = f"{tolerance['measure']} <= {tolerance['value']:.0e} ({tolerance['row']})"
        rows.append([QUANTITY_NAMES[quantity], held,
                     _number(found.get("abs")), _number(found.get("rel")), _number(found.get("float64_rel")),
                     f"{_number(own.get(OTHER))} / {_number(own.get(REFERENCE))}", found.get("rounding", 0),
                     f"{found.get('step', '')}, {found.get('name', '')}"])
    lines += ["", "## Largest difference per quantity", "",
              tables.markdown(["quantity", "held to", "largest abs", "largest rel", "float64 rel",
                               "own float32 error TF / PyTorch", "float32 rounding", "largest rel at step, tensor"],
                              rows)]
    lines += ["", "![log10 relative difference per layer and step](diagnose.png)", ""]
    return "\n".join(lines)


