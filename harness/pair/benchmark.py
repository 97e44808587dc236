"""--pair --benchmark: your two models timed as the benchmark times the built-in ones (docs/benchmark.md), behind
the parity gate. Only when the check's forward verdict says the two compute the same thing (no layer output differs
beyond rounding, none by more than the pair's float32 tolerance) does each side run again, in a fresh worker process
with the same threads (harness/pair/side.py bench_side): the training step, and with --inference the forward pass,
on the mapped weights and the input the check used; the first call alone, the warm-up, the timed steps. Here: each
side's median step with the bootstrap interval of the median, the speed ratio with its interval, the busy-machine
check and the fairness manifest, into results.json (pair.benchmark), report.md and the console."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from harness.benchmark.cpu_load import BUSY_SHARE, busy_line, cpu_snapshot, machine_load, other_share
from harness.benchmark.fairness import lines as fairness_lines
from harness.benchmark.fairness import manifest
from harness.benchmark.inference import median_interval
from harness.benchmark.rows import median_run, step_statistics
from harness.benchmark.stats import CONFIDENCE, RESAMPLES, SEED, speed_ratio
from harness.benchmark.stats import verdict as ratio_words
from harness.environment import benchmark_environment
from harness.jobs import WorkerOrder, write_job
from harness.launch import launch_worker
from harness.pair.differences import FLOAT32_TOLERANCE, FLOAT64_FLOOR, FLOAT64_TOLERANCE
from harness.pair.flags import PairConfig
from harness.pair.mapping import SIDE_TITLES, shown
from harness.pair.report import markdown, measured, where_words
from harness.pair.side import bench_side
from shared import tables
from shared.atomic import write_atomic, write_json

SIDES = ("tf", "torch")
FOLDER = "benchmark"  # <out>/benchmark/: each side's and run's timings (<side>-r<run>.json)
WHAT = {"train": "training step", "forward": "forward pass (inference)"}
MODE_WORDS = {"tf": {"train": "tf.function", "forward": "tf.function"},
              "torch": {"train": "eager", "forward": "eager, inference_mode"}}
TABLE_HEADER = ("", "framework", "mode", "first s", "median s", f"{100 * CONFIDENCE:.0f}% interval of the median",
                "p10-p90 s", "samples/s", "other CPU")


def output_check(sides: dict[str, dict]) -> dict:
    """The model's output itself, through the loss of the check's inference pass on each side (a functional op
    after the last layer is in no layer's record): in float64 where both sides ran it, else float32."""
    key = "loss.f64" if all(sides[side].get("loss.f64") is not None for side in SIDES) else "loss"
    keras, torch = sides["tf"][key], sides["torch"][key]
    gap = abs(keras - torch)
    rel = gap / max(abs(keras), abs(torch), np.finfo(np.float32).tiny)
    tolerance, floor = (FLOAT64_TOLERANCE, FLOAT64_FLOOR) if key == "loss.f64" else (FLOAT32_TOLERANCE, 0.0)
    return {"precision": "float64" if key == "loss.f64" else "float32", "keras": keras, "torch": torch, "rel": rel,
            "tolerance": tolerance, "passed": bool(rel <= tolerance or gap <= floor)}


def gate(pair: dict, sides: dict[str, dict]) -> dict:
    """The parity gate on the check's forward verdict: no layer output differs for real (float64 judged, float32
    where a side could not run it), none by more than the pair's float32 tolerance in float32, and the loss of the
    output agrees as closely."""
    rows, first, output = pair["layers"], pair["first_difference"], output_check(sides)
    over = next((r for r in rows if r.get("float32") is None or not r["float32"]["rel"] <= FLOAT32_TOLERANCE), None)
    finite = [r["float32"]["rel"] for r in rows if r.get("float32") and math.isfinite(r["float32"]["rel"])]
    if first is not None and first["stage"] == "forward":
        reason = f"the first difference is {where_words(first)}: {measured(first)}"
    elif not rows:
        reason = "no layer output of the two models could be compared"
    elif over is not None:
        rel = (over.get("float32") or {}).get("rel")
        reason = (f"Keras layer {over['keras']!r} and PyTorch module {shown(over['torch'])!r} ({over['kind']}) differ "
                  + ("in shape" if rel is None else f"by {rel:.1e} relative") + " in float32, beyond the pair's "
                  f"float32 tolerance {FLOAT32_TOLERANCE:g}")
    elif not output["passed"]:
        reason = (f"the models' outputs differ after their last compared layers: the loss of the inference pass is "
                  f"{output['keras']:.10g} on Keras and {output['torch']:.10g} on PyTorch in {output['precision']} "
                  f"({output['rel']:.1e} relative > {output['tolerance']:g})")
    else:
        reason = None
    note = None
    if reason is None and first is not None:
        note = (f"the forward pass is equal, but the check found {where_words(first)} differing ({first['stage']} "
                "stage): the timed training steps may not compute the same thing")
    return {"passed": reason is None, "reason": reason, "note": note, "layers": len(rows),
            "largest_float32_rel": max(finite, default=None), "float32_tolerance": FLOAT32_TOLERANCE,
            "output": output, "verdict": pair["verdict"]}


def gate_line(found: dict) -> str:
    largest = found["largest_float32_rel"]
    output = found["output"]
    return (f"parity gate passed: {found['layers']} layer outputs equal up to rounding, the largest float32 "
            f"difference {'-' if largest is None else f'{largest:.1e}'} relative (tolerance "
            f"{found['float32_tolerance']:g}); the output's loss {output['rel']:.1e} apart in {output['precision']}")


def run_benchmark(out: Path, config: PairConfig, job: dict, described: dict, results: dict, say) -> dict:
    """The gate, then each side's timings (run after run, the sides alternating), the statistics and the reports;
    results.json and report.md rewritten with pair.benchmark."""
    sides = {side: json.loads((out / side / "result.json").read_text()) for side in SIDES}
    found = {"gate": gate(results["pair"], sides), "timed": False}
    results["pair"]["benchmark"] = found
    if not found["gate"]["passed"]:
        write(out, results)
        return results
    say("")
    say(gate_line(found["gate"]))
    if found["gate"]["note"]:
        say(f"! {found['gate']['note']}")
    folder, started, timed = out / FOLDER, time.perf_counter(), []
    folder.mkdir(exist_ok=True)
    settings = {"warmup": config.warmup, "steps": config.benchmark_steps, "inference": config.inference}
    say(f"timing each side in {'this process' if config.in_process else 'a fresh process'}, {config.threads} "
        f"thread(s): the first step, {config.warmup} warm-up, {config.benchmark_steps} timed")
    for run in range(1, config.repeat + 1):
        for side in SIDES:
            order = {**job, "bench": {**settings, "run": run, "layout": described[side]["layout"]}}
            path = write_job(folder / f"{side}-r{run}.job.json", order)
            before = cpu_snapshot()
            if config.in_process:
                result = bench_side(side, order, configure_threads=False)
            else:
                launch_worker(WorkerOrder("pair", side, str(path)), threads=config.threads)
                result = json.loads((folder / f"{side}-r{run}.json").read_text())
            result["other_cpu_share"] = other_share(before, cpu_snapshot())
            path.unlink(missing_ok=True)
            timed.append(result)
            say(f"  {SIDE_TITLES[side]}" + (f" (run {run})" if config.repeat > 1 else "") + ": " + ", ".join(
                f"{WHAT[kind]} median {np.median(result[kind]['times_s']):.4f} s" for kind in WHAT if kind in result))
    found.update(summarize(timed, config), timed=True, wall_s=time.perf_counter() - started,
                 environment=benchmark_environment(config.threads),
                 build={side: next(r["build"] for r in timed if r["side"] == side) for side in SIDES},
                 fairness=manifest(fairness_rows(timed), config.threads, False, "cpu"))
    for line in console_lines(found):
        say(line)
    write(out, results)
    return results


def fairness_rows(timed: list[dict]) -> list[dict]:
    """Each side's first result as harness/benchmark/fairness.py reads a row: its process settings and its mode's."""
    first = {side: next(result for result in timed if result["side"] == side) for side in SIDES}
    return [{"row": {"side": side, "kind": kind, "mode": result["mode"], "precision": "fp32"},
             "fairness": result["fairness"]} for side, result in first.items() for kind in ("parity", "step")]


def summarize(timed: list[dict], config: PairConfig) -> dict:
    """Per side and kind: the median run's statistics (--repeat: the run with the median median), the bootstrap
    interval of its median (over the timed steps, or the runs' medians when there are several); per kind the
    ratio of the two sides' medians with its interval; the first training step's loss on both sides."""
    batch, rows, notes = config.input_shape[0], [], []
    for kind in WHAT:
        for side in SIDES:
            runs = [{**result[kind], "stats": step_statistics(result[kind]["times_s"], batch),
                     "other_cpu_share": result["other_cpu_share"]} for result in timed
                    if result["side"] == side and kind in result]
            if not runs:
                continue
            chosen = median_run(runs)
            samples, over = (([run["stats"]["median_s"] for run in runs], "processes") if len(runs) > 1
                             else (chosen["times_s"], "timed steps"))
            low, high = median_interval(samples)
            shares = [run["other_cpu_share"] for run in runs if run["other_cpu_share"] is not None]
            rows.append({"row_name": f"{side}-{kind}", "side": side, "what": kind, "mode": MODE_WORDS[side][kind],
                         "first_step_s": chosen["first_step_s"], "times_s": chosen["times_s"],
                         "values": chosen["losses"], "stats": chosen["stats"], "median_low_s": low,
                         "median_high_s": high, "samples": samples, "over": over,
                         "run_medians_s": [run["stats"]["median_s"] for run in runs],
                         "other_cpu_share": max(shares, default=None)})
            if kind == "train" and not np.all(np.isfinite(chosen["losses"])):
                notes.append(f"the {SIDE_TITLES[side]} training loss became NaN or infinite during the steps (--lr "
                             f"{config.lr:g}): a step on such values may run at another speed; choose a smaller --lr")
    comparisons = []
    for kind in WHAT:
        pair = sorted((row for row in rows if row["what"] == kind), key=lambda row: row["stats"]["median_s"])
        if len(pair) == 2:
            comparisons.append({"what": kind, "faster": pair[0]["side"], "slower": pair[1]["side"],
                                "over": pair[0]["over"], **speed_ratio(pair[0]["samples"], pair[1]["samples"]),
                                "trusted": all((row["other_cpu_share"] or 0.0) <= BUSY_SHARE for row in pair)})
    losses = {row["side"]: row["values"][0] for row in rows if row["what"] == "train"}
    scale = max((abs(value) for value in losses.values()), default=0.0)
    first_loss = {**losses, "rel": abs(losses["tf"] - losses["torch"]) / scale if scale else 0.0}
    return {"method": {"warmup": config.warmup, "steps": config.benchmark_steps, "repeat": config.repeat,
                       "batch_size": batch, "threads": config.threads, "inference": config.inference,
                       "process": ("one shared process (in_process: not a fair timing)" if config.in_process
                                   else "a fresh worker process per side" + (" and run, the sides alternating"
                                                                              if config.repeat > 1 else "")),
                       "confidence": CONFIDENCE, "resamples": RESAMPLES, "seed": SEED},
            "rows": rows, "comparisons": comparisons, "first_loss": first_loss, "notes": notes,
            "machine_load": machine_load(rows)}


def comparison_line(comparison: dict) -> str:
    faster, slower, kind = comparison["faster"], comparison["slower"], comparison["what"]
    return (f"{WHAT[kind]}: {SIDE_TITLES[faster]} {MODE_WORDS[faster][kind]} / {SIDE_TITLES[slower]} "
            f"{MODE_WORDS[slower][kind]} throughput {ratio_words(comparison)}"
            + ("" if comparison["trusted"] else " (not trusted: other processes took the CPU)"))


def table_body(rows: list[dict]) -> list[list]:
    body = []
    for row in rows:
        s, low, high = row["stats"], row["median_low_s"], row["median_high_s"]
        share = row["other_cpu_share"]
        body.append([WHAT[row["what"]], SIDE_TITLES[row["side"]], row["mode"], f"{row['first_step_s']:.3f}",
                     f"{s['median_s']:.5f}", "-" if low is None else f"{low:.5f}-{high:.5f}",
                     f"{s['p10_s']:.5f}-{s['p90_s']:.5f}", f"{s['samples_per_s']:.1f}",
                     "-" if share is None else f"{100 * share:.0f}%"])
    return body


def summary_lines(found: dict) -> list[str]:
    """The comparisons, the first loss on both sides, the notes and the busy machine, for the console and the
    report."""
    first = found["first_loss"]
    lines = [comparison_line(c) for c in found["comparisons"]]
    lines.append(f"the first training step's loss: Keras {first['tf']:.6g}, PyTorch {first['torch']:.6g} (relative "
                 f"difference {first['rel']:.1e})")
    lines += [f"! {note}" for note in found["notes"]]
    busy = busy_line(found["machine_load"])
    return lines + ([f"! {busy}"] if busy else [])


def method_line(found: dict) -> str:
    method = found["method"]
    return (f"batch {method['batch_size']}, {method['threads']} intra-op thread(s) and 1 inter-op per side, "
            f"{method['process']}; the first step alone, {method['warmup']} warm-up and {method['steps']} timed steps"
            + (f", {method['repeat']} runs per side (the median one reported)" if method["repeat"] > 1 else ""))


def console_lines(found: dict) -> list[str]:
    return ["", f"benchmark: {method_line(found)}", tables.console(TABLE_HEADER, table_body(found["rows"])),
            *summary_lines(found)]


def markdown_lines(found: dict) -> list[str]:
    """report.md's benchmark section."""
    if not found["timed"]:
        return ["## Benchmark", "", f"No timing: the parity gate failed: {found['gate']['reason']}.", ""]
    method, env = found["method"], found["environment"]
    lines = ["## Benchmark", "", f"{gate_line(found['gate'])}; then {method_line(found)}. Keras runs the training "
             "step as one tf.function (the static graph) and the forward pass as a tf.function with training=False; "
             "PyTorch both eagerly, the forward under torch.inference_mode. Both start from the mapped weights on the "
             "check's input; the loss is the check's, the update plain SGD; dropout is off. Step times by "
             "time.perf_counter once the result reached the host. The interval of a median and of a ratio: "
             f"percentile bootstrap, {method['resamples']} resamples, seed {method['seed']}; a ratio whose "
             "interval holds 1 is not distinguishable.", ""]
    lines += [f"- {found['gate']['note']}", ""] if found["gate"]["note"] else []
    lines += [tables.markdown(TABLE_HEADER, table_body(found["rows"])), ""]
    lines += [f"- {line.removeprefix('! ')}" for line in summary_lines(found)] + [""]
    lines += ["### Fairness manifest", "", f"- CPU {env['cpu']} ({env['cores']} cores; flags: {env['cpu_flags']}); "
              f"python {env['python']}, tensorflow {env['tensorflow']}, keras {env['keras']}, torch {env['torch']}.",
              *fairness_lines(found["fairness"]), ""]
    return lines


def write(out: Path, results: dict) -> None:
    write_json(out / "results.json", results)
    write_atomic(out / "report.md", markdown(results) + "\n" + "\n".join(markdown_lines(results["pair"]["benchmark"])))
