"""The benchmark's stock row: TensorFlow's tf.function step of the U-Net built with keras.layers.BatchNormalization,
as a Keras user writes it (the spec's batch_norm "stock"; PyTorch's nn.BatchNorm2d is stock already). It runs behind
a gate of its own, looser than the twins', and the summary gives its step-time ratio to PyTorch's eager step beside
the twins' ratio (docs/benchmark.md). mlp and cnn have no BatchNorm: their stock model is the model itself."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from harness.benchmark.cpu_load import BUSY_SHARE
from harness.benchmark.rows import PRECISION_CHECK_STEP, Row
from harness.benchmark.stats import samples_of, speed_ratio, verdict
from harness.benchmark.summary import summarize_rows
from harness.parity import max_abs_diff
from shared.tasks import TaskSpec

SIDE, MODE = "tf", "function"  # the row: TensorFlow's training mode, fp32
TWINS = {"tf": ("tf", "function"), "torch": ("torch", "eager")}  # the rows it is compared with
WHY = ("Keras 3.15's BatchNormalization takes the batch statistics with ops.moments (tf.nn.moments: one reduce_mean "
       "over N*H*W, about ten times the nested mean's error; its variance is two-pass, and no fused kernel runs), "
       "and it keeps the biased batch variance as its moving variance, where PyTorch keeps the unbiased one")


def plan(rows: list[Row], spec: TaskSpec, modes: dict[str, list[str]], precisions: list[str]) -> list[Row]:
    """The twins' rows with the stock rows added: the stock parity row after the parity rows, and a stock step row
    after each fp32 tf.function row (per batch size and --repeat process). Only where the spec has a BatchNorm to
    swap and both tf.function and PyTorch's eager step are timed in fp32."""
    wanted = (hasattr(spec, "batch_norm") and "fp32" in precisions and MODE in modes.get(SIDE, [])
              and TWINS["torch"][1] in modes.get("torch", []))
    if not wanted:
        return rows
    parity = [row for row in rows if row.kind == "parity"]
    stock = [replace(row, kind="stock", reference=False) for row in rows
             if (row.kind, row.side, row.mode, row.precision) == ("step", SIDE, MODE, "fp32")]
    after = max(index for index, row in enumerate(rows) if row.kind in ("parity", "step")) + 1
    return (parity + [Row(SIDE, "stock-parity", MODE, batch_size=parity[0].batch_size)] + rows[len(parity):after]
            + stock + rows[after:])


def row_spec(spec: TaskSpec, row: Row) -> TaskSpec:
    """The spec a row's worker builds: the stock rows' swaps the BatchNorm, and nothing else."""
    return spec.replace(batch_norm="stock") if row.kind in ("stock-parity", "stock") else spec


def run_gate(run, rows: list[Row], parity_rows: dict, probes: dict, tolerances: dict) -> dict | None:
    """The stock parity row run (`run`: harness/benchmark/run.py's RowRunner, numbering it where it lies in `rows`)
    and gated; None when the plan has none."""
    for index, row in enumerate(rows, start=1):
        if row.kind == "stock-parity" and "torch" in parity_rows:
            result = run(index, row)
            return gate(result, np.load(run.folder / f"{row.name}.probe.npy"), parity_rows, probes, tolerances)
    return None


def gate(result: dict, probe, parity_rows: dict, probes: dict, tolerances: dict) -> dict:
    """The stock model against the twins: the same parameters and canonical weights as PyTorch's, the same
    eval-mode output (BatchNorm on its running statistics is one algorithm in both) within the parity tolerance, and
    its training-mode outputs within the looser stock tolerance of the twins' (harness/registry.py)."""
    torch = parity_rows["torch"]
    found = {"parameters": result["parameters"], "max_abs_diff": max_abs_diff(probes["torch"], probe),
             "training_diff": result["training_diff"], "tolerance": tolerances["stock"],
             "parity_tolerance": tolerances["parity"], "why": WHY}
    problems = []
    if result["parameters"] != torch["parameters"] or result["weights_sha256"] != torch["weights_sha256"]:
        problems.append("its parameters or canonical weights differ from PyTorch's")
    if not found["max_abs_diff"] <= tolerances["parity"]:
        problems.append(f"its eval-mode output differs from PyTorch's by {found['max_abs_diff']:.3g} "
                        f"(tolerance {tolerances['parity']:g})")
    if not found["training_diff"] <= tolerances["stock"]:
        problems.append(f"its training-mode outputs differ from the twins' by {found['training_diff']:.3g} "
                        f"(tolerance {tolerances['stock']:g})")
    return {**found, "passed": not problems, "problems": problems}


def gate_lines(found: dict) -> list[str]:
    if not found["passed"]:
        return [f"stock row not timed, its gate failed: {'; '.join(found['problems'])}"]
    return [f"stock row's gate passed: max |stock - torch| {found['max_abs_diff']:.2g} in eval mode "
            f"(<= {found['parity_tolerance']:g}), max |stock - twins| {found['training_diff']:.2g} in a training "
            f"step's forward pass (<= {found['tolerance']:g})"]


def summarize(results: list[dict], twins_rows: list[dict], found: dict, flops: dict, machine: dict,
              own_peaks: dict) -> dict:
    """The stock rows summed up as the twins' are (harness/benchmark/summary.py), with their gate and ratios."""
    rows = [{**row, "batch_norm": "stock"} for row in summarize_rows(results, flops, machine, own_peaks)]
    return {"gate": found, "rows": rows, "ratios": ratios(rows, twins_rows)}


def ratios(rows: list[dict], twins_rows: list[dict]) -> list[dict]:
    """Per batch size: the two step-time ratios to PyTorch's eager step (stock against stock, and the twins'), each
    with its bootstrap interval, and the loss after PRECISION_CHECK_STEP steps on the batch relative to PyTorch's."""
    found = []
    for row in rows:
        twins = {side: next((r for r in twins_rows if (r["side"], r["mode"]) == key and r["precision"] == "fp32"
                             and r["batch_size"] == row["batch_size"]), None) for side, key in TWINS.items()}
        if None in twins.values():
            continue
        found.append({"batch_size": row["batch_size"], "stock": ratio(row, twins["torch"]),
                      "twins": ratio(twins["tf"], twins["torch"]),
                      "loss_diff": {"stock": loss_diff(row, twins["torch"]),
                                    "twins": loss_diff(twins["tf"], twins["torch"])}})
    return found


def ratio(tf_row: dict, torch_row: dict) -> dict:
    """TensorFlow's median step time over PyTorch's (above 1: TensorFlow is slower), as harness/benchmark/stats.py
    resamples it."""
    samples_tf, over = samples_of(tf_row)
    return {**speed_ratio(samples_of(torch_row)[0], samples_tf), "over": over,
            "trusted": all((row.get("other_cpu_share") or 0.0) <= BUSY_SHARE for row in (tf_row, torch_row))}


def loss_diff(row: dict, torch_row: dict) -> float | None:
    if min(len(row["losses"]), len(torch_row["losses"])) < PRECISION_CHECK_STEP:
        return None
    reference = torch_row["losses"][PRECISION_CHECK_STEP - 1]
    return abs(row["losses"][PRECISION_CHECK_STEP - 1] - reference) / max(abs(reference), 1e-12)


def ratio_lines(stock: dict) -> list[str]:
    """Per batch size: the stock-against-stock ratio beside the twins', and how far each trained from PyTorch."""
    lines = []
    for pair in stock["ratios"]:
        lines.append(f"stock against stock (fp32, batch {pair['batch_size']}): TensorFlow tf.function with "
                     f"keras.layers.BatchNormalization / PyTorch eager with nn.BatchNorm2d step time "
                     f"{verdict(pair['stock'])}; the twins: TensorFlow tf.function / PyTorch eager "
                     f"{verdict(pair['twins'])}" + untrusted(pair))
        losses = pair["loss_diff"]
        if losses["stock"] is not None:
            lines.append(f"  loss after {PRECISION_CHECK_STEP} steps on the batch, relative to PyTorch's: stock "
                         f"{losses['stock']:.2g}, twins {losses['twins']:.2g}")
    return lines


def untrusted(pair: dict) -> str:
    trusted = pair["stock"]["trusted"] and pair["twins"]["trusted"]
    return "" if trusted else " (not trusted: other processes took the CPU)"


def markdown(stock: dict) -> list[str]:
    """report.md's section: what the row is, its gate, and the ratios."""
    found = stock["gate"]
    lines = ["## Stock BatchNorm", "",
             "TensorFlow's tf.function step of the same U-Net with `keras.layers.BatchNormalization` as a Keras user "
             "writes it, given the twins' epsilon and momentum so that only the algorithm differs; PyTorch's "
             "`nn.BatchNorm2d` is stock already. Its gate is looser than the twins': " + WHY + ".", ""]
    lines += [f"- {line}." for line in gate_lines(found)]
    lines += [f"- {line.strip()}." for line in ratio_lines(stock)]
    return lines + [""]
