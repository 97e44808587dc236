"""--benchmark --profile, in the parent: each profiled row's step by category (shared/profiling.py) next to the same
row timed without the profiler, the convolutions' rates against the machine peak, the pairs of rows the report
compares, and the stacked-bar picture. The profiles themselves run in their own processes (rows.profile_row), so
the timed rows are never profiled."""
from __future__ import annotations

import statistics
from pathlib import Path

from harness import report
from harness.benchmark.summary import MODE_NAMES
from shared import tables
from shared.plotting import pyplot, save_figure
from shared.profiling import CATEGORIES, OUTSIDE, mean_step

ADDS_UP = 0.10  # the categories must add up to the profiled step's wall time within this share
PROFILE_STEPS = 10  # profiled steps per row (after the row's warm-up)
SIDES = ("tf", "torch")  # the sides with a profile module; the Keras arms are not profiled
# TensorFlow's grappler fuses a BatchNorm with the ReLU after it (_FusedBatchNormEx, oneDNN's
# _MklNativeFusedBatchNormEx): one kernel, counted as batch norm, where PyTorch's aten::relu counts as an activation.
# The two categories together compare like for like (docs/profile.md).
FUSED = ("batch norm", "activations and elementwise")


def summarize(profile_results: list[dict], summary_rows: list[dict], category_flops: dict,
              machine_peak: dict) -> list[dict]:
    """Per profiled row: ms per step and share of the step per category, GFLOP/s and % of the machine peak for the
    convolutions, the categories' sum against the wall clock of the profiled steps (within ADDS_UP) and against
    the same row timed without the profiler (the profiler's own cost)."""
    entries = []
    for result in profile_results:
        row = result["row"]
        categories = mean_step(result["profile"]["steps"])
        total = sum(categories.values())
        wall_ms = 1000 * statistics.median(result["times_s"])
        timed = next((r for r in summary_rows if (r["side"], r["mode"], r["precision"], r["batch_size"])
                      == (row["side"], row["mode"], row["precision"], row["batch_size"])), None)
        peak = (machine_peak.get(row["precision"]) or {}).get("gflop_per_s")
        flops = category_flops.get(str(row["batch_size"]), {})
        table = []
        for category in CATEGORIES:
            ms = categories[category]
            rate = flops[category] / (ms / 1000) / 1e9 if category in flops and ms > 0 else None
            table.append({"category": category, "ms": ms, "share": ms / total if total else None,
                          "gflop": flops[category] / 1e9 if category in flops else None, "gflop_per_s": rate,
                          "peak_fraction": rate / peak if rate is not None and peak else None})
        beyond = [item["category"] for item in table if (item["peak_fraction"] or 0) > 1]
        entries.append({"side": row["side"], "mode": row["mode"], "precision": row["precision"],
                        "beyond_peak": beyond,
                        "batch_size": row["batch_size"], "categories": table, "sum_ms": total,
                        "profiled_step_ms": wall_ms, "adds_up": abs(total - wall_ms) <= ADDS_UP * wall_ms,
                        "outside_kernels_ms": categories[OUTSIDE],
                        "unprofiled_step_ms": 1000 * timed["stats"]["median_s"] if timed else None,
                        "profiled_steps": len(result["times_s"]), "profiler": result["profile"]["profiler"],
                        "trace": result["profile"]["trace"], "xplane": result["profile"].get("xplane"),
                        "top_ops": result["profile"]["top_ops"]})
    return entries


def pairs(entries: list[dict]) -> list[dict]:
    """The row pairs the report compares, TensorFlow against PyTorch: each side's training mode, eager against
    eager, compiled against compiled (XLA, torch.compile), each in every precision both profiled."""
    by_key = {(e["side"], e["mode"], e["precision"], e["batch_size"]): e for e in entries}
    matched = []
    for title, tf_mode, torch_mode in (("training modes", "function", "eager"), ("eager", "eager", "eager"),
                                       ("compiled", "xla", "compile")):
        for (side, mode, precision, batch), tf_entry in by_key.items():
            torch_entry = by_key.get(("torch", torch_mode, precision, batch))
            if side == "tf" and mode == tf_mode and torch_entry is not None:
                matched.append({"title": f"{title}, {precision}, batch {batch}", "tf": tf_entry, "torch": torch_entry})
    return matched


def label(entry: dict) -> str:
    return f"{report.SIDE_NAMES[entry['side']]} {MODE_NAMES[entry['side']][entry['mode']]} {entry['precision']}"


def table_lines(entry: dict) -> list[str]:
    """One row's markdown table: category, ms per step, share, GFLOP/s and % of peak where the work is counted."""
    lines = [f"**{label(entry)}, batch {entry['batch_size']}**: categories sum to {entry['sum_ms']:.1f} ms; the "
             f"{entry['profiled_steps']} profiled steps took {entry['profiled_step_ms']:.1f} ms each (median, "
             + ("within" if entry["adds_up"] else "NOT within") + f" {100 * ADDS_UP:.0f}%)"
             + (f"; without the profiler the row's step took {entry['unprofiled_step_ms']:.1f} ms"
                if entry["unprofiled_step_ms"] else "")
             + f". No kernel accounts for {entry['outside_kernels_ms']:.1f} ms "
             f"({100 * entry['outside_kernels_ms'] / entry['sum_ms']:.0f}%) of the step.", ""]
    rows = []
    for item in entry["categories"]:
        if item["ms"] < 0.005:
            continue
        rate = "" if item["gflop_per_s"] is None else f"{item['gflop_per_s']:.1f}"
        peak = "" if item["peak_fraction"] is None else f"{100 * item['peak_fraction']:.1f}"
        rows.append([item["category"], f"{item['ms']:.2f}", f"{100 * (item['share'] or 0):.1f}%", rate, peak])
    lines.append(tables.markdown(["category", "ms per step", "share", "GFLOP/s", "% of peak"], rows))
    if entry["beyond_peak"]:
        lines += ["", f"**Above the machine peak: {', '.join(entry['beyond_peak'])}.** The trace's events for these "
                  "kernels do not cover the work they count (XLA's CPU runtime, for one, launches its thunks "
                  "asynchronously), so their times and the time outside any kernel are not where the step goes."]
    largest = "; ".join(f"`{op['op']}` {op['ms_per_step']:.2f} ms" for op in entry["top_ops"][:6])
    lines += ["", f"{' and '.join(FUSED).capitalize()} together: {fused_ms(entry):.2f} ms (a kernel that fuses a "
              "BatchNorm with its ReLU counts as batch norm).", "", f"Largest ops: {largest}",
              "", f"Trace: `{entry['trace']}`" + (f"; TensorBoard: `{entry['xplane']}`" if entry.get("xplane") else ""),
              ""]
    return lines


def fused_ms(entry: dict) -> float:
    """Batch norm and activations together, ms per step: where fusing the two moves time from one to the other."""
    return sum(item["ms"] for item in entry["categories"] if item["category"] in FUSED)


def markdown(entries: list[dict]) -> list[str]:
    lines = ["## Where the step goes (--profile)", "",
             "Each row profiled in its own process, after its warm-up, with the framework's own profiler "
             "(torch.profiler; tf.profiler.experimental). An op's time goes to its category; where two ops overlap, "
             "the time is shared between them, so the categories and the time outside any kernel add up to the "
             "step. Backward ops count where their forward op does (the loss's gradient is loss).", "",
             "![each side's step by category](benchmark_profile.png)", ""]
    for entry in entries:
        lines += table_lines(entry)
    return lines


def console_lines(entries: list[dict]) -> list[str]:
    """The categories side by side, one column per profiled row."""
    rows = [[category, *(f"{entry['categories'][index]['ms']:.2f}" for entry in entries)]
            for index, category in enumerate(CATEGORIES)]
    rows.append([" + ".join(FUSED), *(f"{fused_ms(entry):.2f}" for entry in entries)])
    rows.append(["sum / profiled step", *(f"{entry['sum_ms']:.1f} / {entry['profiled_step_ms']:.1f}"
                                          for entry in entries)])
    rows.append(["step without the profiler", *("-" if entry["unprofiled_step_ms"] is None
                                                else f"{entry['unprofiled_step_ms']:.1f}" for entry in entries)])
    header = ["category", *(f"{entry['side']} {entry['mode']} {entry['precision']}" for entry in entries)]
    return ["where the step goes (ms per step, --profile):",
            *tables.console(header, rows, ["left"] + ["right"] * len(entries)).splitlines()]


def plot(entries: list[dict], path: Path) -> Path | None:
    """Stacked bars: for each compared pair, TensorFlow's step and PyTorch's side by side, by category."""
    matched = pairs(entries)
    if not matched:
        return None
    plt = pyplot()
    colours = plt.get_cmap("tab20").colors
    figure, axes = plt.subplots(1, len(matched), figsize=(max(3.2 * len(matched), 7.5), 5.6), squeeze=False)
    for axis, pair in zip(axes[0], matched):
        bottoms = [0.0, 0.0]
        for index, category in enumerate(CATEGORIES):
            heights = [pair[side]["categories"][index]["ms"] for side in SIDES]
            axis.bar([0, 1], heights, bottom=bottoms, color=colours[index % len(colours)], width=0.6,
                     label=category if axis is axes[0][0] else None)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        names = [f"{report.SIDE_NAMES[side]}\n{MODE_NAMES[side][pair[side]['mode']]}" for side in SIDES]
        axis.set_xticks([0, 1], names, fontsize=8)
        axis.set_title(pair["title"], fontsize=9)
        axis.set_ylabel("ms per step")
    figure.legend(loc="lower center", ncol=3, fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.17, 1, 1))
    return save_figure(figure, path)
