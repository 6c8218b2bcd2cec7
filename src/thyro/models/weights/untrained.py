"""Recognise a network that was never trained: its tensors are still those of a fresh initialisation.

A checkpoint saved straight after ``timm.create_model`` / ``torchvision.models.resnet18(weights=None)`` (or a
training run that never took a step) is not pretrained, whatever its file is called.  What gives it away:

1. **BatchNorm statistics at their initial values**: every BatchNorm layer still has running mean 0 and running
   variance 1 (a network that saw any data has moved them).
2. **Normalisation layers at their initial scale and shift**, for networks without BatchNorm statistics
   (LayerNorm, GroupNorm: vision transformers, ConvNeXt): every one-dimensional ``weight`` constant (1, or 0
   for timm's zero-initialised scales) and every matching ``bias`` 0.
3. **Convolution kernels without structure**, for networks without any normalisation layer: trained kernels
   are smooth (neighbouring weights of a kernel are correlated) and a fresh initialisation's are independent (correlation about 0, at timm's and
   torchvision's initial spread).

:func:`untrained_reason` says which, or None for tensors that look trained.
"""

from __future__ import annotations

import torch

#: Kernels whose neighbouring weights correlate less than this in the median kernel (and that spread like a fresh
#: initialisation) have no structure: a fresh EfficientNet-Lite0's median is 0.00 (its largest 0.09), the trained
#: one's 0.26.
MIN_KERNEL_CORRELATION = 0.1


def _batchnorm_reason(state: dict[str, torch.Tensor]) -> str | None | bool:
    prefixes = [k[: -len(".running_mean")] for k in state if k.endswith(".running_mean")]
    pairs = [(state[p + ".running_mean"], state[p + ".running_var"]) for p in prefixes if p + ".running_var" in state]
    if not pairs:
        return False  # no BatchNorm statistics: the other signs decide
    fresh = sum(1 for m, v in pairs if bool((m == 0).all()) and bool((v == 1).all()))
    if fresh == len(pairs):
        return (f"every BatchNorm layer ({len(pairs)}) still has running mean 0 and running variance 1, the "
                "statistics of a network that never saw an image")
    return None


def _norm_reason(state: dict[str, torch.Tensor]) -> str | None | bool:
    scales = [k for k, v in state.items() if k.endswith(".weight") and v.ndim == 1 and v.is_floating_point()]
    if not scales:
        return False
    for key in scales:
        w, b = state[key], state.get(key[: -len(".weight")] + ".bias")
        if _spread(w) > 0 or (b is not None and bool((b != 0).any())):
            return None
    return (f"every normalisation layer ({len(scales)}) still has its initial scale and shift (weight constant, "
            "bias 0)")


def _spread(t: torch.Tensor) -> float:
    """``max - min`` of a tensor (0 for a constant one)."""
    return float(t.max() - t.min()) if t.numel() else 0.0


def kernel_correlation(w: torch.Tensor) -> float:
    """Mean correlation of horizontally and vertically neighbouring weights of a conv kernel ``(O, I, kh, kw)``."""
    w = w.double()
    pairs = []
    if w.shape[3] > 1:
        pairs.append((w[..., :, :-1], w[..., :, 1:]))
    if w.shape[2] > 1:
        pairs.append((w[..., :-1, :], w[..., 1:, :]))
    corr = [float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()).clamp_min(1e-30)) for a, b in pairs]
    return sum(corr) / len(corr) if corr else 0.0


def _kernel_reason(state: dict[str, torch.Tensor]) -> str | None:
    kernels = [(k, v) for k, v in state.items() if v.ndim == 4 and v.shape[2] * v.shape[3] >= 9 and v.is_floating_point()]
    if not kernels:
        return None
    typical = float(torch.tensor([kernel_correlation(v) for _, v in kernels]).median())
    if typical >= MIN_KERNEL_CORRELATION:
        return None
    key, w = kernels[0]
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    init_std = (2.0 / fan_out) ** 0.5  # kaiming normal, fan_out: timm's and torchvision's default for convolutions
    ratio = float(w.float().std()) / init_std
    if not 0.5 <= ratio <= 2.0:
        return None
    return (f"its convolution kernels have no structure (neighbouring weights correlate {typical:.2f} in the median "
            f"kernel; "
            f"{key} spreads {ratio:.2f} times as much as a fresh initialisation)")


def untrained_reason(state: dict[str, torch.Tensor]) -> str | None:
    """Why the tensors of ``state`` (any names) look like a fresh initialisation, or None (module docstring)."""
    for sign in (_batchnorm_reason, _norm_reason):
        found = sign(state)
        if found is not False:
            return found
    return _kernel_reason(state)


__all__ = ["MIN_KERNEL_CORRELATION", "kernel_correlation", "untrained_reason"]
