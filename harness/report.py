"""Side-by-side tables, plots and results.json for a run of both sides."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness import drift
from harness.surface import ARMS
from shared import tables
from shared.atomic import jsonable, write_atomic, write_json
from shared.graph_drawing import draw_beside
from shared.plotting import pyplot, save_figure

SIDE_NAMES = {name: arm.title for name, arm in ARMS.items()}
# TensorFlow wide and pale underneath, PyTorch thin on top, the Keras arms in between: where the curves agree
# all stay visible.
SIDE_STYLES = {name: {"color": arm.color, "linewidth": 2, "alpha": 0.8}
               for name, arm in ARMS.items()}
SIDE_STYLES.update(tf={"color": "tab:orange", "linewidth": 4, "alpha": 0.55},
                   torch={"color": "tab:blue", "linewidth": 1.2})


def plot_losses(results: dict, path: Path, key: str = "loss", per_batch: bool = True,
                step_name: str = "epoch") -> Path:
    """Loss curves of both sides on one axis (per batch when recorded, else per epoch)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for side, result in results["frameworks"].items():
        batches = result.get("batch_losses") if per_batch else None
        if batches:
            axis.plot(np.arange(1, len(batches) + 1), batches, label=SIDE_NAMES[side], **SIDE_STYLES[side])
            axis.set_xlabel("training step (batch)")
        else:
            history = result.get("history", [])
            axis.plot([h["epoch"] for h in history], [h[key] for h in history], label=SIDE_NAMES[side],
                      **SIDE_STYLES[side])
            axis.set_xlabel(step_name)
    axis.set_ylabel(key)
    axis.set_title(f"{results['task']}: {key} of both sides")
    axis.set_yscale("log")
    axis.legend()
    axis.grid(alpha=0.3)
    return save_figure(figure, path)


def plot_neuron_surface(results: dict, path: Path) -> Path:
    """E(w, b) with both descent paths and the line of exact solutions phi*w + b = logit(target)."""
    plt = pyplot()
    config = results["config"]
    phi, target = config["phi"], config["target"]
    paths = {side: np.array([[p["w"], p["b"]] for p in r["trajectory"]]) for side, r in results["frameworks"].items()}
    points = np.concatenate(list(paths.values()))
    w_lo, w_hi = points[:, 0].min() - 3, points[:, 0].max() + 3
    b_lo, b_hi = points[:, 1].min() - 2, points[:, 1].max() + 2
    w_grid, b_grid = np.meshgrid(np.linspace(w_lo, w_hi, 200), np.linspace(b_lo, b_hi, 200))
    surface = 0.5 * (1 / (1 + np.exp(-(phi * w_grid + b_grid))) - target) ** 2
    figure, axis = plt.subplots(figsize=(7, 5.5))
    contour = axis.contourf(w_grid, b_grid, surface, levels=30, cmap="viridis")
    figure.colorbar(contour, label="E = 1/2 (O - t)^2")
    logit = math.log(target / (1 - target))
    ws = np.linspace(w_lo, w_hi, 2)
    axis.plot(ws, logit - phi * ws, color="white", linewidth=1.5,
              label=f"exact solutions: {phi}w + b = logit({target})")
    for side, xy in paths.items():
        axis.plot(xy[:, 0], xy[:, 1], label=f"{SIDE_NAMES[side]} descent path", **SIDE_STYLES[side])
    axis.plot(*xy[0], marker="s", color="red", markersize=7, linestyle="none", label="start")
    axis.plot(*xy[-1], marker="*", color="white", markersize=12, linestyle="none", label="end")
    axis.set_aspect("equal")  # so the path is seen to meet the solution line at a right angle
    axis.set_xlim(w_lo, w_hi)
    axis.set_ylim(b_lo, b_hi)
    axis.set_xlabel("w")
    axis.set_ylabel("b")
    axis.set_title("One equation, two unknowns: descent stops on the nearest exact solution")
    axis.legend(loc="lower left", fontsize=8)
    return save_figure(figure, path)


def side_by_side(results: dict, width: float, height: float) -> tuple:
    """A figure with one panel per side, and (axis, side, that side's result) for each panel."""
    sides = list(results["frameworks"])
    figure, axes = pyplot().subplots(1, len(sides), figsize=(width * len(sides), height), squeeze=False)
    return figure, [(axis, side, results["frameworks"][side]) for axis, side in zip(axes[0], sides)]


def plot_graphs(results: dict, path: Path) -> Path:
    """The graphs of z = 2x^2 + 5x drawn as node-and-arrow diagrams, one above the other: TensorFlow's traced
    tf.function graph, PyTorch's autograd graph and the FX graph torch.compile captures (those the run has)."""
    order = ("tf_function_z", "torch_autograd_z", "torch_dynamo_z")
    drawings = {name: d for result in results["frameworks"].values() for name, d in result.get("drawings", {}).items()}
    return draw_beside([drawings[name] for name in order if name in drawings], path, stacked=True)


def plot_confusion(results: dict, path: Path) -> Path:
    """One confusion matrix per side (rows: true digit, columns: predicted digit)."""
    figure, panels = side_by_side(results, 5, 4.4)
    for axis, side, result in panels:
        matrix = np.asarray(result["confusion_matrix"])
        axis.imshow(matrix, cmap="Blues")
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                axis.text(col, row, str(count), ha="center", va="center", fontsize=7,
                          color="white" if count > matrix.max() / 2 else "black")
        accuracy = result["metrics"]["test_accuracy"]
        axis.set_title(f"{SIDE_NAMES[side]}: test accuracy {accuracy:.4f}")
        axis.set_xlabel("predicted digit")
        axis.set_ylabel("true digit")
        axis.set_xticks(range(matrix.shape[1]))
        axis.set_yticks(range(matrix.shape[0]))
    return save_figure(figure, path)


def plot_curves(results: dict, path: Path) -> Path:
    """Loss and Dice per epoch, train and validation, both sides on the same axes; and the learning rate of every
    step, where the sides recorded it (on the epoch axis: step k of an epoch of n steps at epoch - 1 + (k + 1) / n)."""
    plt = pyplot()
    with_lr = any(result.get("batch_lrs") for result in results["frameworks"].values())
    figure, axes = plt.subplots(1, 3 if with_lr else 2, figsize=(16.5 if with_lr else 11, 4))
    if with_lr:
        for side, result in results["frameworks"].items():
            lrs = result.get("batch_lrs") or []
            steps_per_epoch = len(lrs) / max(len(result["history"]), 1)
            axes[2].plot([(k + 1) / steps_per_epoch for k in range(len(lrs))], lrs, label=SIDE_NAMES[side],
                         **SIDE_STYLES[side])
        highest = max(max(result.get("batch_lrs") or [0.0]) for result in results["frameworks"].values())
        # From 0: a constant rate would otherwise be zoomed to float32's rounding of it (0.01 vs 0.0099999998).
        axes[2].set_ylim(0.0, 1.05 * highest or 1.0)
        axes[2].set(xlabel="epoch", ylabel="learning rate", title="learning rate per step")
        axes[2].grid(alpha=0.3)
        axes[2].legend(fontsize=8)
    for axis, key in zip(axes, ("loss", "dice")):
        for side, result in results["frameworks"].items():
            history = result["history"]
            epochs = [h["epoch"] for h in history]
            axis.plot(epochs, [h[key] for h in history], label=f"{SIDE_NAMES[side]} train", **SIDE_STYLES[side])
            if history and f"val_{key}" in history[0]:
                axis.plot(epochs, [h[f"val_{key}"] for h in history], label=f"{SIDE_NAMES[side]} validation",
                          marker="o", markersize=3, **{**SIDE_STYLES[side], "linestyle": ":"})  # arms: dashed
        axis.set_xlabel("epoch")
        axis.set_ylabel(key)
        axis.set_title(f"{key} per epoch")
        if key == "loss":
            axis.set_yscale("log")  # an early validation spike would flatten the rest
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()  # the learning-rate panel's tick labels would cover the Dice panel's right edge
    return save_figure(figure, path)


def plot_mask_grid(results: dict, out: Path, path: Path) -> Path:
    """Validation photos, their true masks and each side's predicted mask, one row per photo."""
    plt = pyplot()
    sides = list(results["frameworks"])
    previews = {side: np.load(out / side / "preview.npz") for side in sides}
    first = previews[sides[0]]
    rows = len(first["images"])
    columns = ["photo", "true mask", *[f"{SIDE_NAMES[s]} mask" for s in sides]]
    figure, axes = plt.subplots(rows, len(columns), figsize=(2.4 * len(columns), 2.4 * rows), squeeze=False)
    threshold = results["config"].get("threshold", 0.5)
    for row in range(rows):
        height, width = first["masks"][row].shape
        border = (first["images"][row].shape[0] - height) // 2  # the original net's mirrored border
        pictures = [first["images"][row][border:border + height, border:border + width], first["masks"][row],
                    *[previews[s]["predicted"][row] > threshold for s in sides]]
        for column, picture in enumerate(pictures):
            axis = axes[row][column]
            axis.imshow(picture, cmap=None if picture.ndim == 3 else "gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[column], fontsize=9)
    return save_figure(figure, path)


# ---- tables and markdown -----------------------------------------------------------------------------------

def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


def summary_rows(results: dict) -> list[tuple[str, list]]:
    """(label, [value per side]) rows: metrics first, then timing."""
    sides = list(results["frameworks"])
    frameworks = results["frameworks"]
    labels: list[str] = []
    for side in sides:
        for key in frameworks[side].get("metrics", {}):
            if key not in labels:
                labels.append(key)
    rows = [(label, [frameworks[s].get("metrics", {}).get(label) for s in sides]) for label in labels]
    controls = results.get("controls", {})
    if controls and labels:  # the headline metric of each side's control run, right under the side's own
        rows.insert(1, (f"{labels[0]} (control)", [controls.get(s, {}).get("metrics", {}).get(labels[0])
                                                    for s in sides]))
    for key, label in (("first_step_s", "first step s (trace/compile)"), ("step_s_median", "step s (median)"),
                       ("samples_per_s", "samples/s"), ("train_s", "train s")):
        values = [frameworks[s].get("timing", {}).get(key) for s in sides]
        if any(v is not None for v in values):
            rows.append((label, values))
    return rows


def text_grid(sides: list[str], rows: list[tuple[str, list]]) -> list[str]:
    """(label, [value per side]) rows as aligned console lines under the sides' names."""
    body = [[label, *[_format(v) for v in values]] for label, values in rows]
    return tables.console(["", *[SIDE_NAMES[s] for s in sides]], body, ["left"] + ["right"] * len(sides)).splitlines()


def parity_pairs(parity: dict) -> list[tuple[str, str, float, bool]]:
    """(reference, side, max |diff|, passed) of every side compared; a result from before per-side parity: tf-torch."""
    if "sides" not in parity:
        return [("tf", "torch", parity["max_abs_diff"], parity["passed"])]
    return [(parity["reference"], side, found["max_abs_diff"], found["passed"])
            for side, found in parity["sides"].items()]


def table(results: dict) -> str:
    """A plain-text side-by-side table for the console."""
    lines = text_grid(list(results["frameworks"]), summary_rows(results))
    parity = results.get("parity")
    if parity and parity.get("max_abs_diff") is not None:
        for reference, side, diff, passed in parity_pairs(parity):
            lines.append(f"parity: max |{reference} - {side}| = {diff:.3e} "
                         f"(tolerance {parity['tolerance']:.0e}): {'PASSED' if passed else 'FAILED'}")
    agreement = results.get("agreement")
    if agreement:
        lines.append(f"mask agreement with the same weights: {100 * agreement['same_weights']:.3f}% of pixels")
    if "drift" in results:
        lines += ["equal up to rounding? " + sentence for sentence in drift.sentences(results["drift"])]
    return "\n".join(lines)


def markdown_table(results: dict) -> str:
    sides = list(results["frameworks"])
    return tables.markdown(["", *[SIDE_NAMES[s] for s in sides]],
                           [[label, *[_format(v) for v in values]] for label, values in summary_rows(results)])


def drift_section(results: dict) -> str:
    """Are the sides equal? The verdicts, and how drift.png reads."""
    found = results["drift"]
    control = {"ulp": "its initial weights moved by one unit in the last place (np.nextafter toward +inf)",
               "threads": "one thread instead of the run's (only the summation order changes)"}.get(found["control"])
    lines = ["## Equal up to rounding?", ""]
    for sentence in drift.sentences(found):
        lines += [f"**{sentence}**", ""]
    if control:
        lines += [f"Each side also trained a control: the same run with {control}. The control measures how far a "
                  "framework drifts from itself through rounding alone; the drift of the sides from each other is "
                  f"judged against it ({found['verdict'].get('statistics', '')}).", ""]
    lines += ["![drift.png](drift.png)", "",
              "drift.png: left, the relative difference of the batch losses of each pair of runs, step by step; "
              "right, the relative L2 distance of the whole weight vector (after every one of the first "
              f"{found['first_steps']} steps, then after every epoch), with the divergence horizon dotted. Where "
              "the solid curves (each side against the reference; TensorFlow vs PyTorch in black) run among the "
              "dashed ones (each side against its control), the sides differ by no more than rounding."
              + ("" if found.get("exact", True) else " Weight distances of this large net are estimated from a "
                 "count sketch of 65,536 buckets (relative error about 0.6%).")]
    return "\n".join(lines)


def variables_line(environment: dict) -> str:
    """The environment variables that can change the numbers, as each side ran with them (results.json's
    environment.variables), those twinnets set marked *, those a library set as it loaded marked +; sides that ran
    with the same ones named together."""
    groups: dict[str, list[str]] = {}
    for side, variables in environment["variables"].items():
        marks = {**dict.fromkeys(environment.get("variables_set_by_libraries", {}).get(side, []), "+"),
                 **dict.fromkeys(environment.get("variables_set_by_twinnets", {}).get(side, []), "*")}
        shown = ", ".join(f"`{name}={value}`{marks.get(name, '')}" for name, value in sorted(variables.items()))
        groups.setdefault(shown or "none", []).append(SIDE_NAMES[side])
    return "Environment variables (* set by twinnets, + by a library as it loaded, unmarked: yours): " + "; ".join(
        f"{' and '.join(sides)}: {shown}" for shown, sides in groups.items()) + "."


def markdown_report(results: dict, explanation: str, images: list[str], extra: str = "") -> str:
    data = results.get("data", {})
    env = results["environment"]
    parity = results.get("parity", {})
    parts = [
        f"# twinnets: {results['task']}",
        "",
        explanation,
        "",
        f"Data: **{data.get('source', 'none')}**" + (f" ({data.get('location')})" if data.get("location") else ""),
        "",
        f"Environment: Python {env.get('python')}, TensorFlow {env.get('tensorflow')}, PyTorch {env.get('torch')}, "
        f"Keras {env.get('keras')}, JAX {env.get('jax')}, "
        f"{env.get('cpu')}, {env.get('threads')} threads per side, each side in {env.get('process')}.",
        "",
        *([variables_line(env), ""] if env.get("variables") else []),
        markdown_table(results),
        "",
    ]
    if parity.get("max_abs_diff") is not None:
        diffs = ", ".join(f"max |{reference} - {side}| = {diff:.3e}{'' if passed else ' (FAILED)'}"
                          for reference, side, diff, passed in parity_pairs(parity))
        parts += [f"Parity: {diffs}, tolerance {parity['tolerance']:.0e}: "
                  f"**{'passed' if parity['passed'] else 'FAILED'}** ({parity.get('what', '')}).", ""]
    if "drift" in results:
        parts += [drift_section(results), ""]
    if extra:
        parts += [extra, ""]
    parts += [f"![{name}]({name})" for name in images]
    parts += ["", "Configuration:", "", "```json", json.dumps(jsonable(results["config"]), indent=2), "```", ""]
    return "\n".join(parts)


# ---- per-task reports ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskReport:
    """A task's part of report.md: what the run shows, its plots (written beside it), and its own section."""
    explanation: str
    images: list[str]
    extra: str = ""


def write_reports(out: Path, results: dict, task_report: Callable[[dict, Path], TaskReport]) -> list[Path]:
    """results.json, report.md and the task's plots (task_report draws them), each written atomically."""
    out = Path(out)
    section = task_report(results, out)
    written = [write_json(out / "results.json", results)]
    written.append(write_atomic(out / "report.md", markdown_report(results, section.explanation, section.images,
                                                                   section.extra)))
    return written + [out / name for name in section.images]
