"""The plan's estimate of a study's duration: a few training steps of each arm timed on this machine, at the
arm's own image size, on what its training steps run (the whole network, or the rest after a cached trunk)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from thyro.config import TrainConfig
from thyro.device import resolve_device, use_channels_last

#: A dry run times this many training steps per arm to estimate the study's duration.
ESTIMATE_STEPS = 2


def train_speed(model, x: torch.Tensor, train: TrainConfig) -> float:
    """Training images per second of ``model`` on this machine (a few steps on the random inputs ``x``)."""
    device = resolve_device(train.device)
    model.to(device).train()
    x = x.to(device)
    if x.dim() == 4 and use_channels_last(device, x.shape[-1], train.channels_last):
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    batch = len(x)
    y = torch.zeros(batch, device=device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    start = None
    for step in range(ESTIMATE_STEPS + 1):
        if step == 1:
            start = time.perf_counter()  # the first step warms up
        loss = F.binary_cross_entropy_with_logits(model(x).reshape(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ESTIMATE_STEPS * batch / max(time.perf_counter() - start, 1e-9)


def estimate_seconds(plan) -> float:
    """The seconds the unfinished jobs of ``plan`` (a :class:`~thyro.train.plan.Plan`) take on this machine, from
    each arm's timed training steps."""
    total = 0.0
    for job in plan.todo:
        arm = plan.arm(job.arm)
        if not arm.images_per_second:
            continue
        train_images = len(plan.train_ids(job))
        epochs = arm.fitter.epochs(arm.train)
        total += (epochs + tuning_epochs(epochs, arm.train)) * train_images / arm.images_per_second
    return total


def tuning_epochs(epochs: int, train: TrainConfig) -> float:
    """The passes over a job's training part that ``train.tune`` adds before the job trains: each setting of its
    grid trains (its own epochs, else ``epochs``) on the inner split's fit part, ``1 - inner_fraction`` of it."""
    return sum(params.get("epochs", epochs) for params in train.tune.grid) * (1 - train.inner_fraction)


__all__ = ["ESTIMATE_STEPS", "estimate_seconds", "train_speed", "tuning_epochs"]
