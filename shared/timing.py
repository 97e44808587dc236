"""Step timing both training loops share: each step is timed after its loss reaches the host."""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np


class StepTimer:
    """Collects the wall-clock seconds of each training step; the first one holds tracing/compiling."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.samples: list[int] = []

    @contextmanager
    def step(self, samples: int = 1):
        self.begin()
        yield
        self.end(samples)

    def begin(self) -> None:
        """A step starts (a loop that is not ours to wrap, Keras' model.fit, calls begin and end from callbacks)."""
        self._start = time.perf_counter()

    def end(self, samples: int = 1) -> None:
        self.times.append(time.perf_counter() - self._start)
        self.samples.append(samples)

    def summary(self, train_s: float | None = None) -> dict:
        return summarize(self.times, self.samples, train_s)


def summarize(times: list[float], samples: list[int], train_s: float | None = None) -> dict:
    """first_step_s alone; median step and samples/s over the steps after the first."""
    if not times:
        return {"first_step_s": None, "step_s_median": None, "samples_per_s": None, "train_s": train_s, "steps": 0}
    rest = np.asarray(times[1:] or times, dtype=float)
    rest_samples = np.asarray(samples[1:] or samples, dtype=float)
    return {
        "first_step_s": float(times[0]),
        "step_s_median": float(np.median(rest)),
        "samples_per_s": float(rest_samples.sum() / rest.sum()) if rest.sum() > 0 else None,
        "train_s": float(train_s if train_s is not None else sum(times)),
        "steps": len(times),
    }
