"""Data-parallel U-Net training in PyTorch: DistributedDataParallel over the processes torchrun starts (gloo on
CPUs, nccl on GPUs), each rank taking an equal share of the same global batch; twin of tf_impl/distributed.py.

    torchrun --nproc-per-node 2 -m torch_impl.distributed JOB.json
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from shared import distributed
from shared.history import TrainingLog
from shared.init import init_weights
from shared.weights import Weights, unet_layout
from torch_impl import unet
from torch_impl.classifier import bce_dice_loss, dice_score, make_optimizer
from torch_impl.data import CarvanaDataset, to_tensor_images
from torch_impl.weights import checkpoint, export_weights, load_weights, resume


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among `world` processes, and the device its replica runs on."""

    rank: int
    world: int
    device: torch.device


def setup(device: str = "cpu") -> Context:
    """Joins the process group torchrun described in the environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT):
    nccl between GPUs, gloo between CPUs. A single process without torchrun needs no group."""
    world = distributed.world_size()
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        place = torch.device("cuda", local)
    else:
        place = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if place.type == "cuda" else "gloo")
    return Context(distributed.rank(), world, place)


def teardown(context: Context) -> None:
    """Leave the process group, so that every rank exits cleanly."""
    if dist.is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over all ranks, differentiable: every rank's input feeds every rank's output, so backward sums the
    ranks' upstream gradients the same way (what torch.nn.SyncBatchNorm's backward does on GPUs)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class _GlooSyncBatchNorm(unet.BatchNorm):
    """A training batch split across CPU ranks normalised with the statistics of the whole global batch, as one
    process would: torch.nn.SyncBatchNorm does that on GPUs only (torch 2.14 refuses CPU tensors), so each
    rank all-reduces its per-channel sum, sum of squares and count, and autograd differentiates through it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        local = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), x.new_full((1,), x.numel() / channels)])
        total = _AllReduceSum.apply(local)  # one collective for all three
        count = total[-1]
        mean = total[:channels] / count
        variance = (total[channels:2 * channels] / count - mean * mean).clamp(min=0)  # E[x^2] - E[x]^2, biased
        with torch.no_grad():  # PyTorch's running statistics: momentum weighs the new batch, variance unbiased
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(variance * count / (count - 1), self.momentum)
            self.num_batches_tracked.add_(1)
        scale = self.weight * torch.rsqrt(variance + self.eps)
        return x * scale[None, :, None, None] + (self.bias - mean * scale)[None, :, None, None]  # (N, C, H, W)


def sync_batch_norm(model: nn.Module) -> nn.Module:
    """Every BatchNorm normalises with the statistics of the global batch: torch.nn.SyncBatchNorm on GPUs,
    the all-reduce above on CPUs. Names, parameters and buffers stay those of the canonical layout."""
    if next(model.parameters()).device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, unet.BatchNorm):
                synced = _GlooSyncBatchNorm(child.num_features, eps=child.eps, momentum=child.momentum)
                synced.load_state_dict(child.state_dict())
                setattr(parent, name, synced)
    return model


def replicate(context: Context, spec, canonical: Weights) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The U-Net with the canonical weights on this rank's device, wrapped in DistributedDataParallel (which
    averages the ranks' gradients during backward), and its optimizer."""
    model = unet.build(spec)
    load_weights(model, canonical)
    model = sync_batch_norm(model.to(context.device)).train()
    if context.world > 1:
        # Synchronised BatchNorm keeps the running statistics equal on every rank: DDP need not broadcast rank 0's
        # before every forward (it still does once, here, as it does the parameters).
        model = DistributedDataParallel(model, device_ids=[context.device.index] if context.device.type == "cuda"
                                        else None, forward_sync_buffers=False)
    return model, make_optimizer(model, spec)


def unwrap(model: nn.Module) -> nn.Module:
    """The U-Net itself: DDP holds it as .module (its state_dict names carry a "module." prefix)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def local_batch(context: Context, indices: np.ndarray,
                load: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's equal share of a global batch of sample indices, loaded (images NHWC, masks NHW, numpy) and
    made NCHW tensors on its device: each rank reads and augments only its own samples."""
    images, masks = load(distributed.shard(indices, context.rank, context.world))
    return to_tensor_images(images).to(context.device), to_tensor_images(masks[..., None]).to(context.device)


class _ShardBatchSampler(Sampler):
    """This rank's share of every global batch of the epoch, in the shared order, as the (epoch, index) keys of
    torch_impl.data.CarvanaDataset: what DistributedSampler does to a sample order, done to the batch order."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        for share in distributed.epoch_shards(self.n, self.batch_size, self.seed, self.epoch, self.rank, self.world):
            yield [(self.epoch, int(index)) for index in share]

    def __len__(self) -> int:
        return len(distributed.global_batches(self.n, self.batch_size, self.seed, self.epoch, self.world))


def make_loader(context: Context, dataset, spec) -> DataLoader:
    """This rank's batches of a shared training set (images (n, 3, H, W), masks (n, 1, H, W)): its sampler
    yields the rank's share of each global batch; spec.workers processes decode and augment them."""
    sampler = _ShardBatchSampler(len(dataset), spec.batch_size, spec.seed, context.rank, context.world)
    return DataLoader(CarvanaDataset(dataset), batch_sampler=sampler, num_workers=spec.workers,
                      pin_memory=context.device.type == "cuda")


def make_train_step(context: Context, model: nn.Module, optimizer: torch.optim.Optimizer,
                    threshold: float) -> Callable[[tuple[torch.Tensor, torch.Tensor]], tuple[float, float]]:
    """The eager step: zero_grad, forward, the rank's mean loss, backward (DDP all-reduces and averages the
    gradients bucket by bucket as they are ready: the gradient of the global batch's mean loss), step.
    Returns the global batch's loss and Dice: equal shards, so the mean of the ranks' means."""

    def train_step(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
        images, masks = batch
        optimizer.zero_grad()
        logits = model(images)
        loss = bce_dice_loss(logits, masks)
        loss.backward()
        optimizer.step()
        metrics = torch.stack([loss.detach(), dice_score(logits.detach(), masks, threshold)])
        if context.world > 1:
            dist.all_reduce(metrics)
            metrics /= context.world
        return float(metrics[0]), float(metrics[1])

    return train_step


def export(model: nn.Module) -> Weights:
    """The canonical weights of this rank's replica (the same on every rank)."""
    return export_weights(unwrap(model))


def validate(context: Context, model: nn.Module, valid_set, batch_size: int, threshold: float) -> dict:
    """Loss and thresholded Dice over the validation set, per image, by one rank alone: the U-Net without
    its DDP wrapper, BatchNorm in inference mode, so no collective is involved."""
    net = unwrap(model).eval()
    losses, dices, counts = [], [], []
    with torch.no_grad():
        for start in range(0, len(valid_set), batch_size):
            indices = np.arange(start, min(start + batch_size, len(valid_set)))
            images, masks = distributed.load_samples(valid_set, indices)
            logits = net(to_tensor_images(images).to(context.device))  # (n, 1, H, W)
            masks = to_tensor_images(masks[..., None]).to(context.device)
            losses.append(bce_dice_loss(logits, masks).item())
            dices.append(dice_score(logits, masks, threshold).item())
            counts.append(len(indices))
    net.train()
    return {"val_loss": float(np.average(losses, weights=counts)), "val_dice": float(np.average(dices, weights=counts))}


def run_step(context: Context, spec, canonical: Weights, images: np.ndarray, masks: np.ndarray,
             output: str | os.PathLike) -> Path | None:
    """One step on the global batch from the canonical weights; rank 0 writes the updated weights (None elsewhere)."""
    model, optimizer = replicate(context, spec, canonical)
    train_step = make_train_step(context, model, optimizer, spec.threshold)
    train_step(local_batch(context, np.arange(len(images)), lambda share: (images[share], masks[share])))
    return distributed.save_on_chief(export(model), Path(output) / "weights.safetensors", context.rank)


def train(context: Context, spec, data_dir: str | os.PathLike, output: str | os.PathLike,
          canonical: Weights | None = None,
          callbacks: Callable[[nn.Module], list] | None = None) -> list[dict]:
    """spec.epochs epochs over the shared batch order, each rank taking its share of every global batch of
    spec.batch_size; rank 0 alone validates, runs the callbacks (made by `callbacks(model)`, the unwrapped
    model: they need it), writes a checkpoint after every epoch (a restart continues from it) and, at the end,
    the weights and the history."""
    train_set, valid_set = distributed.carvana_sets(spec, data_dir)
    canonical = init_weights(unet_layout(spec), spec.seed) if canonical is None else canonical
    model, optimizer = replicate(context, spec, canonical)
    train_step = make_train_step(context, model, optimizer, spec.threshold)
    loader = make_loader(context, train_set, spec)
    chief = distributed.is_chief(context.rank)
    checkpoint_dir = Path(output) / "checkpoint"
    log = TrainingLog("PyTorch", spec.epochs, len(loader), callbacks(unwrap(model)) if chief and callbacks else None,
                      verbose=chief, seed=spec.seed)
    resume(checkpoint_dir, unwrap(model), optimizer, log)  # every rank, from the same files
    for epoch in range(log.epochs_done + 1, spec.epochs + 1):
        loader.batch_sampler.set_epoch(epoch)
        unwrap(model).train()  # a callback that predicted left it in eval mode: its BatchNorm would not synchronise
        log.begin_epoch(epoch)
        for batch_index, (images, masks) in enumerate(loader):
            size = len(images) * context.world  # the global batch
            with log.timer.step(size):
                loss, dice = train_step((images.to(context.device), masks.to(context.device)))
            log.end_batch(epoch, batch_index, size, loss=loss, dice=dice)
        log.end_epoch(epoch, validate(context, model, valid_set, spec.batch_size, spec.threshold)
                      if chief and valid_set else None)
        if chief:
            checkpoint(checkpoint_dir, epoch, unwrap(model), optimizer, log)
    run = log.result()
    if chief:
        distributed.save_training(output, export(model), run, context.world)
    return run["history"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of one process: `torchrun --nproc-per-node N -m torch_impl.distributed JOB.json`."""
    return distributed.run_job_file(sys.argv[1:] if argv is None else argv, sys.modules[__name__], torch.set_num_threads,
                                    "torchrun --nproc-per-node N -m torch_impl.distributed JOB.json")


if __name__ == "__main__":
    sys.exit(main())
