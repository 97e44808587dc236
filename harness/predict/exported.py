"""`--predict RUN_DIR --runtime savedmodel|pt2|onnx`: a side's surface whose forward pass runs one of the files
`--export RUN_DIR` kept in RUN_DIR/exported/ (harness/predict/export.py) instead of the framework's model; the rest
of the prediction, its files and the agreement table, are unchanged. The prediction loops hand the surface canonical
NHWC numpy (masks.py reshapes each loader batch, framework tensor or not, to it); the file takes its own layout."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from harness.benchmark import serving
from shared.errors import UserError
from shared.metrics import sigmoid
from shared.tasks import image_shape_of, shape_text

EXPORTED = "exported"  # RUN_DIR/exported/: --export's default folder, where --runtime looks
FILE_OF = {"savedmodel": {"tf": "savedmodel"}, "pt2": {"torch": "pt2"}, "onnx": {"tf": "onnx", "torch": "onnx"}}


def exported_files(run_folder: Path, runtime: str, sides: list[str], prediction: str, image_size=None,
                   weights: dict | None = None) -> dict[str, dict]:
    """Each side's kept file for the runtime, with its input layout and what the task predicts with it ("classes",
    "masks"); one line for what is missing, for an image size (--image-size, --full-size) the files do not take, or
    for weights (checks.weight_files, with their sha256) other than those the file was exported from."""
    record = run_folder / EXPORTED / "export.json"
    if not record.is_file():
        raise UserError(f"{run_folder}: no exported files; run `python compare.py --export {run_folder}` first")
    found = json.loads(record.read_text())
    exported_size = found.get("image_size")
    if image_size is not None and exported_size and tuple(exported_size) != image_shape_of(image_size):
        raise UserError(f"--runtime {runtime}: the files in {record.parent} take {shape_text(tuple(exported_size))} "
                        f"images, not {shape_text(image_size)}: leave out --image-size and --full-size, or export "
                        f"at that size (--export {run_folder} --image-size {shape_text(image_size)} --overwrite)")
    files = {}
    for side in sides:
        fmt = FILE_OF[runtime].get(side)
        entry = found["sides"].get(side, {}).get(fmt or "", {})
        if not fmt or not entry.get("kept"):
            raise UserError(f"--runtime {runtime}: no kept {fmt or runtime} file of the {side} side in {record.parent}"
                            + ("" if fmt else f" ({runtime} is {', '.join(FILE_OF[runtime])}'s format: use "
                                              f"--frameworks {','.join(FILE_OF[runtime])})"))
        exported_from = found.get("weights", {}).get(side, {})
        if weights and exported_from.get("sha256") not in (None, weights[side]["sha256"]):
            raise UserError(f"--runtime {runtime}: the {side} file in {record.parent} holds the weights of "
                            f"{exported_from['file']}, not of {weights[side]['file']}: export those (--export "
                            f"{run_folder} with the same --checkpoint, --weights or --weights-from, --overwrite)")
        files[side] = {"runtime": runtime, "format": fmt, "file": str(record.parent / entry["path"]),
                       "input_layout": found["layouts"][side], "prediction": prediction}
    return files


@dataclasses.dataclass(frozen=True)
class ExportedTask:
    """The side's trained-task functions (its loader among them), but its model is the exported file, loaded by
    build (the weights are inside it: load_weights has nothing to do), and forward and predict run it: canonical NHWC
    numpy in, in the file's own layout through it, canonical out. The framework's model is never built."""

    task: object
    load: Callable[[], Callable[[np.ndarray], np.ndarray]]  # () -> the file's forward pass, numpy in its layout
    layout: str  # the file's input layout: NHWC (TensorFlow's) or NCHW (PyTorch's)
    prediction: str  # "classes" or "masks" (harness/registry.py Task.prediction)

    def __getattr__(self, name: str):
        return getattr(self.task, name)

    def build(self, spec) -> Callable[[np.ndarray], np.ndarray]:
        return self.load()

    def load_weights(self, model, weights) -> None:
        """Nothing: the exported file holds the weights it was verified with."""

    def forward(self, model, images: np.ndarray) -> np.ndarray:
        return serving.from_layout(model(serving.in_layout(np.asarray(images), self.layout)), self.layout)

    def predict(self, model, images: np.ndarray) -> np.ndarray:
        """As the side's predict: classes (the argmax of the log-probabilities), or mask probabilities (N, H_out,
        W_out), the sigmoid of the logits."""
        outputs = self.forward(model, images)  # (N, 10) log-probabilities, or (N, H_out, W_out, 1) logits
        return outputs.argmax(axis=1) if self.prediction == "classes" else sigmoid(outputs[..., 0])


def exported_surface(surface, exported: dict, threads: int):
    """The surface with its model served by the file (ONNX Runtime for ONNX, the framework's own loader for a
    SavedModel or a .pt2)."""
    path = Path(exported["file"])

    def load() -> Callable[[np.ndarray], np.ndarray]:
        if exported["format"] == "onnx":
            return serving.onnxruntime_function(path, threads)[0]
        return serving.export_module(surface.side).load_native(path)

    return dataclasses.replace(surface, task=ExportedTask(surface.task, load, exported["input_layout"],
                                                          exported.get("prediction", "classes")))
