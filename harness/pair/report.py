"""What --pair writes: results.json (key "pair": the verdict, the first difference with its Keras layer and PyTorch
module, the traps named there, the mapping, every stage's rows, the drift), report.md, pair.png (the per-layer
differences in both precisions) and the console summary."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.pair.differences import FLOAT32_TOLERANCE, FLOAT64_TOLERANCE
from harness.pair.mapping import TABLE_HEADER, shown, table_rows
from shared import tables
from shared.plotting import pyplot, save_figure

STAGE_WORDS = {"forward": "the output", "gradient": "the gradient", "step": "the tensor after one training step",
               "drift": "the tensor furthest apart after the steps"}
CONTEXT_ROWS = 3  # the console shows the per-layer table this many rows either side of the first difference


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def numbers(row: dict) -> list[str]:
    f32, f64 = row.get("float32") or {}, row.get("float64") or {}
    return [number(f32.get("abs")), number(f32.get("rel")), number(f64.get("abs")), number(f64.get("rel"))]


def where_words(first: dict) -> str:
    tensor = f" {first['tensor']}" if first.get("tensor") else ""
    return (f"Keras layer {first['keras']!r} and PyTorch module {shown(first['torch'])!r} ({first['kind']}): "
            f"{STAGE_WORDS[first['stage']]}{tensor}")


def measured(first: dict) -> str:
    if first.get("note"):
        return first["note"]
    f32, f64 = first.get("float32") or {}, first.get("float64")
    if first["stage"] == "drift":
        return f"float32 {number(f32.get('rel'))} relative at the end, where the controls stay closer"
    if f64 is None:
        return f"float32 {number(f32.get('rel'))} relative (> {FLOAT32_TOLERANCE:g}; no float64 run)"
    return (f"float64 {number(f64['rel'])} relative, {number(f64['abs'])} absolute (> {FLOAT64_TOLERANCE:g}), "
            f"float32 {number(f32.get('rel'))} relative")


def verdict_of(compared: dict, steps: int) -> tuple[str, str]:
    """("equal" or "different", one sentence)."""
    first, drift = compared["first"], compared["drift"]["verdict"]
    if first is None:
        largest = max((r["float32"]["rel"] for stage in compared["stages"].values() for r in stage
                       if r.get("float32")), default=0.0)
        return "equal", (f"Equal up to rounding: every layer's output, every gradient and every tensor after one "
                         f"training step agree in float64 within {FLOAT64_TOLERANCE:g} (float32 differs by at most "
                         f"{largest:.1e} relative: rounding); over {steps} SGD steps: {drift['sentence']}")
    return "different", f"The first real difference is {where_words(first)}: {measured(first)}."


def pair_results(compared: dict, plan: dict, traps: list[dict], steps: int) -> dict:
    """results.json's "pair" key."""
    verdict, sentence = verdict_of(compared, steps)
    first = compared["first"]
    handled = [note for p in plan["pairs"] for note in (f"{p['keras']} / {shown(p['torch'])}: {n}" for n in p["notes"])]
    return {"verdict": verdict, "sentence": sentence,
            "first_difference": None if first is None else {**first, "traps": traps},
            "traps": traps, "handled": handled, "mapping": plan["pairs"], "parameters": plan["counts"],
            "layers": compared["stages"]["forward"], "gradients": compared["stages"]["gradient"],
            "step": compared["stages"]["step"], "drift": compared["drift"],
            "float64_errors": compared["float64_errors"],
            "tolerances": {"float64_rel": FLOAT64_TOLERANCE, "float32_rel_without_float64": FLOAT32_TOLERANCE}}


def layer_table(rows: list[dict], first: dict | None, start: int = 0, stop: int | None = None) -> tuple[list, list]:
    header = ["#", "PyTorch module", "Keras layer", "kind", "shape (PyTorch)", "f32 abs", "f32 rel", "f64 abs",
              "f64 rel", ""]
    body = []
    for index, row in enumerate(rows[start:stop], start=start):
        mark = "<- first difference" if first and first["stage"] == "forward" and row is first.get("row") else (
            "real" if row["real"] else "")
        keras = row["keras"] + (" (before its activation)" if row["keras_part"] == "pre_activation" else "")
        torch = shown(row["torch"]) + (f" #{row['torch_call']}" if row["torch_call"] > 1 else "")
        body.append([index, torch, keras, row["kind"], tuple(row["shape"]), *numbers(row), mark])
    return header, body


def first_index(rows: list[dict], first: dict | None) -> int | None:
    if first is None or first["stage"] != "forward":
        return None
    return next((i for i, r in enumerate(rows) if r["torch_index"] == first["torch_index"]), None)


def tensor_table(rows: list[dict]) -> tuple[list, list]:
    return (["tensor (PyTorch name)", "Keras layer", "kind", "f32 abs", "f32 rel", "f64 abs", "f64 rel", ""],
            [[r["tensor"], r["keras"], r["kind"], *numbers(r), "real" if r["real"] else ""] for r in rows])


def summary_lines(results: dict) -> list[str]:
    """The console's end: the verdict, the traps with their fixes, the per-layer table around the first
    difference."""
    pair = results["pair"]
    lines = ["", f"verdict: {pair['verdict']}. {pair['sentence']}"]
    lines += [f"  trap: {t['title']}.\n    fix: {t['fix']}" for t in pair["traps"]]
    if pair["first_difference"] and not pair["traps"]:
        lines.append("  no known porting trap explains it: compare the two layers' settings and code (report.md)")
    rows, first = pair["layers"], pair["first_difference"]
    at = first_index(rows, first)
    if at is not None:
        header, body = layer_table(rows, {**first, "row": rows[at]}, max(0, at - CONTEXT_ROWS), at + CONTEXT_ROWS + 1)
        lines += ["", *tables.console(header, body).splitlines()]
    return lines


def markdown(results: dict) -> str:
    pair, config = results["pair"], results["config"]
    first = pair["first_difference"]
    lines = [f"# Your pair: {config['keras']} against {config['torch']}", "",
             f"**Verdict: {pair['verdict']}.** {pair['sentence']}", "",
             "How to read it: both models get the same weights (mapped below) and the same input. Every layer's "
             "output, every gradient and every tensor after one training step is compared in float32 and again in "
             f"float64; a difference that vanishes in float64 is rounding, one above {FLOAT64_TOLERANCE:g} "
             "(relative) in float64 is real, and the first real one is named. Then "
             f"{config['steps']} SGD step{'s' if config['steps'] != 1 else ''} are compared against each side's "
             "1-ulp control.", ""]
    if first is not None:
        lines += ["## First difference", "", tables.markdown(
            ["stage", "Keras layer", "PyTorch module", "kind", "tensor", "f32 abs", "f32 rel", "f64 abs", "f64 rel"],
            [[first["stage"], first["keras"], shown(first["torch"]), first["kind"], first.get("tensor", ""),
              *numbers(first)]]), ""]
        if first.get("note"):
            lines += [first["note"], ""]
        if first.get("between"):
            lines += ["Keras layers run just before it with no PyTorch module to compare: " + ", ".join(
                f"{b['unit']} ({b['kind']})" for b in first["between"]), ""]
        lines += [f"- **{t['title']}**: {t['fix']}" for t in pair["traps"]] or [
            "No known porting trap explains it (docs/pair.md lists them): compare the two layers' settings and "
            "code."]
        lines.append("")
    if pair["handled"]:
        lines += ["Handled in the mapping: " + "; ".join(pair["handled"]) + ".", ""]
    counts = pair["parameters"]
    lines += [f"## Mapping: {len(pair['mapping'])} pairs, {counts['tf']:,} Keras and {counts['torch']:,} PyTorch "
              f"parameters ({config['source']}'s weights into the other)", "",
              tables.markdown(TABLE_HEADER, table_rows({"pairs": pair["mapping"]})), ""]
    rows = pair["layers"]
    at = first_index(rows, first)
    header, body = layer_table(rows, None if at is None else {**first, "row": rows[at]})
    lines += ["## Layer by layer (inference pass)", "", tables.markdown(header, body), "",
              "![log10 relative difference per layer](pair.png)", ""]
    for title, key in ((f"Gradients of the loss ({config['loss']})", "gradients"),
                       ("After one training step (SGD, training mode)", "step")):
        if pair[key]:
            lines += [f"## {title}", "", tables.markdown(*tensor_table(pair[key])), ""]
    lines += [f"## {config['steps']} SGD step(s) against the 1-ulp controls", "",
              pair["drift"]["verdict"]["sentence"], ""]
    if pair["float64_errors"]:
        lines += ["float64 could not run on " + "; ".join(f"{k}: {v}" for k, v in pair["float64_errors"].items()),
                  ""]
    lines += ["## Configuration", "", tables.markdown(["setting", "value"], [[k, v] for k, v in config.items()]), ""]
    return "\n".join(lines)


def picture(results: dict, path: Path) -> Path:
    """log10 of each layer's relative difference, float32 and float64, in PyTorch's order, the float64 tolerance
    dotted and the first real difference marked; the gradients and the tensors after one step beside."""
    plt = pyplot()
    pair = results["pair"]
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5), gridspec_kw={"width_ratios": [3, 2, 2]})
    for axis, rows, title in ((axes[0], pair["layers"], "layer outputs (inference pass)"),
                              (axes[1], pair["gradients"], "gradients"),
                              (axes[2], pair["step"], "tensors after one training step")):
        for precision, style in (("float32", {"marker": "o", "color": "tab:orange"}),
                                 ("float64", {"marker": "s", "color": "tab:blue"})):
            values = [np.nan if r.get(precision) is None else max(r[precision]["rel"], 1e-18) for r in rows]
            axis.plot(range(len(rows)), values, linestyle="-", linewidth=0.8, markersize=4, label=precision, **style)
        shaped = [i for i, r in enumerate(rows) if r.get("note")]
        if shaped:
            axis.plot(shaped, [1.0] * len(shaped), "x", color="red", label="shapes differ")
        axis.axhline(FLOAT64_TOLERANCE, color="grey", linestyle=":", label=f"float64 tolerance {FLOAT64_TOLERANCE:g}")
        at = next((i for i, r in enumerate(rows) if r["real"]), None)
        if at is not None:
            axis.axvline(at, color="red", linewidth=1, alpha=0.6, label="first real difference")
        names = [shown(r.get("tensor") or r["torch"]) for r in rows]
        step = max(1, len(rows) // 30)
        axis.set_xticks(range(0, len(rows), step), names[::step], rotation=90, fontsize=7)
        axis.set_yscale("log")
        axis.set_ylabel("max |keras - torch| / max |value|")
        axis.set_title(title)
        axis.legend(fontsize=7)
    figure.suptitle(f"{results['config']['keras']} against {results['config']['torch']}: "
                    f"{pair['verdict']}", fontsize=10)
    return save_figure(figure, path)
