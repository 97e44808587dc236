"""The reports of a prediction (`compare.py --predict`): the console table and report.md, from its results.json."""
from __future__ import annotations

import json
import os
from pathlib import Path

from harness.report import SIDE_NAMES, _format, text_grid
from shared import tables
from shared.atomic import jsonable


def summary_rows(results: dict, unit: str) -> list[tuple[str, list]]:
    """(label, [value per side]) rows: what each side predicted (`unit`: photos, images), how fast, in how much
    memory."""
    frameworks = results["frameworks"]
    sides = list(frameworks)

    def each(*keys):
        values = []
        for side in sides:
            value = frameworks[side]
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(value)
        return values

    rows = [("weights trained by", [SIDE_NAMES.get(w, w) for w in each("weights", "trained_by")])]
    served = each("served_by")
    files = any("file" in (found or {}) for found in served)
    if files:  # --runtime: an exported file served the forward pass
        rows.append(("served by", [f"{found['runtime']}: {Path(found['file']).name}" if "file" in (found or {})
                                   else "the framework's model" for found in served]))
    rows += [(f"{unit} predicted", each("rows")), ("skipped (unreadable)", [len(s or []) for s in each("skipped")])]
    for keys, label in ((("metrics", "test_accuracy"), "test accuracy"),
                        (("timing", "photos_per_s"), f"{unit}/s (end to end)"),
                        (("timing", "model_photos_per_s"), f"{unit}/s (the model alone)"),
                        (("timing", "first_batch_s"), "first batch s (warm-up, tracing)"),
                        (("timing", "setup_s"), "exported file loaded s" if files else "model build + weights s"),
                        (("memory", "growth_mb"), "resident MB growth after 100"),
                        (("resumed",), "times resumed")):
        values = each(*keys)
        if any(v is not None for v in values):
            rows.append((label, values))
    return rows


def agreement_lines(results: dict) -> list[str]:
    agreement = results.get("agreement")
    if not agreement:
        return ["one side only: no agreement to measure"]
    same = ("with the same weights" if agreement["weights"] == "same"
            else "each side with its own trained weights")
    if agreement["kind"] == "log-probabilities":
        verdict = "within" if agreement["passed"] else "OUTSIDE"
        return [f"agreement {same}: max |tf - torch| of the log-probabilities = {agreement['max_abs_diff']:.3e}, "
                f"{verdict} the tolerance {agreement['tolerance']:.0e}; the same class for {agreement['same_class']:,}"
                f" of {agreement['rows']:,}"]
    if not agreement["pixels"]:
        return [f"agreement {same}: no photo was predicted by both"]
    lowest = ", ".join(f"{found['img']} {100 * found['agreement']:.3f}%" for found in agreement["lowest"][:5])
    return [f"agreement {same}: {100 * agreement['agreement']:.4f}% of {agreement['pixels']:,} pixels at the "
            f"photos' original size; {agreement['identical_rows']:,} of {agreement['rows']:,} submission rows "
            "identical", f"lowest agreement: {lowest}"]


def console_table(results: dict, unit: str) -> str:
    lines = text_grid(list(results["frameworks"]), summary_rows(results, unit))
    return "\n".join([*lines, *agreement_lines(results)])


def markdown_report(results: dict, out: Path, unit: str) -> str:
    sides = list(results["frameworks"])
    data, env = results["data"], results["environment"]
    location = data.get("location")
    location = ", ".join(location) if isinstance(location, list) else location
    epoch = results["checkpoint"]
    checkpoint = "its final model" if epoch == "final" else f"its checkpoint of epoch {epoch}"
    parts = [f"# twinnets: {results['task']} prediction", "",
             f"Predicted with the trained weights of `{results['run']}` ({checkpoint}), no retraining.", "",
             f"Data: **{data.get('source')}**" + (f" ({location})" if location else "")
             + f", {data['count']:,} in all.",
             "",
             f"Environment: Python {env.get('python')}, TensorFlow {env.get('tensorflow')}, PyTorch {env.get('torch')},"
             f" {env.get('cpu')}, {env.get('threads')} threads per side, each side in {env.get('process')}.", "",
             tables.markdown(["", *(SIDE_NAMES[s] for s in sides)],
                             [[label, *map(_format, values)] for label, values in summary_rows(results, unit)])]
    parts += ["", *[f"- {side} weights: `{w['file']}`" for side, w in results["weights"].items()], ""]
    first = agreement_lines(results)[0]  # the lowest photos follow as a table
    parts += [first[0].upper() + first[1:] + ".", ""]
    agreement = results.get("agreement") or {}
    if agreement.get("kind") == "pixels" and agreement.get("lowest"):
        parts += ["Photos with the lowest agreement (all of them in `agreement.csv`):", "",
                  tables.markdown(["photo", "agreement"], [[found["img"], f"{100 * found['agreement']:.4f}%"]
                                                           for found in agreement["lowest"]]), ""]
    for side in sides:
        skipped = results["frameworks"][side].get("skipped") or []
        if skipped:
            parts += [f"{SIDE_NAMES[side]} skipped {len(skipped)} unreadable photo(s) (--skip-bad):", "",
                      *[f"- {found['error']}" for found in skipped[:20]], ""]
        previews = results["frameworks"][side].get("artifacts", {}).get("previews") or []
        if previews:
            parts += [f"## {SIDE_NAMES[side]}: photo, mask, outline", "",
                      *[f"![{Path(p).name}]({os.path.relpath(out / p, out)})" for p in previews[:4]], ""]
    parts += ["Configuration:", "", "```json", json.dumps(jsonable(results["config"]), indent=2), "```", ""]
    return "\n".join(parts)
