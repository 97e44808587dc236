"""The Keras 3 arms in the benchmark: their flags, their parity gate (each arm against the tf side, or torch's when
tf is absent), the one-line row of a program an engine could not run, and the two ratios they exist for: the API's
cost on one engine (an arm against its engine's native side) and the engine's cost for one program (each arm
against Keras on TensorFlow)."""
from __future__ import annotations

from harness import parity
from harness.benchmark.cpu_load import BUSY_SHARE
from harness.benchmark.stats import samples_of, speed_ratio, verdict
from harness.benchmark.summary import MODE_NAMES
from harness.report import SIDE_NAMES
from harness.surface import ARMS
from shared.errors import UserError

# (kind, what, numerator (side, mode), denominator (side, mode)): step-time ratios, numerator over denominator, so
# above 1 the numerator's step is slower. Each pair runs one program on one engine, or one program on two engines.
RATIOS = (
    ("api", "the Keras API's cost on PyTorch", ("keras-torch", "eager"), ("torch", "eager")),
    ("api", "the Keras API's cost on TensorFlow", ("keras-tf", "function"), ("tf", "function")),
    ("engine", "JAX against TensorFlow for one Keras program", ("keras-jax", "jit"), ("keras-tf", "function")),
    ("engine", "PyTorch against TensorFlow for one Keras program", ("keras-torch", "eager"), ("keras-tf", "function")),
    # the API's cost again where both compile the step
    ("api", "the Keras API's cost on PyTorch, compiled", ("keras-torch", "compile"), ("torch", "compile")),
    ("api", "the Keras API's cost on TensorFlow, with XLA", ("keras-tf", "xla"), ("tf", "xla")),
)


def arms_of(sides) -> list[str]:
    """The Keras arms among the sides, in their order."""
    return [side for side in sides if not ARMS[side].native]


def check_arm_sides(sides: list[str], golden: bool, write_golden: bool) -> None:
    """Golden files hold the two native sides' outputs; an arm is timed only next to a side it is gated against."""
    arms = arms_of(sides)
    if not arms:
        return
    if golden or write_golden:
        raise UserError(f"--golden and --write-golden hold TensorFlow's and PyTorch's outputs: leave "
                        f"{', '.join(arms)} out of --frameworks")
    if len(sides) < 2:
        raise UserError(f"--benchmark --frameworks {sides[0]}: an arm is timed only next to a side it is checked "
                        "against; add tf or torch (or another arm)")


def reference_side(sides) -> str:
    """What the arms are checked against: the tf side (the same Keras model), else torch's, else the first arm."""
    return next((side for side in ("tf", "torch") if side in sides), next(iter(sides)))


def check_arm(arm: str, reference: str, parity_rows: dict, probes: dict, tolerance: float) -> dict:
    """One arm against the reference side: parameters, canonical weights (sha256) and forward output."""
    mine, theirs = parity_rows[arm], parity_rows[reference]
    diff = parity.max_abs_diff(probes[reference], probes[arm])
    problems = []
    if mine["parameters"] != theirs["parameters"]:
        problems.append(f"{arm}: {mine['parameters']:,} parameters, {reference} has {theirs['parameters']:,}")
    if mine["weights_sha256"] != theirs["weights_sha256"]:
        problems.append(f"{arm}: its canonical weights differ from {reference}'s (sha256)")
    if not diff <= tolerance:
        problems.append(f"{arm}: forward output differs from {reference}'s by {diff:.3g} (tolerance {tolerance:g})")
    return {"against": reference, "max_abs_diff": diff, "passed": not problems, "problems": problems,
            "first_step_loss_diff": abs(mine["first_step_loss"] - theirs["first_step_loss"])}


def gate(parity_rows: dict, probes: dict, tolerance: float, dropped: dict[str, str]) -> dict:
    """The benchmark's parity gate with arms: the native pair as harness/parity.py checks it (when both ran), and
    every arm against reference_side. An arm whose parity row failed (`dropped`: its one line) is left out of the
    timing; the gate fails only when fewer than two sides are left to compare."""
    sides = list(parity_rows)
    natives = [side for side in sides if ARMS[side].native]
    native = (parity.benchmark_parity({side: parity_rows[side] for side in natives}, probes, tolerance)
              if len(natives) == 2 else None)
    problems = list(native["problems"]) if native else []
    if len(sides) < 2:
        problems += [f"{side} could not run its parity row: {line}" for side, line in dropped.items()]
        problems.append("fewer than two sides left to compare")
    reference = reference_side(sides) if sides else None
    checks = {arm: check_arm(arm, reference, parity_rows, probes, tolerance)
              for arm in arms_of(sides) if arm != reference}
    problems += [problem for check in checks.values() for problem in check["problems"]]
    diffs = [check["max_abs_diff"] for check in checks.values()]
    return {"parameters": {side: row["parameters"] for side, row in parity_rows.items()},
            "weights_sha256": {side: row["weights_sha256"] for side, row in parity_rows.items()},
            "max_abs_diff": native["max_abs_diff"] if native else max(diffs, default=0.0), "tolerance": tolerance,
            "native": native, "reference": reference, "arms": checks, "not_run": dropped,
            "passed": not problems, "problems": problems}


def gate_lines(gate: dict) -> list[str]:
    """The gate in console lines: what every side shares, then each arm's distance from the reference side."""
    sides = list(gate["parameters"])
    native = gate["native"]
    lines = [f"parity passed: {gate['parameters'][sides[0]]:,} parameters on every side, bit-identical weights"
             + (f", max |tf - torch| {native['max_abs_diff']:.2g} <= {gate['tolerance']:g}" if native else "")]
    lines += [f"  {SIDE_NAMES[arm]}: max |{arm} - {check['against']}| {check['max_abs_diff']:.2g} <= "
              f"{gate['tolerance']:g}" for arm, check in gate["arms"].items()]
    lines += [f"  {SIDE_NAMES[side]}: not timed, its parity row failed: {line}"
              for side, line in gate["not_run"].items()]
    return lines


def equal_work_lines(gate: dict) -> list[str]:
    """The gate as report.md bullets."""
    sides = list(gate["parameters"])
    digests = set(gate["weights_sha256"].values())
    lines = ["- Parameters: " + ", ".join(f"{gate['parameters'][side]:,} ({SIDE_NAMES[side]})" for side in sides) + ".",
             f"- Canonical weights after loading: sha256 {next(iter(digests))[:16]}... on every side: "
             + ("identical." if len(digests) == 1 else "DIFFERENT.")]
    if gate["native"]:
        native = gate["native"]
        lines.append(f"- Forward output on the benchmark batch: max |tf - torch| = {native['max_abs_diff']:.3g} "
                     f"(tolerance {gate['tolerance']:g}): {'passed' if native['passed'] else 'FAILED'}.")
    for arm, check in gate["arms"].items():
        lines.append(f"- {SIDE_NAMES[arm]} against {SIDE_NAMES[check['against']]}: forward output max |diff| = "
                     f"{check['max_abs_diff']:.3g} (tolerance {gate['tolerance']:g}), first-step loss |diff| "
                     f"{check['first_step_loss_diff']:.3g}: {'passed' if check['passed'] else 'FAILED'}.")
    lines += [f"- {SIDE_NAMES[side]}: not timed, its parity row failed: {line}"
              for side, line in gate["not_run"].items()]
    return lines


# ---- rows an engine could not run ---------------------------------------------------------------------------

def failure_result(row: dict, row_name: str, line: str) -> dict:
    """A row's result when its worker process died (a crash in the engine, not an exception it raised)."""
    return {"row": row, "row_name": row_name, "failure": line}


def failed_rows(results: list[dict]) -> list[dict]:
    """Every row that could not run, with its one line."""
    return [{"side": r["row"]["side"], "kind": r["row"]["kind"], "mode": r["row"]["mode"],
             "precision": r["row"]["precision"], "batch_size": r["row"]["batch_size"], "failure": r["failure"]}
            for r in results if r.get("failure")]


def failure_line(failed: dict) -> str:
    """'Keras on PyTorch torch.compile (jit_compile) fp32 batch 8 (step row) could not run: <the error's line>'."""
    mode = MODE_NAMES[failed["side"]].get(failed["mode"], failed["mode"])
    return (f"{SIDE_NAMES[failed['side']]} {mode} {failed['precision']} batch {failed['batch_size']} "
            f"({failed['kind']} row) could not run: {failed['failure']}")


# ---- the two ratios -----------------------------------------------------------------------------------------

def arm_ratios(rows: list[dict]) -> list[dict]:
    """Per batch size and precision (in the rows' order), each pair of RATIOS whose two rows ran: the ratio of
    median step times, numerator over denominator, with its bootstrap interval (harness/benchmark/stats.py)."""
    found = []
    for batch, precision in dict.fromkeys((row["batch_size"], row["precision"]) for row in rows):
        modes = {(row["side"], row["mode"]): row for row in rows
                 if row["batch_size"] == batch and row["precision"] == precision}
        for kind, what, top, bottom in RATIOS:
            if top not in modes or bottom not in modes:
                continue
            samples_top, over = samples_of(modes[top])
            samples_bottom, _ = samples_of(modes[bottom])
            found.append({"kind": kind, "what": what, "batch_size": batch, "precision": precision,
                          "numerator": dict(zip(("side", "mode"), top)),
                          "denominator": dict(zip(("side", "mode"), bottom)), "over": over,
                          **speed_ratio(samples_bottom, samples_top),
                          "trusted": all((modes[key].get("other_cpu_share") or 0.0) <= BUSY_SHARE
                                         for key in (top, bottom))})
    return found


def ratio_line(ratio: dict) -> str:
    """'the Keras API's cost on PyTorch (fp32, batch 8): Keras on PyTorch eager / PyTorch eager step time 1.52x
    (95% interval ...)'."""
    top, bottom = ratio["numerator"], ratio["denominator"]
    return (f"{ratio['what']} ({ratio['precision']}, batch {ratio['batch_size']}): "
            f"{SIDE_NAMES[top['side']]} {MODE_NAMES[top['side']][top['mode']]} / "
            f"{SIDE_NAMES[bottom['side']]} {MODE_NAMES[bottom['side']][bottom['mode']]} step time {verdict(ratio)}"
            + ("" if ratio.get("trusted", True) else " (not trusted: other processes took the CPU)"))
