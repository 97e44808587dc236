"""Each task's part of report.md: what its run shows (formatted from the run's own settings), its plots, and its
section; harness/registry.py names each task's function."""
from __future__ import annotations

import math
from pathlib import Path

from harness.report import (
    SIDE_NAMES,
    TaskReport,
    plot_confusion,
    plot_curves,
    plot_graphs,
    plot_losses,
    plot_mask_grid,
    plot_neuron_surface,
)
from harness.tasks.folder_set import folder_lines
from shared import tables
from shared.data.folders import SOURCE_NAME
from shared.graph_drawing import draw, draw_beside
from shared.graph_lessons import dynamic_lines, markdown, pitfall_table, static_lines
from shared.recipes import recipe_line
from shared.tasks import UNetSpec, shape_text


def neuron_report(results: dict, out: Path) -> TaskReport:
    config = results["config"]
    explanation = (
        "One sigmoid neuron, O = sigmoid(phi*w + b), fitted to the target by plain gradient descent on "
        "E = 1/2 (O - t)^2. Two unknowns and one equation: every (w, b) on the line phi*w + b = logit(t) is an "
        f"exact solution, and descent stops on the one nearest its start. Both sides start from (w, b) = "
        f"({config['w0']}, {config['b0']}) with step size {config['lr']}; the PyTorch side runs eagerly, the "
        "TensorFlow step is one tf.function traced once.")
    images = [plot_neuron_surface(results, out / "neuron_surface.png").name,
              plot_losses(results, out / "loss.png", per_batch=False, step_name="gradient step").name]
    rows = []
    for side, result in results["frameworks"].items():
        first, last = result["trajectory"][0], result["trajectory"][-1]
        rows.append([SIDE_NAMES[side], *(f"{value:.6f}" for value in (first["w"], first["b"], first["output"],
                                                                         last["w"], last["b"], last["output"])),
                     f"{last['error']:.3e}"])
    lines = [tables.markdown(["side", "start w", "start b", "start O", "end w", "end b", "end O", "end E"], rows)]
    logit = math.log(config["target"] / (1 - config["target"]))
    lines += ["", f"Exact solutions: {config['phi']}*w + b = logit({config['target']}) = {logit:.6f}. "
              "The TensorFlow step traced "
              f"{results['frameworks'].get('tf', {}).get('traces', '-')} time(s) and was replayed as a graph."]
    return TaskReport(explanation, images, "\n".join(lines))


def autograd_report(results: dict, out: Path) -> TaskReport:
    config, frameworks = results["config"], results["frameworks"]
    x, shape = config["x_value"], "x".join(map(str, config["shape"]))
    explanation = (
        f"Tensors and automatic differentiation. z = 2x^2 + 5x at x = {x:g}*ones({shape}); backpropagating ones "
        f"gives dz/dx = 4x + 5 = {4 * x + 5:g} on both sides. PyTorch records the graph while the code runs "
        "(dynamic); TensorFlow traces a tf.function into a graph once per input signature and replays it (static). "
        "Then each goes the other way: PyTorch static (torch.compile, torch.export, torch.cond), TensorFlow dynamic "
        "(run_functions_eagerly), and the tf.function pitfalls, each counted on both sides.")
    drawings = {name: d for result in frameworks.values() for name, d in result.get("drawings", {}).items()}
    files = [draw(d, out / f"{name}.png").name for name, d in drawings.items()]  # one per side and graph
    images = [plot_graphs(results, out / "graphs.png").name]
    beside = [drawings[name] for name in ("tf_function_branch", "torch_dynamo_branch") if name in drawings]
    if beside:
        images.append(draw_beside(beside, out / "branch.png").name)
    if "torch_export_cond" in drawings:
        images.append("torch_export_cond.png")
    lines = ["## The graphs, drawn", "",
             "`graphs.png`: z in each framework's graphs; `branch.png`: the Python `if` of `branch` in one "
             "TensorFlow graph beside torch.compile's broken graphs; and one file per side and graph:", ""]
    lines += [f"- `{name}`: {drawings[name[:-4]]['title']}" for name in files]
    lines += ["", "## Going static", ""] + static_lines(frameworks)
    lines += ["", "## Going dynamic", ""] + dynamic_lines(frameworks)
    lines += ["", "## tf.function pitfalls, measured", "", markdown(pitfall_table(frameworks)), ""]
    for side, result in frameworks.items():
        lines += [f"## {SIDE_NAMES[side]}", "", "Tensor basics:", "", "```"]
        lines += [f"{k}: {v}" for k, v in result["basics"].items()]
        lines += ["```", "", f"dz/dx = {result['grad']} (expected 4x + 5 = {4 * x + 5:g})", "",
                  f"gradient of the non-trainable tensor: {result['constant']['grad']}", "",
                  f"graphs built for {result['tracing']['calls']} calls: {result['tracing']['graphs_built']} "
                  f"(traces: {result['tracing']['traces']})", "", "The graph of z:", "", "```", result["graph"], "```",
                  "", "Data-dependent control flow:", "", "```", result["control_flow"]["graph"], "```", ""]
        lines += [f"- {note}" for note in result["notes"]]
        lines.append("")
    return TaskReport(explanation, images, "\n".join(lines))


def train_step_section(results: dict) -> str:
    """What each side's train step is, measured by the run: TensorFlow's trace count and the ops of its one graph,
    the nodes of the autograd graph PyTorch records at every step, and the first step against the median one."""
    frameworks = results["frameworks"]
    rows = []
    for side, result in frameworks.items():
        graph, timing = result.get("graph") or {}, result.get("timing", {})
        cells = [graph.get("traces"), graph.get("graph_ops"), graph.get("autograd_nodes"),
                 timing.get("first_step_s"), timing.get("step_s_median")]
        rows.append([SIDE_NAMES[side], *("-" if cell is None else f"{cell:.4f}" if isinstance(cell, float)
                                         else f"{cell:,}" for cell in cells)])
    lines = ["## The train step: one static graph against a graph recorded at every step", "",
             tables.markdown(["", "traces", "ops in the traced graph", "autograd nodes recorded per step",
                              "first step s", "median step s"], rows)]
    tf, torch = (frameworks.get(side, {}) for side in ("tf", "torch"))
    steps = len(tf.get("batch_losses") or torch.get("batch_losses") or [])
    tf_graph, torch_graph = tf.get("graph") or {}, torch.get("graph") or {}
    if tf_graph.get("graph_ops"):
        first, median = tf["timing"]["first_step_s"], tf["timing"]["step_s_median"]
        lines += ["", f"TensorFlow traced its train step {tf_graph['traces']} time(s) into one graph of "
                      f"{tf_graph['graph_ops']:,} ops (forward, gradients and the optimizer update) and replayed it "
                      f"for all {steps} steps: its first step took {first:.3f} s, {first / median:.0f}x the median "
                      f"step ({median:.4f} s), because tracing and graph optimisation happen in it, once."]
    if torch_graph.get("autograd_nodes"):
        first, median = torch["timing"]["first_step_s"], torch["timing"]["step_s_median"]
        lines += ["", f"PyTorch ran each step eagerly, op by op, recording an autograd graph of "
                      f"{torch_graph['autograd_nodes']:,} nodes while the forward ran and freeing it in backward, "
                      f"{steps} times: its first step took {first:.3f} s, {first / median:.1f}x the median step "
                      f"({median:.4f} s); nothing is traced, so what the first step adds is only the first call's "
                      "memory allocation and kernel selection."]
    return "\n".join(lines)


def engine_section(results: dict, out: Path) -> tuple[list[str], list[str]]:
    """The Keras arms' lesson: for the same Keras train step, what each engine made of it (TensorFlow's traced graph,
    JAX's jaxpr, PyTorch's autograd graph per step or Dynamo's graphs), and how often its Python ran; the jaxpr of
    the loss drawn. Nothing when no arm ran."""
    engines = {side: result["engine"] for side, result in results["frameworks"].items() if result.get("engine")}
    if not engines:
        return [], []
    lines = ["## One Keras train step, three engines", "",
             "The Keras arms run the same program (keras_models/: one model file; keras_fit/: model.compile and "
             "model.fit); what differs is the engine under it.", ""]
    rows = []
    for side, engine in engines.items():
        size = (f"{engine['graph_ops']:,} {'jaxpr equations' if engine['engine'] == 'jax' else 'graph ops'}"
                if engine.get("graph_ops") else f"{engine['autograd_nodes']:,} autograd nodes per step"
                if engine.get("autograd_nodes") else "-")
        if engine.get("dynamo_graphs") is not None:
            size += f"; with jit_compile, Dynamo: {engine['dynamo_graphs']} graph(s), {engine['graph_breaks']} break(s)"
        elif engine.get("dynamo_failure"):
            size += f"; with jit_compile, torch.compile fails: {engine['dynamo_failure']}"
        records = engine.get("records", "-") + (f" (failed: {engine['failure']})" if engine.get("failure") else "")
        median = results["frameworks"][side].get("timing", {}).get("step_s_median")
        rows.append([SIDE_NAMES[side], engine.get("kind", "-"), records, size, f"{engine['step_python_runs']} time(s)",
                     "-" if median is None else f"{median:.4f}"])
    lines.append(tables.markdown(["arm", "static or dynamic", "what the engine traces or records", "its size",
                                  "train_step's Python ran", "median step s"], rows))
    reasons = [f"- {SIDE_NAMES[side]}: graph break: {reason}" for side, engine in engines.items()
               for reason in engine.get("break_reasons") or []]
    lines += ["", *reasons] if reasons else []
    drawings = [engine["drawing"] for engine in engines.values() if engine.get("drawing")]
    images = [draw_beside(drawings, out / "engine_jaxpr.png").name] if drawings else []
    return lines, images


def classifier_report(results: dict, out: Path) -> TaskReport:
    config = results["config"]
    model = ("The " + "-".join(map(str, config["layer_sizes"])) + " classifier (ReLU, log_softmax + NLL loss"
             if "layer_sizes" in config else
             f"A small CNN (conv {config['kernel_size']}x{config['kernel_size']} {config['channels'][0]}, pool, "
             f"conv {config['channels'][1]}, pool, fc {config['hidden']}, fc {config['classes']}, log_softmax + NLL")
    explanation = (
        f"{model}; SGD lr {config['lr']} momentum {config['momentum']}, batch {config['batch_size']}, "
        f"{config['epochs']} epochs). Both sides load the same canonical initial weights and see the same batches "
        "in the same order, so their per-batch loss curves lie on top of each other until float rounding makes "
        "them drift apart."
        + (" Keras' first Dense after Flatten gets its rows permuted: Flatten on NHWC orders features (H, W, C) "
           "where PyTorch's order is (C, H, W)." if "channels" in config else ""))
    images = [plot_losses(results, out / "loss.png").name, plot_confusion(results, out / "confusion.png").name]
    histories = [r["history"] for r in results["frameworks"].values()]
    lines = ["Per-epoch test accuracy:", "",
             tables.markdown(["epoch", *(SIDE_NAMES[s] for s in results["frameworks"])],
                             [[row[0]["epoch"], *(f"{h['test_accuracy']:.4f}" for h in row)]
                              for row in zip(*histories)])]
    note = results.get("data", {}).get("note")
    if note:
        lines += ["", f"Data note: {note}."]
    lines += ["", train_step_section(results)]
    engine_lines, engine_images = engine_section(results, out)
    lines += ["", *engine_lines] if engine_lines else []
    return TaskReport(explanation, images + engine_images, "\n".join(lines))


def recipe_lines(results: dict) -> list[str]:
    """The U-Net's recipe, learning-rate schedule, starting weights and best epoch, as the run used them."""
    config = results["config"]
    if "recipe" not in config:  # a run from before recipes and schedules
        return []
    schedule = {"constant": "constant", "cosine": f"cosine decay to {config['lr_floor']} x lr",
                "step": f"x {config['step_gamma']} every {config['step_epochs']} epochs",
                "plateau": f"x {config['plateau_factor']} after {config['plateau_patience']} epochs without a lower "
                           "validation loss (Keras' patience)"}[config["schedule"]]
    warmup = f", after a linear warm-up of {config['warmup_epochs']} epoch(s)" if config["warmup_epochs"] else ""
    lines = [f"{recipe_line(config)}.", "", f"Learning rate: {schedule}{warmup}, set at every step on both sides "
             "(curves.png, right; TensorBoard `learning_rate`)."]
    if config.get("init_weights"):
        lines += ["", f"Started from the weights of `{config['init_weights']}` instead of the seeded initialisation."]
    best = {side: r["best"] for side, r in results["frameworks"].items() if r.get("best")}
    if best:
        lines += ["", f"Best epoch by {config['save_best']}: " + "; ".join(
            f"{SIDE_NAMES[side]} epoch {b['epoch']} ({b['value']:.4f}; weights "
            f"`{results['frameworks'][side]['artifacts']['best_checkpoint']}`)" for side, b in best.items()) + "."]
    return lines


def split_words(data: dict) -> str:
    """How the photos were split: by car (Carvana), or by file or group (your own folder set)."""
    if "groups" not in data:
        return f"{data.get('cars')} cars, split by car"
    how = f"by --split-by `{data['split_by']}`" if data.get("split_by") else "by file"
    return f"{data['groups']['train']} and {data['groups']['valid']} groups, split {how}"


def unet_report(results: dict, out: Path) -> TaskReport:
    config, data = results["config"], results.get("data", {})
    momentum = f" momentum {config['momentum']}" if config["optimizer"] == "sgd" else ""
    explanation = (
        f"A U-Net learns the {'foreground' if data.get('source') == SOURCE_NAME else 'car'} mask of each photo "
        f"(BCE + soft Dice loss; Dice of the {config['threshold']}-"
        "thresholded prediction as the metric). Both sides start from the same canonical weights and see the same "
        "augmented batches in the same order; the TensorFlow step is one traced tf.function, the PyTorch step "
        "the eager loop. Each side writes TensorBoard logs, its model in its own format and the canonical "
        "safetensors, and a Kaggle run-length submission (submit.csv.gz) for the test photos.")
    images = [plot_curves(results, out / "curves.png").name, plot_mask_grid(results, out, out / "masks.png").name]
    lines = [f"Model: the {config['variant']} U-Net, base width {config['base_filters']}, input "
             f"{shape_text(config['image_size'])} (height x width); {data.get('train')} training and "
             f"{data.get('valid')} "
             f"validation photos ({split_words(data)}); {data.get('resize', '')}. "
             f"Optimiser {config['optimizer']} lr {config['lr']}{momentum}, batch {config['batch_size']}, "
             f"{config['epochs']} epochs. Full size is one flag away: `--full-size` "
             f"(the paper's width 64 and {shape_text(UNetSpec.full_size['padded']['image_size'])} inputs, TorchBench's "
             "U-Net size; the 572 tile for --variant original)."]
    lines += ["", *recipe_lines(results)]
    scored = {side: r["metrics"] for side, r in results["frameworks"].items() if "val_dice_original" in r["metrics"]}
    if scored:
        lines += ["", "Validation Dice at the training size, and at the photos' original size (Kaggle's leaderboard "
                      "metric: the probabilities upsampled to each photo's size as the submission does, thresholded, "
                      "against the original masks): " + "; ".join(
                          f"{SIDE_NAMES[side]} {m['val_dice']:.4f} and **{m['val_dice_original']:.4f}**"
                          for side, m in scored.items()) + "."]
    lines += folder_lines(results)
    agreement = results.get("agreement")
    if agreement:
        trained_by = SIDE_NAMES[agreement.get("reference", "tf")]  # TensorFlow, or the first side named without it
        lines += ["", f"Mask agreement between the two sides with the same ({trained_by}-trained) weights: "
                      f"**{100 * agreement['same_weights']:.3f}%** of {agreement['pixels']:,} validation pixels. "
                      f"Each side's own trained model: {100 * agreement['own_weights_preview']:.2f}% on the preview "
                      "photos (their weights drift apart during training through float rounding)."]
    for side, result in results["frameworks"].items():
        submission = result.get("artifacts", {}).get("submission")
        if submission:
            lines.append(f"- {SIDE_NAMES[side]} submission: `{submission}`; TensorBoard logs: "
                         f"`{result['artifacts'].get('tensorboard')}`")
    lines += ["", train_step_section(results)]
    engine_lines, engine_images = engine_section(results, out)
    lines += ["", *engine_lines] if engine_lines else []
    return TaskReport(explanation, images + engine_images, "\n".join(lines))
