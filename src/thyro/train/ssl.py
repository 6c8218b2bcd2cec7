"""Self-supervised pretraining pieces (SimCLR): projection head and the NT-Xent loss, across ranks.

SimCLR (Chen et al., ICML 2020) pulls together the embeddings of two augmentations of the same image
and pushes apart those of every other image in the *global* batch.  With several processes each rank
embeds its own share of the batch; :func:`nt_xent` gathers every rank's embeddings (with gradients),
so the loss, and after DistributedDataParallel's gradient averaging the update, equal those of one
process holding the whole batch.

Only torch is imported here (no pydantic), so benchmarks can use it on a bare GPU machine.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Sequential):
    """SimCLR's projection MLP: Linear, ReLU, Linear (discarded after pretraining)."""

    def __init__(self, in_features: int, hidden: int | None = None, out_features: int = 128):
        hidden = hidden or in_features
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features))


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient for this rank's slice.

    Written with ``all_reduce`` (supported by Gloo and NCCL alike) rather than
    ``torch.distributed.nn.all_gather``, whose backward needs ``all_to_all``, which Gloo lacks on
    some builds.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` of every rank concatenated along dim 0 in rank order (``x`` itself for one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Normalised-temperature cross-entropy of SimCLR over the global batch.

    Parameters
    ----------
    z1, z2 : (b, d) projections of the two views of this rank's ``b`` images (row i of ``z1`` and
        row i of ``z2`` come from the same image).
    temperature : softmax temperature.

    Returns
    -------
    The mean loss over this rank's ``2b`` anchors, each scored against all ``2B - 1`` other
    embeddings of the global batch (``B = b * world_size``).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be (b, d), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z1 = F.normalize(z1.float(), dim=1)
    z2 = F.normalize(z2.float(), dim=1)
    b = z1.shape[0]
    all1, all2 = gather_with_grad(z1), gather_with_grad(z2)
    big_b = all1.shape[0]
    rank = dist.get_rank() if big_b != b else 0
    anchors = torch.cat([z1, z2], dim=0)                       # (2b, d)
    candidates = torch.cat([all1, all2], dim=0)                # (2B, d)
    logits = anchors @ candidates.t() / temperature            # (2b, 2B)
    own = torch.arange(b, device=z1.device) + rank * b
    self_cols = torch.cat([own, own + big_b])
    pos_cols = torch.cat([own + big_b, own])
    rows = torch.arange(2 * b, device=z1.device)
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[rows, self_cols] = True
    logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, pos_cols)
