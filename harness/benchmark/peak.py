"""The machine's matrix-multiply peak: each side's own product and numpy's, at several sizes; the machine peak of a
precision is the best rate any of them reached in this run, and every row's percentage is against it."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from harness.surface import ARMS

# Square sizes tried, smallest first; a size whose one product would take longer than MAX_PRODUCT_S (predicted
# from the size before) is skipped, so a CPU without bf16 units is measured in seconds, and a GPU gets the big ones.
PEAK_SIZES = (512, 1024, 2048, 4096, 8192)
MAX_PRODUCT_S = 0.5
SECONDS_PER_SIZE = 0.5  # repeated products per size for about this long (3 at least)
SOURCE_NAMES = {**{name: arm.title for name, arm in ARMS.items()}, "numpy": "numpy"}


def peak_precisions(device: str) -> tuple[str, ...]:
    """The precisions a matrix-multiply peak is measured in: TF32 and float16 only where a GPU has them."""
    return ("fp32", "tf32", "bf16", "fp16") if device == "cuda" else ("fp32", "bf16")


def measure_matmul_rates(make_matmul: Callable[[int], Callable[[], None]], sizes: tuple[int, ...] = PEAK_SIZES,
                         seconds: float = SECONDS_PER_SIZE, max_product_s: float = MAX_PRODUCT_S,
                         clock: Callable[[], float] = time.perf_counter) -> dict:
    """GFLOP/s (2 n^3 per product, the median of repeated products after a warm-up one) at each size; the best of
    them is this source's peak ("n", "gflop_per_s"), every size kept under "sizes"."""
    rates: list[dict] = []
    for n in sizes:
        if rates and 2 * n**3 / (rates[-1]["gflop_per_s"] * 1e9) > max_product_s:
            break
        run = make_matmul(n)
        run()  # warm-up: kernel selection, packing buffers
        times = []
        while len(times) < 3 or (sum(times) < seconds and len(times) < 50):
            start = clock()
            run()
            times.append(clock() - start)
        rates.append({"n": n, "gflop_per_s": 2 * n**3 / max(float(np.median(times)), 1e-12) / 1e9,
                      "repeats": len(times)})
    best = max(rates, key=lambda rate: rate["gflop_per_s"])
    return {"n": best["n"], "gflop_per_s": best["gflop_per_s"], "sizes": rates}


def numpy_matmul(n: int) -> Callable[[], None]:
    """numpy's float32 product (its own BLAS: OpenBLAS or MKL); numpy has no bfloat16."""
    rng = np.random.default_rng(n)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)

    def run() -> None:
        np.matmul(a, b, out=out)

    return run


def numpy_peak(threads: int) -> dict:
    """numpy's fp32 peak with its BLAS held to `threads` threads (threadpoolctl, which scikit-learn brings), so it
    runs on as many cores as the sides do."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # then numpy's BLAS uses its own default thread count, and the entry says so
        return {"fp32": {**measure_matmul_rates(numpy_matmul), "threads": "BLAS default"}}
    with threadpool_limits(limits=threads, user_api="blas"):
        return {"fp32": {**measure_matmul_rates(numpy_matmul), "threads": threads}}


def machine_peak(sources: dict[str, dict], device: str) -> dict[str, dict]:
    """Per precision, the best rate any source reached: {precision: {gflop_per_s, n, source}}. numpy computes on the
    CPU, so it counts only when the rows do too."""
    peaks: dict[str, dict] = {}
    for source, by_precision in sources.items():
        if source == "numpy" and device != "cpu":
            continue
        for precision, rate in by_precision.items():
            if precision not in peaks or rate["gflop_per_s"] > peaks[precision]["gflop_per_s"]:
                peaks[precision] = {"gflop_per_s": rate["gflop_per_s"], "n": rate["n"], "source": source}
    return peaks


def describe_peak(peak: dict, precision: str) -> str:
    return f"{precision} {peak['gflop_per_s']:.1f} GFLOP/s ({SOURCE_NAMES[peak['source']]}, n={peak['n']})"


def against_peak(achieved: float, precision: str, peaks: dict[str, dict], row_label: str) -> dict:
    """A row's model-FLOP rate as a share of the machine peak in its precision; above 100% is a measurement error
    (the peak was not reached by the matmul, or the FLOP count is too high), never a target met."""
    peak = peaks.get(precision)
    if peak is None:
        return {"peak_gflop_per_s": None, "peak_source": None, "peak_fraction": None, "peak_error": None}
    fraction = achieved / peak["gflop_per_s"]
    error = None
    if fraction > 1.0:
        error = (f"measurement error: {row_label} reaches {100 * fraction:.1f}% of the machine's "
                 f"{describe_peak(peak, precision)}: the matrix-multiply peak is too low or the FLOP count too high")
    return {"peak_gflop_per_s": peak["gflop_per_s"], "peak_source": peak["source"], "peak_fraction": fraction,
            "peak_error": error}
