"""Data-parallel U-Net training in PyTorch: DDP under torchrun, gloo or nccl; twin of tf_impl/distributed.py."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from shared import data_parallel, distributed
from shared.data.carvana import TrainImageDataset
from shared.tasks import UNetSpec
from shared.weights import Weights
from torch_impl import unet, weights
from torch_impl.classifier import bce_dice_loss, dice_score, make_optimizer
from torch_impl.data import _CarvanaDataset, to_tensor_images
from torch_impl.weights import export_weights, load_weights


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among `world` processes, and the device its replica runs on."""

    rank: int
    world: int
    device: torch.device

    @property
    def replicas(self) -> int:
        """The shares of a global batch: one per rank."""
        return self.world


FRAMEWORK = "PyTorch"  # this side's name in shared.data_parallel's log lines
checkpointer = weights.checkpointer  # how shared.data_parallel saves and resumes a run of this side


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


def replicate(context: Context, spec: UNetSpec, canonical: Weights) -> tuple[nn.Module, torch.optim.Optimizer]:
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
    """This rank's share of every global batch of the epoch, as the (epoch, index) keys of
    torch_impl.data._CarvanaDataset: what DistributedSampler does to a sample order, done to the batch order."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world
        self.epoch, self.batches = 1, []

    def set_epoch(self, epoch: int, batches: list[np.ndarray]) -> None:
        self.epoch, self.batches = epoch, batches

    def __iter__(self):
        for indices in self.batches:
            yield [(self.epoch, int(index)) for index in distributed.shard(indices, self.rank, self.world)]

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(context: Context, dataset: TrainImageDataset, spec: UNetSpec) -> DataLoader:
    """This rank's batches of a shared training set (images (n, 3, H, W), masks (n, 1, H, W)): its sampler
    yields the rank's share of each global batch; spec.workers processes decode and augment them."""
    sampler = _ShardBatchSampler(context.rank, context.world)
    return DataLoader(_CarvanaDataset(dataset), batch_sampler=sampler, num_workers=spec.workers,
                      pin_memory=context.device.type == "cuda")


def epoch_batches(context: Context, model: nn.Module, loader: DataLoader, epoch: int,
                  batches: list[np.ndarray]) -> DataLoader:
    """This rank's shares of the epoch's global batches, on the CPU (the step moves them to the device)."""
    loader.batch_sampler.set_epoch(epoch, batches)
    unwrap(model).train()  # a callback that predicted left it in eval mode: its BatchNorm would not synchronise
    return loader


def make_train_step(context: Context, model: nn.Module, optimizer: torch.optim.Optimizer,
                    threshold: float) -> Callable[[tuple[torch.Tensor, torch.Tensor]], tuple[float, float]]:
    """The eager step: zero_grad, forward, the rank's mean loss, backward (DDP all-reduces and averages the
    gradients bucket by bucket as they are ready: the gradient of the global batch's mean loss), step.
    Returns the global batch's loss and Dice: equal shards, so the mean of the ranks' means."""

    def train_step(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
        # The loader's batches arrive on the CPU: copied here, inside the timed step; one already there stays put.
        images, masks = batch[0].to(context.device), batch[1].to(context.device)
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


def evaluate(context: Context, model: nn.Module, images: np.ndarray, masks: np.ndarray,
             threshold: float) -> tuple[float, float]:
    """Loss and thresholded Dice of one validation batch, by one rank alone: the U-Net without its DDP wrapper,
    BatchNorm in inference mode, so no collective is involved."""
    net = unwrap(model).eval()
    with torch.no_grad():
        logits = net(to_tensor_images(images).to(context.device))  # (n, 1, H, W)
        targets = to_tensor_images(masks[..., None]).to(context.device)
        loss, dice = bce_dice_loss(logits, targets).item(), dice_score(logits, targets, threshold).item()
    net.train()  # as training left it: the callbacks after the validation see no change of mode
    return loss, dice


def train(context: Context, spec: UNetSpec, data_dir: str | os.PathLike, output: str | os.PathLike,
          canonical: Weights | None = None, callbacks: Callable[[nn.Module], list] | None = None) -> list[dict]:
    """shared.data_parallel.train with DDP's pieces above: each rank trains its share of every global batch."""
    return data_parallel.train(sys.modules[__name__], context, spec, data_dir, output, canonical, callbacks)


def main(argv: list[str] | None = None) -> int:
    """Entry point of one process; torchrun starts one per rank."""
    usage = "torchrun --nproc-per-node N -m torch_impl.distributed JOB.json"
    return data_parallel.run_job_file(sys.argv[1:] if argv is None else argv, sys.modules[__name__],
                                      torch.set_num_threads, usage)


if __name__ == "__main__":
    sys.exit(main())
