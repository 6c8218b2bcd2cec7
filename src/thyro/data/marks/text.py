"""Text burned into an image: rows of glyphs drawn in thin strokes, and the words beside them."""

from __future__ import annotations

import cv2
import numpy as np

from thyro.data.marks.morphology import components, max_per_label


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


def _glyphs(piece: np.ndarray, dist: np.ndarray, min_height: float) -> np.ndarray:
    """Glyph-shaped parts of a piece: the ``stats`` rows (x, y, w, h, area) of its 8-connected parts
    at least ``min_height`` tall, at most about as wide as they are tall, and drawn in strokes thin
    for their size: at least three stroke widths tall (``dist``: the distance transform of the
    piece's strokes; a stroke is ``2 * dist - 1`` wide).  Echogenic foci and calcifications are blobs about
    as thick as they are tall."""
    n, labels, stats, _ = components(piece)
    if n <= 1:
        return stats[:0]
    width = 2 * max_per_label(dist, labels, n)[1:] - 1
    gh, gw = stats[1:, cv2.CC_STAT_HEIGHT], stats[1:, cv2.CC_STAT_WIDTH]
    return stats[1:][(gh >= min_height) & (gw <= 1.2 * gh + 1) & (gh >= 3 * width)]


def _standing_glyphs(piece: np.ndarray, dist: np.ndarray) -> int:
    """How many glyphs of a piece stand on one baseline: glyphs (:func:`_glyphs`, 5 pixels tall or
    more) whose bottoms lie within an eighth of the tallest one's height of each other, at least
    half as tall as it (small letters beside digits).  Specks of tissue joined to the piece may make
    it taller than its glyphs, so the line is the glyphs', not the piece's."""
    glyphs = _glyphs(piece, dist, 5)
    gh = glyphs[:, cv2.CC_STAT_HEIGHT]
    bottom = glyphs[:, cv2.CC_STAT_TOP] + gh
    return int(max((np.count_nonzero((np.abs(bottom - b) <= max(1, r // 8)) & (gh <= r) & (gh >= 0.5 * r))
                    for b, r in zip(bottom, gh)), default=0))


def _long_rows(piece: np.ndarray, length: int) -> float:
    """Share of a piece's pixels in horizontal runs at least ``length`` long."""
    total = int(piece.sum())
    if total == 0:
        return 0.0
    opened = cv2.morphologyEx(piece.astype(np.uint8), cv2.MORPH_OPEN, np.ones((1, length), np.uint8))
    return float(opened.sum()) / total


def text_mask(stroke: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Mask of text: rows of glyphs drawn in thin strokes (``core``: the strokes' near-white seeds).

    Glyphs next to each other are joined by a horizontal closing; a joined piece 7 to 24 pixels
    tall, at least one and a half times as wide, with three or more separate vertical strokes
    reaching half its height, or as many glyphs standing on one baseline (:func:`_standing_glyphs`:
    digits such as "2", "3" and "7" have no vertical stroke), and one at least every one and a half
    heights along it, is text, unless most of its pixels lie in horizontal runs as long as it is
    tall: bright interfaces stacked in the near field, bridged here and there by speckle, look like
    that; glyphs do not.  A single tissue interface is a few pixels tall and has no vertical strokes.

    A word space is wider than the closing, so a row's other words ("3" in "3 IZQ", "2" in
    "2 1.37cm") are pieces of their own, often too short or with too few strokes to be text alone;
    the pieces on a text row's line (:func:`_beside_rows`) are text too.
    """
    closed = cv2.morphologyEx(stroke.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((1, 5), np.uint8))
    n, labels, stats, _ = components(closed)
    # glyph shapes are read on the near-white core of the strokes: the speckle a stroke grows into
    # (or that touches a glyph) would change their outline
    dist = cv2.distanceTransform(core.astype(np.uint8), cv2.DIST_L2, 3)
    out = np.zeros(stroke.shape, dtype=bool)
    boxes = stats[:, :4].astype(np.int64)
    rows = np.zeros(n, dtype=bool)
    for i in range(1, n):
        x, y, w, h = (int(v) for v in boxes[i])
        if not (7 <= h <= 24 and w >= 1.5 * h):
            continue
        piece = (labels[y:y + h, x:x + w] == i) & stroke[y:y + h, x:x + w]
        # glyphs are about as wide as tall: a text line has a stroke, or a glyph standing on its
        # baseline, every glyph or so (a bright interface with a few ticks drawn on it has far fewer)
        need = max(3, w / (1.5 * h))
        if _long_rows(piece, max(6, h)) <= 0.35 and \
                (_vertical_strokes(piece, max(4, h // 2)) >= need or
                 _standing_glyphs(piece & core[y:y + h, x:x + w], dist[y:y + h, x:x + w]) >= need):
            rows[i] = True
    if rows.any():
        rows = _beside_rows(rows, boxes, labels, stroke, core, dist)
    for i in np.flatnonzero(rows):
        x, y, w, h = (int(v) for v in boxes[i])
        out[y:y + h, x:x + w] |= (labels[y:y + h, x:x + w] == i) & stroke[y:y + h, x:x + w]
    return out


def _beside_rows(rows: np.ndarray, boxes: np.ndarray, labels: np.ndarray, stroke: np.ndarray,
                 core: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """``rows`` (text pieces, by label) with the pieces on the same line of text added.

    A piece joins a text piece when it shares the line (their heights overlap by at least 60% of
    the lower one; a piece of capitals or digits may be up to twice as tall as a row of small
    letters), lies at most a word space to its left or right (one and a half times the taller one's
    height, or the row's: OpenCV's Hershey fonts space words that widely), and is glyphs rather
    than tissue: most of its near-white ``core`` pixels lie in glyphs (:func:`_glyphs`) at least 5
    pixels and a third of the row's height tall (a bright tissue streak beside a label is wider than
    tall, a focus as thick as it is tall).  A piece that joins extends the row, so a line of several
    words is found from one of them.
    """
    x, y, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    ref = np.where(rows, h, 0)  # the height of the row each text piece belongs to
    maybe = ~rows & (h <= 24)
    maybe[0] = False
    new = rows.copy()
    while new.any():
        added = np.zeros_like(rows)
        for r in np.flatnonzero(new):
            rh = int(ref[r])
            gap = np.maximum(x - (x[r] + w[r]), x[r] - (x + w))
            overlap = np.minimum(y + h, y[r] + h[r]) - np.maximum(y, y[r])
            near = maybe & ~rows & (h <= 2 * rh) & (overlap >= 0.6 * np.minimum(h, h[r])) \
                & (gap <= 1.5 * np.maximum(np.maximum(h, h[r]), rh))
            for i in np.flatnonzero(near):
                xi, yi, wi, hi = (int(v) for v in boxes[i])
                piece = (labels[yi:yi + hi, xi:xi + wi] == i) & core[yi:yi + hi, xi:xi + wi]
                glyphs = _glyphs(piece, dist[yi:yi + hi, xi:xi + wi], max(5, 0.3 * rh))
                if piece.any() and glyphs[:, cv2.CC_STAT_AREA].sum() >= 0.6 * piece.sum():
                    rows[i] = added[i] = True
                    ref[i] = rh
        new = added
    return rows


__all__ = ["text_mask"]
