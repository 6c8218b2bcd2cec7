"""The steps of preprocessing as functions of arrays: input checks, gray, scan area, ROI box, coloured marks."""

from __future__ import annotations

import cv2
import numpy as np

from thyro.data.marks import colour_mask, inpaint
from thyro.data.preprocess.geometry import Box
from thyro.data.roi import roi_bbox
from thyro.data.scan_area import find_scan_area
from thyro.errors import DataError

def as_uint8_image(image: np.ndarray, where: str = "image") -> np.ndarray:
    """Validate an input image: uint8, (H, W) or (H, W, 3|4); returns (H, W) or (H, W, 3)."""
    if not isinstance(image, np.ndarray):
        raise DataError(f"{where}: expected a numpy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise DataError(f"{where}: expected uint8 pixels, got {image.dtype}; read images with thyro.data.readers.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise DataError(f"{where}: expected an (H, W) or (H, W, 3) image, got shape {image.shape}.")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise DataError(f"{where}: image of shape {image.shape} is too small to preprocess.")
    return image


def mark_mask(rgb: np.ndarray, chroma: int = 25) -> np.ndarray:
    """Boolean mask of coloured marks of an RGB uint8 image (:func:`thyro.data.marks.colour_mask`)."""
    return colour_mask(rgb, chroma)


def inpaint_marks(rgb: np.ndarray, chroma: int = 25, radius: int = 3) -> np.ndarray:
    """Fill coloured marks of an RGB uint8 image by Telea inpainting (returns a new RGB image).

    Coloured marks only; :func:`thyro.data.marks.detect_marks` finds white ones too.
    """
    mask = colour_mask(rgb, chroma)
    if not mask.any():
        return rgb
    # JPEG chroma subsampling smears a mark's colour over its neighbours: dilate by one pixel.
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return inpaint(rgb, mask, radius)


def to_gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB uint8 image (gray images are returned unchanged)."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def find_sector(gray: np.ndarray, threshold: int = 4, min_area: float = 0.1) -> Box:
    """Bounding box ``(x0, y0, x1, y1)`` of the scan area of a gray image (see :func:`find_scan_area`)."""
    return find_scan_area(gray, threshold, min_area).box


def roi_box(roi: dict, origin: tuple[float, float], margin: float, min_size: int,
            shape: tuple[int, int]) -> Box | None:
    """The ROI's bounding box in the (possibly offset) image, grown by ``margin``; None if outside."""
    h, w = shape
    x0, y0, x1, y1 = roi_bbox(roi)
    x0, x1 = x0 - origin[0], x1 - origin[0]
    y0, y1 = y0 - origin[1], y1 - origin[1]
    rw, rh = x1 - x0, y1 - y0
    x0, x1 = x0 - margin * rw, x1 + margin * rw
    y0, y1 = y0 - margin * rh, y1 + margin * rh
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = max(x1 - x0, min_size) / 2, max(y1 - y0, min_size) / 2
    box = (int(np.floor(cx - half_w)), int(np.floor(cy - half_h)), int(np.ceil(cx + half_w)), int(np.ceil(cy + half_h)))
    box = (max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3]))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return None
    return box


__all__ = ["find_sector", "inpaint_marks", "mark_mask", "roi_box", "to_gray"]
