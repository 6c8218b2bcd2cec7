"""Colour helpers every reader shares: gray, RGB, a linear stretch to ``uint8`` and alpha compositing."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_gray(arr: np.ndarray) -> np.ndarray:
    """``uint8`` gray from gray or RGB (ITU-R 601-2 luma, computed by Pillow's ``convert("L")``)."""
    if arr.ndim == 2:
        return arr
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB").convert("L"))


def to_rgb(arr: np.ndarray) -> np.ndarray:
    """``uint8`` RGB ``(H, W, 3)`` from gray or RGB."""
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    return arr[..., :3]


def as_requested(arr: np.ndarray, color: bool) -> np.ndarray:
    """Decoded pixels as a reader hands them out: contiguous RGB ``(H, W, 3)`` when ``color``, else gray."""
    return np.ascontiguousarray(to_rgb(arr) if color else to_gray(arr))


def stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Linear map of the array's own minimum..maximum to 0..255 (constant images become 0)."""
    a = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def composite_on_black(arr: np.ndarray) -> np.ndarray:
    """``(H, W, 2|4)`` with alpha last -> gray/RGB premultiplied onto black (an ultrasound image's background)."""
    alpha = arr[..., -1:].astype(np.uint32)
    colour = arr[..., :-1].astype(np.uint32)
    out = ((colour * alpha + 127) // 255).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


__all__ = ["as_requested", "composite_on_black", "stretch_to_uint8", "to_gray", "to_rgb"]
