"""`compare.py --export RUN_DIR`: each side's trained weights written as its native deployable format (SavedModel;
.pt2) and as ONNX, each file verified in a fresh process of its own against the trained model's eager output before
it is kept (written under pending/, moved into place only when it agrees), with the same worker pieces as
`--benchmark --inference` (harness/benchmark/serving.py); the batch it is verified on is the run's own first
validation batch (harness/predict/validation.py)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from harness.benchmark import inference
from harness.benchmark.serving import FORMATS, exported_path
from harness.flags import frameworks
from harness.ownership import output_folder
from harness.predict import checks
from harness.predict.exported import EXPORTED
from harness.predict.validation import ValidationBatch, validation_batch
from harness.registry import task_of
from shared import tables
from shared.atomic import write_json
from shared.errors import UserError
from shared.tasks import image_shape_of

# Which row verifies each kept file: (runtime, mode) for a side's native format and for its ONNX file.
VERIFIERS = {"savedmodel": ("tf", "savedmodel"), "pt2": ("torch", "pt2"), "onnx": ("onnxruntime", "onnx")}


def export_run(args) -> int:
    """Read the run, export each side, verify each file, keep what agrees; one line per file that does not."""
    run = checks.read_run(args.export.expanduser().resolve(), args.task)
    sides = [side for side in frameworks(args.frameworks, tuple(run.sides) if args.frameworks.strip() == "all"
                                         else ("tf", "torch")) if side in FORMATS]
    spec = checks.prediction_spec(run, args)
    weights = checks.weight_files(run, sides, args)
    checks.check_weights(weights, spec)
    out = args.out or run.folder / EXPORTED  # where --predict RUN_DIR --runtime looks
    if out.expanduser().resolve() == run.folder:
        raise UserError(f"{out}: --out is the run folder itself; export into another folder")
    data_dir = args.data_dir.expanduser().resolve() if args.data_dir is not None else None
    batch = validation_batch(run, spec, task_of(spec).prediction, data_dir)  # a data folder gone: one line, first
    with output_folder(out, spec.name, args.overwrite) as out:
        found = export_into(out, spec, sides, weights, args.threads, batch)
        found.update(run=str(run.folder), weights=weights)
        write_json(out / "export.json", found)
    print(tables.console(["side", "format", "file", "max |file - trained model|", "kept"], [
        [side, fmt, entry.get("path", ""), "" if entry.get("max_abs_diff") is None else f"{entry['max_abs_diff']:.2g}",
         "kept" if entry.get("kept") else entry.get("failure", "not kept")]
        for side, formats in found["sides"].items() for fmt, entry in formats.items()]))
    print(f"verified on {found['verified_on']}; wrote {out}/export.json")
    return 0 if all(entry.get("kept") for formats in found["sides"].values() for entry in formats.values()) else 1


def export_into(out: Path, spec, sides: list[str], weights: dict, threads: int, batch: ValidationBatch) -> dict:
    """Each side's files written and verified on the batch (saved for the export pieces, which take it as the
    reference's input); export.json's content: each file, the layout and input size its graphs take, the batch."""
    pending = out / "pending"
    pending.mkdir(exist_ok=True)
    np.save(pending / "validation-images.npy", batch.images)
    settings = {"offline_batch": len(batch.images), "queries": 1, "offline_steps": 1}
    tolerance = task_of(spec).tolerance
    base = {"task": spec.name, "spec": spec.to_dict(), "threads": threads, "data": None, "settings": settings,
            "out": str(pending.resolve()), "images": str((pending / "validation-images.npy").resolve())}
    found: dict = {"sides": {}, "layouts": {}, "tolerance": tolerance, "verified_on": batch.text,
                   "validation_batch": batch.record, "input_shape": list(batch.images.shape[1:]),  # canonical NHWC
                   "image_size": list(image_shape_of(spec.image_size))}  # what --predict --runtime must ask for
    try:
        for side in sides:
            print(f"export {side} ...", flush=True)
            crash = inference.run_piece(pending, side, {**base, "piece": "export", "weights": weights[side]["file"]},
                                        f"{side}-export", threads)
            written = {} if crash else json.loads((pending / f"{side}-export.json").read_text())
            formats = {fmt: {"failure": crash} for fmt in FORMATS[side]} if crash else written["formats"]
            found["layouts"][side] = written.get("input_layout")
            for fmt, entry in formats.items():
                if "failure" not in entry:
                    entry.update(verify(pending, side, fmt, weights[side]["file"], base, threads))
                if entry.get("kept"):
                    os.replace(exported_path(pending, side, fmt), exported_path(out, side, fmt))
            found["sides"][side] = formats
    finally:  # the work files, kept or not, never left behind (a crash or Ctrl-C included)
        shutil.rmtree(pending, ignore_errors=True)
    return found


def verify(pending: Path, side: str, fmt: str, weights_file: str, base: dict, threads: int) -> dict:
    """The file run in a fresh process against the trained model's eager output; kept only when it agrees."""
    runtime, mode = VERIFIERS[fmt]
    name = inference.row_name(runtime, side, mode)
    row = {"name": name, "runtime": runtime, "source": side, "mode": mode, "weights": weights_file}
    crash = inference.run_piece(pending, side, {**base, "piece": "row", "row": row}, name, threads)
    result = {"failure": crash} if crash else json.loads((pending / f"{name}.json").read_text())
    gate = result.get("gate") or {}
    return {"max_abs_diff": gate.get("max_abs_diff"), "kept": bool(gate.get("passed")),
            **({"failure": f"not kept: {result['failure']}"} if result.get("failure") else {})}
