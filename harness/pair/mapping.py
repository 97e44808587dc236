"""Which Keras layer gets which PyTorch module's weights (--pair): pinned by your mapping file, else by name (after
normalising separators: "enc1.conv1" is "enc1_conv1"), else by the order of the layers with weights as the forward
pass calls them, with shape checks; a bias on one side only stops the check unless --zero-unmatched-bias sets it to
zero (mathematically the same network). The plan says what each side loads; the table shows it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.pair.traps import BIAS_TRAP
from shared.errors import UserError
from shared.pair_layouts import STATE, family, normalise

BIASES = ("bias", "in_proj_bias", "out_proj.bias")  # may be on one side only (--zero-unmatched-bias)
SIDE_TITLES = {"tf": "Keras", "torch": "PyTorch"}
CONTIGUOUS = 0.5  # align()'s bonus for a match that follows a match


def align(a: list, b: list, score: Callable[[Any, Any], float]) -> list[tuple[int, int]]:
    """The order-keeping matching of a and b with the largest total score (a score <= 0 forbids the match), by
    dynamic programming. A match right after a match scores CONTIGUOUS more, so that of two equal layers (a
    BatchNorm after each of two convolutions) the one next to its matched neighbour wins."""
    n, m = len(a), len(b)
    scores = np.array([[score(x, y) for y in b] for x in a]).reshape(n, m)
    # best[s, i, j]: the best total of a[i:] and b[j:], s = 1 when a[i - 1] and b[j - 1] were matched
    best = np.zeros((2, n + 1, m + 1))
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            skip = max(best[0, i + 1, j], best[0, i, j + 1])
            for s in (0, 1):
                matched = scores[i, j] + s * CONTIGUOUS + best[1, i + 1, j + 1] if scores[i, j] > 0 else -np.inf
                best[s, i, j] = max(skip, matched)
    pairs, i, j, s = [], 0, 0, 0
    while i < n and j < m:
        if scores[i, j] > 0 and best[s, i, j] == scores[i, j] + s * CONTIGUOUS + best[1, i + 1, j + 1]:
            pairs.append((i, j))
            i, j, s = i + 1, j + 1, 1
        elif best[s, i, j] == best[0, i + 1, j]:
            i, s = i + 1, 0
        else:
            j, s = j + 1, 0
    return pairs


def shown(name: str) -> str:
    return name or "(the model)"


def tensors(unit: dict) -> str:
    return ", ".join(f"{role} {tuple(shape)}" for role, shape in unit["params"].items())


def described(unit: dict) -> str:
    return f"{shown(unit['name'])} ({unit['kind']}: {tensors(unit)})"


def agree(keras: dict, torch: dict) -> bool:
    """Same kind of layer, every tensor both have of one shape, and what one side alone has a bias or a running
    statistic."""
    if family(keras["kind"]) != family(torch["kind"]):
        return False
    common = set(keras["params"]) & set(torch["params"])
    alone = set(keras["params"]) ^ set(torch["params"])
    return bool(common) and all(keras["params"][r] == torch["params"][r] for r in common) and all(
        r in BIASES + STATE for r in alone)


def parameter_count(units: list[dict]) -> int:
    return sum(int(np.prod(unit["params"][role])) for unit in units for role in unit["trainable"])


def read_pins(path: Path | None) -> dict[str, str]:
    """Your mapping file: a JSON object of Keras layer names to PyTorch module names."""
    if path is None:
        return {}
    try:
        pins = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such mapping file (--mapping)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a readable JSON mapping file ({error})") from None
    if not isinstance(pins, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in pins.items()):
        raise UserError(f'{path}: expected a JSON object of Keras layer names to PyTorch module names, like '
                        f'{{"dense_1": "fc1"}} (--mapping)')
    return pins


def check_pins(pins: dict[str, str], keras: dict[str, dict], torch: dict[str, dict], path: Path | None,
               where: dict[str, str]) -> None:
    """Each pinned name is a layer with weights of its model, or one line names the file and the name."""
    for names, units, side in ((list(pins), keras, "tf"), (list(pins.values()), torch, "torch")):
        for name in names:
            if name not in units:
                choices = ", ".join(shown(n) for n in list(units)[:8]) + (", ..." if len(units) > 8 else "")
                raise UserError(f"{path}: names {SIDE_TITLES[side]} layer {name!r}, which {where[side]} does not "
                                f"have among its layers with weights ({choices})")


def pair_units(keras: list[dict], torch: list[dict], pins: dict[str, str]) -> list[tuple[dict, dict, str]]:
    """(Keras unit, PyTorch unit, how they were paired) for every pair found: pins, then names, then order."""
    pairs = [(next(k for k in keras if k["name"] == kn), next(t for t in torch if t["name"] == tn), "pinned")
             for kn, tn in pins.items()]
    taken = {id(u) for pair in pairs for u in pair[:2]}
    by_name: dict[str, list[dict]] = {}
    for unit in torch:
        if id(unit) not in taken:
            by_name.setdefault(normalise(unit["name"]), []).append(unit)
    for unit in keras:
        found = by_name.get(normalise(unit["name"]), [])
        if id(unit) not in taken and len(found) == 1 and id(found[0]) not in taken and agree(unit, found[0]):
            pairs.append((unit, found[0], "name"))
            taken |= {id(unit), id(found[0])}
    rest_k = [u for u in keras if id(u) not in taken]
    rest_t = [u for u in torch if id(u) not in taken]
    matched = align(rest_k, rest_t, lambda k, t: float(agree(k, t)))
    pairs += [(rest_k[i], rest_t[j], "order") for i, j in matched]
    taken |= {id(u) for i, j in matched for u in (rest_k[i], rest_t[j])}
    for unit in rest_k:  # what order could not keep (a shortcut computed first on one side, last on the other)
        partner = next((t for t in rest_t if id(t) not in taken and agree(unit, t)), None)
        if id(unit) not in taken and partner is not None:
            pairs.append((unit, partner, "order"))
            taken |= {id(unit), id(partner)}
    return pairs


def producers(records: list[dict], owners: set[str]) -> dict[str, str | None]:
    """Each unit with weights: the unit with weights its (first) input came from, through the layers without
    weights between them (None where a functional op, which no hook sees, made it)."""
    found: dict[str, str | None] = {}
    for record in records:
        if record["unit"] in found or record["unit"] not in owners:
            continue
        source = record["inputs"][0] if record["inputs"] else -1
        while source >= 0 and records[source]["unit"] not in owners:
            source = records[source]["inputs"][0] if records[source]["inputs"] else -1
        found[record["unit"]] = records[source]["unit"] if source >= 0 else None
    return found


def repaired(pairs: list[tuple[dict, dict, str]], sources: dict[str, dict]) -> list[tuple[dict, dict, str]]:
    """Pairs found by order, swapped where their inputs say otherwise: two equal BatchNorms (after a residual
    block's last convolution and after its shortcut, computed in another order on each side) each go with the one
    fed by its own convolution's partner. sources: each side's producers()."""
    keras_of = {t["name"]: (k, by) for k, t, by in pairs}
    torch_of = {k["name"]: t for k, t, _ in pairs}
    for k, t, by in list(pairs):
        source = sources["torch"].get(t["name"])
        if by != "order" or source is None or source not in keras_of:
            continue
        k, _ = keras_of[t["name"]]
        wanted = [u for u, _ in keras_of.values() if sources["tf"].get(u["name"]) == keras_of[source][0]["name"]
                  and agree(u, t)]
        if len(wanted) == 1 and wanted[0] is not k and keras_of[torch_of[wanted[0]["name"]]["name"]][1] == "order":
            other = torch_of[wanted[0]["name"]]
            if agree(k, other):
                keras_of[t["name"]], keras_of[other["name"]] = (wanted[0], "order"), (k, "order")
                torch_of[wanted[0]["name"]], torch_of[k["name"]] = t, other
    return [(k, t, by) for k, t, by in ((keras_of[t["name"]][0], t, keras_of[t["name"]][1]) for _, t, _ in pairs)]


def make_plan(keras: list[dict], torch: list[dict], pins: dict[str, str], zero_bias: bool, where: dict[str, str],
              pins_path: Path | None = None, hint: Callable[[dict, dict | None], str] = lambda k, t: "",
              sources: dict[str, dict] | None = None) -> dict:
    """The mapping of the two descriptions (each side's units with weights, in the order the forward pass calls
    them), or one line naming what cannot be mapped. hint(keras unit, torch unit) adds a known trap's words;
    sources (each side's producers()) repair what the order paired."""
    keras_units = {u["name"]: u for u in keras}
    torch_units = {u["name"]: u for u in torch}
    check_pins(pins, keras_units, torch_units, pins_path, where)
    pairs = repaired(pair_units(keras, torch, pins), sources) if sources else pair_units(keras, torch, pins)
    for k, t, by in pairs:
        if by == "pinned" and not agree(k, t):
            raise UserError(f"{pins_path}: pins Keras {k['name']!r} ({k['kind']}: {tensors(k)}) to PyTorch "
                            f"{t['name']!r} ({t['kind']}: {tensors(t)}), which do not fit{hint(k, t)}")
    paired = {id(u) for pair in pairs for u in pair[:2]}
    left = {"tf": [u for u in keras if id(u) not in paired], "torch": [u for u in torch if id(u) not in paired]}
    counts = {"tf": parameter_count(keras), "torch": parameter_count(torch)}
    if left["tf"] or left["torch"]:
        unmapped = "; ".join(f"{SIDE_TITLES[side]} " + ", ".join(described(u) for u in units[:3])
                             + (f" and {len(units) - 3} more" if len(units) > 3 else "")
                             for side, units in left.items() if units)
        lead = ("different parameter counts: " if counts["tf"] != counts["torch"] else "") + (
            f"Keras {where['tf']} has {counts['tf']:,} parameters, PyTorch {where['torch']} {counts['torch']:,}")
        first = left["tf"][0] if left["tf"] else None
        raise UserError(f"{lead}; no counterpart for {unmapped}{hint(first, None) if first else ''}; pin pairs "
                        f"with --mapping FILE.json")
    one_sided = [(k, t, role) for k, t, _ in pairs for role in set(k["params"]) ^ set(t["params"]) if role in BIASES]
    if one_sided and not zero_bias:
        k, t, role = one_sided[0]
        side = "Keras" if role in k["params"] else "PyTorch"
        more = f" (and {len(one_sided) - 1} more)" if len(one_sided) > 1 else ""
        _, title, fix = BIAS_TRAP
        raise UserError(f"{title}: Keras {k['name']!r} and PyTorch {t['name']!r}: {role} in {side} alone{more}; the "
                        f"networks are the same only if it is zero: {fix}")
    order = {id(unit): index for index, unit in enumerate(torch)}
    return {"pairs": [entry(k, t, by, zero_bias) for k, t, by in sorted(pairs, key=lambda p: order[id(p[1])])],
            "counts": counts}


def entry(k: dict, t: dict, by: str, zero_bias: bool) -> dict:
    """One mapped pair: the tensors both have, what one side alone has (a zeroed bias, running statistics)."""
    common = [role for role in t["params"] if role in k["params"]]
    zeroed = [{"role": role, "side": "tf" if role in k["params"] else "torch",
               "shape": (k["params"] | t["params"])[role]}
              for role in sorted(set(k["params"]) ^ set(t["params"])) if role in BIASES and zero_bias]
    notes = [f"{SIDE_TITLES[z['side']]} {z['role']} set to zero" for z in zeroed]
    alone = sorted(r for r in set(k["params"]) ^ set(t["params"]) if r in STATE)
    notes += [f"{', '.join(alone)} kept by one side only"] if alone else []
    if k["config"].get("flatten_from"):
        shape = k["config"]["flatten_from"]
        notes.append(f"rows reordered: Keras flattens {tuple(shape)} (channels last), PyTorch "
                     f"{(shape[-1], *shape[:-1])}")
    return {"keras": k["name"], "torch": t["name"], "kind": t["kind"], "keras_kind": k["kind"], "by": by,
            "tensors": {role: t["params"][role] for role in common}, "zeroed": zeroed, "notes": notes,
            "trainable": [role for role in common if role in t["trainable"]]}


def side_plans(plan: dict, keras: dict[str, dict], torch: dict[str, dict]) -> dict[str, list[dict]]:
    """What each side loads and exports: its unit, the canonical (PyTorch) name its tensors go by, its kind and
    settings (a Keras Dense after a Flatten needs its (*S, C) to reorder rows), and the zeroed bias it alone has,
    kept at zero (frozen) so that training leaves the two the same network."""
    def frozen(pair: dict, side: str) -> list[str]:
        return [z["role"] for z in pair["zeroed"] if z["side"] == side]

    return {"tf": [{"unit": p["keras"], "tensor": p["torch"], "kind": keras[p["keras"]]["kind"],
                    "config": keras[p["keras"]]["config"], "frozen": frozen(p, "tf")} for p in plan["pairs"]],
            "torch": [{"unit": p["torch"], "tensor": p["torch"], "kind": torch[p["torch"]]["kind"],
                       "config": torch[p["torch"]]["config"], "frozen": frozen(p, "torch")} for p in plan["pairs"]]}


def mapped_weights(plan: dict, source: str, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The source side's weights under their canonical names for both sides; a bias one side alone has, zero."""
    found = {}
    for pair in plan["pairs"]:
        own = pair["keras"] if source == "tf" else pair["torch"]
        for role in pair["tensors"]:
            found[joined(pair["torch"], role)] = np.asarray(weights[joined(own, role)], np.float32)
        for zeroed in pair["zeroed"]:
            found[joined(pair["torch"], zeroed["role"])] = np.zeros(zeroed["shape"], np.float32)
    return found


def joined(unit: str, role: str) -> str:
    return f"{unit}.{role}" if unit else role


def common_tensors(plan: dict) -> list[str]:
    """The tensors both sides hold (what the drift and the one-step comparison measure)."""
    return [joined(p["torch"], role) for p in plan["pairs"] for role in p["tensors"]]


def table_rows(plan: dict) -> list[list[str]]:
    return [[p["keras"], shown(p["torch"]), p["kind"], ", ".join(f"{r} {tuple(s)}" for r, s in p["tensors"].items()),
             p["by"], "; ".join(p["notes"])] for p in plan["pairs"]]


TABLE_HEADER = ["Keras layer", "PyTorch module", "kind", "tensors (PyTorch layout)", "by", "notes"]
