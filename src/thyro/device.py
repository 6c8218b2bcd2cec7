"""Device and precision choices."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc

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


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_memory() -> None:
    """Give memory freed by a finished job back to the operating system.

    A training job frees its model, optimiser state and activations when it ends, but glibc keeps the freed
    heap for the next allocations, fragmented; the next job then allocates beside it, and a study's resident
    memory stays high between jobs and climbs (four Lite0 fine-tune jobs at 224 px: 2.1-2.4 GB after each
    job, against 0.94 GB after each with this; the peak while training stays about 2.6 GB either way;
    benchmarks/job_memory.py).  Python's cycles are collected first, then ``malloc_trim(0)`` returns the free pages (nothing
    maintained does this; a no-op where the C library lacks it), and CUDA's cached blocks are emptied.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
