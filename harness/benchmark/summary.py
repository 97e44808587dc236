"""The benchmark's rows summed up in the parent: the FLOP counts, each row against the machine peak and the
reference loop, the bf16 precision checks, the loader and scaling summaries, and the targets."""
from __future__ import annotations

from harness import report
from harness.benchmark.peak import against_peak
from harness.benchmark.rows import PRECISION_CHECK_STEP, PRECISION_LOSS_RTOL, REFERENCE_MODE, median_run
from shared.tasks import TaskSpec

MODE_NAMES = {"tf": {"function": "tf.function", "eager": "eager (run_functions_eagerly)", "xla": "XLA (jit_compile)"},
              "torch": {"eager": "eager", "channels_last": "eager, channels_last", "compile": "torch.compile"},
              # The Keras arms: model.compile's jit_compile / run_eagerly on each engine (keras_fit/runtime.py).
              "keras-tf": {"function": "tf.function (jit_compile off)", "xla": "XLA (jit_compile=True)"},
              "keras-jax": {"jit": "jax.jit (Keras' default)", "eager": "eager (run_eagerly=True)"},
              "keras-torch": {"eager": "eager (Keras' default)", "compile": "torch.compile (jit_compile)"}}


def flop_counts(task, spec: TaskSpec, parity_rows: dict, batch_sizes: list[int]) -> dict:
    """Per batch size: each side's own count (None where its framework cannot count a training step), the
    analytic count, and the count the rows use (PyTorch's if it agrees with the analytic one within 1%)."""
    counts = {}
    for batch in batch_sizes:
        analytic = task.analytic_training_flops(spec, batch)
        counted = {side: row["flops"].get(str(batch)) for side, row in parity_rows.items()}
        measured = counted.get("torch")
        agrees = measured is not None and abs(measured - analytic) <= 0.01 * analytic
        counts[str(batch)] = {"counted": counted, "analytic": analytic, "agree_within_1pct": agrees,
                              "used": measured if agrees else analytic,
                              "counted_by": "PyTorch FlopCounterMode" if agrees else "analytic"}
    return counts


def summarize_rows(step_results: list[dict], flops: dict, machine: dict, own_peaks: dict | None = None) -> list[dict]:
    """One entry per (side, mode, precision, batch): the median of its --repeat processes, with raw times; its
    model-FLOP rate against the machine's peak in its precision (and the side's own matmul rate, as a fact)."""
    groups: dict[tuple, list[dict]] = {}
    for result in step_results:
        row = result["row"]
        groups.setdefault((row["side"], row["mode"], row["precision"], row["batch_size"]), []).append(result)
    rows = []
    for (side, mode, precision, batch), runs in groups.items():
        chosen = median_run(runs)
        stats = chosen["stats"]
        model_flops = flops[str(batch)]["used"]
        achieved = model_flops / stats["median_s"] / 1e9
        label = f"{report.SIDE_NAMES[side]} {MODE_NAMES[side][mode]} {precision} batch {batch}"
        own = (own_peaks or {}).get(side, {}).get(precision, {}).get("gflop_per_s")
        entry = {"side": side, "mode": mode, "precision": precision, "batch_size": batch,
                 "first_step_s": chosen["first_step_s"], "stats": stats, "times_s": chosen["times_s"],
                 "losses": chosen["losses"], "run_medians_s": [run["stats"]["median_s"] for run in runs],
                 "gflop_per_s": achieved, **against_peak(achieved, precision, machine, label),
                 "own_matmul_gflop_per_s": own,
                 "peak_rss_bytes": chosen["peak_rss_bytes"], "peak_device_bytes": chosen["peak_device_bytes"],
                 "device": chosen["execution"]["device"],
                 "other_cpu_share": max((run.get("other_cpu_share") or 0.0 for run in runs), default=None)}
        if "reference" in chosen:
            reference = chosen["reference"]
            entry["reference"] = {"stats": reference["stats"], "times_s": reference["times_s"],
                                  "first_step_s": reference["first_step_s"],
                                  "throughput_ratio": stats["samples_per_s"] / reference["stats"]["samples_per_s"]}
        rows.append(entry)
    return rows


def precision_checks(rows: list[dict]) -> list[dict]:
    """The loss after PRECISION_CHECK_STEP steps in bf16/fp16 against fp32, same side, mode and batch."""
    fp32 = {(r["side"], r["mode"], r["batch_size"]): r for r in rows if r["precision"] == "tf32"}
    fp32.update({(r["side"], r["mode"], r["batch_size"]): r for r in rows if r["precision"] == "fp32"})
    checks = []
    for row in rows:
        reference = fp32.get((row["side"], row["mode"], row["batch_size"]))
        if reference is None or row is reference or len(row["losses"]) < PRECISION_CHECK_STEP:
            continue
        low, full = row["losses"][PRECISION_CHECK_STEP - 1], reference["losses"][PRECISION_CHECK_STEP - 1]
        relative = abs(low - full) / max(abs(full), 1e-12)
        tolerance = PRECISION_LOSS_RTOL[row["precision"]]
        checks.append({"side": row["side"], "mode": row["mode"], "precision": row["precision"],
                       "against": reference["precision"],
                       "batch_size": row["batch_size"], "step": PRECISION_CHECK_STEP, "loss": low, "loss_fp32": full,
                       "relative_diff": relative, "tolerance": tolerance, "passed": relative <= tolerance,
                       "speedup_vs_fp32": row["stats"]["samples_per_s"] / reference["stats"]["samples_per_s"]})
    return checks


def pipeline_summary(pipeline_results: list[dict], rows: list[dict]) -> dict:
    """End-to-end epoch throughput through each side's real loader, next to its step-only throughput."""
    summary = {}
    for result in pipeline_results:
        row = result["row"]
        step_only = next((r["stats"]["samples_per_s"] for r in rows if r["side"] == row["side"]
                          and r["mode"] == row["mode"] and r["precision"] == "fp32"
                          and r["batch_size"] == row["batch_size"]), None)
        summary[row["side"]] = {**result["epoch"], "mode": row["mode"], "batch_size": row["batch_size"],
                                "step_only_samples_per_s": step_only, "peak_rss_bytes": result["peak_rss_bytes"]}
    return summary


def scaling_summary(results: list[dict]) -> dict:
    """samples/s of the side's data-parallel step in 1 and in N processes on the same global batch (the median
    of the --repeat processes), and the speed-up."""
    summary: dict = {}
    for side in sorted({r["row"]["side"] for r in results}):
        by_nproc = {}
        for nproc in sorted({r["row"]["nproc"] for r in results if r["row"]["side"] == side}):
            runs = [r for r in results if r["row"]["side"] == side and r["row"]["nproc"] == nproc]
            chosen = median_run(runs)
            by_nproc[str(nproc)] = {"stats": chosen["stats"], "times_s": chosen["times_s"],
                                    "first_step_s": chosen["first_step_s"], "peak_rss_bytes": chosen["peak_rss_bytes"]}
        counts = sorted(by_nproc, key=int)
        summary[side] = {"processes": by_nproc,
                         "speedup": (by_nproc[counts[-1]]["stats"]["samples_per_s"]
                                     / by_nproc[counts[0]]["stats"]["samples_per_s"])}
    return summary


# The benchmark's targets, checked on each run (they hold or not on a given machine; the report says which).
TARGETS = {"harness_vs_reference": 0.95, "peak_fraction_fp32": 0.70, "bf16_speedup": 1.5}


def targets(rows: list[dict], checks: list[dict]) -> dict:
    """Per side, in its training mode at the first batch size: the twinnets step against the reference loop,
    fp32 model-FLOP throughput against the fp32 matmul peak, and bf16 against fp32 throughput."""
    found = {}
    for side in sorted({row["side"] for row in rows}):
        main = next((r for r in rows if r["side"] == side and "reference" in r), None)
        bf16 = next((c for c in checks if c["side"] == side and c["precision"] == "bf16"
                     and c["mode"] == REFERENCE_MODE[side]), None)
        values = {"harness_vs_reference": main["reference"]["throughput_ratio"] if main else None,
                  "peak_fraction_fp32": main["peak_fraction"] if main else None,
                  "bf16_speedup": bf16["speedup_vs_fp32"] if bf16 else None}
        found[side] = {name: {"value": value, "target": TARGETS[name],
                              "met": None if value is None else bool(value >= TARGETS[name])}
                       for name, value in values.items()}
        if main and main["peak_error"]:  # above the machine's peak: a measurement error, not a target met
            found[side]["peak_fraction_fp32"].update(met=None, error=main["peak_error"])
    return found


def peak_errors(rows: list[dict]) -> list[str]:
    return [row["peak_error"] for row in rows if row.get("peak_error")]
