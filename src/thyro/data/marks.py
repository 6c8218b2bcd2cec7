"""Burned-in marks on ultrasound images: find them, and fill them in.

Scanners draw the sonographer's calipers ("+", "x"), dotted measurement lines, text, body-mark
icons, depth scales and focus or orientation markers into the exported pixels.  Calipers and
measurements are drawn more often on suspicious nodules, so a model can learn them instead of the
nodule; they are removed before training and prediction.  What must survive is the tissue,
including its brightest features: echogenic foci and calcifications.

Marks are graphics, and graphics differ from tissue in ways that do not depend on the scanner:

* **Colour** (:func:`colour_mask`): tissue is gray; pixels whose channels differ by more than
  ``chroma`` are coloured marks (green, cyan or yellow calipers and letters, coloured markers),
  with the pale halo JPEG spreads around them.
* **Thin bright strokes** (:func:`white_marks`): white and light-gray graphics are drawn with
  strokes one to three pixels wide, far brighter than the pixels two or three pixels away.  The
  white top-hat of the gray image (the image minus its opening by a 5 x 5 square) keeps exactly
  such structures.  Pixels that are bright (``white`` and above) with a strong top-hat seed a
  *stroke* mask, which grows (morphological reconstruction) into connected pixels of a weaker
  top-hat, completing strokes that JPEG has dimmed.  Speckle in bright tissue makes strokes too,
  so a stroke is a mark only in a shape tissue does not make:

  - ``caliper``: a "+" or "x" (arms of 3 to 6 pixels, with or without a gap at the centre):
    four straight, complete, near-white arms and nothing bright between them.  A line has two
    arms; a focus or a calcification is a blob that fills the space between them; stacked
    near-field interfaces fill it too;
  - ``scale``: a thin vertical line at least 14 pixels long, with what is drawn on it (ticks,
    the focus marker).  Tissue interfaces lie across the beam, and comet-tail artefacts are
    shorter; a bright region that is merely tall is wider than a line;
  - ``icon``: a hairline (at most two pixels wide) curve at least 15 pixels tall (body-mark
    outlines).  Rim calcifications are thicker;
  - ``text``: a row of glyphs 7 to 24 pixels tall, with a vertical stroke (half the row's height),
    or a glyph in thin strokes standing on the row's baseline, at least every one and a half
    heights, and few long horizontal runs (stacked interfaces bridged by speckle have many); and
    the glyphs on the same line within a word space of such a row ("3" of "3 IZQ");
  - ``dotted``: four or more small dots, evenly spaced on a line (measurement lines).

  Everything else bright is tissue: echogenic foci, calcifications and comet tails are blobs or
  short streaks, and are never in the mask.  What is not found (gray icons of low contrast, for
  example) stays in the image; a report of the marks found lets a user check.

Removal is :func:`inpaint` (OpenCV's Telea method): each mark pixel is filled from the tissue
around it, so the image keeps its texture and no black hole is left for a model to learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

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
    return _reconstruct(seed, c > min(max(8, p98 + 4), chroma))


def _tophat(gray: np.ndarray) -> np.ndarray:
    return cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, np.ones((5, 5), np.uint8))


def _label_type(mask: np.ndarray) -> int:
    # 16-bit labels are enough (and faster) when there cannot be 65535 pieces
    return cv2.CV_16U if cv2.countNonZero(mask) < 65535 else cv2.CV_32S


def _components(mask: np.ndarray):
    """``cv2.connectedComponentsWithStats`` (8-connected) of a uint8/bool mask: n, labels, stats, centroids."""
    m = mask.astype(np.uint8)
    return cv2.connectedComponentsWithStats(m, connectivity=8, ltype=_label_type(m))


def _reconstruct(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Morphological reconstruction by dilation: the parts of ``allowed`` connected to ``seed``."""
    m = allowed.astype(np.uint8)
    n, labels = cv2.connectedComponents(m, connectivity=8, ltype=_label_type(m))
    keep = np.zeros(n, dtype=bool)
    keep[np.unique(labels[seed & allowed])] = True
    keep[0] = False
    return keep[labels]


_DIRS_PLUS = ((1, 0), (-1, 0), (0, 1), (0, -1))
_DIRS_X = ((1, 1), (1, -1), (-1, 1), (-1, -1))
#: Caliper arm lengths and centre gaps searched (pixels): calipers are 5 to 15 pixels across.
_ARMS = (3, 4, 5, 6)
_GAPS = (0, 1, 2)


def _cross_template(dirs, reach: int) -> np.ndarray:
    """The pixels of a cross of arms ``reach`` long in ``dirs``, one pixel either side (a window)."""
    w = reach + 1
    t = np.zeros((2 * w + 1, 2 * w + 1), np.uint8)
    for dx, dy in dirs:
        cv2.line(t, (w, w), (w + dx * w, w + dy * w), 1, 1)
    return cv2.dilate(t, np.ones((3, 3), np.uint8)).astype(bool)


def _crosses(stroke: np.ndarray, strong: np.ndarray, gray: np.ndarray | None = None, level: int = 0) -> np.ndarray:
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
    pad = max(_ARMS) + max(_GAPS) + 3
    h, w = stroke.shape
    s = np.pad(stroke, pad)
    st = np.pad(strong, pad)
    gr = np.pad(gray, pad) if gray is not None else None
    out = np.zeros_like(s)
    count = cv2.boxFilter(stroke.astype(np.uint8), cv2.CV_16U, (11, 11), normalize=False)
    near = cv2.dilate(s.astype(np.uint8), np.ones((3, 3), np.uint8))
    su = s.astype(np.uint8)

    def at(img: np.ndarray, dx: int, dy: int, k: int) -> np.ndarray:
        # the padded image seen from k pixels along (dx, dy), in unpadded coordinates (a view)
        return img[pad + k * dy:pad + k * dy + h, pad + k * dx:pad + k * dx + w]

    base = (count >= 8) & (count <= 60)
    prefilter = []
    for dirs, others in ((_DIRS_PLUS, _DIRS_X), (_DIRS_X, _DIRS_PLUS)):
        # every arm covers the pixel three out (whatever its gap and length); little in between
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
    reach = max(_ARMS) + max(_GAPS)
    ks = np.arange(1, reach + 1)
    for (dirs, others), cand in zip(((_DIRS_PLUS, _DIRS_X), (_DIRS_X, _DIRS_PLUS)), prefilter):
        ys, xs = np.nonzero(cand)
        if ys.size == 0:
            continue

        def along(img: np.ndarray, dx: int, dy: int, qx: int = 0, qy: int = 0) -> np.ndarray:
            # running sums of ``img`` along a direction from each candidate: column k-1 sums pixels 1..k
            vals = img[ys[:, None] + dy * ks + qy, xs[:, None] + dx * ks + qx].astype(np.float32)
            return np.concatenate([np.zeros((len(ys), 1), np.float32), np.cumsum(vals, axis=1)], axis=1)

        def shifts(dx: int, dy: int) -> list[np.ndarray]:
            # an arm may lie one pixel off the exact direction, as a whole
            px, py = (-dy, dx) if dx == 0 or dy == 0 else (1, 0)
            return [along(s, dx, dy, q * px, q * py) for q in (-1, 0, 1)]

        arm_sums = [shifts(dx, dy) for dx, dy in dirs]
        hard = [along(st, dx, dy) for dx, dy in others]
        soft = [along(s, dx, dy) for dx, dy in others]
        bright = [along(gr, dx, dy) for dx, dy in dirs] if gr is not None else None
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
                for y, x in zip(ys[hit], xs[hit]):
                    out[y - w:y + w + 1, x - w:x + w + 1] |= s[y - w:y + w + 1, x - w:x + w + 1] & template
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
    n, labels, stats, _ = _components(opened)
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


def _max_per_label(values: np.ndarray, labels: np.ndarray, n: int, only: np.ndarray | None = None) -> np.ndarray:
    """The largest of ``values`` (non-negative) on each label ``0..n-1`` as float32, over the pixels of the
    labels ``only`` marks when given (0 elsewhere).

    ``scipy.ndimage.maximum`` gave the same values but sorts every pixel of the image by label first: a
    fifth of preprocessing's time; this visits the chosen pixels once.
    """
    out = np.zeros(n, dtype=np.float32)
    pick = only[labels] if only is not None else labels > 0
    np.maximum.at(out, labels[pick], values[pick].astype(np.float32))
    return out


def _glyphs(piece: np.ndarray, dist: np.ndarray, min_height: float) -> np.ndarray:
    """Glyph-shaped parts of a piece: the ``stats`` rows (x, y, w, h, area) of its 8-connected parts
    at least ``min_height`` tall, at most about as wide as they are tall, and drawn in strokes thin
    for their size: at least three stroke widths tall (``dist``: the distance transform of the
    piece's strokes; a stroke is ``2 * dist - 1`` wide).  Echogenic foci and calcifications are blobs about
    as thick as they are tall."""
    n, labels, stats, _ = _components(piece)
    if n <= 1:
        return stats[:0]
    width = 2 * _max_per_label(dist, labels, n)[1:] - 1
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


def _text(stroke: np.ndarray, core: np.ndarray) -> np.ndarray:
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
    n, labels, stats, _ = _components(closed)
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


def white_marks(gray: np.ndarray, settings: MarkSettings = MarkSettings()) -> dict[str, np.ndarray]:
    """Masks of white or light-gray graphics of a gray uint8 image, by kind.

    Keys: ``caliper`` (crosses), ``text`` (rows of glyphs), ``scale`` (long thin vertical lines
    and what is drawn on them: ticks, markers), ``icon`` (hairline curves running down the image)
    and ``dotted`` (evenly spaced dots on a line).  See the module docstring.
    """
    empty = np.zeros(gray.shape, dtype=bool)
    th = _tophat(gray)
    seed = (gray >= settings.white) & (th >= settings.contrast)
    if not seed.any():
        return {kind: empty for kind in WHITE_KINDS}
    stroke = _reconstruct(seed, th >= settings.grow_contrast)
    dist = cv2.distanceTransform(stroke.astype(np.uint8), cv2.DIST_L2, 3)
    thick = cv2.dilate((dist > settings.max_stroke / 2).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2)
    thin = stroke & ~thick.astype(bool)
    # between a caliper's arms lies tissue: neither a strong stroke nor anything as bright as the
    # arms (the ridges the top-hat leaves of a focus or calcification larger than its 5 x 5
    # window lie inside a bright blob)
    between = (th >= settings.contrast) | (gray >= settings.caliper_level)
    caliper = _crosses(stroke, between, gray, settings.caliper_level)
    out = {"caliper": caliper, "text": _text(stroke, seed)}
    lines = _vertical_lines(stroke, max(settings.min_length * 2, 12))
    if lines.any():  # the line and what is drawn on it, within a few pixels (ticks, markers)
        beside = cv2.dilate(lines.astype(np.uint8), np.ones((1, 13), np.uint8)).astype(bool)
        out["scale"] = _reconstruct(lines, stroke & beside)
    else:
        out["scale"] = empty
    n, labels, stats, centroids = _components(thin)
    area, height = stats[:, cv2.CC_STAT_AREA], stats[:, cv2.CC_STAT_HEIGHT]
    # long hairline curves running down the image (icon outlines, arrows): two pixels wide at
    # most, at least 15 pixels tall.  Tissue's thin bright structures are interfaces across the
    # beam (a few pixels tall), and rim calcifications are thicker than a hairline.
    tall = (height >= 2 * settings.min_length + 1) & (area >= 30)
    tall[0] = False
    if tall.any():
        tall &= _max_per_label(dist, labels, n, only=tall) <= 1.5  # thickest point per piece
    out["icon"] = tall[labels] if tall.any() else empty
    spots = np.flatnonzero((area <= 6) & (np.arange(n) > 0))
    on = spots[_dotted(centroids[spots])] if spots.size >= 4 else spots[:0]
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
