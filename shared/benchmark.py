"""Benchmark methodology both sides share: the rows to run, the timing loop, the statistics, the analytic FLOP
count and the in-memory batch. Each row runs in its own process through run_row; compare.py orchestrates."""
from __future__ import annotations

import hashlib
import math
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from shared import weights
from shared.execution import MODES, Execution
from shared.init import init_weights

WARMUP_STEPS = 10
TIMED_STEPS = 30
# The loss after this many steps on the same batch, bf16 against fp32 (same side, same mode, same weights).
PRECISION_CHECK_STEP = 20
PRECISION_LOSS_RTOL = {"bf16": 0.05, "fp16": 0.02}  # bf16 keeps 8 significant bits, fp16 11
# Each side's own minimal loop is timed next to this mode's twinnets step.
REFERENCE_MODE = {side: modes[0] for side, modes in MODES.items()}


@dataclass(frozen=True)
class Row:
    """One timed configuration; each runs in a fresh process."""

    side: str
    kind: str  # "parity", "step" (twinnets step, + the reference loop in REFERENCE_MODE fp32), "pipeline",
    #            or "data-parallel" (the side's distributed step in `nproc` processes on the global batch)
    mode: str
    precision: str = "fp32"
    batch_size: int = 0
    run: int = 1  # which of the --repeat processes
    nproc: int = 1

    @property
    def name(self) -> str:
        return f"{self.side}-{self.kind}-{self.mode}-{self.precision}-b{self.batch_size}-p{self.nproc}-r{self.run}"

    @property
    def execution(self) -> Execution:
        return Execution(self.mode, self.precision)

    @property
    def with_reference(self) -> bool:
        return self.kind == "step" and self.mode == REFERENCE_MODE[self.side] and self.precision == "fp32"

    def to_dict(self) -> dict:
        return asdict(self)


def plan_rows(sides: list[str], modes: dict[str, list[str]], precisions: list[str], batch_sizes: list[int],
              repeat: int, all_combinations: bool = False, pipeline: bool = True, nproc: int = 1) -> list[Row]:
    """Parity first (it gates the rest), then the step rows per side, then the loaders. fp32 runs in every
    chosen mode; a lower precision only in the side's training mode unless all_combinations."""
    rows = [Row(side, "parity", REFERENCE_MODE[side], batch_size=batch_sizes[0]) for side in sides]
    for batch_size in batch_sizes:
        for side in sides:
            for precision in precisions:
                for mode in modes[side]:
                    if precision != "fp32" and mode != REFERENCE_MODE[side] and not all_combinations:
                        continue
                    rows += [Row(side, "step", mode, precision, batch_size, run) for run in range(1, repeat + 1)]
    if pipeline:
        rows += [Row(side, "pipeline", REFERENCE_MODE[side], "fp32", batch_sizes[0]) for side in sides]
    if nproc > 1:  # the same global batch in 1 and in nproc processes, the cores shared out
        rows += [Row(side, "data-parallel", "data-parallel", "fp32", batch_sizes[0], run, processes)
                 for side in sides for processes in (1, nproc) for run in range(1, repeat + 1)]
    return rows


# ---- timing and statistics -------------------------------------------------------------------------------

def time_steps(step: Callable[[], float], warmup: int, steps: int,
               clock: Callable[[], float] = time.perf_counter) -> dict:
    """The first call alone (it traces or compiles), then `warmup` untimed calls, then `steps` timed ones.
    `step` returns the loss as a Python float: that host copy is what makes the timer wait for the device."""
    start = clock()
    losses = [step()]
    first = clock() - start
    for _ in range(warmup):
        losses.append(step())
    times = []
    for _ in range(steps):
        start = clock()
        losses.append(step())
        times.append(clock() - start)
    return {"first_step_s": first, "times_s": times, "losses": losses}


def time_interleaved(steps_by_name: dict[str, Callable[[], float]], warmup: int, steps: int,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    """time_steps for several steps at once, alternating them step by step after each one's first call and
    warm-up: a drift of the machine (clock boost, a neighbour's load) then weighs on all of them alike."""
    timings = {}
    for name, step in steps_by_name.items():
        start = clock()
        losses = [step()]
        timings[name] = {"first_step_s": clock() - start, "times_s": [], "losses": losses}
        for _ in range(warmup):
            losses.append(step())
    for _ in range(steps):
        for name, step in steps_by_name.items():
            start = clock()
            timings[name]["losses"].append(step())
            timings[name]["times_s"].append(clock() - start)
    return timings


def step_statistics(times: list[float], batch_size: int) -> dict:
    """Median, p10-p90 and mean +- standard error of the step time; samples/s from the median and the range."""
    t = np.asarray(times, dtype=float)
    if t.size == 0:
        raise ValueError("no timed steps")
    p10, median, p90 = np.percentile(t, [10, 50, 90])
    stderr = float(t.std(ddof=1) / math.sqrt(t.size)) if t.size > 1 else 0.0
    return {"steps": int(t.size), "median_s": float(median), "p10_s": float(p10), "p90_s": float(p90),
            "mean_s": float(t.mean()), "stderr_s": stderr, "samples_per_s": batch_size / float(median),
            "samples_per_s_p10": batch_size / float(p90), "samples_per_s_p90": batch_size / float(p10)}


def median_run(runs: list[dict]) -> dict:
    """Of the --repeat processes of one row, the one with the median median step time (the lower middle one)."""
    ordered = sorted(runs, key=lambda run: run["stats"]["median_s"])
    return ordered[(len(ordered) - 1) // 2]


# ---- FLOPs -------------------------------------------------------------------------------------------------

def conv_flops(batch: int, c_in: int, c_out: int, kernel: int, height: int, width: int) -> int:
    """A k x k convolution: one multiply and one add per weight per position. Pass the output size for a
    convolution, the input size for a transposed one (that is where its kernel is applied)."""
    return 2 * batch * c_in * c_out * kernel * kernel * height * width


def linear_flops(batch: int, n_in: int, n_out: int) -> int:
    return 2 * batch * n_in * n_out


def training_flops(forward: list[int]) -> int:
    """Forward, plus for each layer the weight gradient (as much as its forward) and the input gradient (the
    same again), except for the first layer: its input, the data, needs no gradient. Counted: convolutions
    and matrix products, as PyTorch's FlopCounterMode counts them (not BatchNorm, ReLU, pooling, the loss)."""
    return 3 * sum(forward) - forward[0]


def unet_forward_flops(spec, batch: int) -> list[int]:
    widths = weights.unet_widths(spec.base_filters, spec.depth)
    shrink = 0 if spec.variant == "padded" else 2  # each valid 3x3 convolution loses 2 pixels
    flops, sizes, size, c_in = [], [], spec.image_size, 3
    for level, width in enumerate(widths, start=1):
        for conv in (1, 2):
            size -= shrink
            flops.append(conv_flops(batch, c_in if conv == 1 else width, width, 3, size, size))
        c_in = width
        if level <= spec.depth:
            sizes.append(size)
            size //= 2
    for level in range(spec.depth, 0, -1):
        width = widths[level - 1]
        flops.append(conv_flops(batch, widths[level], width, 2, size, size))  # the 2x2 stride-2 up-convolution
        size *= 2
        for conv in (1, 2):
            size -= shrink
            flops.append(conv_flops(batch, 2 * width if conv == 1 else width, width, 3, size, size))
    flops.append(conv_flops(batch, widths[0], 1, 1, size, size))  # the 1x1 head
    return flops


def classifier_forward_flops(spec, batch: int) -> list[int]:
    if spec.name == "mlp":
        sizes = spec.layer_sizes
        return [linear_flops(batch, n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    c1, c2 = spec.channels
    size = spec.image_size  # 'same' 5x5 convolutions, each followed by a 2x2 max-pool
    return [conv_flops(batch, 1, c1, spec.kernel_size, size, size),
            conv_flops(batch, c1, c2, spec.kernel_size, size // 2, size // 2),
            linear_flops(batch, spec.flat_features, spec.hidden), linear_flops(batch, spec.hidden, spec.classes)]


def analytic_training_flops(spec, batch: int) -> int:
    forward = unet_forward_flops(spec, batch) if spec.name == "unet" else classifier_forward_flops(spec, batch)
    return training_flops(forward)


# ---- the batch every step row trains on -----------------------------------------------------------------

def input_batch(spec, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded batch in the canonical NHWC layout, the same on both sides: images and masks for the
    U-Net (masks: a blob per image, so Dice is not degenerate), images and class labels for mlp and cnn."""
    rng = np.random.default_rng([seed, batch_size])
    if spec.name == "unet":
        images = rng.standard_normal((batch_size, spec.image_size, spec.image_size, 3)).astype(np.float32)
        y, x = np.mgrid[:spec.output_size, :spec.output_size] / spec.output_size
        centres = rng.uniform(0.3, 0.7, (batch_size, 2))
        masks = ((y - centres[:, :1, None]) ** 2 + (x - centres[:, 1:, None]) ** 2 < 0.06).astype(np.float32)
        return images, masks[..., None]
    side = 28 if spec.name == "mlp" else spec.image_size
    images = rng.standard_normal((batch_size, side, side, 1)).astype(np.float32)
    return images, rng.integers(0, 10, batch_size).astype(np.int64)


def initial_weights(spec) -> dict:
    layout = {"mlp": weights.mlp_layout, "cnn": weights.cnn_layout, "unet": weights.unet_layout}[spec.name]
    return init_weights(layout(spec), spec.seed)


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def weights_digest(canonical: dict) -> str:
    """sha256 of the canonical weights (names, shapes, float32 bytes): equal digests, bit-identical weights."""
    digest = hashlib.sha256()
    for name in sorted(canonical):
        array = np.ascontiguousarray(canonical[name], dtype=np.float32)
        digest.update(f"{name}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def measure_matmul_peak(make_matmul: Callable[[int], Callable[[], None]], seconds: float = 1.0,
                        max_n: int = 4096) -> dict:
    """GFLOP/s of the largest useful square matrix product: n doubles from 256 until one product takes 50 ms
    (a slow precision stays small, so a CPU without bf16 units is measured in seconds, not minutes), then the
    median of repeated products over about `seconds`."""
    n = 256
    while True:
        run = make_matmul(n)
        run()  # warm-up: kernel selection, packing buffers
        start = time.perf_counter()
        run()
        once = time.perf_counter() - start
        if once >= 0.05 or n >= max_n:
            break
        n *= 2
    times = []
    for _ in range(max(3, min(50, int(seconds / max(once, 1e-6))))):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"n": n, "gflop_per_s": 2 * n**3 / median / 1e9, "repeats": len(times)}


# ---- one row, in its own process ----------------------------------------------------------------------------

def fresh_model(side, spec):
    model = side.task.build(spec)
    side.weights.load_weights(model, initial_weights(spec))
    return model


def run_row(side, spec, row: Row, settings: dict, data: dict | None) -> tuple[dict, np.ndarray | None]:
    """Run one row in this process (side: the side's modules, benchmark among them); returns its result and,
    for the parity row, the probe (the initial model's output on the batch)."""
    execution = side.runtime.configure_execution(row.execution.replace(device=settings["device"]))
    result: dict = {"row": row.to_dict(), "execution": execution.to_dict()}
    probe = None
    images, targets = input_batch(spec, row.batch_size, spec.seed)
    if row.kind == "parity":
        model = fresh_model(side, spec)
        result["parameters"] = side.weights.count_parameters(model)
        result["weights_sha256"] = weights_digest(side.weights.export_weights(model))
        forward = side.classifier.forward if spec.name == "unet" else side.train.forward
        probe = forward(model, images)
        result["flops"] = {}
        for batch_size in settings["batch_sizes"]:  # counted on a throwaway model: counting runs a step
            batch = side.benchmark.to_tensors(spec, *input_batch(spec, batch_size, spec.seed), execution)
            step = side.benchmark.train_step(spec, fresh_model(side, spec), execution)
            result["flops"][str(batch_size)] = side.benchmark.count_flops(step, *batch)
    elif row.kind == "step":
        batch = side.benchmark.to_tensors(spec, images, targets, execution)
        step = side.benchmark.train_step(spec, fresh_model(side, spec), execution)
        steps = {"twinnets": lambda: step(*batch)}
        if row.with_reference:  # the same model and batch through the few lines anyone would write, interleaved
            reference = side.benchmark.reference_step(spec, fresh_model(side, spec), execution)
            steps["reference"] = lambda: reference(*batch)
        timings = time_interleaved(steps, settings["warmup"], settings["steps"])
        result.update(timings["twinnets"], stats=step_statistics(timings["twinnets"]["times_s"], row.batch_size))
        if row.with_reference:
            result["reference"] = {**timings["reference"],
                                   "stats": step_statistics(timings["reference"]["times_s"], row.batch_size)}
            result["matmul_peak"] = {precision: measure_matmul_peak(
                lambda n, precision=precision: side.benchmark.matmul(n, precision, execution))
                for precision in ("fp32", "bf16")}
    elif row.kind == "data-parallel":  # side.distributed was set up before any other op (compare.bench_side)
        context = settings["context"]
        model, optimizer = side.distributed.replicate(context, spec, initial_weights(spec))
        step = side.distributed.make_train_step(context, model, optimizer, spec.threshold)
        shard = side.distributed.local_batch(context, np.arange(row.batch_size),
                                             lambda share: (images[share], targets[share][..., 0]))
        timing = time_steps(lambda: step(shard)[0], settings["warmup"], settings["steps"])
        result.update(timing, stats=step_statistics(timing["times_s"], row.batch_size), processes=context.world)
    else:  # pipeline: an epoch from the files through the side's own loader, after one warm-up step
        batch = side.benchmark.to_tensors(spec, images, targets, execution)
        step = side.benchmark.train_step(spec, fresh_model(side, spec), execution)
        step(*batch)
        loader, source = real_loader(side, spec, data, row.batch_size)
        samples, start = 0, time.perf_counter()
        for batch_images, batch_targets in side.benchmark.loader_batches(loader, 1):
            step(batch_images, batch_targets)
            samples += int(batch_images.shape[0])
        elapsed = time.perf_counter() - start
        result["epoch"] = {"samples": samples, "seconds": elapsed, "samples_per_s": samples / elapsed,
                           "loader": source, "workers": getattr(spec, "workers", 0)}
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["peak_device_bytes"] = side.benchmark.peak_device_memory(execution)
    result["build"] = side.benchmark.build_info()
    return result, probe


def real_loader(side, spec, data: dict, batch_size: int):
    """The loader a training run uses: decoded, augmented photos for the U-Net; the digits for mlp and cnn."""
    from shared import harness  # the harness holds the dataset wiring of a training run

    if spec.name == "unet":
        train_set = harness.unet_train_set(spec, data)
        return (side.data.make_image_loader(train_set, batch_size, spec.seed, True, spec.workers),
                f"{len(train_set)} photos decoded, resized and augmented per epoch")
    dataset = harness.load_classifier_data(spec, data or {})
    return (side.data.make_loader(dataset.train_images, dataset.train_labels, batch_size, spec.seed, True),
            f"{len(dataset.train_labels)} in-memory digits")
