"""CarvanaClassifier: trains, validates and predicts with a U-Net in PyTorch, the explicit eager loop
(zero_grad, forward, backward, step); twin of tf_impl/classifier.py."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.optim import lr_scheduler
from torch.profiler import record_function

from shared import schedules
from shared.atomic import atomic_path
from shared.data.carvana import TrainImageDataset
from shared.execution import Execution, default_execution
from shared.graph_lessons import autograd_nodes
from shared.history import TrainingLog
from shared.loaders import Loaders
from shared.metrics import BatchAverage, sigmoid
from shared.tasks import UNetSpec
from torch_impl import data
from torch_impl.data import CarvanaLoader, to_tensor_images
from torch_impl.optimizers import make_optimizer, make_schedule
from torch_impl.runtime import compiled, traces
from torch_impl.weights import checkpointer, parameter_gradients


def bce_dice_loss(logits: torch.Tensor, masks: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy from logits + (1 - soft Dice), the Dice taken per image and averaged."""
    with record_function("loss"):  # names the ops for --profile (torch_impl/profile.py); a no-op without it
        bce = nn.functional.binary_cross_entropy_with_logits(logits, masks)
        probabilities, truth = torch.sigmoid(logits).flatten(1), masks.flatten(1)
        soft_dice = (2 * (probabilities * truth).sum(1) + smooth) / (probabilities.sum(1) + truth.sum(1) + smooth)
        return bce + (1 - soft_dice.mean())


loss = bce_dice_loss  # the task surface's name for this task's loss


def dice_score(logits: torch.Tensor, masks: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mean Dice of the thresholded predictions; an empty prediction of an empty mask scores 1."""
    with record_function("loss"):  # the batch's Dice is profiled with the loss
        predicted, truth = (torch.sigmoid(logits) > threshold).float().flatten(1), masks.flatten(1)
        total = predicted.sum(1) + truth.sum(1)
        return torch.where(total > 0, 2 * (predicted * truth).sum(1) / total.clamp(min=1),
                           torch.ones_like(total)).mean()


def forward(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Logits (N, H, W, 1) for canonical NHWC images, BatchNorm in inference mode."""
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        return model(to_tensor_images(images).to(device)).float().permute(0, 2, 3, 1).cpu().numpy()


def gradients(model: nn.Module, images: np.ndarray, targets: np.ndarray) -> tuple[float, dict]:
    """Loss and d(loss)/d(parameter) by canonical name for one batch, BatchNorm in training mode."""
    model.train()
    model.zero_grad()
    batch_loss = bce_dice_loss(model(to_tensor_images(images)), to_tensor_images(targets))
    batch_loss.backward()
    return batch_loss.item(), parameter_gradients(model)


def to_tensors(images: np.ndarray, targets: np.ndarray, execution: Execution) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical NHWC photos and masks -> NCHW tensors on the execution's device."""
    device = torch.device(execution.device)
    return to_tensor_images(images).to(device), to_tensor_images(targets).to(device)


def make_loader(dataset: TrainImageDataset, batch_size: int, seed: int, shuffle: bool,
                workers: int = 0) -> CarvanaLoader:
    """Batches of (photos (N, 3, H, W), masks (N, 1, H, W)); `workers` processes decode and augment."""
    return data.make_image_loader(dataset, batch_size, seed, shuffle, workers)


def predict(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Mask probabilities (N, H_out, W_out) for canonical NHWC images."""
    return sigmoid(forward(model, images)[..., 0])


class LearningRate:
    """The learning rate of each step, driven from the training loop. PyTorch schedulers advance when step() is
    called: the scheduler after every optimizer step, ReduceLROnPlateau after each epoch past the warm-up, with the
    validation loss. Its patience and cooldown are given in PyTorch's meaning of the spec's Keras ones."""

    def __init__(self, optimizer: torch.optim.Optimizer, spec: UNetSpec, steps_per_epoch: int, epochs: int,
                 monitor: str = "val_loss"):
        self.optimizer, self.spec, self.monitor = optimizer, spec, monitor
        self.scheduler = make_schedule(optimizer, spec, steps_per_epoch, epochs)
        self.plateau = None
        if spec.schedule == "plateau":
            self.plateau = lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=spec.plateau_factor, patience=schedules.torch_plateau_patience(spec),
                threshold=spec.plateau_min_delta, threshold_mode="abs",
                cooldown=schedules.torch_plateau_cooldown(spec), min_lr=spec.plateau_min_lr, eps=0.0)

    def begin_batch(self) -> float:
        """The learning rate the next step uses."""
        return self.optimizer.param_groups[0]["lr"]

    def end_batch(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def end_epoch(self, epoch: int, logs: dict) -> None:
        if self.plateau is not None and epoch > self.spec.warmup_epochs:
            self.plateau.step(logs[self.monitor])

    def save(self, path: Path) -> None:
        """The schedulers' positions and counters (the current lr itself is in the optimizer's param groups)."""
        if self.scheduler is not None or self.plateau is not None:
            with atomic_path(path.with_suffix(".pt")) as temporary:
                torch.save({name: None if found is None else found.state_dict()
                            for name, found in (("scheduler", self.scheduler), ("plateau", self.plateau))}, temporary)

    def load(self, path: Path) -> None:
        if self.scheduler is not None or self.plateau is not None:
            state = torch.load(path.with_suffix(".pt"), weights_only=True)
            for name, found in (("scheduler", self.scheduler), ("plateau", self.plateau)):
                if found is not None:
                    found.load_state_dict(state[name])


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class CarvanaClassifier:
    """The source text's trainer:
    `CarvanaClassifier(net, epochs).train(train_loader, valid_loader, epochs, callbacks)`."""

    def __init__(self, net: nn.Module, epochs: int, spec: UNetSpec, verbose: bool = True, checkpoint_dir=None,
                 execution: Execution | None = None, optimizer: torch.optim.Optimizer | None = None):
        self.execution = (execution or default_execution("torch")).check("torch")
        self.device = torch.device(self.execution.device)
        self.memory_format = torch.channels_last if self.execution.mode == "channels_last" else torch.contiguous_format
        self.net, self.epochs, self.spec = net.to(self.device, memory_format=self.memory_format), epochs, spec
        self.network = compiled(net, self.execution)  # torch.compile's graph is built on the first call
        self.autocast_dtype = AUTOCAST_DTYPES.get(self.execution.precision)  # None: float32 throughout
        self.optimizer = optimizer or make_optimizer(net, spec)
        # fp16 gradients underflow without loss scaling; bf16 has float32's exponent range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.execution.precision == "fp16")
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir  # a checkpoint after every epoch; a restart continues from it
        self.batch_losses: list[float] = []
        self.batch_lrs: list[float] = []  # the learning rate of every step
        self.timing: dict = {}
        self.autograd_nodes: int | None = None  # of the graph the first train_step records

    def to_device(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images.to(self.device, memory_format=self.memory_format), masks.to(self.device)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The net's output in float32; under mixed precision the convolutions run in bf16/fp16."""
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            return self.network(images).float()

    def train_step(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
        """zero_grad, forward, loss, backward, step: the graph is recorded anew on every call."""
        images, masks = self.to_device(images, masks)
        self.optimizer.zero_grad()
        logits = self.logits(images)
        batch_loss = bce_dice_loss(logits, masks)
        self.scaler.scale(batch_loss).backward()
        self.scaler.step(self.optimizer)  # a plain optimizer.step() unless fp16 scaling is on
        self.scaler.update()
        self.autograd_nodes = self.autograd_nodes or autograd_nodes(batch_loss.grad_fn)  # this step's graph
        dice = dice_score(logits.detach(), masks, self.spec.threshold)
        return batch_loss.item(), dice.item()  # .item() waits for the device

    def validate(self, valid_loader) -> dict:
        """Loss and thresholded Dice over the validation set, averaged per image."""
        self.net.eval()
        average = BatchAverage()
        with torch.no_grad():
            for images, masks in valid_loader:
                images, masks = self.to_device(images, masks)
                logits = self.logits(images)
                average.add(len(images), val_loss=bce_dice_loss(logits, masks).item(),
                            val_dice=dice_score(logits, masks, self.spec.threshold).item())
        return average.result()

    def train(self, train_loader, valid_loader, epochs: int | None = None, callbacks=None) -> list[dict]:
        """Per epoch: the training batches, then the validation set; returns the per-epoch history."""
        epochs = epochs or self.epochs
        log = TrainingLog("PyTorch", epochs, len(train_loader), callbacks, self.verbose, seed=self.spec.seed)
        learning_rate = LearningRate(self.optimizer, self.spec, len(train_loader), epochs,
                                     "val_loss" if valid_loader is not None else "loss")
        saved = replace(checkpointer(self.checkpoint_dir, self.net, self.optimizer), save_schedule=learning_rate.save,
                        load_schedule=learning_rate.load)
        saved.resume(log)
        for epoch in range(log.epochs_done + 1, epochs + 1):
            self.net.train()
            train_loader.sampler.set_epoch(epoch)
            log.begin_epoch(epoch)
            for batch_index, (images, masks) in enumerate(train_loader):
                lr = learning_rate.begin_batch()
                with log.timer.step(len(images)):
                    batch_loss, dice = self.train_step(images, masks)
                learning_rate.end_batch()
                log.end_batch(epoch, batch_index, len(images), lr, loss=batch_loss, dice=dice)
            logs = log.end_epoch(epoch, self.validate(valid_loader) if valid_loader is not None else None)
            learning_rate.end_epoch(epoch, logs)
            saved.save(epoch, log)
        run = log.result()
        self.batch_losses, self.batch_lrs, self.timing = run["batch_losses"], run["batch_lrs"], run["timing"]
        return run["history"]

    @property
    def traces(self) -> int:
        """Graphs torch.compile captured of the model: none in eager mode (autograd records each call anew)."""
        return traces(self.network)

    @property
    def graph(self) -> dict:
        """The size of what runs each step: the autograd graph the first step recorded (no static graph)."""
        return {"graph_ops": None, "autograd_nodes": self.autograd_nodes}


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, spec: UNetSpec,
                    execution: Execution | None = None) -> Callable[[Any, Any], float]:
    """One step of the trainer on a batch of tensors (the benchmark times it); returns the loss."""
    classifier = CarvanaClassifier(model, 1, spec, verbose=False, execution=execution, optimizer=optimizer)
    return lambda images, masks: classifier.train_step(images, masks)[0]


def train(model: nn.Module, spec: UNetSpec, loaders: Loaders, callbacks=None, checkpoint_dir=None,
          execution: Execution | None = None, verbose: bool = True) -> dict:
    """The source text's `CarvanaClassifier(net, epochs).train(train_loader, valid_loader, epochs, callbacks)`."""
    classifier = CarvanaClassifier(model, spec.epochs, spec, verbose, checkpoint_dir, execution)
    history = classifier.train(loaders.train, loaders.valid, spec.epochs, callbacks)
    return {"history": history, "batch_losses": classifier.batch_losses, "batch_lrs": classifier.batch_lrs,
            "timing": classifier.timing, "traces": classifier.traces, **classifier.graph}
