"""The one place where tasks differ: for each task, how its data is prepared, how it runs on a side, what its
parity probe is, its canonical weight layout, its benchmark batch and FLOP count, and its report. Everything
else (the harness, the workers, the benchmark, the reports) asks the task's entry here, never its name."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import psutil

from harness import task_reports
from harness.benchmark import flops
from harness.report import TaskReport
from harness.surface import AutogradModules, NeuronModules, Surface, open_surface
from harness.tasks import digits, folder_set, lessons, unet
from shared import weights
from shared.errors import UserError
from shared.init import init_weights
from shared.tasks import TaskSpec, shape_text
from shared.weights import Weights


def digits_batch(spec: TaskSpec, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded batch of random digit images (N, H, W, 1) and class labels, the same on both sides."""
    rng = np.random.default_rng([seed, batch_size])
    images = rng.standard_normal((batch_size, spec.image_size, spec.image_size, 1)).astype(np.float32)
    return images, rng.integers(0, 10, batch_size).astype(np.int64)


def photos_batch(spec: TaskSpec, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded batch of random photos (N, H, W, C) and masks (N, H_out, W_out, 1): a blob per image, so
    Dice is not degenerate."""
    rng = np.random.default_rng([seed, batch_size])
    images = rng.standard_normal((batch_size, *spec.image_shape, spec.in_channels)).astype(np.float32)
    height, width = spec.output_shape
    y, x = np.mgrid[:height, :width] / np.array([height, width])[:, None, None]  # each axis in [0, 1)
    centres = rng.uniform(0.3, 0.7, (batch_size, 2))
    masks = ((y - centres[:, :1, None]) ** 2 + (x - centres[:, 1:, None]) ** 2 < 0.06).astype(np.float32)
    return images, masks[..., None]


@dataclass(frozen=True, kw_only=True)
class Task:
    """What one task is to the harness, every part named where the registry below fills it in."""

    name: str
    probe: str  # what the parity probe array holds
    run: Callable  # (surface, spec, initial, out_dir, data, execution) -> (result entry, probe)
    report: Callable[[dict, Path], TaskReport]  # its plots and the report's task section
    prepare_data: Callable | None = None  # (spec, data_dir, download) -> plain JSON for the sides; None: no data
    layout: Callable[[TaskSpec], dict] | None = None  # canonical weight layout; None: a lesson, nothing trained
    trainer: str | None = None  # the side module that trains it (train.py, classifier.py)
    benchmark_batch: Callable | None = None  # (spec, batch_size, seed) -> (images, targets)
    forward_flops: Callable | None = None  # (spec, batch) -> FLOPs of each layer's forward
    train_set: Callable | None = None  # (spec, data) -> (training dataset, what an epoch is): the pipeline row
    run_distributed: Callable | None = None  # data-parallel training (--nproc); None: one process only
    agreement: Callable | None = None  # (surface, spec, data, weights path) -> masks, compared across the sides
    metric: str | None = None  # the final metric --seeds compares
    prediction: str | None = None  # what --predict writes: "classes" (a CSV) or "masks" (a Kaggle submission)
    final_weights: str | None = None  # the file a side's training leaves in its folder, read by --predict
    tolerances: dict[str, float] = field(default_factory=dict)  # how far the sides may differ (notes below)
    step_bytes: Callable | None = None  # (spec, batch) -> about the activations' memory of a train step
    lesson: type | None = None  # a lesson's modules on a side (harness/surface.py NeuronModules, AutogradModules)
    fit_data: Callable | None = None  # (spec, data_dir, download) -> the spec the data asks for (its input channels)
    category_flops: Callable | None = None  # (spec, batch) -> FLOPs by --profile's category; None: not profiled

    @property
    def trains(self) -> bool:
        return self.trainer is not None

    @property
    def tolerance(self) -> float:
        """The parity tolerance: max |tf - torch| of the probe arrays."""
        return self.tolerances["parity"]

    def initial_weights(self, spec: TaskSpec) -> Weights | None:
        """The canonical starting point both sides load (None for a lesson): the seeded initialisation, or the
        weights of --init-weights, checked against the spec's layout."""
        if self.layout is None:
            return None
        if getattr(spec, "init_weights", None):
            return weights.load_matching_weights(spec.init_weights, self.layout(spec))
        return init_weights(self.layout(spec), spec.seed)

    def analytic_training_flops(self, spec: TaskSpec, batch: int) -> int:
        return flops.training_flops(self.forward_flops(spec, batch))

    def check_memory(self, spec: TaskSpec, batch: int) -> None:
        """Refuse, before any work, a size whose first train step cannot fit in this machine's memory."""
        needed = self.step_bytes(spec, batch) if self.step_bytes else 0
        memory = psutil.virtual_memory().total
        if needed > memory:
            raise UserError(f"--image-size {shape_text(spec.image_size)} at batch {batch}: one training step keeps "
                            f"at least {needed / 2**30:,.1f} GiB of activations, more than this machine's "
                            f"{memory / 2**30:,.1f} GiB of memory; use a smaller --image-size or --batch-size")

    def surface(self, side: str, spec: TaskSpec) -> Surface:
        return open_surface(side, spec, self.trainer, self.lesson)


# How far the two sides may differ, per task (float32), read by the harness, the benchmark and every test
# (docs/equivalence.md):
# parity: max |tf - torch| of the probe arrays that compare.py checks on every run (harness/parity.py);
# forward: max abs of the model's outputs; loss: abs; grad: per tensor |a - b| <= grad * max |b|;
# trained_loss: relative, per step, after identical SGD-with-momentum steps;
# trained_weights: max abs of every exported tensor after those steps (BatchNorm statistics included);
# reference_loss: |side - numpy reference| of the loss function;
# data_parallel_step: max abs of every exported tensor, one step in 2 processes against 1 (a large lr makes an
# error in the gradient show); data_parallel_epoch: relative losses and max abs weights after a whole epoch
# (SGD with momentum 0.99 amplifies the summation order's rounding over several steps).
# bf16_loss: relative, the two sides' batch losses when both train in bf16 mixed precision.
# bf16_forward: max abs of a side's forward in bf16 (Keras' mixed_bfloat16; torch.autocast) against its own float32
# eager forward, on the benchmark batch (--benchmark --inference --precisions fp32,bf16). bfloat16 keeps 8 significant
# bits (2^-8 = 3.9e-3 relative), rounded again at every layer: measured (both sides, seeds 0-2, 2026-12) mlp up to
# 2.0e-2 and cnn 2.1e-2 (log-probabilities up to 2.7 in magnitude), unet 6.3e-4 (64x64 width 8, logits up to 0.13)
# and 1.8e-3 (32x32 width 4, up to 0.43); each tolerance is about 2.5x its task's largest.
# float64: relative, every quantity of --diagnose's float64 runs, where rounding is 5e8 times smaller than in
# float32 (the default unet's 5 steps: float64 twins 1.4e-13 apart, where float32 parts by up to 2.3e-1 on a
# gradient whose sums cancel); Keras' momentum cast through float32 (1e-8 off) would exceed it.
# stock: the benchmark's stock row (harness/benchmark/stock.py): max abs of every layer's training-mode output, Keras'
# own BatchNormalization against the twins'. Ten times the twins' forward: its one-reduction mean is ten times less
# precise (measured 2.2e-5 at 64x64 width 8, 6.6e-5 at 128x128 width 64, where the twins part by 1.4e-5 and 5.0e-5).
LESSON_TOLERANCES = {"parity": 1e-6}
DIGITS_TOLERANCES = {"parity": 1e-5, "forward": 1e-5, "loss": 1e-6, "grad": 1e-4, "trained_loss": 1e-3,
                     "float64": 1e-10, "bf16_forward": 5e-2}
CLASSIFIER_PROBE = "log-probabilities of the initial weights on the first test batch"
REGISTRY: dict[str, Task] = {task.name: task for task in (
    Task(name="neuron", probe="w, b and O at every gradient step", run=lessons.run_neuron,
         report=task_reports.neuron_report, lesson=NeuronModules, tolerances=LESSON_TOLERANCES),
    Task(name="autograd", probe="dz/dx", run=lessons.run_autograd, report=task_reports.autograd_report,
         lesson=AutogradModules, tolerances=LESSON_TOLERANCES),
    Task(name="mlp", probe=CLASSIFIER_PROBE, run=digits.run_classifier, report=task_reports.classifier_report,
         prepare_data=digits.prepare_mnist, layout=weights.mlp_layout, trainer="train", benchmark_batch=digits_batch,
         forward_flops=flops.mlp_forward_flops, train_set=digits.train_digits, metric="test_accuracy",
         prediction="classes", final_weights="checkpoint.safetensors",
         tolerances={**DIGITS_TOLERANCES, "bf16_loss": 3e-2}),
    Task(name="cnn", probe=CLASSIFIER_PROBE, run=digits.run_classifier, report=task_reports.classifier_report,
         prepare_data=digits.prepare_mnist, layout=weights.cnn_layout, trainer="train", benchmark_batch=digits_batch,
         forward_flops=flops.cnn_forward_flops, train_set=digits.train_digits, metric="test_accuracy",
         prediction="classes", final_weights="checkpoint.safetensors", tolerances=DIGITS_TOLERANCES),
    Task(name="unet", probe="logits of the initial weights on the first validation batch", run=unet.run_unet,
         report=task_reports.unet_report, prepare_data=unet.prepare_carvana, layout=weights.unet_layout,
         trainer="classifier", benchmark_batch=photos_batch, forward_flops=flops.unet_forward_flops,
         train_set=unet.train_photos, run_distributed=unet.run_unet_distributed, agreement=unet.agreement_masks,
         metric="val_dice", prediction="masks", final_weights="model.safetensors", step_bytes=flops.unet_step_bytes,
         fit_data=folder_set.fit_data, category_flops=flops.unet_category_flops,
         tolerances={"parity": 1e-4, "forward": 1e-4, "loss": 1e-5, "grad": 1e-4, "trained_loss": 1e-3,
                     "trained_weights": 1e-4, "reference_loss": 1e-5, "data_parallel_step": 1e-5,
                     "data_parallel_epoch": 1e-3, "float64": 1e-10, "bf16_forward": 5e-3, "stock": 1e-3}),
)}
# Each task's tolerances by task name, for the tests' tables.
TOLERANCES: dict[str, dict[str, float]] = {name: task.tolerances for name, task in REGISTRY.items()}


def task_of(spec: TaskSpec) -> Task:
    return REGISTRY[spec.name]


def tolerance(task: str, quantity: str = "parity") -> float:
    return REGISTRY[task].tolerances[quantity]
