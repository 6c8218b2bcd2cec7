"""Burned-in marks on ultrasound images: find them, and fill them in.

Scanners draw the sonographer's calipers ("+", "x"), dotted measurement lines, text, body-mark
icons, depth scales and focus or orientation markers into the exported pixels.  Calipers and
measurements are drawn more often on suspicious nodules, so a model can learn them instead of the
nodule; they are removed before training and prediction.  What must survive is the tissue,
including its brightest features: echogenic foci and calcifications.

Marks are graphics, and graphics differ from tissue in ways that do not depend on the scanner:

* **Colour** (:func:`colour_mask`): tissue is gray; a pixel whose channels differ by more than
  ``chroma`` is a coloured mark (green, cyan or yellow calipers, coloured markers).  JPEG's chroma
  subsampling spreads a mark's colour over its neighbours, so the mask is grown by one pixel.
* **Thin bright strokes** (:func:`white_mask`): white and light-gray graphics are drawn with
  strokes one or two pixels wide, far brighter than the pixels two or three pixels away (most
  scanners add a dark outline to keep them visible on bright tissue).  The white top-hat of the
  gray image (the image minus its opening by a 5 x 5 square) keeps exactly such structures.
  Pixels that are bright (``white`` and above) with a strong top-hat seed the mask; it then grows,
  by morphological reconstruction, into connected pixels of a weaker top-hat, which completes
  strokes that JPEG has dimmed.  Each connected piece is then judged by its shape:

  - **kept as tissue**: compact blobs more than ``max_stroke`` pixels thick (echogenic foci and
    calcifications are blobs: the speckle-sized point spread function makes them at least three
    pixels across, often much more), and small isolated spots (a punctate echogenic focus is a
    dot with nothing else drawn around it);
  - **removed as a mark**: thin pieces that are long (a line, a scale, an arm of an "x", a text
    stroke: at least ``min_length`` pixels), and small thin pieces that are part of a glyph (three
    or more small pieces within a caliper's reach, as the four arms of a "+" drawn with a gap at
    the centre, or the letters of a label), and dots on a regular dotted line (four or more,
    collinear, evenly spaced).

Removal is :func:`inpaint` (OpenCV's Telea method): each mark pixel is filled from the tissue
around it, so the image keeps its texture and no black hole is left for a model to learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Kinds a detected mark component can have (used in reports).
KINDS = ("colour", "line", "glyph", "dotted")


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
    max_stroke : float
        Thickest stroke (pixels) a mark can have; thicker bright pieces are tissue.
    min_length : int
        A thin piece at least this long (the longer side of its rotated box) is a mark by itself.
    """

    chroma: int = 40
    white: int = 200
    contrast: int = 90
    grow_contrast: int = 45
    max_stroke: float = 3.0
    min_length: int = 7


def colour_mask(rgb: np.ndarray, chroma: int = 40) -> np.ndarray:
    """Boolean mask of coloured (high-chroma) pixels of an RGB uint8 image."""
    chan_max = rgb.max(axis=2).astype(np.int16)
    chan_min = rgb.min(axis=2).astype(np.int16)
    return (chan_max - chan_min) > chroma


def _tophat(gray: np.ndarray) -> np.ndarray:
    return cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, np.ones((5, 5), np.uint8))


def _reconstruct(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Morphological reconstruction by dilation: the parts of ``allowed`` connected to ``seed``."""
    n, labels = cv2.connectedComponents(allowed.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, dtype=bool)
    keep[np.unique(labels[seed & allowed])] = True
    keep[0] = False
    return keep[labels]


_DIRS_PLUS = ((1, 0), (-1, 0), (0, 1), (0, -1))
_DIRS_X = ((1, 1), (1, -1), (-1, 1), (-1, -1))
#: Caliper arm lengths and centre gaps searched (pixels): calipers are 5 to 15 pixels across.
_ARMS = (3, 4, 5, 6)
_GAPS = (0, 1, 2)


def _crosses(stroke: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Mask of caliper crosses ("+" and "x") made of thin bright ``stroke`` pixels.

    A centre is a cross of arm length ``a`` and centre gap ``g`` when each of its four arms
    (pixels ``g+1 .. g+a`` from the centre along the cross's directions) is at least three-quarters
    stroke (within a pixel, as strokes are one or two pixels wide) and the four directions between
    the arms hold at most a fifth of ``strong`` pixels and, from the second pixel out, at most 30%
    of stroke pixels (JPEG's halo around a stroke may join the stroke mask next to the centre;
    parallel tissue interfaces fill the directions between the arms).  A line has only two arms; a blob (a focus, a
    calcification) or bright tissue fills the directions between the arms.  Only centres with a
    cross's worth of stroke pixels around them are tested, so this costs little.
    """
    pad = max(_ARMS) + max(_GAPS) + 3
    s = np.pad(stroke, pad)
    st = np.pad(strong, pad)
    count = cv2.boxFilter(s.astype(np.float32), -1, (11, 11), normalize=False)
    centre = np.zeros_like(s)
    centre[pad:-pad, pad:-pad] = True
    ys, xs = np.nonzero((count >= 8) & (count <= 60) & centre)
    out = np.zeros_like(s)
    if ys.size == 0:
        return out[pad:-pad, pad:-pad]

    def coverage(dx: int, dy: int, ks: np.ndarray) -> np.ndarray:
        # an arm is a straight run of stroke pixels, allowed one pixel off the exact direction
        # as a whole (strokes are one or two pixels wide and the centre is an integer pixel)
        px, py = (-dy, dx) if dx == 0 or dy == 0 else (1, 0)
        return np.max([s[ys[:, None] + dy * ks + q * py, xs[:, None] + dx * ks + q * px].mean(axis=1)
                       for q in (-1, 0, 1)], axis=0)

    for dirs, others in ((_DIRS_PLUS, _DIRS_X), (_DIRS_X, _DIRS_PLUS)):
        for a in _ARMS:
            for g in _GAPS:
                ks = np.arange(g + 1, g + a + 1)
                arms = np.min([coverage(dx, dy, ks) for dx, dy in dirs], axis=0)
                kb = np.arange(1, g + a + 1)
                off = np.mean([st[ys[:, None] + dy * kb, xs[:, None] + dx * kb].mean(axis=1) for dx, dy in others],
                              axis=0)
                kb = np.arange(2, g + a + 1)
                off_any = np.mean([s[ys[:, None] + dy * kb, xs[:, None] + dx * kb].mean(axis=1)
                                   for dx, dy in others], axis=0)
                hit = (arms >= 0.75) & (off <= 0.2) & (off_any <= 0.3)
                r = g + a + 1
                for y, x in zip(ys[hit], xs[hit]):
                    out[y - r:y + r + 1, x - r:x + r + 1] |= s[y - r:y + r + 1, x - r:x + r + 1]
    return out[pad:-pad, pad:-pad]


def _dotted(centres: np.ndarray, min_dots: int = 4, tol: float = 1.0) -> np.ndarray:
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


def _vertical_lines(stroke: np.ndarray, length: int, max_width: int = 3) -> np.ndarray:
    """Vertical straight lines of stroke pixels, at least ``length`` long and ``max_width`` wide at
    most (depth scales, rulers, the edges of icons).

    Tissue interfaces lie across the beam (horizontal); a long thin bright vertical line in the
    image is drawn, not imaged.  A bright region that is merely tall survives the vertical opening
    too, but is wider than a line.
    """
    opened = cv2.morphologyEx(stroke.astype(np.uint8), cv2.MORPH_OPEN, np.ones((length, 1), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n <= 1:
        return np.zeros(stroke.shape, dtype=bool)
    line = (stats[:, cv2.CC_STAT_AREA] <= max_width * stats[:, cv2.CC_STAT_HEIGHT]) & \
        (stats[:, cv2.CC_STAT_WIDTH] <= max_width + 2)
    line[0] = False
    return line[labels]


def _vertical_strokes(piece: np.ndarray, min_run: int) -> int:
    """How many separate vertical strokes (column runs of at least ``min_run`` pixels) a piece has."""
    h, w = piece.shape
    best = np.zeros(w, dtype=np.int64)
    run = np.zeros(w, dtype=np.int64)
    for row in piece:
        run = np.where(row, run + 1, 0)
        best = np.maximum(best, run)
    tall = best >= min_run
    return int(tall[0]) + int(np.count_nonzero(tall[1:] & ~tall[:-1]))


def _text(stroke: np.ndarray) -> np.ndarray:
    """Mask of text: rows of glyphs drawn in thin strokes.

    Glyphs next to each other are joined by a horizontal closing; a joined piece 7 to 24 pixels
    tall, at least one and a half times as wide, with three or more separate vertical strokes
    reaching 70% of its height, and one at least every one and a half heights along it, is text.  Tissue interfaces are joined too, but they are a few
    pixels tall and have no vertical strokes.
    """
    closed = cv2.morphologyEx(stroke.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((1, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    out = np.zeros(stroke.shape, dtype=bool)
    for i in range(1, n):
        x, y, w, h = (int(v) for v in stats[i, :4])
        if not (7 <= h <= 24 and w >= 1.5 * h):
            continue
        piece = (labels[y:y + h, x:x + w] == i) & stroke[y:y + h, x:x + w]
        # glyphs are about as wide as tall: a text line has a stroke every glyph or so (a bright
        # interface with a few ticks drawn on it has far fewer)
        if _vertical_strokes(piece, max(5, int(0.7 * h))) >= max(3, w / (1.5 * h)):
            out[y:y + h, x:x + w] |= piece
    return out


def white_mask(gray: np.ndarray, settings: MarkSettings = MarkSettings()) -> np.ndarray:
    """Boolean mask of white or light-gray graphics (thin bright strokes) of a gray uint8 image."""
    th = _tophat(gray)
    seed = (gray >= settings.white) & (th >= settings.contrast)
    if not seed.any():
        return np.zeros(gray.shape, dtype=bool)
    stroke = _reconstruct(seed, th >= settings.grow_contrast)
    dist = cv2.distanceTransform(stroke.astype(np.uint8), cv2.DIST_L2, 3)
    thick = cv2.dilate((dist > settings.max_stroke / 2).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2)
    thin = stroke & ~thick.astype(bool)
    mask = _crosses(stroke, th >= settings.contrast) | _text(stroke)
    lines = _vertical_lines(stroke, max(settings.min_length * 2, 12))
    if lines.any():  # the line and what is drawn on it, within a few pixels (ticks, markers)
        beside = cv2.dilate(lines.astype(np.uint8), np.ones((1, 13), np.uint8)).astype(bool)
        mask |= _reconstruct(lines, stroke & beside)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(thin.astype(np.uint8), connectivity=8)
    area, height = stats[:, cv2.CC_STAT_AREA], stats[:, cv2.CC_STAT_HEIGHT]
    # long hairline curves running down the image (icon outlines, arrows): two pixels wide at
    # most, at least 15 pixels tall.  Tissue's thin bright structures are interfaces across the
    # beam (a few pixels tall), and rim calcifications are thicker than a hairline.
    width = np.zeros(n, dtype=np.float32)
    np.maximum.at(width, labels.ravel(), dist.ravel())
    curves = np.flatnonzero((height >= 2 * settings.min_length + 1) & (area >= 30) & (width <= 1.5)
                            & (np.arange(n) > 0))
    if curves.size:
        mask |= np.isin(labels, curves)
    spots = np.flatnonzero((area <= 6) & (np.arange(n) > 0))
    if spots.size >= 4:
        on = spots[_dotted(centroids[spots])]
        if on.size:
            mask |= np.isin(labels, on)
    return mask


def detect_marks(image: np.ndarray, settings: MarkSettings = MarkSettings(), *, white: bool = True) -> np.ndarray:
    """Boolean mask of burned-in marks of a uint8 image, gray ``(H, W)`` or RGB ``(H, W, 3)``.

    Coloured marks need an RGB image; white marks are found on the gray image (``white=False``
    finds coloured marks only).  The mask is grown by one pixel (JPEG spreads a mark's edges).
    """
    if image.ndim == 3:
        mask = colour_mask(image, settings.chroma)
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    else:
        mask = np.zeros(image.shape, dtype=bool)
        gray = image
    if white:
        mask |= white_mask(gray, settings)
    if not mask.any():
        return mask
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def inpaint(image: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """Fill the ``mask`` pixels of a uint8 image (gray or RGB) from their surroundings (Telea)."""
    if not mask.any():
        return image
    return cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8), radius, cv2.INPAINT_TELEA)
