"""Burned-in marks on a phantom view: calipers, dotted measurement lines, a label, a depth scale and its
marker, drawn at known pixels, white or coloured, as a scanner burns them in.

The mask of every pixel a mark changed comes with the image, so that mark removal
(:mod:`thyro.data.marks`) can be measured against it.
"""

from __future__ import annotations

import math

import numpy as np

from thyro.data.phantom.anatomy import Frame
from thyro.errors import DataError


#: Colours of coloured marks; white marks are (255, 255, 255).
MARK_COLOURS = ((0, 255, 0), (0, 230, 255), (255, 230, 0))


def _mark_colour(rng: np.random.Generator, colour_p: float) -> tuple[int, int, int]:
    if rng.random() < colour_p:
        return tuple(int(c) for c in MARK_COLOURS[int(rng.integers(len(MARK_COLOURS)))])
    return (255, 255, 255)


def _paint(canvas: np.ndarray, mask: np.ndarray, drawn: np.ndarray, colour: tuple[int, int, int]) -> None:
    canvas[drawn] = colour
    mask |= drawn


def _draw_cross(canvas, mask, cx: int, cy: int, arm: int, shape: str, gap: int, colour) -> None:
    drawn = np.zeros(mask.shape, dtype=bool)
    h, w = mask.shape
    dirs = ((1, 0), (-1, 0), (0, 1), (0, -1)) if shape == "+" else ((1, 1), (1, -1), (-1, 1), (-1, -1))
    if gap == 0:
        drawn[min(max(cy, 0), h - 1), min(max(cx, 0), w - 1)] = True
    for dx, dy in dirs:
        for k in range(gap + 1, gap + arm + 1):
            x, y = cx + dx * k, cy + dy * k
            if 0 <= x < w and 0 <= y < h:
                drawn[y, x] = True
    _paint(canvas, mask, drawn, colour)


def _draw_dotted(canvas, mask, p0, p1, step: int, clear: int, colour) -> None:
    drawn = np.zeros(mask.shape, dtype=bool)
    h, w = mask.shape
    length = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
    for t in np.arange(clear, length - clear + 1e-6, step):
        x = int(round(p0[0] + (p1[0] - p0[0]) * t / max(length, 1e-6)))
        y = int(round(p0[1] + (p1[1] - p0[1]) * t / max(length, 1e-6)))
        if 0 <= x < w and 0 <= y < h:
            drawn[y, x] = True
    _paint(canvas, mask, drawn, colour)


#: The phantom's label font: 5 x 7 bitmap glyphs ("#" drawn) of what its labels use, 1 pixel apart.
#: Written out rather than drawn with ``cv2.putText``: OpenCV 4 draws its Hershey fonts in one-pixel
#: vector strokes, OpenCV 5 renders the same font names with an antialiased TrueType font whose
#: glyphs and spacing changed again from 5.0 to 5.1, so the phantom's marks (and what is measured on
#: them) changed with the installed OpenCV.  A bitmap font draws the same pixels everywhere.
_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    ".": ("..", "..", "..", "..", "..", "##", "##"),
    "c": (".....", ".....", ".###.", "#....", "#....", "#...#", ".###."),
    "m": (".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#"),
    " ": ("....",) * 7,
}


def text_bitmap(text: str, scale: int = 1) -> np.ndarray:
    """Boolean bitmap of ``text`` in the phantom's label font, each font pixel ``scale`` x ``scale``."""
    unknown = sorted(set(text) - set(_GLYPHS))
    if unknown:
        raise DataError(f"the phantom's label font has no glyph for {''.join(unknown)!r}.")
    gap = np.zeros((7, 1), dtype=bool)
    cols = []
    for k, ch in enumerate(text):
        if k:
            cols.append(gap)
        cols.append(np.array([[c == "#" for c in row] for row in _GLYPHS[ch]], dtype=bool))
    bitmap = np.concatenate(cols, axis=1) if cols else np.zeros((7, 0), dtype=bool)
    return np.kron(bitmap, np.ones((scale, scale), dtype=bool))


def _draw_text(canvas, mask, text: str, org: tuple[int, int], scale: int, colour) -> None:
    """Draw ``text`` with its bottom-left pixel at ``org`` (clipped to the image)."""
    bitmap = text_bitmap(text, scale)
    drawn = np.zeros(mask.shape, dtype=bool)
    h, w = mask.shape
    x0, y0 = org[0], org[1] - bitmap.shape[0] + 1
    ys, xs = np.nonzero(bitmap)
    ys, xs = ys + y0, xs + x0
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    drawn[ys[keep], xs[keep]] = True
    _paint(canvas, mask, drawn, colour)


def _draw_scale(canvas, mask, x: int, y0: int, y1: int, marker_y: int, colour) -> None:
    drawn = np.zeros(mask.shape, dtype=bool)
    drawn[y0:y1, x] = True
    for y in np.linspace(y0, y1 - 1, 6).astype(int):
        drawn[y, max(0, x - 3):x] = True  # ticks
    for k in range(4):  # the focus marker: a small filled triangle pointing at the scale
        drawn[marker_y - 3 + k:marker_y + 4 - k, x - 5 - k] = True
    _paint(canvas, mask, drawn, colour)


def draw_marks(image: np.ndarray, polygon: list[list[float]] | None, frame: Frame, rng: np.random.Generator, *,
               calipers: bool = True, colour_p: float = 0.3) -> tuple[np.ndarray, np.ndarray, dict]:
    """Draw scanner marks on a rendered view, as a scanner burns them in.

    Calipers ("+" or "x", one-pixel strokes) on the nodule outline's leftmost and rightmost points
    and often its top and bottom, a dotted measurement line between a pair, a measurement label in
    the sector's lower left corner (in the phantom's own bitmap font, :func:`text_bitmap`), and a
    depth scale with ticks and a focus marker along the sector's right edge.  Each mark is white or,
    with probability ``colour_p``, green, cyan or yellow.  ``calipers=False`` draws the label, scale
    and marker only.

    Returns
    -------
    (image, mask, drawn)
        The image (gray, or RGB when a coloured mark was drawn), the boolean mask of every pixel
        a mark changed, and what was drawn (``calipers``: count, ``dotted``, ``text``, ``scale``).
    """
    size = image.shape[0]
    canvas = np.repeat(image[..., None], 3, axis=2)
    mask = np.zeros(image.shape, dtype=bool)
    arm = int(np.clip(round(size / 48), 3, 6))
    drawn = {"calipers": 0, "dotted": False, "text": False, "scale": False}
    if calipers and polygon is not None:
        pts = np.asarray(polygon, dtype=float)
        pairs = [(pts[np.argmin(pts[:, 0])], pts[np.argmax(pts[:, 0])])]
        if rng.random() < 0.6:
            pairs.append((pts[np.argmin(pts[:, 1])], pts[np.argmax(pts[:, 1])]))
        for a, b in pairs:
            shape = "+" if rng.random() < 0.5 else "x"
            gap, colour = int(rng.integers(0, 2)), _mark_colour(rng, colour_p)
            for p in (a, b):
                _draw_cross(canvas, mask, int(round(p[0])), int(round(p[1])), arm, shape, gap, colour)
                drawn["calipers"] += 1
            if rng.random() < 0.5:
                _draw_dotted(canvas, mask, a, b, step=int(rng.integers(3, 5)), clear=arm + 2, colour=colour)
                drawn["dotted"] = True
    text = f"{rng.integers(1, 4)} {rng.uniform(0.4, 3.5):.2f}cm"
    glyph_px = 1 if size < 256 else 2
    _draw_text(canvas, mask, text, (frame.x0 + 3, frame.y1 - 4), glyph_px, _mark_colour(rng, colour_p))
    drawn["text"] = True
    sx = frame.x1 - 3
    sy0, sy1 = frame.y0 + (frame.y1 - frame.y0) // 5, frame.y1 - (frame.y1 - frame.y0) // 5
    _draw_scale(canvas, mask, sx, sy0, sy1, int(rng.integers(sy0 + 4, sy1 - 4)), _mark_colour(rng, colour_p))
    drawn["scale"] = True
    coloured = (canvas[..., 0] != canvas[..., 1]) | (canvas[..., 1] != canvas[..., 2])
    out = canvas if coloured.any() else canvas[..., 0].copy()
    return out, mask, drawn
