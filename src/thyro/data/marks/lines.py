"""Marks drawn as lines: depth scales and rulers (long thin vertical lines) and dotted measurement lines."""

from __future__ import annotations

import cv2
import numpy as np

from thyro.data.marks.morphology import components


def dotted(centres: np.ndarray, min_dots: int = 4, tol: float = 1.0) -> np.ndarray:
    """Which of the small spots (centres, shape (n, 2)) lie on an evenly spaced dotted line."""
    n = len(centres)
    on_line = np.zeros(n, dtype=bool)
    if n < min_dots:
        return on_line
    # hand-written: a small vote over pairs of near neighbours (a few dozen spots at most per
    # image after the shape filters), simpler than a general line detector
    d = np.hypot(*(centres[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
    for i in range(n):
        for j in np.flatnonzero((d[i] > 2) & (d[i] < 25)):
            step = centres[j] - centres[i]
            members = {i, int(j)}
            for sign, k0 in ((1, 2), (-1, 1)):
                k = k0
                while True:
                    near = np.flatnonzero(np.hypot(*(centres - (centres[i] + sign * k * step)).T) <= tol + 0.5)
                    if not near.size:
                        break
                    members.add(int(near[0]))
                    k += 1
            if len(members) >= min_dots:
                on_line[list(members)] = True
    return on_line


def vertical_lines(stroke: np.ndarray, length: int, max_width: int = 3) -> np.ndarray:
    """Vertical straight lines of stroke pixels, at least ``length`` long and ``max_width`` wide at
    most (depth scales, rulers, the edges of icons).

    Tissue interfaces lie across the beam (horizontal); a long thin bright vertical line in the
    image is drawn, not imaged.  A bright region that is merely tall survives the vertical opening
    too, but is wider than a line.
    """
    opened = cv2.morphologyEx(stroke.astype(np.uint8), cv2.MORPH_OPEN, np.ones((length, 1), np.uint8))
    n, labels, stats, _ = components(opened)
    if n <= 1:
        return np.zeros(stroke.shape, dtype=bool)
    line = (stats[:, cv2.CC_STAT_AREA] <= max_width * stats[:, cv2.CC_STAT_HEIGHT]) & \
        (stats[:, cv2.CC_STAT_WIDTH] <= max_width + 2)
    line[0] = False
    return line[labels]


__all__ = ["dotted", "vertical_lines"]
