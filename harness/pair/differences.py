"""Where your pair differs (--pair), stage by stage in the order a training step computes: every layer's output of
the inference pass (the Keras layers aligned with the PyTorch modules in the order they ran, by kind and output
shape, the mapped ones as mapped), the gradients (last layer first), the weights after one training step, then the
drift of `steps` steps against each side's 1-ulp control (harness/drift.py's verdict). Each number in float32 and in
float64: a difference that vanishes in float64 is rounding, one that stays is real."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.drift import load_run, measure
from harness.pair.mapping import align
from shared.pair_layouts import family, normalise

FLOAT64_TOLERANCE = 1e-10  # relative: the float64 row of docs/equivalence.md; rounding there is 5e8 times smaller
FLOAT64_FLOOR = 1e-12  # absolute: a float64 difference below it is a sum that cancels to about zero on both sides
FLOAT32_TOLERANCE = 1e-4  # relative: the judge where a side could not run in float64
SIDES = ("tf", "torch")
STAGES = ("forward", "gradient", "step", "drift")


def difference(a: np.ndarray, b: np.ndarray) -> dict:
    """The largest |a - b|, and that over the larger of the two tensors' largest magnitudes."""
    if a.size == 0:
        return {"abs": 0.0, "rel": 0.0}
    a, b = a.astype(np.float64), b.astype(np.float64)
    gap = float(np.max(np.abs(a - b)))
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), float(np.finfo(np.float32).tiny))
    return {"abs": gap, "rel": gap / scale}


def is_real(row: dict) -> bool:
    """A difference that float64 keeps (or, without float64, beyond float32's rounding), or shapes that differ."""
    if row.get("note"):
        return True
    finite = (row.get("float64") or row.get("float32") or {}).get("finite")
    if finite is not None:
        return len(set(finite.values())) > 1
    if row.get("float64") is not None:
        return row["float64"]["rel"] > FLOAT64_TOLERANCE and row["float64"]["abs"] > FLOAT64_FLOOR
    return row["float32"] is not None and row["float32"]["rel"] > FLOAT32_TOLERANCE


def squeezed(shape: list[int]) -> tuple:
    return (shape[0], *(n for n in shape[1:] if n != 1)) if shape else ()


def same_shape(a: list[int], b: list[int]) -> bool:
    """Equal, or equal but for axes of size 1 (a global pooling keeps them in PyTorch, drops them in Keras)."""
    return list(a) == list(b) or squeezed(a) == squeezed(b)


def loaded(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


def compared(keras: np.ndarray | None, torch: np.ndarray | None) -> dict | None:
    """Both sides' difference; where a side holds NaN or infinity, which side (real when only one does)."""
    if keras is None or torch is None:
        return None
    finite = {"tf": bool(np.all(np.isfinite(keras))), "torch": bool(np.all(np.isfinite(torch)))}
    if not all(finite.values()):
        return {"abs": float("nan"), "rel": float("nan"), "finite": finite}
    return difference(keras.reshape(torch.shape) if keras.size == torch.size else keras, torch)


def aligned(plan: dict, keras: list[dict], torch: list[dict]) -> list[tuple[int, int]]:
    """(Keras record, PyTorch record) pairs: a mapped layer's call with its module's call of the same number (a
    fused activation's input is the layer's part), the rest by kind and output shape in the order they ran."""
    partner = {p["keras"]: p["torch"] for p in plan["pairs"]}
    kinds = {p["keras"]: p["keras_kind"] for p in plan["pairs"]}

    def anchored(record: dict) -> bool:
        return record["unit"] in kinds and family(record["kind"]) == family(kinds[record["unit"]])

    mapped = set(partner.values())

    def score(k: dict, t: dict) -> float:
        if anchored(k) or t["unit"] in mapped:
            return 4.0 if anchored(k) and partner[k["unit"]] == t["unit"] and k["call"] == t["call"] else 0.0
        if family(k["kind"]) != family(t["kind"]) or not same_shape(k["shape"], t["shape"]):
            return 0.0
        return 1.0 + 0.5 * (normalise(k["unit"]) == normalise(t["unit"]))

    pairs = align(keras, torch, score)
    taken_k, taken_t = {i for i, _ in pairs}, {j for _, j in pairs}
    for i, k in enumerate(keras):  # a mapped pair the order could not keep (a shortcut run first on one side)
        j = next((j for j, t in enumerate(torch) if j not in taken_t and anchored(k) and score(k, t) > 0), None)
        if i not in taken_k and j is not None:
            pairs.append((i, j))
            taken_k.add(i)
            taken_t.add(j)
    return sorted(pairs, key=lambda pair: pair[1])


def layer_rows(out: Path, plan: dict, results: dict) -> list[dict]:
    """One row per aligned pair of records, in PyTorch's execution order, with both precisions' differences and the
    Keras layers run in between that no PyTorch module matched."""
    keras, torch = results["tf"]["records"], results["torch"]["records"]
    arrays = {suffix: {side: loaded(out / side / f"forward{suffix}.npz") for side in SIDES} for suffix in ("", ".f64")}
    rows, previous, taken = [], -1, {i for i, _ in aligned(plan, keras, torch)}
    for i, j in aligned(plan, keras, torch):
        k, t = keras[i], torch[j]
        row = {"keras": k["unit"], "keras_part": k["part"], "keras_kind": k["kind"], "keras_index": i,
               "torch": t["unit"], "torch_call": t["call"], "kind": t["kind"], "torch_index": j,
               "keras_shape": k["shape"], "shape": t["shape"], "input_shape": t.get("input_shape"), "note": None,
               "behaviour": {"tf": k.get("behaviour"), "torch": t.get("behaviour")},
               "between": [{"unit": keras[n]["unit"], "kind": keras[n]["kind"]} for n in range(previous + 1, i)
                           if n not in taken] if i > previous else []}
        previous = max(previous, i)
        if not same_shape(k["shape"], t["shape"]):
            row["note"] = f"output shapes differ: Keras {tuple(k['shape'])}, PyTorch {tuple(t['shape'])}"
        for suffix, name in (("", "float32"), (".f64", "float64")):
            found = arrays[suffix]
            row[name] = None if row["note"] or None in found.values() else compared(
                found["tf"].get(f"{i:05d}"), found["torch"].get(f"{j:05d}"))
        row["real"] = is_real(row)
        rows.append(row)
    return rows


def tensor_rows(out: Path, plan: dict, stem: str, roles: str, backward: bool = False) -> list[dict]:
    """One row per mapped tensor of <side>/<stem>.npz (and .f64.npz): the gradients (trainable roles, last layer
    first) or the weights after the first step (every common role, running statistics included)."""
    arrays = {suffix: {side: loaded(out / side / f"{stem}{suffix}.npz") for side in SIDES} for suffix in ("", ".f64")}
    if arrays[""]["tf"] is None or arrays[""]["torch"] is None:
        return []
    rows = []
    for pair in (reversed(plan["pairs"]) if backward else plan["pairs"]):
        for role in pair[roles]:
            name = f"{pair['torch']}.{role}" if pair["torch"] else role
            row = {"keras": pair["keras"], "torch": pair["torch"], "kind": pair["kind"],
                   "keras_kind": pair["keras_kind"], "tensor": name, "role": role, "note": None}
            for suffix, precision in (("", "float32"), (".f64", "float64")):
                found = arrays[suffix]
                row[precision] = None if None in found.values() else compared(found["tf"].get(name),
                                                                              found["torch"].get(name))
            row["real"] = is_real(row)
            rows.append(row)
    return rows


def drift_of(out: Path, results: dict, lr: float) -> dict:
    """The steps' drift and its verdict, as the built-in tasks measure it (TensorFlow naming the Keras side); none
    when a run's loss stopped being finite (the steps diverged: nothing left to compare)."""
    runs = {}
    for side in SIDES:
        for run, losses in results[side].get("batch_losses", {}).items():
            broken = next((step for step, loss in enumerate(losses, start=1)
                           if loss is None or not np.isfinite(loss)), None)  # results.json writes NaN as null
            if broken is not None:
                sentence = (f"the loss of the {run} run became NaN or infinite at step {broken}: the steps diverged "
                            f"and cannot be compared; choose a smaller --lr (this run had {lr:g})")
                return {"pairs": {}, "verdict": {"within_noise": None, "sentence": sentence}, "verdicts": {}}
            found = load_run(out / run, losses)
            if found is not None:
                runs[run] = found
    drift = measure(runs)
    for found in (drift["verdict"], *drift["verdicts"].values()):  # the Keras side runs as twinnets' TensorFlow side
        found["sentence"] = found["sentence"].replace("TensorFlow", "Keras")
    return drift


def first_difference(stages: dict[str, list[dict]], drift: dict, final: list[dict]) -> dict | None:
    """The first real difference in the order a step computes: a layer's output, then a gradient (backpropagation
    goes last layer first), then a tensor after one step; else, when the steps drift beyond rounding, the tensor
    furthest apart at the end."""
    for stage in ("forward", "gradient", "step"):
        row = next((r for r in stages[stage] if r["real"]), None)
        if row is not None:
            return {"stage": stage, **row}
    if drift["verdict"].get("within_noise") is False and final:
        return {"stage": "drift", **max(final, key=lambda r: (r["float32"] or {"rel": 0.0})["rel"])}
    return None


def compare_pair(out: Path, plan: dict, lr: float) -> dict:
    """Every stage's rows, the drift, and the first real difference, from the files the two workers wrote."""
    results = {side: json.loads((out / side / "result.json").read_text()) for side in SIDES}
    stages = {"forward": layer_rows(out, plan, results),
              "gradient": tensor_rows(out, plan, "gradients", "trainable", backward=True),
              "step": tensor_rows(out, plan, "step1", "tensors")}
    drift = drift_of(out, results, lr)
    first = first_difference(stages, drift, tensor_rows(out, plan, "final", "tensors"))
    float64 = {side: results[side].get("float64_error") for side in SIDES if results[side].get("float64_error")}
    return {"stages": stages, "drift": drift, "first": first, "sides": results, "float64_errors": float64}
