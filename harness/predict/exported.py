"""`--predict RUN_DIR --runtime savedmodel|pt2|onnx`: a side's surface whose forward pass runs one of the files
`--export RUN_DIR` kept in RUN_DIR/exported/ (harness/predict/export.py) instead of the framework's model; the rest
of the prediction, its files and the agreement table, are unchanged."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from harness.benchmark import serving
from shared.errors import UserError

EXPORTED = "exported"  # RUN_DIR/exported/: --export's default folder, where --runtime looks
FILE_OF = {"savedmodel": {"tf": "savedmodel"}, "pt2": {"torch": "pt2"}, "onnx": {"tf": "onnx", "torch": "onnx"}}


def exported_files(run_folder: Path, runtime: str, sides: list[str], prediction: str) -> dict[str, dict]:
    """Each side's kept file for the runtime, with its input layout; one line for what is missing."""
    if prediction != "classes":
        raise UserError(f"not implemented yet: --runtime {runtime} for the U-Net's masks (its loader's batches are "
                        "framework tensors); --runtime works for mlp and cnn")
    record = run_folder / EXPORTED / "export.json"
    if not record.is_file():
        raise UserError(f"{run_folder}: no exported files; run `python compare.py --export {run_folder}` first")
    found = json.loads(record.read_text())
    files = {}
    for side in sides:
        fmt = FILE_OF[runtime].get(side)
        entry = found["sides"].get(side, {}).get(fmt or "", {})
        if not fmt or not entry.get("kept"):
            raise UserError(f"--runtime {runtime}: no kept {fmt or runtime} file of the {side} side in {record.parent}"
                            + ("" if fmt else f" ({runtime} is {', '.join(FILE_OF[runtime])}'s format: use "
                                              f"--frameworks {','.join(FILE_OF[runtime])})"))
        files[side] = {"runtime": runtime, "format": fmt, "file": str(record.parent / entry["path"]),
                       "input_layout": found["layouts"][side]}
    return files


@dataclasses.dataclass(frozen=True)
class ExportedTask:
    """The side's trained-task functions, but forward: the exported file (numpy NHWC in, canonical out)."""

    task: object
    call: object
    layout: str

    def __getattr__(self, name: str):
        return getattr(self.task, name)

    def forward(self, model, images: np.ndarray) -> np.ndarray:
        return serving.from_layout(self.call(serving.in_layout(np.asarray(images), self.layout)), self.layout)


def exported_surface(surface, exported: dict, threads: int):
    """The surface with its forward pass served by the file (ONNX Runtime for ONNX, the framework's own loader for
    a SavedModel or a .pt2)."""
    path = Path(exported["file"])
    if exported["format"] == "onnx":
        call, _ = serving.onnxruntime_function(path, threads)
    else:
        call = serving.export_module(surface.side).load_native(path)
    return dataclasses.replace(surface, task=ExportedTask(surface.task, call, exported["input_layout"]))
