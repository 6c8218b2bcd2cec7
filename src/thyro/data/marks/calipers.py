"""Caliper crosses ("+" and "x") made of thin bright strokes."""

from __future__ import annotations

import cv2
import numpy as np

_DIRS_PLUS = ((1, 0), (-1, 0), (0, 1), (0, -1))
_DIRS_X = ((1, 1), (1, -1), (-1, 1), (-1, -1))
#: Caliper arm lengths and centre gaps searched (pixels): calipers are 5 to 15 pixels across.
_ARMS = (3, 4, 5, 6)
_GAPS = (0, 1, 2)
#: Farthest pixel from a centre an arm reaches.
_REACH = max(_ARMS) + max(_GAPS)
#: A cross's arm directions, and the directions between its arms.
_ORIENTATIONS = ((_DIRS_PLUS, _DIRS_X), (_DIRS_X, _DIRS_PLUS))


def _cross_template(dirs, reach: int) -> np.ndarray:
    """The pixels of a cross of arms ``reach`` long in ``dirs``, one pixel either side (a window)."""
    w = reach + 1
    t = np.zeros((2 * w + 1, 2 * w + 1), np.uint8)
    for dx, dy in dirs:
        cv2.line(t, (w, w), (w + dx * w, w + dy * w), 1, 1)
    return cv2.dilate(t, np.ones((3, 3), np.uint8)).astype(bool)


def crosses(stroke: np.ndarray, strong: np.ndarray, gray: np.ndarray | None = None, level: int = 0) -> np.ndarray:
    """Mask of caliper crosses ("+" and "x") made of thin bright ``stroke`` pixels.

    A pixel is the centre of a cross of arm length ``a`` and centre gap ``g`` when each of its
    four arms (pixels ``g+1 .. g+a`` from the centre along the cross's directions) is at least 80%
    stroke (allowing the arm as a whole one pixel off the exact direction, as strokes are one or
    two pixels wide and the centre is an integer pixel), the four directions between the arms hold
    at most a fifth of ``strong`` pixels and, from the second pixel out, at most 30% of stroke
    pixels (JPEG's halo around a stroke may join the stroke mask next to the centre; parallel
    tissue interfaces fill the directions between the arms), and, with ``gray``, the arms' mean
    gray level is at least ``level`` (calipers are drawn near white; speckle that happens to make
    a cross is dimmer).  A line has two arms; a focus or a calcification is a blob that fills the
    space between them.  What a cross marks is the stroke along its arms (one pixel either side),
    never tissue beside it.

    Only centres with a cross's worth of stroke pixels around them, stroke two or three pixels out
    in all four arm directions and little between them are tested one by one, so bright tissue
    costs little.
    """
    pad = _REACH + 3
    s = np.pad(stroke, pad)
    st = np.pad(strong, pad)
    gr = np.pad(gray, pad) if gray is not None else None
    out = np.zeros_like(s)
    for (dirs, others), cand in zip(_ORIENTATIONS, _candidates(stroke, s, pad)):
        ys, xs = np.nonzero(cand)
        if ys.size:
            _mark_crosses(out, _Sums(ys, xs), s, st, gr, level, dirs, others)
    return out[pad:-pad, pad:-pad]


def _candidates(stroke: np.ndarray, s: np.ndarray, pad: int) -> list[np.ndarray]:
    """For each orientation (:data:`_ORIENTATIONS`), the padded mask of the pixels worth testing as a cross's
    centre: a cross's worth of stroke pixels around them, stroke three pixels out in all four arm
    directions (whatever the arms' gap and length), and little stroke between the arms."""
    h, w = stroke.shape
    count = cv2.boxFilter(stroke.astype(np.uint8), cv2.CV_16U, (11, 11), normalize=False)
    near = cv2.dilate(s.astype(np.uint8), np.ones((3, 3), np.uint8))
    su = s.astype(np.uint8)

    def at(img: np.ndarray, dx: int, dy: int, k: int) -> np.ndarray:
        # the padded image seen from k pixels along (dx, dy), in unpadded coordinates (a view)
        return img[pad + k * dy:pad + k * dy + h, pad + k * dx:pad + k * dx + w]

    base = (count >= 8) & (count <= 60)
    prefilter = []
    for dirs, others in _ORIENTATIONS:
        cand = base.copy()
        for dx, dy in dirs:
            cand &= at(near, dx, dy, 3) > 0
        between = np.zeros((h, w), np.uint8)
        for dx, dy in others:
            for k in (2, 3, 4):
                between += at(su, dx, dy, k)
        cand &= between <= 3
        full = np.zeros_like(s)
        full[pad:pad + h, pad:pad + w] = cand
        prefilter.append(full)
    return prefilter


class _Sums:
    """Running sums of an image along a direction from each candidate centre ``(ys, xs)`` (padded
    coordinates): column ``k - 1`` sums pixels ``1 .. k`` out."""

    def __init__(self, ys: np.ndarray, xs: np.ndarray):
        self.ys, self.xs = ys, xs
        self.ks = np.arange(1, _REACH + 1)

    def along(self, img: np.ndarray, dx: int, dy: int, qx: int = 0, qy: int = 0) -> np.ndarray:
        vals = img[self.ys[:, None] + dy * self.ks + qy, self.xs[:, None] + dx * self.ks + qx].astype(np.float32)
        return np.concatenate([np.zeros((len(self.ys), 1), np.float32), np.cumsum(vals, axis=1)], axis=1)

    def shifts(self, img: np.ndarray, dx: int, dy: int) -> list[np.ndarray]:
        """:meth:`along`, and one pixel either side: an arm may lie one pixel off the exact direction, as a
        whole."""
        px, py = (-dy, dx) if dx == 0 or dy == 0 else (1, 0)
        return [self.along(img, dx, dy, q * px, q * py) for q in (-1, 0, 1)]


def _mark_crosses(out: np.ndarray, sums: _Sums, s: np.ndarray, st: np.ndarray, gr: np.ndarray | None, level: int,
                  dirs, others) -> None:
    """Test the candidates of one orientation for every arm length and gap; mark the stroke along the arms
    of each cross found in ``out`` (padded, like ``s``, ``st`` and ``gr``)."""
    arm_sums = [sums.shifts(s, dx, dy) for dx, dy in dirs]
    hard = [sums.along(st, dx, dy) for dx, dy in others]
    soft = [sums.along(s, dx, dy) for dx, dy in others]
    bright = [sums.along(gr, dx, dy) for dx, dy in dirs] if gr is not None else None
    for a in _ARMS:
        for g in _GAPS:
            r = g + a
            arms = np.min([np.max([(c[:, r] - c[:, g]) / a for c in arm], axis=0) for arm in arm_sums], axis=0)
            hit = arms >= 0.8
            if not hit.any():
                continue
            off = np.mean([c[:, r] / r for c in hard], axis=0)
            off_any = np.mean([(c[:, r] - c[:, 1]) / (r - 1) for c in soft], axis=0)
            hit &= (off <= 0.2) & (off_any <= 0.3)
            if bright is not None and hit.any():
                hit &= np.mean([(c[:, r] - c[:, g]) / a for c in bright], axis=0) >= level
            w = r + 1
            template = _cross_template(dirs, r)
            for y, x in zip(sums.ys[hit], sums.xs[hit]):
                out[y - w:y + w + 1, x - w:x + w + 1] |= s[y - w:y + w + 1, x - w:x + w + 1] & template


__all__ = ["crosses"]
