"""Device and precision choices."""

from __future__ import annotations

import contextlib

import torch

from thyro.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no GPU; use --device cpu or auto.")
    return torch.device(name)


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The mixed-precision dtype for ``amp`` on ``device`` (None = full precision)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


#: Smallest input side at which channels-last memory pays on a CPU.  Measured with
#: ``benchmarks/train_speed.py``-style steps (ResNet-18, batch 32, 2 threads, torch 2.14): 0.92x at
#: 64 px, 1.22x at 128 px, 1.22x at 224 px against contiguous tensors.
CPU_CHANNELS_LAST_MIN_SIZE = 96


def use_channels_last(device: torch.device, size: int, wanted: bool = True) -> bool:
    """Whether to train and score in channels-last memory format: on a GPU whenever ``wanted``, on a
    CPU for inputs of :data:`CPU_CHANNELS_LAST_MIN_SIZE` pixels or more."""
    if not wanted:
        return False
    return device.type == "cuda" or (device.type == "cpu" and int(size) >= CPU_CHANNELS_LAST_MIN_SIZE)
