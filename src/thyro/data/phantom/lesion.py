"""Lesions: an outline in unit coordinates (a TI-RADS margin), placed in an image and painted into an
echo map with its content (cysts, texture, halo), echogenic foci and posterior acoustic effects.

:func:`thyroid_nodule` makes the nodule of a set of TI-RADS features (:mod:`.tirads`); the corpus's
liver, kidney, breast, lung and brain lesions reuse the outlines (:func:`make_outline`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from thyro.data.phantom.imaging import band, sigmoid, smooth_noise


#: Echo levels of nodules by echogenicity, relative to the gland's 0.6; very hypoechoic is darker than
#: the strap muscles (0.2).
_ECHO = {"anechoic": 0.003, "hyperechoic": 1.7, "isoechoic": 0.5, "hypoechoic": 0.17, "very hypoechoic": 0.05}


@dataclass
class Lesion:
    """A lesion's shape and content in its own unit coordinates (radius ~1), placed by a view."""

    aspect: float = 1.0                 # height / width
    harmonics: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # rows: k, amplitude, phase
    spikes: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))     # rows: angle, amplitude, width
    edge: float = 0.06                  # edge width in radius units (ill-defined: ~0.35)
    echo: float = 0.26                  # solid-part echo level
    texture: float = 0.15               # internal heterogeneity (std of a smooth multiplicative field)
    cysts: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))      # rows: x, y, radius (unit coords)
    foci: str = "none"
    foci_pts: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))   # unit coords
    rim_arc: tuple[float, float] = (0.0, 0.0)     # start angle, extent (radians)
    halo: float = 0.0                   # thickness of a hypoechoic halo (unit radius), 0 = none
    enhancement: float = 1.0            # posterior acoustic enhancement factor (cystic)
    shadow: float = 0.0                 # posterior shadow strength of the whole lesion (0-1)


@dataclass
class Placement:
    """Where a lesion lies in an image: its centre and radius in pixels, rotation and mirroring."""

    cx: float
    cy: float
    radius: float     # pixels
    rot: float = 0.0  # radians
    flip: bool = False


def lesion_coords(xx: np.ndarray, yy: np.ndarray, pl: Placement) -> tuple[np.ndarray, np.ndarray]:
    """Pixel grid -> lesion unit coordinates (x right, y down)."""
    dx, dy = (xx - pl.cx) / pl.radius, (yy - pl.cy) / pl.radius
    c, s = math.cos(-pl.rot), math.sin(-pl.rot)
    lx, ly = c * dx - s * dy, s * dx + c * dy
    if pl.flip:
        lx = -lx
    return lx, ly


def outline_radius(theta: np.ndarray, les: Lesion) -> np.ndarray:
    """Radius of the outline at angle ``theta`` (unit coordinates)."""
    a, b = 1.0 / math.sqrt(les.aspect), math.sqrt(les.aspect)
    r = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    mod = np.ones_like(theta)
    for k, amp, ph in les.harmonics:
        mod = mod + amp * np.cos(k * theta + ph)
    for ang, amp, width in les.spikes:
        d = np.angle(np.exp(1j * (theta - ang)))
        mod = mod + amp * np.exp(-0.5 * (d / width) ** 2)
    return r * np.maximum(mod, 0.3)


def lesion_polar(les: Lesion, pl: Placement, xx: np.ndarray, yy: np.ndarray):
    """Per-pixel lesion coordinates ``lx, ly``, angle ``theta`` and ``rho`` (the distance from the
    centre over the outline's radius at that angle: 1 on the outline)."""
    lx, ly = lesion_coords(xx, yy, pl)
    rho_abs = np.hypot(lx, ly)
    theta = np.arctan2(ly, lx)
    return lx, ly, theta, rho_abs / outline_radius(theta, les)


def lesion_polygon(les: Lesion, pl: Placement, n: int = 48, offset: tuple[float, float] = (0, 0)) -> list[list[float]]:
    """The lesion outline as an image-pixel polygon [[x, y], ...]."""
    theta = np.linspace(-math.pi, math.pi, n, endpoint=False)
    r = outline_radius(theta, les)
    lx, ly = r * np.cos(theta), r * np.sin(theta)
    if pl.flip:
        lx = -lx
    c, s = math.cos(pl.rot), math.sin(pl.rot)
    x = pl.cx + pl.radius * (c * lx - s * ly) + offset[0]
    y = pl.cy + pl.radius * (s * lx + c * ly) + offset[1]
    return [[round(float(a), 1), round(float(b), 1)] for a, b in zip(x, y)]


def _lesion_fields(les: Lesion, pl: Placement, xx: np.ndarray, yy: np.ndarray):
    """Per-pixel lesion coordinates: ``lx, ly, theta, rho`` (radius / outline radius), ``inside``
    (soft mask) and ``column`` (the band below the lesion, as wide as it)."""
    lx, ly, theta, rho = lesion_polar(les, pl, xx, yy)
    edge = max(les.edge, 0.8 / pl.radius)
    inside = sigmoid((1.0 - rho) / edge)
    x_extent = float(np.max(np.abs(lx[inside > 0.5]))) if (inside > 0.5).any() else 1.0
    column = sigmoid((0.85 * x_extent - np.abs(lx)) / 0.1)
    return lx, ly, theta, rho, inside, column


def paint_lesion(echo: np.ndarray, les: Lesion, pl: Placement, rng: np.random.Generator,
                 xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Paint a lesion into an echo map (returns a new map), with foci, halo, shadows and enhancement."""
    h, w = echo.shape
    lx, ly, theta, rho, inside, column = _lesion_fields(les, pl, xx, yy)

    inner = les.echo * np.exp(les.texture * smooth_noise(rng, h, w, max(1.0, pl.radius * 0.25)))
    for cxu, cyu, ru in les.cysts:
        d = np.hypot(lx - cxu, ly - cyu) / ru
        cyst = sigmoid((1.0 - d) / max(0.12, 0.8 / (ru * pl.radius)))
        inner = inner * (1 - cyst) + _ECHO["anechoic"] * cyst
    if les.halo > 0:
        ring = band(rho, 1.0 - les.halo, 1.0 + 0.02, max(0.03, 0.5 / pl.radius))
        inner = inner * (1 - 0.85 * ring)
    out = echo * (1 - inside) + inner * inside

    # posterior effects: a band below the lesion, as wide as it
    below = sigmoid((ly - 0.0) / 0.2) * (rho > 0.95)
    if les.enhancement != 1.0:
        out = out * (1 + (les.enhancement - 1) * below * column * np.exp(-np.maximum(ly - 1, 0) / 2.5))
    if les.shadow > 0:
        out = out * (1 - les.shadow * below * column)
    foci, out = _foci(les, pl, xx, yy, ly, theta, rho, column, out)
    return np.maximum(out, foci)


def _foci(les: Lesion, pl: Placement, xx: np.ndarray, yy: np.ndarray, ly: np.ndarray, theta: np.ndarray,
          rho: np.ndarray, column: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lesion's echogenic foci (an echo map) and ``out`` with the foci's acoustic shadows."""
    foci = np.zeros_like(out)
    spot = max(0.5, pl.radius * 0.05)
    if les.foci in ("punctate", "comet-tail", "macrocalcifications"):
        for fx, fy in les.foci_pts:
            px, py = _to_pixels(fx, fy, pl)
            if les.foci == "punctate":
                foci = np.maximum(foci, 30.0 * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * spot ** 2)))
            elif les.foci == "comet-tail":
                tail = np.exp(-((xx - px) ** 2) / (2 * spot ** 2)) * band(yy - py, 0, pl.radius * 0.35, 0.5)
                tail = tail * np.exp(-np.maximum(yy - py, 0) / (pl.radius * 0.15))
                foci = np.maximum(foci, 20.0 * tail)
            else:  # macrocalcification: a larger bright curved blob with a dense shadow below
                big = 2.2 * spot
                blob = np.exp(-(((xx - px) / (1.6 * big)) ** 2 + ((yy - py) / big) ** 2) / 2)
                foci = np.maximum(foci, 25.0 * blob)
                sh = sigmoid((yy - py - big) / 1.0) * np.exp(-((xx - px) / (1.4 * big)) ** 4)
                out = out * (1 - 0.85 * sh)
    elif les.foci == "peripheral":
        start, extent = les.rim_arc
        d = np.angle(np.exp(1j * (theta - start)))
        d = np.where(d < 0, d + 2 * math.pi, d)
        on_arc = (d <= extent).astype(np.float32)
        rim = band(rho, 0.9, 1.05, max(0.025, 0.4 / pl.radius)) * on_arc
        foci = np.maximum(foci, 18.0 * rim)
        below_rim = sigmoid((ly - 0.2) / 0.2) * (rho > 1.0) * column
        out = out * (1 - 0.6 * below_rim)
    return foci, out


def foci_map(les: Lesion, pl: Placement, h: int, w: int) -> np.ndarray:
    """The echo level of a lesion's echogenic foci alone, on an ``h`` x ``w`` grid (0 elsewhere)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    _, ly, theta, rho, _, column = _lesion_fields(les, pl, xx, yy)
    return _foci(les, pl, xx, yy, ly, theta, rho, column, np.ones((h, w), np.float32))[0]


def _to_pixels(fx: float, fy: float, pl: Placement) -> tuple[float, float]:
    if pl.flip:
        fx = -fx
    c, s = math.cos(pl.rot), math.sin(pl.rot)
    return pl.cx + pl.radius * (c * fx - s * fy), pl.cy + pl.radius * (s * fx + c * fy)


def random_points_in_lesion(rng: np.random.Generator, les: Lesion, n: int, max_rho: float = 0.75) -> np.ndarray:
    pts = []
    while len(pts) < n:
        th = rng.uniform(-math.pi, math.pi)
        r = max_rho * math.sqrt(rng.random()) * float(outline_radius(np.array([th]), les)[0])
        pts.append((r * math.cos(th), r * math.sin(th)))
    return np.array(pts, dtype=float)


def make_outline(rng: np.random.Generator, margin: str, aspect: float) -> Lesion:
    """Lesion outline for a TI-RADS margin category."""
    les = Lesion(aspect=aspect)
    if margin in ("smooth", "ill-defined"):
        ks = np.array([2, 3])
        les.harmonics = np.column_stack([ks, rng.uniform(0, 0.04, 2), rng.uniform(0, 2 * math.pi, 2)])
        les.edge = 0.2 if margin == "ill-defined" else 0.05
    elif margin == "lobulated":
        ks = rng.choice([3, 4, 5, 6], size=2, replace=False)
        les.harmonics = np.column_stack([ks, rng.uniform(0.16, 0.24, 2), rng.uniform(0, 2 * math.pi, 2)])
        les.edge = 0.05
    else:  # irregular / extrathyroidal: jagged outline with spiculations
        ks = rng.choice(np.arange(5, 15), size=6, replace=False)
        les.harmonics = np.column_stack([ks, rng.uniform(0.06, 0.10, 6), rng.uniform(0, 2 * math.pi, 6)])
        n_sp = int(rng.integers(3, 7))
        les.spikes = np.column_stack([rng.uniform(-math.pi, math.pi, n_sp), rng.uniform(0.3, 0.45, n_sp),
                                      rng.uniform(0.06, 0.12, n_sp)])
        les.edge = 0.05
    return les


def thyroid_nodule(rng: np.random.Generator, features: dict) -> Lesion:
    """A nodule (in unit coordinates) with the given TI-RADS features."""
    aspect = rng.uniform(1.2, 1.55) if features["shape"] == "taller-than-wide" else rng.uniform(0.55, 0.85)
    les = make_outline(rng, features["margin"], aspect)
    comp, echo = features["composition"], features["echogenicity"]
    les.echo = _ECHO[echo] if comp != "spongiform" else _ECHO["isoechoic"] * (1.4 if echo == "hyperechoic" else 1.0)
    if comp == "cystic":
        les.echo = _ECHO["anechoic"]
        les.texture = 0.0
        les.enhancement = 1.9
    elif comp == "spongiform":
        n = int(rng.integers(14, 24))
        pts = random_points_in_lesion(rng, les, n, max_rho=0.8)
        les.cysts = np.column_stack([pts, rng.uniform(0.11, 0.17, n)])
    elif comp == "mixed":
        n = int(rng.integers(1, 3))
        pts = random_points_in_lesion(rng, les, n, max_rho=0.4)
        les.cysts = np.column_stack([pts, rng.uniform(0.4, 0.55, n)])
        les.enhancement = 1.3
    if echo in ("isoechoic", "hyperechoic") and comp == "solid":
        les.texture = 0.3  # coarser echotexture than the gland: iso/hyperechoic nodules stay visible
        if features["margin"] != "extrathyroidal":
            les.halo = 0.2 if features["margin"] != "irregular" else 0.1
    les.foci = features["foci"]
    if les.foci == "punctate":
        les.foci_pts = random_points_in_lesion(rng, les, int(rng.integers(3, 8)), 0.75)
    elif les.foci == "macrocalcifications":
        les.foci_pts = random_points_in_lesion(rng, les, int(rng.integers(1, 3)), 0.5)
    elif les.foci == "comet-tail":
        les.foci_pts = random_points_in_lesion(rng, les, int(rng.integers(1, 3)), 0.6)
    elif les.foci == "peripheral":
        les.rim_arc = (rng.uniform(-math.pi, math.pi), rng.uniform(math.pi, 1.9 * math.pi))
    return les
