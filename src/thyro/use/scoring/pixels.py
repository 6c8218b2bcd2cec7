"""Images given as pixels rather than files: PIL images and numpy arrays, checked and made uint8."""

from __future__ import annotations

from typing import Any

import numpy as np

from thyro.data.readers.base import RAISE_LIMIT, max_pixels
from thyro.errors import DataError


def is_pixels(image: Any) -> bool:
    """Whether ``image`` is decoded pixels (a numpy array or a PIL image) rather than a file or its bytes."""
    return isinstance(image, np.ndarray) or (hasattr(image, "mode") and hasattr(image, "convert"))


def as_pixels(image: Any, where: str = "image") -> np.ndarray:
    """An in-memory image as the preprocessing takes it: uint8, (H, W) or (H, W, 3).

    Accepts a PIL image (any mode: converted to RGB, or kept grey) or a numpy array of shape (H, W),
    (H, W, 1), (H, W, 3) or (H, W, 4) (alpha dropped): uint8 (0-255) as it is, float in [0, 1] scaled to
    0-255 (rounded).  Other dtypes, float values outside [0, 1], NaN, or other shapes are refused.

    Raises
    ------
    DataError
        Naming ``where`` and how to make the image acceptable.
    """
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
        grey = image.mode in ("1", "L", "I", "I;16", "F", "LA")
        if image.mode in ("I", "I;16", "F"):
            raise DataError(f"{where}: a {image.mode!r} (16-bit or float) PIL image; convert it to 8 bits "
                            "(image.convert('L')) or pass a float array in [0, 1].")
        image = np.asarray(image.convert("L" if grey else "RGB"))
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 4):
        arr = arr[..., 0] if arr.shape[2] == 1 else arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise DataError(f"{where}: expected an image of shape (H, W) or (H, W, C) with C 1, 3 or 4; got {arr.shape}.")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min(initial=0.0) < 0 or arr.max(initial=0.0) > 1:
            raise DataError(f"{where}: float pixels must lie in [0, 1] (got {np.nanmin(arr):g} to "
                            f"{np.nanmax(arr):g}); scale them, or pass uint8 0-255.")
        return np.round(arr * 255.0).astype(np.uint8)
    raise DataError(f"{where}: {arr.dtype} pixels; pass uint8 (0-255) or float in [0, 1] (e.g. a 16-bit image "
                    "scaled by its window: (arr - lo) / (hi - lo)).")


def check_pixel_limit(pixels: np.ndarray, where: str) -> None:
    """Refuse an image over the pixel limit (``thyro.settings``' ``max_pixels``), as the readers refuse a file:
    preprocessing one takes about 20 bytes per pixel at its peak."""
    h, w = pixels.shape[:2]
    limit = max_pixels()
    if h * w > limit:
        raise DataError(f"{where}: image is {w} x {h} = {w * h:,} pixels, over the limit of {limit:,} pixels. "
                        f"{RAISE_LIMIT}")


__all__ = ["as_pixels", "check_pixel_limit", "is_pixels"]
