"""PyTorch's distributed engine, as thyro uses it: one process per device, started by ``torchrun``.

``torchrun --nproc_per_node N -m thyro pretrain ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` for every process; :func:`setup` reads them and joins the process
group (NCCL on GPUs, Gloo on the CPU).  Without those variables the run is a plain single process and
nothing here talks to the network.

Multi-node runs use torchrun's rendezvous, e.g. on every node::

    torchrun --nnodes 8 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \\
        --rdzv_id pretrain1 -m thyro pretrain ...

When a process dies, torchrun stops the others (they receive SIGTERM) and exits non-zero; running the
same command again resumes from the last checkpoint.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from thyro.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    owned: bool = False       # True when :func:`setup` joined the group (and :func:`teardown` leaves it)

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment (``(0, 0, 1)`` when absent)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ConfigError(f"RANK/LOCAL_RANK/WORLD_SIZE must be integers ({exc}).") from None
    return rank, local, world


def setup(device_type: str, timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group when started by torchrun (no-op for a single process).

    Parameters
    ----------
    device_type : ``"cpu"`` or ``"cuda"``: Gloo for the CPU, NCCL for GPUs.
    timeout_minutes : how long a collective may wait for the slowest rank.
    """
    rank, local, world = env_world()
    if dist.is_available() and dist.is_initialized():  # the caller runs its own group: join in, leave it be
        return DistInfo(rank=dist.get_rank(), local_rank=local, world_size=dist.get_world_size(),
                        backend=str(dist.get_backend()), owned=False)
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device_type == "cuda" else "gloo"
    kwargs = {}
    if device_type == "cuda":
        torch.cuda.set_device(local)
        kwargs["device_id"] = torch.device("cuda", local)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
    return DistInfo(rank=dist.get_rank(), local_rank=local, world_size=dist.get_world_size(), backend=backend,
                    owned=True)


def teardown(info: DistInfo) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if info.owned and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """Send a picklable object from ``src`` to every rank (returns it everywhere)."""
    if not info.distributed:
        return obj
    box = [obj if info.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the input is left as it is)."""
    out = value.detach().clone()
    if info.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= info.world_size
    return out


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum of every rank's gradient (each rank's loss uses the total)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over ranks, differentiable (the form ``torch.distributed.nn`` used to offer)."""
    return _AllReduceSum.apply(x)


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics are taken over every rank's samples, on the CPU (Gloo).

    Hand-written because ``torch.nn.SyncBatchNorm`` only runs on accelerators; on GPUs thyro uses
    PyTorch's own.  Two all-reduces per layer (sum and count, then the centred sum of squares) keep
    the variance as accurate as single-process BatchNorm; the all-reduces are the autograd-aware ones
    of :func:`all_reduce_with_grad`, so gradients flow to the samples of every rank.  Parameter and
    buffer names are those of ``BatchNorm2d``, so state dicts are interchangeable.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        sync = (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
        if not sync:
            return super().forward(input)
        if self.momentum is None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            self.num_batches_tracked.add_(1)
            factor = self.momentum
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        local_count = input.numel() // input.shape[1]
        stats = torch.cat([input.sum(dim=dims), input.new_tensor([float(local_count)])])
        stats = all_reduce_with_grad(stats)
        count = stats[-1]
        mean = stats[:-1] / count
        centred = input - mean.view(shape)
        var = all_reduce_with_grad(centred.pow(2).sum(dim=dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                n = float(count)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / max(n - 1.0, 1.0)), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Replace every BatchNorm by a synchronised one: PyTorch's on GPUs, :class:`CpuSyncBatchNorm` on the CPU."""
    if device_type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        if module.track_running_stats:
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device_type))
    return out

