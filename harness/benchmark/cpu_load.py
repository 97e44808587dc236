"""Is the machine busy? The CPU time other processes take while a benchmark row runs: the whole machine's busy
time (psutil.cpu_times, on Linux, macOS and Windows alike) less this process's and its finished children's (the
row's worker), as a share of all the cores' wall time. Above BUSY_SHARE a row's timing, and every comparison that
uses it, is marked as not to be trusted."""
from __future__ import annotations

import os
import time

import psutil

BUSY_SHARE = 0.10  # other processes' CPU time, as a share of the machine, above which a timing is not trusted
PEAK_ROW = "machine peak (numpy matrix multiply)"  # measured in the parent, between the parity and the timed rows


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(wall seconds, the machine's busy CPU seconds, this process's and its waited-for children's CPU seconds);
    None where psutil cannot read the machine's CPU times."""
    try:
        times = psutil.cpu_times()
    except (OSError, NotImplementedError):
        return None
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)  # all but idle and iowait (Linux only)
    own = os.times()
    return time.monotonic(), busy, own.user + own.system + own.children_user + own.children_system


def other_share(before: tuple | None, after: tuple | None) -> float | None:
    """The share of all cores that other processes used between two snapshots (None when unknown)."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    others = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, others) / ((after[0] - before[0]) * (os.cpu_count() or 1))


def machine_load(rows: list[dict]) -> dict:
    """results.json's machine_load: the largest share other processes took during a row, and the rows above
    BUSY_SHARE."""
    shares = [row["other_cpu_share"] for row in rows if row.get("other_cpu_share") is not None]
    busy = [row["row_name"] for row in rows if (row.get("other_cpu_share") or 0.0) > BUSY_SHARE]
    return {"busy_share_limit": BUSY_SHARE, "largest_other_share": max(shares) if shares else None,
            "busy": bool(busy), "busy_rows": busy,
            "how": "per row: the machine's busy CPU time (psutil.cpu_times) less the benchmark's own processes', over "
                   "all cores' wall time"}


def busy_line(load: dict) -> str | None:
    """The header's line when other processes took the CPU, or None."""
    if not load.get("busy"):
        return None
    return (f"machine busy: other processes took up to {100 * load['largest_other_share']:.0f}% of the CPU during "
            f"{len(load['busy_rows'])} row(s) (limit {100 * load['busy_share_limit']:.0f}%); the comparisons that "
            "use those rows are marked not trusted"
            + ("; the machine peak was measured while busy, so every % of peak is too high" if PEAK_ROW in
               load["busy_rows"] else ""))
