"""Are the two sides equal? The parity of their probe arrays (same weights, same input) against the task's
tolerance, the benchmark's stricter gate (parameter counts and weight digests too), and the pixel agreement of
their predicted masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shared import metrics


def max_abs_diff(tf_probe: np.ndarray, torch_probe: np.ndarray) -> float:
    """max |tf - torch|; infinite when the shapes differ (the sides did not compute the same thing)."""
    if tf_probe.shape != torch_probe.shape:
        return float("inf")
    return float(np.max(np.abs(tf_probe - torch_probe)))


def reference_side(sides: list[str]) -> str:
    """The side every other one is compared with: TensorFlow when it ran, else the first side named."""
    return "tf" if "tf" in sides else sides[0]


def run_parity(out: Path, sides: list[str], tolerance: float, what: str) -> dict:
    """Each side's probe.npy against the reference side's; with one side there is nothing to compare (passed is
    None). max_abs_diff is the first pair's (tf-torch in a run of the two native sides), as it always was; "sides"
    holds every side's, and passed holds only if every side is within the tolerance."""
    if len(sides) < 2:
        return {"max_abs_diff": None, "tolerance": tolerance, "passed": None, "what": what}
    reference = reference_side(sides)
    probe = np.load(out / reference / "probe.npy")
    table = {}
    for side in sides:
        if side != reference:
            diff = max_abs_diff(probe, np.load(out / side / "probe.npy"))
            table[side] = {"max_abs_diff": diff, "passed": bool(diff <= tolerance)}
    first = next(iter(table.values()))
    return {"max_abs_diff": first["max_abs_diff"], "tolerance": tolerance,
            "passed": all(found["passed"] for found in table.values()), "what": what, "reference": reference,
            "sides": table}


def benchmark_parity(parity_rows: dict, probes: dict, tolerance: float) -> dict:
    """Equal parameter counts, bit-identical canonical weights, forward outputs within the task's tolerance:
    only then are the two sides timed doing the same work."""
    tf_row, torch_row = parity_rows["tf"], parity_rows["torch"]
    diff = max_abs_diff(probes["tf"], probes["torch"])
    problems = []
    if tf_row["parameters"] != torch_row["parameters"]:
        problems.append(f"parameter counts differ: {tf_row['parameters']:,} (tf) vs "
                        f"{torch_row['parameters']:,} (torch)")
    if tf_row["weights_sha256"] != torch_row["weights_sha256"]:
        problems.append("the sides' canonical weights differ (sha256)")
    if not diff <= tolerance:
        problems.append(f"forward outputs differ by {diff:.3g} (tolerance {tolerance:g})")
    return {"parameters": {side: row["parameters"] for side, row in parity_rows.items()},
            "weights_sha256": {side: row["weights_sha256"] for side, row in parity_rows.items()},
            "max_abs_diff": diff, "tolerance": tolerance, "passed": not problems, "problems": problems}


def mask_agreement(out: Path, sides: list[str], threshold: float, reference: str) -> dict:
    """Share of pixels on which the two sides' masks agree: with the same (the reference side's trained) weights,
    from each side's agreement.npy, and for each side's own trained model on the preview photos."""
    same = [np.load(out / side / "agreement.npy") for side in sides]
    own = [np.load(out / side / "preview.npz")["predicted"] > threshold for side in sides]
    return {"same_weights": metrics.pixel_agreement(*same), "own_weights_preview": metrics.pixel_agreement(*own),
            "pixels": int(same[0].size), "reference": reference}
