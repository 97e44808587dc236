"""The benchmark's reports: the console table, report.md and the plots, from results.json (harness/benchmark/summary.py
sums the rows up)."""
from __future__ import annotations

from harness import report
from harness.benchmark import arms as benchmark_arms
from harness.benchmark import fairness as benchmark_fairness
from harness.benchmark import golden as benchmark_golden
from harness.benchmark import profile, stock
from harness.benchmark import stats as benchmark_stats
from harness.benchmark.cpu_load import busy_line
from harness.benchmark.peak import SOURCE_NAMES, describe_peak
from harness.benchmark.summary import MODE_NAMES, TARGETS, peak_errors
from shared import tables
from shared.tasks import shape_text


class ParityFailed(Exception):
    """The two sides would not do the same work: no timing is reported (exit status 1)."""


# ---- console and report.md -----------------------------------------------------------------------------------

def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


TABLE_HEADER = ("framework", "mode", "prec", "batch", "first s", "median s", "p10-p90 s", "mean+-se s", "samples/s",
                "vs ref", "GFLOP/s", "% peak", "RSS MiB")
TABLE_ALIGN = ("left", "left", "left", "right", "right", "right", "right", "right", "right", "right", "right", "right",
               "right")


def _timing_cells(first_s: float, s: dict) -> list[str]:
    return [f"{first_s:.2f}", f"{s['median_s']:.4f}", f"{s['p10_s']:.4f}-{s['p90_s']:.4f}",
            f"{s['mean_s']:.4f}+-{s['stderr_s']:.4f}", f"{s['samples_per_s']:.1f}"]


def table(results: dict) -> str:
    body = []
    for row in [*results["rows"], *results.get("stock", {}).get("rows", [])]:
        ratio = f"{row['reference']['throughput_ratio']:.3f}" if "reference" in row else ""
        fraction = (f"{100 * row['peak_fraction']:.1f}" + ("!" if row["peak_error"] else "")
                    if row["peak_fraction"] is not None else "-")
        mode = MODE_NAMES[row["side"]][row["mode"]] + (", stock BatchNorm" if row.get("batch_norm") == "stock" else "")
        body.append([report.SIDE_NAMES[row["side"]], mode, row["precision"],
                     row["batch_size"], *_timing_cells(row["first_step_s"], row["stats"]), ratio,
                     f"{row['gflop_per_s']:.2f}", fraction, _mib(row["peak_rss_bytes"])])
        if "reference" in row:
            body.append(["", "  reference loop (few lines)", "fp32", row["batch_size"],
                         *_timing_cells(row["reference"]["first_step_s"], row["reference"]["stats"]), "", "", "", ""])
    lines = tables.console(TABLE_HEADER, body, TABLE_ALIGN).splitlines()
    lines += peak_lines(results)
    lines += [f"! {error}" for error in peak_errors(results["rows"])]
    for comparison in results.get("comparisons", []):
        lines.append(comparison_line(comparison))
    lines += [benchmark_arms.ratio_line(ratio) for ratio in results.get("arm_ratios", [])]
    lines += stock.ratio_lines(results["stock"]) if results.get("stock") else []
    lines += [f"! {benchmark_arms.failure_line(failed)}" for failed in results.get("failed_rows", [])]
    for side, found in (results.get("scaling") or {}).items():
        lines.append(
            f"{report.SIDE_NAMES[side]:<11}data-parallel, batch {results['config']['batch_sizes'][0]}: "
            + ", ".join(f"{n} proc {p['stats']['samples_per_s']:.1f} samples/s" for n, p in found["processes"].items())
            + f" (speed-up {found['speedup']:.2f}x)")
    return "\n".join(lines)


def peak_lines(results: dict) -> list[str]:
    """The machine peak per precision and each source's own best rate (a fact about its BLAS), for the table."""
    lines = []
    sizes = sorted({size["n"] for peaks in results["matmul_peak"].values() for peak in peaks.values()
                    for size in peak.get("sizes", [])})
    for precision, peak in results["machine_peak"].items():
        own = ", ".join(f"{SOURCE_NAMES[source]} {peaks[precision]['gflop_per_s']:.1f} (n={peaks[precision]['n']})"
                        for source, peaks in results["matmul_peak"].items() if precision in peaks)
        lines.append(f"machine peak {describe_peak(peak, precision)}, the best of: {own}")
    if sizes:
        lines.append(f"  (matrix products of n = {', '.join(map(str, sizes))} in this run; % peak is against the "
                     f"machine peak in the row's precision)")
    return lines


def comparison_line(comparison: dict) -> str:
    faster, slower = comparison["faster"], comparison["slower"]
    return (f"{comparison['what']} ({comparison['precision']}, batch {comparison['batch_size']}): "
            f"{report.SIDE_NAMES[faster['side']]} {MODE_NAMES[faster['side']][faster['mode']]} / "
            f"{report.SIDE_NAMES[slower['side']]} {MODE_NAMES[slower['side']][slower['mode']]} throughput "
            f"{benchmark_stats.verdict(comparison)}"
            + ("" if comparison.get("trusted", True) else " (not trusted: other processes took the CPU)"))


def parity_source(results: dict) -> str:
    """The header's parity line: between the sides, or against a golden file."""
    config = results["config"]
    if benchmark_arms.arms_of(config.get("frameworks", [])):
        return ("parity: between the sides (fp32, TF32 off), each Keras arm against "
                f"{report.SIDE_NAMES[benchmark_arms.reference_side(config['frameworks'])]}, checked before any timing")
    if config.get("golden"):
        return (f"parity: against the golden file {config['golden']} (fp32, TF32 off), checked before any timing"
                + ("" if len(config["frameworks"]) == 1 else ", and between the two sides"))
    return "parity: between the two sides (fp32, TF32 off), checked before any timing"


def header(results: dict) -> str:
    env, config = results["environment"], results["config"]
    sides = config.get("frameworks", ["tf", "torch"])
    versions = [f"python {env['python']}"] + ([f"tensorflow {env['tensorflow']}", f"keras {env['keras']}"]
                                              if "tf" in sides else []) + ([f"torch {env['torch']}"]
                                                                           if "torch" in sides else [])
    if benchmark_arms.arms_of(sides):  # the engines the arms brought that the native sides did not
        versions += [f"{name} {env.get(name)}" for name, needed in (("keras", "tf" not in sides),
                     ("tensorflow", "keras-tf" in sides and "tf" not in sides), ("jax", "keras-jax" in sides),
                     ("torch", "keras-torch" in sides and "torch" not in sides)) if needed]
    size = f", input {shape_text(config['image_size'])}, width {config['base_filters']}" if "base_filters" in config \
        else ""
    lines = [f"twinnets benchmark: {results['task']}{size}, batch sizes {config['batch_sizes']}, "
             f"{config['warmup']} warm-up + {config['steps']} timed steps, {config['repeat']} process(es) per row",
             results["preset"] if results.get("preset") else "preset: none (the flags as given)",
             f"CPU {env['cpu']} ({env['cores']} cores; flags: {env['cpu_flags']}); device {config['device']}",
             f"threads: {config['threads']} intra-op, 1 inter-op, on "
             + ("both sides" if len(sides) == 2 else "every side" if len(sides) > 2
                else f"{report.SIDE_NAMES[sides[0]]} only") + "; each row in a fresh "
             "process", ", ".join(versions), parity_source(results)]
    lines += [f"not run here: {note}" for note in config.get("not_run", [])]
    lines += [line for line in [busy_line(results.get("machine_load", {}))] if line]
    return "\n".join(lines)


def equal_work_lines(parity: dict) -> list[str]:
    """The parity gate in words: between the two sides, and against a golden file (with the chain it shows)."""
    if "arms" in parity:
        return benchmark_arms.equal_work_lines(parity)
    lines = []
    sides = list(parity["parameters"])
    lines.append("- Parameters: " + ", ".join(f"{parity['parameters'][side]:,} ({report.SIDE_NAMES[side]})"
                                              for side in sides) + ".")
    digests = parity["weights_sha256"]
    lines.append("- Canonical weights after loading: " + ", ".join(
        f"sha256 {digests[side][:16]}... ({report.SIDE_NAMES[side]})" for side in sides)
        + (f": {'identical' if digests['tf'] == digests['torch'] else 'DIFFERENT'}." if len(sides) == 2 else "."))
    between = benchmark_golden.between_sides(parity)
    if between and len(sides) == 2:
        lines.append(f"- Forward output on the benchmark batch: max |tf - torch| = {between['max_abs_diff']:.3g} "
                     f"(tolerance {between['tolerance']:g}): {'passed' if between['passed'] else 'FAILED'}.")
    if parity.get("against"):
        lines.append(f"- Against the golden file {parity['file']}:")
        lines += [f"  - {line}" for line in benchmark_golden.chain(parity)]
    return lines


def markdown_report(results: dict) -> str:
    config, parity = results["config"], results["parity"]
    lines = [f"# twinnets benchmark: {results['task']}", "", "```", header(results), "```", "",
             "## Equal work first", ""] + equal_work_lines(parity) + [
             "", "## Train step", "",
             "Each row is one process: the first step alone (trace / compile / kernel selection), then "
             f"{config['warmup']} warm-up steps, then {config['steps']} steps each timed with time.perf_counter "
             "after the loss reached the host (which waits for the device). The batch is in memory on the device.",
             "", "```", table(results), "```", ""]
    if results.get("comparisons"):
        lines += ["## Faster?", "",
                  f"The ratio of median step times, with a bootstrap {100 * benchmark_stats.CONFIDENCE:.0f}% interval "
                  f"({benchmark_stats.RESAMPLES} resamples of the timed steps, or of the --repeat processes' medians "
                  f"when there are several; seed {benchmark_stats.SEED}); an interval that holds 1 is not "
                  "distinguishable:", ""]
        lines += [f"- {comparison_line(c)}." for c in results["comparisons"]] + [""]
    if "arm_ratios" in results:
        lines += keras_section(results)
    if results.get("stock"):
        lines += stock.markdown(results["stock"])
    if results.get("profile"):
        lines += profile.markdown(results["profile"])
    if results.get("reference_line"):
        lines += ["## Published reference", "", f"- {results['reference_line']}", ""]
    target_rows = []
    for name, target in TARGETS.items():
        cells = []
        for side, found in results["targets"].items():
            value = found[name]["value"]
            verdict = ("measurement error: above the machine peak" if found[name].get("error")
                       else "met" if found[name]["met"] else "NOT met")
            cells.append("not measured" if value is None else
                         f"{value:.3f}{'x' if name == 'bf16_speedup' else ''} ({verdict})")
        target_rows.append([f"{name.replace('_', ' ')} >= {target}", *cells])
    lines += ["## Targets", "", tables.markdown(["", *(report.SIDE_NAMES[side] for side in results["targets"])],
                                                target_rows), "", "## Against the limit", ""]
    for batch, count in results["flops"].items():
        counted = ", ".join(f"{report.SIDE_NAMES[s]} {'-' if v is None else f'{v:,}'}"
                            for s, v in count["counted"].items())
        lines.append(f"- Batch {batch}: {count['used'] / 1e9:.3f} GFLOP per training step (convolutions and matrix "
                     f"products, forward and backward; counted: {counted}; analytic {count['analytic']:,}; "
                     f"{'agree within 1%' if count['agree_within_1pct'] else 'DISAGREE: the analytic count is used'}).")
    for source, peaks in results["matmul_peak"].items():
        lines.append(f"- {SOURCE_NAMES[source]}'s own matrix multiply, measured in this run: " + "; ".join(
            f"{precision} " + ", ".join(f"n={size['n']} {size['gflop_per_s']:.1f}" for size in peak["sizes"])
            + " GFLOP/s" for precision, peak in peaks.items()))
    for precision, peak in results["machine_peak"].items():
        lines.append(f"- Machine peak: {describe_peak(peak, precision)}, the best rate of any of them.")
    lines += ["- Model-FLOP throughput = the step's FLOPs / median step time; % peak is against the machine peak "
              "in the row's precision. A row above 100% is a measurement error (the product did not reach the "
              "machine's rate, or the FLOP count is too high), never a target met."]
    lines += [f"- **{error}**" for error in peak_errors(results["rows"])] + [""]
    if results["precision_checks"]:
        lines += ["## Mixed precision", ""]
        for check in results["precision_checks"]:
            lines.append(f"- {report.SIDE_NAMES[check['side']]} {MODE_NAMES[check['side']][check['mode']]} "
                         f"{check['precision']} (batch {check['batch_size']}): loss after {check['step']} steps "
                         f"{check['loss']:.5f} vs fp32 {check['loss_fp32']:.5f}, relative {check['relative_diff']:.2e} "
                         f"(tolerance {check['tolerance']}): {'passed' if check['passed'] else 'FAILED'}; "
                         f"{check['speedup_vs_fp32']:.2f}x the fp32 throughput.")
        lines.append("")
    if results.get("scaling"):
        lines += ["## Data-parallel processes", "",
                  "The side's own engine (DistributedDataParallel under torchrun; MultiWorkerMirroredStrategy workers) "
                  f"on the same global batch, the {config['threads']} threads shared out among the processes:", ""]
        for side, found in results["scaling"].items():
            cells = ", ".join(f"{n} process{'es' if n != '1' else ''}: {p['stats']['samples_per_s']:.1f} samples/s "
                              f"(median {p['stats']['median_s']:.4f} s, "
                              f"p10-p90 {p['stats']['p10_s']:.4f}-{p['stats']['p90_s']:.4f})"
                              for n, p in found["processes"].items())
            lines.append(f"- {report.SIDE_NAMES[side]}: {cells}; speed-up {found['speedup']:.2f}x.")
        lines.append("")
    if results["pipeline"]:
        lines += ["## Input pipeline", ""]
        for side, epoch in results["pipeline"].items():
            step_only = epoch["step_only_samples_per_s"]
            lines.append(f"- {report.SIDE_NAMES[side]} ({LOADERS.get(side, 'keras.utils.PyDataset')}, "
                         f"{epoch['workers']} workers): one epoch of {epoch['samples']} samples ({epoch['loader']}) "
                         f"in {epoch['seconds']:.2f} s = {epoch['samples_per_s']:.1f} samples/s end to end, against "
                         f"{'-' if step_only is None else f'{step_only:.1f}'} samples/s for the step alone.")
        lines.append("")
    lines += ["## Memory", "", "Peak resident memory of each row's process is in the table (RSS MiB)"
              + ("; peak device memory is in results.json." if config["device"] == "cuda" else
                 "; on the CPU there is no separate device memory."), "",
              "## Fairness manifest", ""] + benchmark_fairness.lines(results["fairness"]) + ["",
              "## Environment", "", "```"]
    for side, build in results["environment"]["build"].items():
        lines.append(f"{report.SIDE_NAMES[side]}: " + ", ".join(f"{k} {v}" for k, v in build.items() if k != "pid"))
    lines += [f"environment variables: {results['environment']['variables'] or 'none set'}", "```", "",
              "![samples/s](benchmark_throughput.png)", "", "![step times](benchmark_step_times.png)", ""]
    return "\n".join(lines)


LOADERS = {"torch": "DataLoader", "tf": "tf.data"}  # the Keras arms read a keras.utils.PyDataset


def keras_section(results: dict) -> list[str]:
    """report.md's section on the Keras arms: the API's and the engine's cost as step-time ratios, and any row an
    engine could not run."""
    lines = ["## Keras 3's engines", "",
             "Step-time ratios, numerator over denominator (above 1: the numerator is slower), with the same "
             "bootstrap interval as above. The API's cost: a Keras arm against its engine's native side; the "
             "engine's cost: the same Keras program on JAX or PyTorch against TensorFlow.", ""]
    lines += [f"- {benchmark_arms.ratio_line(ratio)}." for ratio in results["arm_ratios"]] or ["- no pair ran."]
    lines += [f"- {benchmark_arms.failure_line(failed)}" for failed in results["failed_rows"]]
    return lines + [""]


def plot_throughput(results: dict, path):
    """samples/s per mode and framework, p10-p90 bars; one panel per batch size."""
    plt = report.pyplot()
    batches = sorted({row["batch_size"] for row in results["rows"]})
    figure, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.5), squeeze=False)
    for axis, batch in zip(axes[0], batches):
        rows = [row for row in results["rows"] if row["batch_size"] == batch]
        labels = [f"{row['side']} {row['mode']}\n{row['precision']}" for row in rows]
        values = [row["stats"]["samples_per_s"] for row in rows]
        low = [row["stats"]["samples_per_s"] - row["stats"]["samples_per_s_p10"] for row in rows]
        high = [row["stats"]["samples_per_s_p90"] - row["stats"]["samples_per_s"] for row in rows]
        colors = [report.SIDE_STYLES[row["side"]]["color"] for row in rows]
        axis.bar(range(len(rows)), values, yerr=[low, high], color=colors, capsize=3)
        axis.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=8)
        axis.set_ylabel("samples / s (median; bars p10-p90)")
        axis.set_title(f"{results['task']}, batch {batch}")
    return report.save_figure(figure, path)


def plot_step_times(results: dict, path):
    """The timed steps of every row, as a box per row."""
    plt = report.pyplot()
    rows = results["rows"]
    figure, axis = plt.subplots(figsize=(max(6, 0.7 * len(rows)), 4.5))
    axis.boxplot([row["times_s"] for row in rows], whis=(10, 90), showfliers=True)
    axis.set_xticks(range(1, len(rows) + 1),
                    [f"{row['side']} {row['mode']}\n{row['precision']} b{row['batch_size']}" for row in rows],
                    rotation=60, ha="right", fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("step time, s (box: quartiles; whiskers p10-p90)")
    axis.set_title(f"{results['task']}: timed steps per row")
    return report.save_figure(figure, path)


def write_reports(out, results: dict) -> None:
    report.write_json(out / "results.json", results)
    plot_throughput(results, out / "benchmark_throughput.png")
    plot_step_times(results, out / "benchmark_step_times.png")
    if results.get("profile"):
        profile.plot(results["profile"], out / "benchmark_profile.png")
    report.write_atomic(out / "report.md", markdown_report(results))
