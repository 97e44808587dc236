"""Training and evaluation of the MNIST classifiers in PyTorch: the explicit eager loop
(zero_grad, forward, backward, step); twin of tf_impl/train.py."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.execution import Execution, default_execution
from shared.history import TrainingLog
from shared.progress import test_log_line
from torch_impl.data import make_loader, to_tensor_images
from torch_impl.weights import canonical_gradients, checkpoint, resume


def nll_loss(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the true class (the model outputs log_softmax)."""
    return F.nll_loss(log_probs, labels)


def forward(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Log-probabilities (N, 10) for canonical NHWC images, in evaluation mode."""
    model.eval()
    with torch.no_grad():
        return model(to_tensor_images(images).to(next(model.parameters()).device)).float().cpu().numpy()


def gradients(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    """Loss and d(loss)/d(parameter) by canonical name, for one batch in training mode."""
    model.train()
    model.zero_grad()
    loss = nll_loss(model(to_tensor_images(images)), torch.from_numpy(labels))
    loss.backward()
    return loss.item(), canonical_gradients(model)


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int) -> dict:
    """Average test loss, accuracy and the predicted classes."""
    model.eval()
    loader = make_loader(images, labels, batch_size, seed=0, shuffle=False)
    device = next(model.parameters()).device
    total_loss, predictions = 0.0, []
    with torch.no_grad():
        for batch_images, batch_labels in loader:
            batch_images, batch_labels = batch_images.to(device), batch_labels.to(device)
            log_probs = model(batch_images).float()
            total_loss += F.nll_loss(log_probs, batch_labels, reduction="sum").item()
            predictions.append(log_probs.argmax(dim=1).cpu().numpy())
    predicted = np.concatenate(predictions)
    return {"loss": total_loss / len(labels), "accuracy": float(np.mean(predicted == labels)),
            "correct": int(np.sum(predicted == labels)), "predictions": predicted}


def predict(model: nn.Module, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted classes for canonical NHWC images."""
    return np.concatenate([forward(model, images[i:i + batch_size]).argmax(axis=1)
                           for i in range(0, len(images), batch_size)])


def make_optimizer(model: nn.Module, spec) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, element_spec=None,
                    execution: Execution | None = None):
    """The train step as an eager function: zero_grad, forward, backward, step; returns the loss tensor.
    element_spec is TensorFlow's (input signature); PyTorch needs none."""
    execution = (execution or default_execution("torch")).check("torch")
    device = torch.device(execution.device)
    memory_format = torch.channels_last if execution.mode == "channels_last" else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    forward = torch.compile(model) if execution.mode == "compile" else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(execution.precision)

    def train_step(images, labels):
        images, labels = images.to(device, memory_format=memory_format), labels.to(device)
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            log_probs = forward(images)
        loss = nll_loss(log_probs.float(), labels)  # float32 loss if mixed
        loss.backward()
        optimizer.step()
        return loss

    return train_step


def train(model: nn.Module, spec, data, callbacks=None, verbose: bool = True, checkpoint_dir=None,
          execution: Execution | None = None) -> dict:
    """SGD with momentum over the shared batch order; a log line every log_interval batches, test after each epoch."""
    train_loader = make_loader(data.train_images, data.train_labels, spec.batch_size, spec.seed, shuffle=True)
    optimizer = make_optimizer(model, spec)
    log = TrainingLog("PyTorch", spec.epochs, len(train_loader), callbacks, verbose, spec.log_interval,
                      spec.batch_size, len(data.train_labels), spec.seed)
    train_step = make_train_step(model, optimizer, None, execution)
    resume(checkpoint_dir, model, optimizer, log)
    for epoch in range(log.epochs_done + 1, spec.epochs + 1):
        model.train()
        train_loader.sampler.set_epoch(epoch)
        log.begin_epoch(epoch)
        for batch_index, (images, labels) in enumerate(train_loader):
            with log.timer.step(len(labels)):
                loss_value = train_step(images, labels).item()  # the host copy waits for the step
            log.end_batch(epoch, batch_index, len(labels), loss=loss_value)
        test = evaluate(model, data.test_images, data.test_labels, spec.batch_size)
        log.end_epoch(epoch, {"test_loss": test["loss"], "test_accuracy": test["accuracy"]},
                      test_log_line(test["loss"], test["correct"], len(data.test_labels)))
        checkpoint(checkpoint_dir, epoch, model, optimizer, log)
    return log.result()

