"""Training and evaluation of the MNIST classifiers in PyTorch: the explicit eager loop
(zero_grad, forward, backward, step); twin of tf_impl/train.py."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.data.batches import LabelledImages, in_batches
from shared.execution import Execution, default_execution
from shared.graph_lessons import autograd_nodes
from shared.history import TrainingLog
from shared.loaders import Loaders
from shared.progress import test_log_line
from shared.tasks import CNNSpec, MLPSpec
from torch_impl import data
from torch_impl.data import ArrayLoader, to_tensor_images
from torch_impl.runtime import compiled, traces
from torch_impl.weights import checkpointer, parameter_gradients


def nll_loss(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the true class (the model outputs log_softmax)."""
    return F.nll_loss(log_probs, labels)


loss = nll_loss  # the task surface's name for this task's loss


def forward(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Log-probabilities (N, 10) for canonical NHWC images, in evaluation mode."""
    model.eval()
    with torch.no_grad():
        return model(to_tensor_images(images).to(next(model.parameters()).device)).float().cpu().numpy()


def gradients(model: nn.Module, images: np.ndarray, targets: np.ndarray) -> tuple[float, dict]:
    """Loss and d(loss)/d(parameter) by canonical name, for one batch in training mode."""
    model.train()
    model.zero_grad()
    batch_loss = nll_loss(model(to_tensor_images(images)), torch.from_numpy(targets))
    batch_loss.backward()
    return batch_loss.item(), parameter_gradients(model)


def to_tensors(images: np.ndarray, targets: np.ndarray, execution: Execution) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical NHWC numpy -> NCHW images and class labels, on the execution's device."""
    device = torch.device(execution.device)
    return to_tensor_images(images).to(device), torch.from_numpy(targets).to(device)


def make_loader(dataset: LabelledImages, batch_size: int, seed: int, shuffle: bool, workers: int = 0) -> ArrayLoader:
    """The digits in the shared batch order (in memory: no loading workers needed)."""
    return data.make_loader(dataset.images, dataset.labels, batch_size, seed, shuffle)


def evaluate(model: nn.Module, loader: ArrayLoader) -> dict:
    """Average loss, accuracy and the predicted classes over a loader's batches."""
    model.eval()
    device = next(model.parameters()).device
    total_loss, predictions = 0.0, []
    with torch.no_grad():
        for images, labels in loader:
            log_probs = model(images.to(device)).float()
            total_loss += F.nll_loss(log_probs, labels.to(device), reduction="sum").item()
            predictions.append(log_probs.argmax(dim=1).cpu().numpy())
    predicted, labels = np.concatenate(predictions), loader.dataset.labels.numpy()
    return {"loss": total_loss / len(labels), "accuracy": float(np.mean(predicted == labels)),
            "correct": int(np.sum(predicted == labels)), "predictions": predicted}


def predict(model: nn.Module, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted classes for canonical NHWC images."""
    return in_batches(lambda batch: forward(model, batch).argmax(axis=1), images, batch_size)


def make_optimizer(model: nn.Module, spec: MLPSpec | CNNSpec) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, spec: MLPSpec | CNNSpec,
                    execution: Execution | None = None):
    """The train step as an eager function: zero_grad, forward, backward, step; returns the loss tensor."""
    execution = (execution or default_execution("torch")).check("torch")
    device = torch.device(execution.device)
    layout = torch.channels_last if execution.mode == "channels_last" else torch.contiguous_format
    model.to(device, memory_format=layout)
    network = compiled(model, execution)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(execution.precision)

    def train_step(images, labels):
        images, labels = images.to(device, memory_format=layout), labels.to(device)
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            log_probs = network(images)
        batch_loss = nll_loss(log_probs.float(), labels)  # float32 loss if mixed
        batch_loss.backward()
        optimizer.step()
        return batch_loss

    train_step.network = network  # the model as the step calls it: traces() counts its compiled graphs
    return train_step


def train(model: nn.Module, spec: MLPSpec | CNNSpec, loaders: Loaders, callbacks=None, checkpoint_dir=None,
          execution: Execution | None = None, verbose: bool = True) -> dict:
    """SGD with momentum over the shared batch order; a log line every log_interval batches, test after each epoch."""
    execution = (execution or default_execution("torch")).check("torch")
    train_loader, test_loader = loaders
    optimizer = make_optimizer(model, spec)
    train_step = make_train_step(model, optimizer, spec, execution)
    log = TrainingLog("PyTorch", spec.epochs, len(train_loader), callbacks, verbose, spec.log_interval,
                      spec.batch_size, len(train_loader.dataset), spec.seed)
    saved = checkpointer(checkpoint_dir, model, optimizer)
    saved.resume(log)
    nodes = None
    for epoch in range(log.epochs_done + 1, spec.epochs + 1):
        model.train()
        train_loader.sampler.set_epoch(epoch)
        log.begin_epoch(epoch)
        for batch_index, (images, labels) in enumerate(train_loader):
            with log.timer.step(len(labels)):
                batch_loss = train_step(images, labels)
                loss_value = batch_loss.item()  # the host copy waits for the step
            nodes = nodes or autograd_nodes(batch_loss.grad_fn)  # the graph this step recorded (each step its own)
            log.end_batch(epoch, batch_index, len(labels), loss=loss_value)
        test = evaluate(model, test_loader)
        log.end_epoch(epoch, {"test_loss": test["loss"], "test_accuracy": test["accuracy"]},
                      test_log_line(test["loss"], test["correct"], len(test["predictions"])))
        saved.save(epoch, log)
    return {**log.result(), "traces": traces(train_step.network), "graph_ops": None,  # no static graph
            "autograd_nodes": nodes}
