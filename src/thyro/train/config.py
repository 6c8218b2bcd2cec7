"""Training configuration for one arm x fold job."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from thyro.base import StrictModel
from thyro.data.augment import AugmentConfig
from thyro.errors import ConfigError

#: CPU threads allowed per usable CPU: a little oversubscription is harmless, thousands of threads are not
#: (OpenMP allocates a stack per thread and aborts the process when it cannot).
THREADS_PER_CPU = 4


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which cgroups and ``taskset`` restrict)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def check_threads(threads: int | None, key: str = "train.threads") -> int | None:
    """``threads`` when this machine can use it; a :class:`ConfigError` naming ``key`` otherwise.

    Checked where the work runs (not when a configuration is read, which may happen on another
    machine), before torch is asked for the threads.
    """
    if threads is None:
        return None
    cpus = usable_cpus()
    if threads > THREADS_PER_CPU * cpus:
        raise ConfigError(f"{key}={threads}: this machine has {cpus} usable CPU(s); use at most "
                          f"{THREADS_PER_CPU * cpus} threads ({cpus} is usually best), or leave it unset.")
    return threads


class TrainConfig(StrictModel):
    """Optimisation, imbalance handling, augmentation, early stopping and hardware settings."""

    epochs: int = Field(30, ge=1, description="maximum epochs")
    batch_size: int = Field(32, ge=2)
    eval_batch_size: int = Field(256, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up, then cosine decay")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="final learning rate as a fraction of lr")
    patience: int = Field(10, ge=1, description="epochs without a better validation AUROC before stopping")
    imbalance: Literal["weighted_loss", "balanced_sampler", "none"] = "weighted_loss"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="mixed precision on CUDA (auto: bf16 where supported)")
    channels_last: bool = True
    data_on_device: Literal["auto", "yes", "no"] = Field(
        "auto", description="keep the uint8 training images on the GPU (auto: when they take under 2 GiB)")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice)")
    tta_flip: bool = Field(False, description="average predictions over the image and its horizontal flip")
    checkpoint_interval_s: float = Field(
        0.0, ge=0, description="save last.pt every epoch (0), or at most every this many seconds when epochs are "
                               "shorter (fast GPUs); always at the end. A kill loses at most this much training")
    tensorboard: bool = Field(True, description="also write TensorBoard logs when tensorboard is installed")
