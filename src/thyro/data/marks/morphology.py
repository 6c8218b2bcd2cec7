"""Morphology every kind of mark uses: the top-hat, connected pieces, reconstruction, per-piece maxima."""

from __future__ import annotations

import cv2
import numpy as np


def tophat(gray: np.ndarray) -> np.ndarray:
    return cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, np.ones((5, 5), np.uint8))


def _label_type(mask: np.ndarray) -> int:
    # 16-bit labels are enough (and faster) when there cannot be 65535 pieces
    return cv2.CV_16U if cv2.countNonZero(mask) < 65535 else cv2.CV_32S


def components(mask: np.ndarray):
    """``cv2.connectedComponentsWithStats`` (8-connected) of a uint8/bool mask: n, labels, stats, centroids."""
    m = mask.astype(np.uint8)
    return cv2.connectedComponentsWithStats(m, connectivity=8, ltype=_label_type(m))


def reconstruct(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Morphological reconstruction by dilation: the parts of ``allowed`` connected to ``seed``."""
    m = allowed.astype(np.uint8)
    n, labels = cv2.connectedComponents(m, connectivity=8, ltype=_label_type(m))
    keep = np.zeros(n, dtype=bool)
    keep[np.unique(labels[seed & allowed])] = True
    keep[0] = False
    return keep[labels]


def max_per_label(values: np.ndarray, labels: np.ndarray, n: int, only: np.ndarray | None = None) -> np.ndarray:
    """The largest of ``values`` (non-negative) on each label ``0..n-1`` as float32, over the pixels of the
    labels ``only`` marks when given (0 elsewhere).

    ``scipy.ndimage.maximum`` gave the same values but sorts every pixel of the image by label first: a
    fifth of preprocessing's time; this visits the chosen pixels once.
    """
    out = np.zeros(n, dtype=np.float32)
    pick = only[labels] if only is not None else labels > 0
    np.maximum.at(out, labels[pick], values[pick].astype(np.float32))
    return out


__all__ = ["components", "max_per_label", "reconstruct", "tophat"]
