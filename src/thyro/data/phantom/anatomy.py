"""Thyroid views: the neck's anatomy with a nodule, imaged and framed like a scanner's screen.

A view's echo map holds skin, fat, the strap muscles, the gland with its capsule, the carotid artery
and deep tissue, with the nodule painted in (:mod:`.lesion`); it is imaged (:mod:`.imaging`) into the
sector of a screen with black borders, depth dots, settings text and a gray-scale bar, which the
preprocessing removes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from thyro.data.phantom.imaging import attenuate, band, bmode, sigmoid, smooth_noise, speckle, speckle_sigmas
from thyro.data.phantom.lesion import Lesion, Placement, foci_map, lesion_polygon, paint_lesion


#: Echo levels of the gland and the strap muscles (relative reflectivity; nodules: :mod:`.lesion`).
_GLAND, _MUSCLE = 0.6, 0.2


#: Echo level above which a pixel of a foci map counts as an echogenic focus (3 dB over the gland).
FOCI_LEVEL = 2.0


@dataclass
class Frame:
    """Where the sector sits in the image, and the scanner UI drawn around it."""

    x0: int
    y0: int
    x1: int
    y1: int


def frame_for(size: int, rng: np.random.Generator, framed: bool) -> Frame:
    """Where the sector of a ``size`` x ``size`` screen lies (the whole image when not ``framed``)."""
    if not framed:
        return Frame(0, 0, size, size)
    x0 = int(round(size * rng.uniform(0.06, 0.09)))
    x1 = size - int(round(size * rng.uniform(0.11, 0.14)))
    y0 = int(round(size * rng.uniform(0.02, 0.04)))
    y1 = size - int(round(size * rng.uniform(0.08, 0.11)))
    return Frame(x0, y0, x1, y1)


def _draw_ui(img: np.ndarray, fr: Frame, rng: np.random.Generator) -> None:
    """Scanner screen furniture outside the sector: depth dots, settings text, a label, a gray bar."""
    size = img.shape[0]
    if fr.x0 == 0:
        return
    xd = max(0, fr.x0 // 2)
    for yd in np.linspace(fr.y0, fr.y1 - 1, 6).astype(int):
        img[yd, xd] = 220
    glyph = max(1, size // 64)
    xt = fr.x1 + max(1, (size - fr.x1) // 5)
    for line in range(int(rng.integers(4, 8))):
        yt = fr.y0 + 2 + line * 4 * glyph
        if yt + 2 * glyph >= size:
            break
        for ch in range(int(rng.integers(2, 4))):
            x = xt + ch * 2 * glyph
            if x + glyph < size:
                pattern = rng.random((2 * glyph, glyph)) < 0.6
                img[yt:yt + 2 * glyph, x:x + glyph][pattern] = 200
    yb = fr.y1 + max(1, (size - fr.y1) // 3)
    for ch in range(3):
        x = fr.x0 + 2 + ch * 2 * glyph
        pattern = rng.random((2 * glyph, glyph)) < 0.6
        img[yb:yb + 2 * glyph, x:x + glyph][pattern[: max(0, min(2 * glyph, size - yb))]] = 190
    # gray-scale bar at the left edge
    bar_y0, bar_y1 = fr.y0 + (fr.y1 - fr.y0) // 3, fr.y0 + 2 * (fr.y1 - fr.y0) // 3
    ramp = np.linspace(255, 20, bar_y1 - bar_y0, dtype=np.float32)
    img[bar_y0:bar_y1, 0:max(1, glyph)] = ramp[:, None].astype(np.uint8)


def screen(rng: np.random.Generator, echo: np.ndarray, yy: np.ndarray, size: int, fr: Frame,
           alpha: float = 0.5, gain_db: float = 2.0) -> np.ndarray:
    """Image an echo map (:mod:`.imaging`: attenuation ``alpha``, speckle, a gain drawn in
    ``[-gain_db, gain_db]``) into the sector ``fr`` of a ``size`` x ``size`` screen with its furniture."""
    h, w = echo.shape
    echo = attenuate(echo, h, yy, alpha)
    sx, sy = speckle_sigmas(w, h)
    sector = bmode(echo, speckle(rng, h, w, sx, sy), gain_db=rng.uniform(-gain_db, gain_db))
    img = np.zeros((size, size), np.uint8)
    img[fr.y0:fr.y1, fr.x0:fr.x1] = sector
    _draw_ui(img, fr, rng)
    return img


def neck_background(rng: np.random.Generator, h: int, w: int, xx: np.ndarray, yy: np.ndarray
                    ) -> tuple[np.ndarray, dict]:
    """Echo map of a transverse/longitudinal neck view; returns it and the gland geometry."""
    v = yy / h
    echo = np.full((h, w), 0.32, np.float32)
    t_fat, t_mus = rng.uniform(0.07, 0.11), rng.uniform(0.19, 0.24)
    echo = np.where(v < 0.035, 1.2, echo)
    echo = np.where((v >= 0.035) & (v < t_fat), 0.35, echo)
    striation = 1 + 0.35 * np.sin(2 * math.pi * yy / max(2.0, h / 30) + rng.uniform(0, 6))
    echo = np.where((v >= t_fat) & (v < t_mus), _MUSCLE * striation, echo).astype(np.float32)
    for t in (t_fat, t_mus):
        echo = echo + 1.6 * band(v, t - 0.006, t + 0.006, 0.004)
    gcx = w * rng.uniform(0.42, 0.58)
    rng.uniform(0.47, 0.53)  # no longer used (the gland's centre follows from its depth); drawn so images stay the same
    ax, ay = w * rng.uniform(0.40, 0.48), h * (0.5 - t_mus + 0.02) + h * rng.uniform(0.0, 0.06)
    gcy = h * t_mus + ay + 1
    d = np.sqrt(((xx - gcx) / ax) ** 2 + ((yy - gcy) / ay) ** 2)
    inside = sigmoid((1 - d) / 0.02)
    gl = _GLAND * np.exp(0.12 * smooth_noise(rng, h, w, max(1.0, w / 25)))
    echo = echo * (1 - inside) + gl * inside
    echo = echo + 1.0 * band(d, 0.985, 1.015, 0.006)
    geo = {"cx": gcx, "cy": gcy, "ax": ax, "ay": ay, "top": h * t_mus}
    # carotid artery at one side, below the muscles
    side = rng.choice([0.06, 0.94])
    ccx, ccy, cr = w * side, h * rng.uniform(0.45, 0.6), w * rng.uniform(0.07, 0.1)
    dc = np.hypot(xx - ccx, yy - ccy) / cr
    echo = np.where(dc < 1, 0.004, echo) + 1.2 * band(dc, 0.97, 1.07, 0.02)
    echo = echo * (1 + 0.7 * sigmoid((yy - ccy - cr) / 2) * sigmoid((cr - np.abs(xx - ccx)) / 2))
    return echo.astype(np.float32), geo


@dataclass
class ViewRender:
    """A rendered thyroid view and where things are in it."""

    image: np.ndarray                       # uint8, (size, size)
    polygon: list[list[float]] | None       # the nodule outline in image pixels
    frame: Frame                            # where the sector lies
    placement: Placement | None             # the nodule's placement, in sector pixels


def render_view(rng: np.random.Generator, size: int, nodule: Lesion | None, features: dict | None,
                framed: bool = True) -> ViewRender:
    """A thyroid view: the neck, the nodule placed in the gland (or breaking through its capsule when
    extrathyroidal), imaged and framed as a scanner shows it."""
    fr = frame_for(size, rng, framed)
    h, w = fr.y1 - fr.y0, fr.x1 - fr.x0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    echo, geo = neck_background(rng, h, w, xx, yy)
    polygon, pl = None, None
    if nodule is not None:
        radius = min(w, h) * rng.uniform(0.17, 0.23)
        if features is not None and features["margin"] == "extrathyroidal":
            ncy = geo["top"] + radius * rng.uniform(0.2, 0.5)  # breaks through the capsule into the muscle
        else:
            ncy = geo["cy"] + rng.uniform(-0.15, 0.15) * geo["ay"]
        ncx = geo["cx"] + rng.uniform(-0.25, 0.25) * geo["ax"]
        pl = Placement(ncx, ncy, radius, rot=rng.uniform(-0.12, 0.12), flip=bool(rng.random() < 0.5))
        echo = paint_lesion(echo, nodule, pl, rng, xx, yy)
        polygon = lesion_polygon(nodule, pl, offset=(fr.x0, fr.y0))
    return ViewRender(screen(rng, echo, yy, size, fr, gain_db=1.5), polygon, fr, pl)


def render_thyroid_view(rng: np.random.Generator, size: int, nodule: Lesion | None, features: dict | None,
                        framed: bool = True) -> tuple[np.ndarray, list[list[float]] | None]:
    """One thyroid view (uint8 size x size) and the nodule's polygon in image pixels (None without nodule)."""
    view = render_view(rng, size, nodule, features, framed)
    return view.image, view.polygon


def view_foci_mask(nodule: Lesion | None, view: ViewRender) -> np.ndarray:
    """Boolean mask of the echogenic foci (punctate, comet-tail, calcifications, rim) of a view."""
    size = view.image.shape[0]
    out = np.zeros((size, size), dtype=bool)
    if nodule is None or view.placement is None:
        return out
    fr = view.frame
    out[fr.y0:fr.y1, fr.x0:fr.x1] = foci_map(nodule, view.placement, fr.y1 - fr.y0, fr.x1 - fr.x0) >= FOCI_LEVEL
    return out
