"""Golden files: the benchmark's parity evidence kept on disk, so that one framework can be checked on a machine
that has only that one (a GPU box with PyTorch and no TensorFlow). A .safetensors file holds the benchmark batch and
both sides' forward outputs; its metadata (and a .json copy beside it, for people) the spec, the weights' seed and
digest, both first-step losses and the versions that wrote it."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from harness.parity import max_abs_diff
from shared.atomic import atomic_path, write_json
from shared.errors import UserError
from shared.tasks import TaskSpec

FORMAT = "twinnets-golden-1"
METADATA_KEY = "twinnets"
SIDES = ("tf", "torch")


class Golden(NamedTuple):
    path: Path
    metadata: dict
    arrays: dict[str, np.ndarray]

    @property
    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        return self.arrays["images"], self.arrays["targets"]

    def output(self, side: str) -> np.ndarray:
        return self.arrays[f"output.{side}"]


def plain(value):
    """A value as JSON reads it back (tuples become lists), so a spec compares equal to its stored copy."""
    return json.loads(json.dumps(value))


def write_golden(path: Path, spec: TaskSpec, images: np.ndarray, targets: np.ndarray, outputs: dict[str, np.ndarray],
                 parity_rows: dict[str, dict], gate: dict, tolerances: dict, probe: str) -> Path:
    """FILE (safetensors, the metadata embedded) and FILE.json (the same metadata, to read)."""
    from safetensors.numpy import save_file

    metadata = {"format": FORMAT, "task": spec.name, "spec": plain(spec.to_dict()), "seed": spec.seed,
                "batch_size": int(images.shape[0]), "probe": probe,
                "first_step_loss": {side: parity_rows[side]["first_step_loss"] for side in SIDES},
                "parameters": {side: parity_rows[side]["parameters"] for side in SIDES},
                "weights_sha256": {side: parity_rows[side]["weights_sha256"] for side in SIDES},
                "max_abs_diff": gate["max_abs_diff"], "tolerances": tolerances,
                "device": {side: parity_rows[side]["execution"]["device"] for side in SIDES},
                "versions": {side: parity_rows[side]["build"] for side in SIDES}}
    for build in metadata["versions"].values():
        build.pop("pid", None)
    tensors = {"images": images, "targets": targets, **{f"output.{side}": outputs[side] for side in SIDES}}
    with atomic_path(path, ".safetensors") as temporary:
        save_file({name: np.ascontiguousarray(array) for name, array in tensors.items()}, str(temporary),
                  metadata={METADATA_KEY: json.dumps(metadata)})
    write_json(sidecar(path), metadata)
    return Path(path)


def sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def read_golden(path: Path) -> Golden:
    """The file's arrays and metadata; a missing or foreign file is one UserError line naming it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such golden file (--golden)")
    try:
        with safe_open(str(path), framework="numpy") as opened:
            metadata = json.loads((opened.metadata() or {})[METADATA_KEY])
            arrays = {name: opened.get_tensor(name) for name in opened.keys()}
    except Exception as error:  # safetensors' own error types, a missing key, bad JSON
        raise UserError(f"{path}: not a twinnets golden file ({type(error).__name__}: {error})") from None
    missing = {"images", "targets", *(f"output.{side}" for side in SIDES)} - set(arrays)
    if metadata.get("format") != FORMAT or missing:
        raise UserError(f"{path}: not a twinnets golden file (format {metadata.get('format')!r}, "
                        f"missing {sorted(missing)})")
    return Golden(path, metadata, arrays)


def check_spec(golden: Golden, spec: TaskSpec) -> None:
    """The run must build the model the file was written for: same task, same spec (seed included)."""
    wanted = golden.metadata["spec"]
    if golden.metadata["task"] != spec.name:
        raise UserError(f"{golden.path}: written for --task {golden.metadata['task']}, not {spec.name}")
    found = plain(spec.to_dict())
    # A field added to the spec after the file was written counts only when it is set away from its default.
    defaults = plain({f.name: f.default for f in dataclasses.fields(spec) if f.default is not dataclasses.MISSING})
    differing = sorted(key for key in set(wanted) | set(found)
                       if wanted.get(key, defaults.get(key)) != found.get(key))
    if differing:
        raise UserError(f"{golden.path}: written for " + ", ".join(f"{k}={wanted.get(k)}" for k in differing)
                        + "; this run has " + ", ".join(f"{k}={found.get(k)}" for k in differing)
                        + " (pass the flags or --preset it was written with)")


def check_side(golden: Golden, side: str, result: dict, probe: np.ndarray, tolerance: float,
               loss_tolerance: float) -> dict:
    """One side's parity row against the file: its parameter count and weight digest, its forward output against
    both stored outputs (within the task's parity tolerance), its first-step loss against both stored losses."""
    meta = golden.metadata
    outputs = {stored: max_abs_diff(golden.output(stored), probe) for stored in SIDES}
    losses = {stored: abs(float(meta["first_step_loss"][stored]) - float(result["first_step_loss"]))
              for stored in SIDES}
    problems = []
    if result["parameters"] != meta["parameters"][side]:
        problems.append(f"{side}: {result['parameters']:,} parameters, the golden file has "
                        f"{meta['parameters'][side]:,}")
    if result["weights_sha256"] != meta["weights_sha256"][side]:
        problems.append(f"{side}: its canonical initial weights differ from the golden file's (sha256)")
    for stored, diff in outputs.items():
        if not diff <= tolerance:
            problems.append(f"{side} forward output vs the golden {stored} output: max |diff| {diff:.3g} "
                            f"(tolerance {tolerance:g})")
    for stored, diff in losses.items():
        if not diff <= loss_tolerance:
            problems.append(f"{side} first-step loss vs the golden {stored} loss: |diff| {diff:.3g} "
                            f"(tolerance {loss_tolerance:g})")
    return {"device": result["execution"]["device"], "output_diff": outputs, "loss_diff": losses,
            "first_step_loss": result["first_step_loss"], "passed": not problems, "problems": problems}


def golden_gate(golden: Golden, parity_rows: dict, probes: dict, tolerance: float, loss_tolerance: float,
                both: dict | None) -> dict:
    """The parity gate of a run checked against a golden file (and, with both sides here, against each other)."""
    checks = {side: check_side(golden, side, parity_rows[side], probes[side], tolerance, loss_tolerance)
              for side in parity_rows}
    problems = [problem for check in checks.values() for problem in check["problems"]]
    problems += (both or {}).get("problems", [])
    meta = golden.metadata
    return {"against": "golden file", "file": str(golden.path),
            "golden": {key: meta[key] for key in ("task", "seed", "batch_size", "first_step_loss", "parameters",
                                                  "max_abs_diff", "device", "versions")},
            "sides": checks, "parameters": {side: row["parameters"] for side, row in parity_rows.items()},
            "weights_sha256": {side: row["weights_sha256"] for side, row in parity_rows.items()},
            "max_abs_diff": max(d for check in checks.values() for d in check["output_diff"].values()),
            "between_sides": both, "tolerance": tolerance, "loss_tolerance": loss_tolerance,
            "passed": not problems, "problems": problems}


def between_sides(gate: dict) -> dict | None:
    """The TensorFlow-against-PyTorch record of a parity gate: nested in it when a golden file was checked too."""
    return gate.get("between_sides", gate) if gate.get("against") else gate


def chain(gate: dict) -> list[str]:
    """The equalities the run has shown, with their numbers: TensorFlow-CPU = PyTorch-CPU (when the file was
    written) = each side checked here, on its device."""
    meta, names = gate["golden"], {"tf": "TensorFlow", "torch": "PyTorch"}
    stored = {side: f"{names[side]}-{meta['device'][side].upper()}" for side in SIDES}
    versions = {"tf": meta["versions"]["tf"].get("tensorflow"), "torch": meta["versions"]["torch"].get("torch")}
    lines = [f"{stored['tf']} = {stored['torch']} (golden file, written by TensorFlow {versions['tf']} and PyTorch "
             f"{versions['torch']}): max |tf - torch| {meta['max_abs_diff']:.3g}, first-step losses "
             f"{meta['first_step_loss']['tf']:.7g} and {meta['first_step_loss']['torch']:.7g}"]
    for side, check in gate["sides"].items():
        outputs = " and ".join(f"{stored[other]}: max |diff| {diff:.3g}"
                               for other, diff in check["output_diff"].items())
        losses = " and ".join(f"{diff:.2g}" for diff in check["loss_diff"].values())
        lines.append(f"{names[side]}-{check['device'].upper()} (this run) = {outputs} "
                     f"(tolerance {gate['tolerance']:g}); first-step loss {check['first_step_loss']:.7g}, "
                     f"|diff| {losses} (tolerance {gate['loss_tolerance']:g}): "
                     + ("passed" if check["passed"] else "FAILED"))
    return lines
