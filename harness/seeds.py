"""--seeds: the whole comparison repeated for several seeds (initial weights, data order, augmentation), and an
honest interval: per side the mean and spread of the final metric, the paired difference of the reference side
(TensorFlow when it ran) minus each other side, seed by seed, with its 95% Student t interval, the same for each side
against its control, and one sentence."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from scipy import stats

from harness import comparison, drift
from harness.jobs import RunJob, spec_of, write_job
from harness.ownership import output_folder, owned_folder
from harness.registry import task_of
from harness.report import SIDE_NAMES, pyplot, save_figure, variables_line
from harness.surface import ARMS
from shared import tables
from shared.atomic import write_atomic, write_json
from shared.errors import UserError
from shared.tasks import LIMITS, TaskSpec

CONFIDENCE = 0.95
MAX_SEEDS = 1_000  # each seed is a whole comparison with its controls: more is a typo, not a plan
# The command line a seed's run takes, kept in job.json so --resume continues the series as it was started.
OPTIONS = ("threads", "nproc", "precision", "device", "control", "data_dir", "download", "in_process")


def parse_seeds(text: str) -> list[int]:
    """"0,1,2": those seeds; "5": the first five, 0..4. Every seed lies in --seed's range and there are at most
    MAX_SEEDS, checked before the first one trains."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected a count (5) or a comma-separated list (0,1,2)") from None
    count = len(values) == 1 and "," not in text
    if (values[0] if count else len(values)) > MAX_SEEDS:
        raise UserError(f"--seeds {text!r}: at most {MAX_SEEDS:,} seeds, each a whole comparison")
    seeds = list(range(values[0])) if count else values
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text!r}: expected distinct non-negative seeds, or a positive count")
    low, high = LIMITS["seed"]
    if max(seeds) > high:
        raise UserError(f"--seeds {text!r}: a seed must lie in [{low:,}, {high:,}], got {max(seeds):,}")
    return seeds


def interval(values: list[float]) -> dict:
    """Mean, standard deviation and the 95% Student t interval of the mean (None bounds for a single value)."""
    data = np.asarray(values, np.float64)
    mean = float(data.mean())
    if data.size < 2:
        return {"mean": mean, "sd": None, "low": None, "high": None, "n": int(data.size)}
    sd = float(data.std(ddof=1))
    # scipy refuses a zero scale; seeds that all give the same value have the interval [mean, mean]
    low, high = stats.t.interval(CONFIDENCE, data.size - 1, loc=mean, scale=stats.sem(data)) if sd else (mean, mean)
    return {"mean": mean, "sd": sd, "low": float(low), "high": float(high), "n": int(data.size)}


def holds_zero(found: dict) -> bool | None:
    return None if found["low"] is None else found["low"] <= 0.0 <= found["high"]


def summarize(per_seed: dict[int, dict], metric: str) -> dict:
    """Every seed's final metric per run, and the intervals: per run, and paired differences (the reference side
    minus each other side, each side minus its control)."""
    values: dict[str, list[float]] = {}
    for results in per_seed.values():
        for side, result in results["frameworks"].items():
            values.setdefault(side, []).append(result["metrics"][metric])
    for results in per_seed.values():
        for side, result in results.get("controls", {}).items():
            values.setdefault(f"{side}{drift.CONTROL_SUFFIX}", []).append(result["metrics"][metric])
    values = {name: found for name, found in values.items() if len(found) == len(per_seed)}
    pairs = drift.pairs_of(values)
    paired = {name: interval(list(np.subtract(values[a], values[b]))) for name, (a, b) in pairs.items()}
    summary = {"metric": metric, "seeds": list(per_seed), "values": values,
               "per_run": {name: interval(found) for name, found in values.items()}, "paired": paired,
               "confidence": CONFIDENCE}
    summary["sentence"] = sentence(summary)
    return summary


def describe(found: dict) -> str:
    if found["low"] is None:
        return f"{found['mean']:+.4f}"
    return f"{found['mean']:+.4f} (95% CI {found['low']:+.4f} to {found['high']:+.4f})"


def run_name(name: str) -> str:
    """"keras-jax" -> "Keras on JAX", "tf-control" -> "TensorFlow control"."""
    side = name.removesuffix(drift.CONTROL_SUFFIX)
    return SIDE_NAMES[side] + (" control" if side != name else "")


def pair_verdict(paired: dict, pair: str) -> str:
    """Distinguishable: the interval of the pair's difference excludes 0 while each of its controls' holds it (the
    two sides' own; the native sides' for an arm that ran none)."""
    controls, _ = drift.floor_controls(paired, *drift.pair_sides(pair))
    cross = holds_zero(paired[pair])
    if not controls:
        return "no systematic difference between the frameworks" if cross else "a systematic difference"
    if not cross and all(holds_zero(paired[name]) for name in controls):
        return "the framework difference is distinguishable from the control's"
    return "the framework difference is not distinguishable from the control's"


def sentence(summary: dict) -> str:
    """Each pair of sides, its difference's interval and whether it is told apart from the controls'."""
    paired, metric, n = summary["paired"], summary["metric"], len(summary["seeds"])
    cross = [name for name in paired if not name.endswith(drift.CONTROL_SUFFIX)]
    if not cross:
        return f"{metric}: two sides are needed for a paired difference."
    text = f"Over {n} seed{'s' if n > 1 else ''}, " + ", ".join(
        f"{' minus '.join(SIDE_NAMES[side] for side in drift.pair_sides(pair))} {metric} is {describe(paired[pair])}"
        for pair in cross)
    controls = [name for name in paired if name.endswith(drift.CONTROL_SUFFIX)]
    if controls:
        text += "; each side minus its control: " + ", ".join(
            f"{SIDE_NAMES[name.removesuffix(drift.CONTROL_SUFFIX)]} {describe(paired[name])}" for name in controls)
    if n < 2:
        return text + ". One seed gives no interval: use --seeds 3 or more."
    if len(cross) == 1:
        return f"{text}: {pair_verdict(paired, cross[0])}."
    return f"{text}: " + "; ".join(f"for {SIDE_NAMES[drift.pair_sides(pair)[1]]}, {pair_verdict(paired, pair)}"
                                   for pair in cross) + "."


def plot_seeds(summary: dict, path: Path) -> Path:
    """The final metric of every seed: every side and its control, in the side's colour."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    seeds, count = summary["seeds"], len(summary["values"])
    for offset, (name, found) in enumerate(summary["values"].items()):
        control = name.endswith(drift.CONTROL_SUFFIX)
        axis.scatter(np.arange(len(seeds)) + (offset - (count - 1) / 2) * 0.08, found, label=run_name(name),
                     color=ARMS[name.removesuffix(drift.CONTROL_SUFFIX)].color, marker="x" if control else "o")
    axis.set_xticks(range(len(seeds)), [f"seed {seed}" for seed in seeds])
    axis.set_ylabel(summary["metric"])
    axis.set_title(f"final {summary['metric']} per seed")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(figure, path)


def run_seeds(spec: TaskSpec, sides: list[str], options, seeds: list[int]) -> dict:
    """One full comparison (with its controls) per seed in <out>/seed-<n>/, then the summary in <out>/."""
    task = task_of(spec)
    if not task.trains:
        raise UserError(f"--seeds applies to mlp, cnn and unet, not {spec.name!r}")
    with output_folder(options.out, spec.name, options.overwrite) as out:
        return seeds_into(out, spec, sides, options, seeds)


def seeds_into(out: Path, spec: TaskSpec, sides: list[str], options, seeds: list[int]) -> dict:
    """run_seeds in the output folder it owns; job.json says how to continue it (--resume) until the summary is
    written, and a seed whose run finished before is read, not run again."""
    task = task_of(spec)
    job_path = write_job(out / "job.json", {"mode": "seeds", "task": spec.name, "spec": spec.to_dict(), "sides": sides,
                                            "seeds": seeds, "out": str(out),
                                            "options": {name: getattr(options, name) for name in OPTIONS}})
    per_seed = {}
    for seed in seeds:
        print(f"==== seed {seed} ({seeds.index(seed) + 1} of {len(seeds)}) ====", flush=True)
        folder = out / f"seed-{seed}"
        if (folder / "job.json").is_file():  # stopped during this seed's run
            with owned_folder(folder):
                per_seed[seed] = comparison.run_job(folder, RunJob.read(folder / "job.json"), options.in_process)
        elif (folder / "results.json").is_file():
            print(f"seed {seed}: finished before", flush=True)
            per_seed[seed] = json.loads((folder / "results.json").read_text())
        else:
            seed_options = SimpleNamespace(**{**vars(options), "out": folder, "overwrite": True})
            per_seed[seed] = comparison.compare(spec.replace(seed=seed), sides, seed_options)
    metrics = per_seed[seeds[0]]["frameworks"][sides[0]]["metrics"]
    metric = task.metric if task.metric in metrics else next(iter(metrics))
    summary = summarize(per_seed, metric)
    results = {"task": spec.name, "mode": "seeds", "config": {**spec.to_dict(), "seeds": seeds,
                                                              "control": options.control},
               "environment": series_environment(per_seed),
               "seeds": {**summary, "runs": {str(seed): f"seed-{seed}" for seed in seeds},
                         "verdicts": {str(seed): " ".join(drift.sentences(per_seed[seed]["drift"]))
                                      if "drift" in per_seed[seed] else None for seed in seeds}}}
    plot_seeds(summary, out / "seeds.png")
    write_json(out / "results.json", results)
    write_atomic(out / "report.md", seeds_report(results))
    job_path.unlink()
    print(f"\n{summary['sentence']}\nwrote {out}/results.json, {out}/report.md and seeds.png")
    return results


def series_environment(per_seed: dict[int, dict]) -> dict:
    """The first seed's environment (versions, CPU, the variables each side ran with); a series resumed under other
    variables keeps every seed's as well (variables_by_seed)."""
    environments = [results.get("environment", {}) for results in per_seed.values()]
    found = dict(environments[0])
    if any(env.get("variables") != found.get("variables") for env in environments):
        found["variables_by_seed"] = {str(seed): env.get("variables") for seed, env in zip(per_seed, environments)}
    return found


def resume(out: Path, job: dict) -> dict:
    """--resume of a --seeds folder: the seeds not finished before, then the summary."""
    print(f"resuming {job['task']} over seeds {job['seeds']} in {out}", flush=True)
    spec = spec_of(job)
    options = SimpleNamespace(**{**job["options"], "out": out, "overwrite": True,
                                 "data_dir": job["options"]["data_dir"] and Path(job["options"]["data_dir"])})
    return seeds_into(out, spec, job["sides"], options, job["seeds"])


def seeds_report(results: dict) -> str:
    summary = results["seeds"]
    lines = [f"# twinnets: {results['task']} over {len(summary['seeds'])} seeds", "", f"**{summary['sentence']}**",
             ""]
    if results.get("environment", {}).get("variables"):
        lines[3:3] = [variables_line(results["environment"]), ""]
    rows = [(run_name(name), found) for name, found in summary["per_run"].items()]
    rows += [(f"{SIDE_NAMES[name.removesuffix(drift.CONTROL_SUFFIX)]} - its control" if
              name.endswith(drift.CONTROL_SUFFIX) else " - ".join(SIDE_NAMES[s] for s in drift.pair_sides(name)), found)
             for name, found in summary["paired"].items()]
    cells = [[label, f"{found['mean']:.4f}", "-" if found["sd"] is None else f"{found['sd']:.4f}",
              "-" if found["low"] is None else f"{found['low']:+.4f} to {found['high']:+.4f}"] for label, found in rows]
    lines.append(tables.markdown(["run", f"mean {summary['metric']}", "sd", "95% CI"], cells))
    lines += ["", "Per seed (each seed's own run folder holds its report and drift.png):", ""]
    lines += [f"- seed {seed}: {verdict}" for seed, verdict in summary["verdicts"].items()]
    lines += ["", "![seeds.png](seeds.png)", ""]
    return "\n".join(lines)
