"""`--benchmark --inference`'s reports: the console tables, report.md (the rows, the exports, the referee and what
each ONNX graph holds) and inference.png (latency distributions per runtime, throughput bars, both sides in one
figure)."""
from __future__ import annotations

from pathlib import Path

from harness.benchmark.stats import verdict
from harness.surface import ARMS
from shared import tables
from shared.atomic import write_atomic
from shared.plotting import pyplot, save_figure
from shared.tasks import TaskSpec, shape_text

FORMAT_WHAT = {
    "savedmodel": "a folder: the graph Keras traced once (saved_model.pb, batch left open) and its variables; "
                  "needs TensorFlow's runtime, not the model's Python code",
    "pt2": "one file: torch.export's graph (captured by Dynamo) compiled ahead of time by AOTInductor into C++ "
           "kernels, with the weights; needs libtorch, not the nn.Module",
    "onnx": "one file: the graph in ONNX's standard operators, weights inside; needs an ONNX runtime only",
}


def header(spec: TaskSpec, env: dict, settings: dict, threads: int) -> str:
    size = f", input {shape_text(spec.image_size)}, width {spec.base_filters}" if hasattr(spec, "base_filters") else ""
    return "\n".join([
        f"twinnets inference benchmark: {spec.name}{size}; single-stream {settings['queries']} batch-1 queries, "
        f"offline batch {settings['offline_batch']} x {settings['offline_steps']}; precisions "
        f"{','.join(settings.get('precisions', ['fp32']))}",
        f"tensorflow {env.get('tensorflow')}, keras {env.get('keras')}, torch {env.get('torch')}; {threads} thread(s) "
        f"in every runtime (intra-op; inter-op 1)",
        f"CPU {env.get('cpu')} (flags: {env.get('cpu_flags')})"])


def ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e3:.3f}"


def own_gate(row: dict) -> bool:
    """A float32 row gated against its own framework's eager output (the others' gates are listed below the table)."""
    return row["gate"]["against"] == f"{row['row']['source']} eager"


def row_cells(row: dict) -> list:
    r = row["row"]
    export = row.get("export") or {}
    first = [r["runtime"], ARMS[r["source"]].title, r["mode"], r.get("precision", "fp32")]
    if row.get("failure"):
        return first + [row["failure"]] + [""] * 9
    lat, gate = row["latency"], row["gate"]
    interval = f"{ms(lat['median_low_s'])}-{ms(lat['median_high_s'])}" if lat["median_low_s"] is not None else ""
    against = "" if own_gate(row) else f" vs {r.get('reference', 'fp32')}"  # the arms: vs tf; bf16: vs fp32
    return first + [f"{gate['max_abs_diff']:.2g}{against}", ms(lat["median_s"]), interval, ms(lat["p90_s"]),
                    ms(lat["p99_s"]),
                    f"{row['offline']['samples_per_s']:,.0f}",
                    f"{export['export_s']:.1f}" if export.get("export_s") is not None else "",
                    f"{export['bytes'] / 1e6:.2f}" if export.get("bytes") is not None else "",
                    f"{row['load_s']:.2f}", ms(row["first_call_s"])]


HEADER = ["runtime", "model of", "mode", "precision", "gate max diff", "latency median ms", "95% interval", "p90 ms",
          "p99 ms", "offline samples/s", "export s", "file MB", "load s", "first call ms"]


def graph_cells(referee: dict) -> list[list]:
    graphs = referee.get("graphs", {})
    ops = sorted({op for graph in graphs.values() for op in graph.get("ops", {})})
    rows = [[op] + [graphs.get(side, {}).get("ops", {}).get(op, 0) for side in ("tf", "torch")] for op in ops]
    return rows + [["(all nodes)"] + [graphs.get(side, {}).get("nodes", "") for side in ("tf", "torch")],
                   ["(weights: initializers)"] + [graphs.get(side, {}).get("initializers", "")
                                                  for side in ("tf", "torch")],
                   ["(input shape)"] + [graphs.get(side, {}).get("input", "") for side in ("tf", "torch")]]


def referee_line(referee: dict) -> str:
    if "max_abs_diff" not in referee:
        return f"ONNX referee: {referee.get('failure', 'not run')}"
    return (f"ONNX referee (ONNX Runtime, the same session settings, the same batch: {referee.get('same_batch')}): "
            f"max |tf.onnx - torch.onnx| {referee['max_abs_diff']:.2g} "
            + (f"<= {referee['tolerance']:g}: the graphs compute the same function" if referee.get("passed") else
               f"> {referee.get('tolerance')}: the graphs differ"))


def gate_lines(results: dict) -> list[str]:
    """The rows gated otherwise than a float32 row against its framework's eager output: the Keras arms (against the
    tf side's, the same Keras model) and bf16 rows (against the float32 eager output, their own tolerance)."""
    return [f"gate of {row['row_name']}: max |output - {row['gate']['against']}| {row['gate']['max_abs_diff']:.2g} "
            f"{'<=' if row['gate']['passed'] else '>'} {row['gate']['tolerance']:g}"
            for row in results["rows"] if row.get("gate") and not own_gate(row)]


def bf16_line(results: dict) -> str | None:
    """Whether this CPU has bf16 arithmetic, when bf16 rows ran."""
    if "bf16" not in results["config"].get("precisions", ["fp32"]):
        return None
    units = results.get("bf16_units") or []
    return ("bf16 rows: this CPU has " + " and ".join(units) + " (bf16 arithmetic)" if units else
            "bf16 rows: this CPU has no bf16 arithmetic (no avx512_bf16 or amx_bf16): bf16 is converted and computed "
            "in float32, expect it no faster")


def comparison_line(c: dict) -> str:
    return (f"{c['what']}: {c['faster']} {verdict(c)} as fast as {c['slower']}"
            + ("" if c.get("trusted", True) else " (not trusted: the machine was busy)"))


def console(results: dict) -> str:
    lines = [tables.console(HEADER, [row_cells(row) for row in results["rows"]]), "",
             referee_line(results["referee"])]
    lines += gate_lines(results) + [line for line in [bf16_line(results)] if line]
    lines += [comparison_line(c) for c in results["comparisons"]]
    lines += results["not_run"]
    return "\n".join(lines)


def markdown(results: dict) -> str:
    env, config = results["environment"], results["config"]
    precisions = ", ".join(config.get("precisions", ["fp32"]))
    parts = [f"# Inference: {results['task']}", "",
             f"CPU {env.get('cpu')}, {config['threads']} thread(s) in every runtime; "
             f"tensorflow {env.get('tensorflow')}, keras {env.get('keras')}, "
             f"torch {env.get('torch')}. Each row ran in a fresh process, gated on its output against its framework's "
             "eager output before any timing (a Keras arm: the tf side's, the same Keras model; a bf16 row: the "
             "float32 eager output, within its own tolerance). Latency: batch-1 queries one after another "
             f"(single-stream); offline: batch {config['offline_batch']}. Precisions: {precisions}.",
             "", tables.markdown(HEADER, [row_cells(row) for row in results["rows"]]), "",
             referee_line(results["referee"]), ""]
    parts += [f"- {line}" for line in gate_lines(results) + [line for line in [bf16_line(results)] if line]]
    parts += [f"- {comparison_line(c)}" for c in results["comparisons"]]
    parts += ["", "## What each exported file is", ""]
    parts += [f"- `{fmt}`: {what}" for fmt, what in FORMAT_WHAT.items()]
    parts += ["", "## The two ONNX graphs, node by node", "",
              tables.markdown(["op", "TensorFlow's ONNX", "PyTorch's ONNX"], graph_cells(results["referee"])), "",
              "![latency and throughput](inference.png)", ""]
    parts += [f"- {line}" for line in results["not_run"]]
    return "\n".join(parts) + "\n"


def plot(results: dict, path: Path) -> Path | None:
    rows = [row for row in results["rows"] if not row.get("failure")]
    if not rows:
        return None
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 2.5))
    labels = [row["row_name"] for row in rows]
    boxes = left.boxplot([[t * 1e3 for t in row["latency_s"]] for row in rows], vert=False,
                         showfliers=True, patch_artist=True)
    for box, row in zip(boxes["boxes"], rows):
        box.set_facecolor(ARMS[row["row"]["source"]].color)
        box.set_hatch("//" if row["row"].get("precision", "fp32") != "fp32" else "")
    left.set_yticks(range(1, len(labels) + 1), labels)
    left.set_xscale("log")
    left.set_xlabel("batch-1 latency, ms (log scale)")
    left.set_title("single-stream latency per runtime")
    right.barh(labels, [row["offline"]["samples_per_s"] for row in rows],
               color=[ARMS[row["row"]["source"]].color for row in rows],
               hatch=["//" if row["row"].get("precision", "fp32") != "fp32" else "" for row in rows])
    right.set_xlabel(f"samples/s at batch {results['config']['offline_batch']}")
    right.set_title("offline throughput")
    shown = dict.fromkeys(row["row"]["source"] for row in rows)
    figure.suptitle("whose model: " + ", ".join(f"{ARMS[side].color.removeprefix('tab:')} {ARMS[side].title}"
                                                for side in shown) + "; hatched: bf16")
    right.set_yticks([])
    figure.tight_layout()
    return save_figure(figure, path)


def write_reports(out: Path, results: dict) -> None:
    write_atomic(out / "report.md", markdown(results))
    plot(results, out / "inference.png")
