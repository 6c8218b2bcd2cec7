"""The mark detector's settings and its public functions: coloured marks, white marks by kind, one mask,
and the fill."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from thyro.data.marks.calipers import crosses
from thyro.data.marks.lines import dotted, vertical_lines
from thyro.data.marks.morphology import components, max_per_label, reconstruct, tophat
from thyro.data.marks.text import text_mask

#: Kinds of white marks (:func:`white_marks`) and of all marks (:func:`mark_kinds`).
WHITE_KINDS = ("caliper", "text", "scale", "icon", "dotted")
KINDS = ("colour",) + WHITE_KINDS


@dataclass(frozen=True)
class MarkSettings:
    """Thresholds of the mark detector (see the module docstring).

    Attributes
    ----------
    chroma : int
        max(R, G, B) - min(R, G, B) above which a pixel is a coloured mark.
    white : int
        Gray level at and above which a thin structure can seed a white mark.
    contrast : int
        Top-hat (brightness above the 5 x 5 opening) a seed needs.
    grow_contrast : int
        Top-hat a pixel needs to join a seeded mark.
    caliper_level : int
        Mean gray level a caliper's arms need (calipers are drawn near white; speckle that happens
        to make a cross is dimmer).
    max_stroke : float
        Thickest stroke (pixels) a mark can have; thicker bright pieces are tissue.
    min_length : int
        Scales are at least twice this long; icon curves at least twice this tall.
    """

    chroma: int = 25
    white: int = 200
    contrast: int = 90
    grow_contrast: int = 45
    caliper_level: int = 185
    max_stroke: float = 3.0
    min_length: int = 7


def colour_mask(rgb: np.ndarray, chroma: int = 25) -> np.ndarray:
    """Boolean mask of coloured marks of an RGB uint8 image.

    Pixels whose chroma (max(R, G, B) - min(R, G, B)) exceeds ``chroma`` seed the mask; it grows
    (morphological reconstruction) into connected pixels of a lower chroma: above the image's own
    98th percentile plus 4, and at least 8.  JPEG's chroma subsampling spreads a thin coloured
    stroke into a pale halo a few pixels wide (a cyan "+" of one-pixel lines keeps a chroma of
    only 25 to 35), and the halo is where the mark's pixels are.
    """
    r, g, b = cv2.split(np.ascontiguousarray(rgb))
    c = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    seed = c > chroma
    if not seed.any():
        return seed
    cum = np.cumsum(np.bincount(c.ravel(), minlength=256))
    p98 = int(np.searchsorted(cum, 0.98 * cum[-1]))  # the 98th percentile, from the histogram
    return reconstruct(seed, c > min(max(8, p98 + 4), chroma))


def white_marks(gray: np.ndarray, settings: MarkSettings = MarkSettings()) -> dict[str, np.ndarray]:
    """Masks of white or light-gray graphics of a gray uint8 image, by kind.

    Keys: ``caliper`` (crosses), ``text`` (rows of glyphs), ``scale`` (long thin vertical lines
    and what is drawn on them: ticks, markers), ``icon`` (hairline curves running down the image)
    and ``dotted`` (evenly spaced dots on a line).  See the module docstring.
    """
    empty = np.zeros(gray.shape, dtype=bool)
    th = tophat(gray)
    seed = (gray >= settings.white) & (th >= settings.contrast)
    if not seed.any():
        return {kind: empty for kind in WHITE_KINDS}
    stroke = reconstruct(seed, th >= settings.grow_contrast)
    dist = cv2.distanceTransform(stroke.astype(np.uint8), cv2.DIST_L2, 3)
    thick = cv2.dilate((dist > settings.max_stroke / 2).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2)
    thin = stroke & ~thick.astype(bool)
    # between a caliper's arms lies tissue: neither a strong stroke nor anything as bright as the
    # arms (the ridges the top-hat leaves of a focus or calcification larger than its 5 x 5
    # window lie inside a bright blob)
    between = (th >= settings.contrast) | (gray >= settings.caliper_level)
    caliper = crosses(stroke, between, gray, settings.caliper_level)
    out = {"caliper": caliper, "text": text_mask(stroke, seed)}
    lines = vertical_lines(stroke, max(settings.min_length * 2, 12))
    if lines.any():  # the line and what is drawn on it, within a few pixels (ticks, markers)
        beside = cv2.dilate(lines.astype(np.uint8), np.ones((1, 13), np.uint8)).astype(bool)
        out["scale"] = reconstruct(lines, stroke & beside)
    else:
        out["scale"] = empty
    n, labels, stats, centroids = components(thin)
    area, height = stats[:, cv2.CC_STAT_AREA], stats[:, cv2.CC_STAT_HEIGHT]
    # long hairline curves running down the image (icon outlines, arrows): two pixels wide at
    # most, at least 15 pixels tall.  Tissue's thin bright structures are interfaces across the
    # beam (a few pixels tall), and rim calcifications are thicker than a hairline.
    tall = (height >= 2 * settings.min_length + 1) & (area >= 30)
    tall[0] = False
    if tall.any():
        tall &= max_per_label(dist, labels, n, only=tall) <= 1.5  # thickest point per piece
    out["icon"] = tall[labels] if tall.any() else empty
    spots = np.flatnonzero((area <= 6) & (np.arange(n) > 0))
    on = spots[dotted(centroids[spots])] if spots.size >= 4 else spots[:0]
    if on.size:
        keep = np.zeros(n, dtype=bool)
        keep[on] = True
        out["dotted"] = keep[labels]
    else:
        out["dotted"] = empty
    return out


def mark_kinds(image: np.ndarray, settings: MarkSettings = MarkSettings(), *, white: bool = True
               ) -> dict[str, np.ndarray]:
    """Masks of the marks of a uint8 image by kind: ``colour`` and the :func:`white_marks` kinds.

    Not grown (unlike :func:`detect_marks`); a pixel can belong to several kinds.
    """
    if image.ndim == 3:
        out = {"colour": colour_mask(image, settings.chroma)}
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    else:
        out = {"colour": np.zeros(image.shape, dtype=bool)}
        gray = image
    if white:
        out.update(white_marks(gray, settings))
    else:
        out.update({kind: np.zeros(gray.shape, dtype=bool) for kind in WHITE_KINDS})
    return out


def detect_marks(image: np.ndarray, settings: MarkSettings = MarkSettings(), *, white: bool = True) -> np.ndarray:
    """Boolean mask of burned-in marks of a uint8 image, gray ``(H, W)`` or RGB ``(H, W, 3)``.

    Coloured marks need an RGB image; white marks are found on the gray image (``white=False``
    finds coloured marks only).  The mask is grown by one pixel (JPEG spreads a mark's edges).
    """
    mask = np.zeros(image.shape[:2], dtype=bool)
    for part in mark_kinds(image, settings, white=white).values():
        mask |= part
    if not mask.any():
        return mask
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def inpaint(image: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """Fill the ``mask`` pixels of a uint8 image (gray or RGB) from their surroundings (Telea)."""
    if not mask.any():
        return image
    return cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8), radius, cv2.INPAINT_TELEA)


__all__ = ["KINDS", "WHITE_KINDS", "MarkSettings", "colour_mask", "detect_marks", "inpaint", "mark_kinds", "white_marks"]
