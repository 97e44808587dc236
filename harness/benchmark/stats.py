"""Is one row faster than another? The ratio of their median step times with a bootstrap 95% interval
(scipy.stats.bootstrap, a fixed seed, so a rerun of the report gives the same interval); "not distinguishable" when
the interval holds 1."""
from __future__ import annotations

import numpy as np
from scipy import stats

from harness.benchmark.cpu_load import BUSY_SHARE

RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 2000
# Modes compared across the sides besides each side's fastest: the twins that do the same kind of work.
TWIN_MODES = (("function", "eager", "each side's training mode"), ("eager", "eager", "op by op"),
              ("xla", "compile", "compiled"))


def _median_ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(b, axis=axis) / np.median(a, axis=axis)


def speed_ratio(times_a: list[float], times_b: list[float], resamples: int = RESAMPLES, seed: int = SEED,
                confidence: float = CONFIDENCE) -> dict:
    """How many times a's throughput b's is: median(b) / median(a) of the step times, and the percentile bootstrap
    interval of that ratio (both samples resampled with replacement, independently). Fewer than 2 samples on a
    side: no interval, and nothing can be told apart."""
    a, b = np.asarray(times_a, dtype=float), np.asarray(times_b, dtype=float)
    ratio = float(np.median(b) / np.median(a))
    found = {"ratio": ratio, "low": None, "high": None, "distinguishable": False, "resamples": 0,
             "samples": [int(a.size), int(b.size)], "confidence": confidence}
    if a.size < 2 or b.size < 2:
        return found
    found_interval = stats.bootstrap((a, b), _median_ratio, n_resamples=resamples, vectorized=True, paired=False,
                                     confidence_level=confidence, method="percentile",
                                     rng=np.random.default_rng(seed)).confidence_interval
    low, high = found_interval.low, found_interval.high
    return {**found, "low": float(low), "high": float(high), "distinguishable": not low <= 1.0 <= high,
            "resamples": resamples}


def samples_of(row: dict) -> tuple[list[float], str]:
    """What a row's interval resamples: its --repeat processes' medians when there are several, else its steps."""
    if len(row["run_medians_s"]) > 1:
        return row["run_medians_s"], "processes"
    return row["times_s"], "timed steps"


def compare_pair(first: dict, second: dict, kind: str, what: str) -> dict:
    """The faster of the two (by median) first: the ratio is >= 1 and reads "a is ratio x as fast as b"."""
    a, b = sorted((first, second), key=lambda row: row["stats"]["median_s"])
    samples_a, over = samples_of(a)
    samples_b, _ = samples_of(b)
    return {"kind": kind, "what": what, "batch_size": a["batch_size"], "precision": a["precision"],
            "faster": {"side": a["side"], "mode": a["mode"]}, "slower": {"side": b["side"], "mode": b["mode"]},
            "over": over, **speed_ratio(samples_a, samples_b),
            "trusted": all((row.get("other_cpu_share") or 0.0) <= BUSY_SHARE for row in (a, b))}


def comparisons(rows: list[dict]) -> list[dict]:
    """Per batch size and precision with both sides present (in the rows' order): each side's fastest mode against
    the other's, then each twin pair of modes (TWIN_MODES) that is not that same pair."""
    found = []
    for batch, precision in dict.fromkeys((row["batch_size"], row["precision"]) for row in rows):
        group = [row for row in rows if row["batch_size"] == batch and row["precision"] == precision]
        by_side = {side: [row for row in group if row["side"] == side] for side in ("tf", "torch")}
        if not all(by_side.values()):
            continue
        fastest = [min(side_rows, key=lambda row: row["stats"]["median_s"]) for side_rows in by_side.values()]
        found.append(compare_pair(*fastest, "fastest", "each side's fastest mode"))
        modes = {(row["side"], row["mode"]): row for row in group}
        for tf_mode, torch_mode, what in TWIN_MODES:
            pair = [modes.get(("tf", tf_mode)), modes.get(("torch", torch_mode))]
            if None not in pair and pair != fastest:
                found.append(compare_pair(*pair, "twin", what))
    return found


def verdict(comparison: dict) -> str:
    """"1.06x (95% interval 1.02-1.10 over the timed steps)", and ": not distinguishable" when it holds 1."""
    if comparison["low"] is None:
        return f"{comparison['ratio']:.2f}x (too few samples for an interval): not distinguishable"
    text = (f"{comparison['ratio']:.2f}x ({100 * comparison['confidence']:.0f}% interval "
            f"{comparison['low']:.2f}-{comparison['high']:.2f} over the {comparison.get('over', 'samples')})")
    return text if comparison["distinguishable"] else text + ": not distinguishable"
