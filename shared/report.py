"""Side-by-side tables, plots and results.json for a run of both sides."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from shared.atomic import atomic_path, jsonable, write_atomic, write_json

SIDE_NAMES = {"tf": "TensorFlow", "torch": "PyTorch"}
# TensorFlow wide and pale underneath, PyTorch thin on top: where the curves agree both stay visible.
SIDE_STYLES = {"tf": {"color": "tab:orange", "linewidth": 4, "alpha": 0.55},
               "torch": {"color": "tab:blue", "linewidth": 1.2}}


def save_figure(figure, path: Path) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".png") as temporary:
            figure.savefig(temporary, dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
    return Path(path)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


# ---- plots -------------------------------------------------------------------------------------------------

def plot_losses(results: dict, path: Path, key: str = "loss", per_batch: bool = True) -> Path:
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
            axis.set_xlabel("epoch" if results["task"] != "neuron" else "gradient step")
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
    axis.plot(ws, logit - phi * ws, color="white", linewidth=1.5, label=f"exact solutions: {phi}w + b = logit({target})")
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


def plot_graphs(results: dict, path: Path) -> Path:
    """The two graphs of z = 2x^2 + 5x side by side, as the frameworks print them."""
    plt = pyplot()
    sides = list(results["frameworks"])
    figure, axes = plt.subplots(1, len(sides), figsize=(6 * len(sides), 4), squeeze=False)
    for axis, side in zip(axes[0], sides):
        result = results["frameworks"][side]
        title = {"tf": "TensorFlow: ops of the traced tf.function graph",
                 "torch": "PyTorch: grad_fn chain recorded while running"}[side]
        axis.text(0.02, 0.98, result["graph"] + "\n\ncontrol flow:\n" + result["control_flow"]["graph"],
                  va="top", ha="left", family="monospace", fontsize=8, transform=axis.transAxes, wrap=True)
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    return save_figure(figure, path)


def plot_confusion(results: dict, path: Path) -> Path:
    """One confusion matrix per side (rows: true digit, columns: predicted digit)."""
    plt = pyplot()
    sides = list(results["frameworks"])
    figure, axes = plt.subplots(1, len(sides), figsize=(5 * len(sides), 4.4), squeeze=False)
    for axis, side in zip(axes[0], sides):
        matrix = np.asarray(results["frameworks"][side]["confusion_matrix"])
        axis.imshow(matrix, cmap="Blues")
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                axis.text(col, row, str(count), ha="center", va="center", fontsize=7,
                          color="white" if count > matrix.max() / 2 else "black")
        accuracy = results["frameworks"][side]["metrics"]["test_accuracy"]
        axis.set_title(f"{SIDE_NAMES[side]}: test accuracy {accuracy:.4f}")
        axis.set_xlabel("predicted digit")
        axis.set_ylabel("true digit")
        axis.set_xticks(range(matrix.shape[1]))
        axis.set_yticks(range(matrix.shape[0]))
    return save_figure(figure, path)


def plot_curves(results: dict, path: Path) -> Path:
    """Loss and Dice per epoch, train and validation, both sides on the same axes."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, key in zip(axes, ("loss", "dice")):
        for side, result in results["frameworks"].items():
            history = result["history"]
            epochs = [h["epoch"] for h in history]
            axis.plot(epochs, [h[key] for h in history], label=f"{SIDE_NAMES[side]} train", **SIDE_STYLES[side])
            if history and f"val_{key}" in history[0]:
                axis.plot(epochs, [h[f"val_{key}"] for h in history], label=f"{SIDE_NAMES[side]} validation",
                          linestyle=":", marker="o", markersize=3, **SIDE_STYLES[side])
        axis.set_xlabel("epoch")
        axis.set_ylabel(key)
        axis.set_title(f"{key} per epoch")
        if key == "loss":
            axis.set_yscale("log")  # an early validation spike would flatten the rest
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
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
        size = first["masks"][row].shape[0]
        border = (first["images"][row].shape[0] - size) // 2
        pictures = [first["images"][row][border:border + size, border:border + size], first["masks"][row],
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
    for key, label in (("first_step_s", "first step s (trace/compile)"), ("step_s_median", "step s (median)"),
                       ("samples_per_s", "samples/s"), ("train_s", "train s")):
        values = [frameworks[s].get("timing", {}).get(key) for s in sides]
        if any(v is not None for v in values):
            rows.append((label, values))
    return rows


def table(results: dict) -> str:
    """A plain-text side-by-side table for the console."""
    sides = list(results["frameworks"])
    header = ["", *[SIDE_NAMES[s] for s in sides]]
    body = [[label, *[_format(v) for v in values]] for label, values in summary_rows(results)]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    parity = results.get("parity")
    if parity and parity.get("max_abs_diff") is not None:
        verdict = "PASSED" if parity["passed"] else "FAILED"
        lines.append(f"parity: max |tf - torch| = {parity['max_abs_diff']:.3e} (tolerance {parity['tolerance']:.0e}): {verdict}")
    agreement = results.get("agreement")
    if agreement:
        lines.append(f"mask agreement with the same weights: {100 * agreement['same_weights']:.3f}% of pixels")
    return "\n".join(lines)


def markdown_table(results: dict) -> str:
    sides = list(results["frameworks"])
    lines = ["| | " + " | ".join(SIDE_NAMES[s] for s in sides) + " |", "|---" * (len(sides) + 1) + "|"]
    for label, values in summary_rows(results):
        lines.append(f"| {label} | " + " | ".join(_format(v) for v in values) + " |")
    return "\n".join(lines)


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
        f"{env.get('cpu')}, {env.get('threads')} threads per side, each side in {env.get('process')}.",
        "",
        markdown_table(results),
        "",
    ]
    if parity.get("max_abs_diff") is not None:
        parts += [f"Parity: max |tf - torch| = {parity['max_abs_diff']:.3e}, tolerance {parity['tolerance']:.0e}: "
                  f"**{'passed' if parity['passed'] else 'FAILED'}** ({parity.get('what', '')}).", ""]
    if extra:
        parts += [extra, ""]
    parts += [f"![{name}]({name})" for name in images]
    parts += ["", "Configuration:", "", "```json", json.dumps(jsonable(results["config"]), indent=2), "```", ""]
    return "\n".join(parts)


# ---- per-task reports ----------------------------------------------------------------------------------------

EXPLANATIONS = {
    "neuron": "One sigmoid neuron, O = sigmoid(phi*w + b), fitted to the target by plain gradient descent on "
              "E = 1/2 (O - t)^2. Two unknowns and one equation: every (w, b) on the line phi*w + b = logit(t) "
              "is an exact solution, and descent stops on the one nearest its start. Both sides start from the "
              "same (w, b) with the same step size; the PyTorch side runs eagerly, the TensorFlow step is one "
              "tf.function traced once.",
    "autograd": "Tensors and automatic differentiation. z = 2x^2 + 5x at x = 2*ones(2,2); backpropagating ones "
                "gives dz/dx = 4x + 5 = 13 on both sides. PyTorch records the graph while the code runs (dynamic); "
                "TensorFlow traces a tf.function into a graph once per input signature and replays it (static).",
    "mlp": "The 784-200-200-10 classifier (ReLU, log_softmax + NLL loss, SGD lr 0.01 momentum 0.9, batch 200). "
           "Both sides load the same canonical initial weights and see the same batches in the same order, so "
           "their per-batch loss curves lie on top of each other until float rounding makes them drift apart.",
    "unet": "A U-Net learns the car mask of each photo (BCE + soft Dice loss; Dice of the 0.5-thresholded "
            "prediction as the metric). Both sides start from the same canonical weights and see the same "
            "augmented batches in the same order; the TensorFlow step is one traced tf.function, the PyTorch step "
            "the eager loop. Each side writes TensorBoard logs, its model in its own format and the canonical "
            "safetensors, and a Kaggle run-length submission (submit.csv.gz) for the test photos.",
    "cnn": "A small CNN (conv 5x5 32, pool, conv 5x5 64, pool, fc 3136-1000, fc 1000-10, log_softmax + NLL). "
           "Both sides load the same canonical initial weights (Keras' first Dense gets its rows permuted, because "
           "Flatten on NHWC orders features (H, W, C) where PyTorch's order is (C, H, W)) and see identical batches.",
}


def _neuron_extra(results: dict) -> str:
    lines = ["| side | start w | start b | start O | end w | end b | end O | end E |", "|---|---|---|---|---|---|---|---|"]
    for side, result in results["frameworks"].items():
        first, last = result["trajectory"][0], result["trajectory"][-1]
        lines.append(f"| {SIDE_NAMES[side]} | {first['w']:.6f} | {first['b']:.6f} | {first['output']:.6f} | "
                     f"{last['w']:.6f} | {last['b']:.6f} | {last['output']:.6f} | {last['error']:.3e} |")
    config = results["config"]
    logit = math.log(config["target"] / (1 - config["target"]))
    lines += ["", f"Exact solutions: {config['phi']}*w + b = logit({config['target']}) = {logit:.6f}. "
              "The TensorFlow step traced "
              f"{results['frameworks'].get('tf', {}).get('traces', '-')} time(s) and was replayed as a graph."]
    return "\n".join(lines)


def _classifier_extra(results: dict) -> str:
    lines = ["Per-epoch test accuracy:", "", "| epoch | " + " | ".join(SIDE_NAMES[s] for s in results["frameworks"]) + " |",
             "|---" * (len(results["frameworks"]) + 1) + "|"]
    histories = [r["history"] for r in results["frameworks"].values()]
    for row in zip(*histories):
        lines.append(f"| {row[0]['epoch']} | " + " | ".join(f"{h['test_accuracy']:.4f}" for h in row) + " |")
    note = results.get("data", {}).get("note")
    if note:
        lines += ["", f"Data note: {note}."]
    tf_result = results["frameworks"].get("tf")
    if tf_result and tf_result.get("traces") is not None:
        lines += ["", f"The TensorFlow train step traced {tf_result['traces']} time(s) for all its batches."]
    return "\n".join(lines)


def _unet_extra(results: dict) -> str:
    config, data = results["config"], results.get("data", {})
    lines = [f"Model: the {config['variant']} U-Net, base width {config['base_filters']}, input "
             f"{config['image_size']}x{config['image_size']}; {data.get('train')} training and {data.get('valid')} "
             f"validation photos ({data.get('cars')} cars, split by car); {data.get('resize', '')}. "
             f"Optimiser {config['optimizer']} lr {config['lr']}"
             + (f" momentum {config['momentum']}" if config["optimizer"] == "sgd" else "")
             + f", batch {config['batch_size']}, {config['epochs']} epochs. Full size is one flag away: `--full-size` "
             "(the paper's width 64 and 1024x1024 inputs; the 572 tile for --variant original)."]
    agreement = results.get("agreement")
    if agreement:
        lines += ["", f"Mask agreement between the two sides with the same (TensorFlow-trained) weights: "
                      f"**{100 * agreement['same_weights']:.3f}%** of {agreement['pixels']:,} validation pixels. "
                      f"Each side's own trained model: {100 * agreement['own_weights_preview']:.2f}% on the preview "
                      "photos (their weights drift apart during training through float rounding)."]
    for side, result in results["frameworks"].items():
        submission = result.get("artifacts", {}).get("submission")
        if submission:
            lines.append(f"- {SIDE_NAMES[side]} submission: `{submission}`; TensorBoard logs: "
                         f"`{result['artifacts'].get('tensorboard')}`")
    return "\n".join(lines)


def _autograd_extra(results: dict) -> str:
    lines = []
    for side, result in results["frameworks"].items():
        lines += [f"## {SIDE_NAMES[side]}", "", "Tensor basics:", "", "```"]
        lines += [f"{k}: {v}" for k, v in result["basics"].items()]
        lines += ["```", "", f"dz/dx = {result['grad']} (expected 4x + 5 = 13)", "",
                  f"gradient of the non-trainable tensor: {result['constant']['grad']}", "",
                  f"graphs built for {result['tracing']['calls']} calls: {result['tracing']['graphs_built']} "
                  f"(traces: {result['tracing']['traces']})", "", "The graph of z:", "", "```", result["graph"], "```",
                  "", "Data-dependent control flow:", "", "```", result["control_flow"]["graph"], "```", ""]
        lines += [f"- {note}" for note in result["notes"]]
        lines.append("")
    return "\n".join(lines)


def write_reports(out: Path, results: dict) -> list[Path]:
    """results.json, report.md and the task's plots, each written atomically."""
    out = Path(out)
    task = results["task"]
    images: list[str] = []
    extra = ""
    if task == "neuron":
        images = [plot_neuron_surface(results, out / "neuron_surface.png").name,
                  plot_losses(results, out / "loss.png", per_batch=False).name]
        extra = _neuron_extra(results)
    elif task == "autograd":
        images = [plot_graphs(results, out / "graphs.png").name]
        extra = _autograd_extra(results)
    elif task == "unet":
        images = [plot_curves(results, out / "curves.png").name, plot_mask_grid(results, out, out / "masks.png").name]
        extra = _unet_extra(results)
    elif task in ("mlp", "cnn"):
        images = [plot_losses(results, out / "loss.png").name, plot_confusion(results, out / "confusion.png").name]
        extra = _classifier_extra(results)
    written = [write_json(out / "results.json", results)]
    written.append(write_atomic(out / "report.md", markdown_report(results, EXPLANATIONS.get(task, ""), images, extra)))
    return written + [out / name for name in images]
