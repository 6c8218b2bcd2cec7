"""Synthetic ultrasound: a thyroid-nodule phantom cohort and a multi-class radiology corpus.

Thyroid phantom (:func:`generate_cohort`)
-----------------------------------------
Each synthetic patient has one nodule seen in several views (images).  The nodule's visible features
follow the ACR TI-RADS lexicon (Tessler et al., J Am Coll Radiol 2017):

=================  ==================================================================  =========
feature            categories (points)                                                 rendering
=================  ==================================================================  =========
composition        cystic 0, spongiform 0, mixed cystic/solid 1, solid 2               anechoic spaces
echogenicity       anechoic 0, hyperechoic 1, isoechoic 1, hypoechoic 2, very hypo 3   mean echo level
shape              wider-than-tall 0, taller-than-wide 3                               axis ratio
margin             smooth 0, ill-defined 0, lobulated 2, irregular 2, extrathyroidal 3 outline, edge width
echogenic foci     none/comet-tail 0, macrocalcifications 1, peripheral rim 2,          bright spots,
                   punctate 3                                                          acoustic shadows
=================  ==================================================================  =========

As in ACR TI-RADS, a spongiform nodule scores 0 in total and a cystic nodule only scores its foci
and margin points are not given (they are smooth).  The TI-RADS level follows from the points
(TR1: 0-1, TR2: 2, TR3: 3, TR4: 4-6, TR5: 7+).  Malignancy is drawn per patient from the known
probability ``p_malignant = sigmoid(MALIGNANCY_INTERCEPT + MALIGNANCY_SLOPE * points)`` and written
per image with the features, so the AUROC of ``p_malignant`` against the drawn labels
(:func:`best_auroc`) is the best any classifier can achieve on that cohort (the probability is the
Bayes-optimal score: it is the true conditional probability of the label given the image).  With
the feature frequencies used here it is about 0.88 in expectation, with about 40% malignant.

Images are B-mode-like: a tissue echo map (skin, fat, strap muscles, the gland with its capsule, the
carotid artery, deep tissue) with the nodule painted in, multiplied by fully developed speckle
(squared magnitude of a low-pass filtered complex Gaussian field: exponential intensity, Rayleigh
amplitude), log-compressed to 40 dB, and framed like a scanner screen (black borders, depth dots,
settings text) that the preprocessing removes.

Radiology corpus (:func:`generate_corpus`)
------------------------------------------
Fifteen classes in RadImageNet's layout ``modality/region/class/*.png``: ultrasound liver, kidney,
breast and thyroid lesions rendered with the same speckle, lesion outlines, echogenic foci and
shadows as the phantom, plus CT-like lung and MR-like brain images, for pretraining a small
backbone that then transfers to the thyroid phantom.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from thyro.data.manifest import Manifest, manifest_from_records, read_manifest, roi_to_json, write_manifest
from thyro.errors import DataError
from thyro.fileio import atomic_dir, write_csv, write_json
from thyro.stats.roc import auroc_or_none

# --------------------------------------------------------------------------------------------------
# TI-RADS model
# --------------------------------------------------------------------------------------------------

COMPOSITION_POINTS = {"cystic": 0, "spongiform": 0, "mixed": 1, "solid": 2}
ECHOGENICITY_POINTS = {"anechoic": 0, "hyperechoic": 1, "isoechoic": 1, "hypoechoic": 2, "very hypoechoic": 3}
SHAPE_POINTS = {"wider-than-tall": 0, "taller-than-wide": 3}
MARGIN_POINTS = {"smooth": 0, "ill-defined": 0, "lobulated": 2, "irregular": 2, "extrathyroidal": 3}
FOCI_POINTS = {"none": 0, "comet-tail": 0, "macrocalcifications": 1, "peripheral": 2, "punctate": 3}

#: Malignancy model: p = sigmoid(INTERCEPT + SLOPE * TI-RADS points).
MALIGNANCY_INTERCEPT = -5.0
MALIGNANCY_SLOPE = 0.8

# Relative echo levels (gland = 0.6); very hypoechoic is darker than the strap muscles (0.2).
_ECHO = {"anechoic": 0.003, "hyperechoic": 1.7, "isoechoic": 0.5, "hypoechoic": 0.17, "very hypoechoic": 0.05}
_GLAND, _MUSCLE = 0.6, 0.2


def tirads_points(features: dict) -> int:
    """ACR TI-RADS points of a feature dict (keys composition, echogenicity, shape, margin, foci)."""
    if features["composition"] == "spongiform":
        return 0
    return (COMPOSITION_POINTS[features["composition"]] + ECHOGENICITY_POINTS[features["echogenicity"]]
            + SHAPE_POINTS[features["shape"]] + MARGIN_POINTS[features["margin"]] + FOCI_POINTS[features["foci"]])


def tirads_level(points: int) -> int:
    """ACR TI-RADS level (1-5) from points."""
    return 1 if points <= 1 else 2 if points == 2 else 3 if points == 3 else 4 if points <= 6 else 5


def malignancy_probability(points: int | np.ndarray) -> float | np.ndarray:
    """Known probability of malignancy given TI-RADS points (logistic model)."""
    return 1.0 / (1.0 + np.exp(-(MALIGNANCY_INTERCEPT + MALIGNANCY_SLOPE * np.asarray(points, dtype=float))))


def sample_features(rng: np.random.Generator) -> dict:
    """Draw one nodule's TI-RADS features (frequencies of a biopsied cohort, enriched in suspicious ones)."""
    comp = str(rng.choice(["cystic", "spongiform", "mixed", "solid"], p=[0.07, 0.08, 0.25, 0.60]))
    if comp == "cystic":
        echo = "anechoic"
    elif comp == "spongiform":
        echo = str(rng.choice(["isoechoic", "hyperechoic"], p=[0.7, 0.3]))
    else:
        echo = str(rng.choice(["hyperechoic", "isoechoic", "hypoechoic", "very hypoechoic"], p=[0.10, 0.30, 0.42, 0.18]))
    if comp in ("cystic", "spongiform"):
        shape = "taller-than-wide" if rng.random() < 0.05 else "wider-than-tall"
        margin = str(rng.choice(["smooth", "ill-defined"], p=[0.8, 0.2]))
        foci = str(rng.choice(["none", "comet-tail"], p=[0.7, 0.3]))
    else:
        shape = "taller-than-wide" if rng.random() < 0.22 else "wider-than-tall"
        margin = str(rng.choice(list(MARGIN_POINTS), p=[0.42, 0.20, 0.14, 0.16, 0.08]))
        foci = str(rng.choice(["none", "macrocalcifications", "peripheral", "punctate", "comet-tail"],
                              p=[0.45, 0.15, 0.08, 0.25, 0.07]))
        if foci == "comet-tail" and comp == "solid":
            foci = "none"
    return {"composition": comp, "echogenicity": echo, "shape": shape, "margin": margin, "foci": foci}


# --------------------------------------------------------------------------------------------------
# Rendering primitives (float32 echo maps in relative reflectivity)
# --------------------------------------------------------------------------------------------------


def speckle(rng: np.random.Generator, h: int, w: int, sx: float, sy: float, looks: int = 5) -> np.ndarray:
    """Speckle intensity, mean 1: the average of ``looks`` independent fully developed speckle patterns.

    Each look is the squared magnitude of a low-pass filtered complex Gaussian field (exponential
    intensity, Rayleigh amplitude); averaging looks mimics spatial compounding (gamma intensity).
    """
    z = rng.standard_normal((2 * looks, h, w), dtype=np.float32)
    inten = np.zeros((h, w), np.float32)
    for k in range(2 * looks):
        f = cv2.GaussianBlur(z[k], (0, 0), sigmaX=sx, sigmaY=sy)
        inten += f * f
    return inten / max(float(inten.mean()), 1e-12)


def bmode(echo: np.ndarray, inten: np.ndarray, gain_db: float = 0.0, dynamic_range: float = 36.0,
          floor_db: float = -22.0) -> np.ndarray:
    """Log-compress ``echo * speckle`` to uint8 (``floor_db`` maps to 0, ``floor_db + dynamic_range`` to 255)."""
    level = 10.0 * np.log10(echo * inten + 1e-7) + gain_db
    out = (level - floor_db) * (255.0 / dynamic_range)
    return np.clip(out, 0, 255).astype(np.uint8)


def smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    f = cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma)
    return (f - f.mean()) / max(float(f.std()), 1e-6)


def _band(v: np.ndarray, lo: float, hi: float, soft: float) -> np.ndarray:
    """Soft indicator of lo <= v <= hi."""
    return _sigmoid((v - lo) / soft) * _sigmoid((hi - v) / soft)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


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
    cx: float
    cy: float
    radius: float     # pixels
    rot: float = 0.0  # radians
    flip: bool = False


def _local(xx: np.ndarray, yy: np.ndarray, les: Lesion, pl: Placement) -> tuple[np.ndarray, np.ndarray]:
    """Pixel grid -> lesion unit coordinates (x right, y down)."""
    dx, dy = (xx - pl.cx) / pl.radius, (yy - pl.cy) / pl.radius
    c, s = math.cos(-pl.rot), math.sin(-pl.rot)
    lx, ly = c * dx - s * dy, s * dx + c * dy
    if pl.flip:
        lx = -lx
    return lx, ly


def _outline_radius(theta: np.ndarray, les: Lesion) -> np.ndarray:
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


def lesion_polygon(les: Lesion, pl: Placement, n: int = 48, offset: tuple[float, float] = (0, 0)) -> list[list[float]]:
    """The lesion outline as an image-pixel polygon [[x, y], ...]."""
    theta = np.linspace(-math.pi, math.pi, n, endpoint=False)
    r = _outline_radius(theta, les)
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
    lx, ly = _local(xx, yy, les, pl)
    rho_abs = np.hypot(lx, ly)
    theta = np.arctan2(ly, lx)
    rho = rho_abs / _outline_radius(theta, les)
    edge = max(les.edge, 0.8 / pl.radius)
    inside = _sigmoid((1.0 - rho) / edge)
    x_extent = float(np.max(np.abs(lx[inside > 0.5]))) if (inside > 0.5).any() else 1.0
    column = _sigmoid((0.85 * x_extent - np.abs(lx)) / 0.1)
    return lx, ly, theta, rho, inside, column


def paint_lesion(echo: np.ndarray, les: Lesion, pl: Placement, rng: np.random.Generator,
                 xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Paint a lesion into an echo map (returns a new map), with foci, halo, shadows and enhancement."""
    h, w = echo.shape
    lx, ly, theta, rho, inside, column = _lesion_fields(les, pl, xx, yy)

    inner = les.echo * np.exp(les.texture * smooth_noise(rng, h, w, max(1.0, pl.radius * 0.25)))
    for cxu, cyu, ru in les.cysts:
        d = np.hypot(lx - cxu, ly - cyu) / ru
        cyst = _sigmoid((1.0 - d) / max(0.12, 0.8 / (ru * pl.radius)))
        inner = inner * (1 - cyst) + _ECHO["anechoic"] * cyst
    if les.halo > 0:
        ring = _band(rho, 1.0 - les.halo, 1.0 + 0.02, max(0.03, 0.5 / pl.radius))
        inner = inner * (1 - 0.85 * ring)
    out = echo * (1 - inside) + inner * inside

    # posterior effects: a band below the lesion, as wide as it
    below = _sigmoid((ly - 0.0) / 0.2) * (rho > 0.95)
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
                tail = np.exp(-((xx - px) ** 2) / (2 * spot ** 2)) * _band(yy - py, 0, pl.radius * 0.35, 0.5)
                tail = tail * np.exp(-np.maximum(yy - py, 0) / (pl.radius * 0.15))
                foci = np.maximum(foci, 20.0 * tail)
            else:  # macrocalcification: a larger bright curved blob with a dense shadow below
                big = 2.2 * spot
                blob = np.exp(-(((xx - px) / (1.6 * big)) ** 2 + ((yy - py) / big) ** 2) / 2)
                foci = np.maximum(foci, 25.0 * blob)
                sh = _sigmoid((yy - py - big) / 1.0) * np.exp(-((xx - px) / (1.4 * big)) ** 4)
                out = out * (1 - 0.85 * sh)
    elif les.foci == "peripheral":
        start, extent = les.rim_arc
        d = np.angle(np.exp(1j * (theta - start)))
        d = np.where(d < 0, d + 2 * math.pi, d)
        on_arc = (d <= extent).astype(np.float32)
        rim = _band(rho, 0.9, 1.05, max(0.025, 0.4 / pl.radius)) * on_arc
        foci = np.maximum(foci, 18.0 * rim)
        below_rim = _sigmoid((ly - 0.2) / 0.2) * (rho > 1.0) * column
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


def _random_points_in_lesion(rng: np.random.Generator, les: Lesion, n: int, max_rho: float = 0.75) -> np.ndarray:
    pts = []
    while len(pts) < n:
        th = rng.uniform(-math.pi, math.pi)
        r = max_rho * math.sqrt(rng.random()) * float(_outline_radius(np.array([th]), les)[0])
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
        # a thin isoechoic wall segment (a small mural component)
        les.cysts = np.zeros((0, 3))
    elif comp == "spongiform":
        n = int(rng.integers(14, 24))
        pts = _random_points_in_lesion(rng, les, n, max_rho=0.8)
        les.cysts = np.column_stack([pts, rng.uniform(0.11, 0.17, n)])
    elif comp == "mixed":
        n = int(rng.integers(1, 3))
        pts = _random_points_in_lesion(rng, les, n, max_rho=0.4)
        les.cysts = np.column_stack([pts, rng.uniform(0.4, 0.55, n)])
        les.enhancement = 1.3
    if echo in ("isoechoic", "hyperechoic") and comp == "solid":
        les.texture = 0.3  # coarser echotexture than the gland: iso/hyperechoic nodules stay visible
        if features["margin"] != "extrathyroidal":
            les.halo = 0.2 if features["margin"] != "irregular" else 0.1
    les.foci = features["foci"]
    if les.foci == "punctate":
        les.foci_pts = _random_points_in_lesion(rng, les, int(rng.integers(3, 8)), 0.75)
    elif les.foci == "macrocalcifications":
        les.foci_pts = _random_points_in_lesion(rng, les, int(rng.integers(1, 3)), 0.5)
    elif les.foci == "comet-tail":
        les.foci_pts = _random_points_in_lesion(rng, les, int(rng.integers(1, 3)), 0.6)
    elif les.foci == "peripheral":
        les.rim_arc = (rng.uniform(-math.pi, math.pi), rng.uniform(math.pi, 1.9 * math.pi))
    return les


# --------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------


@dataclass
class Frame:
    """Where the sector sits in the image, and the scanner UI drawn around it."""

    x0: int
    y0: int
    x1: int
    y1: int


def _frame_for(size: int, rng: np.random.Generator, framed: bool) -> Frame:
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
    img[bar_y0:bar_y1, 0:max(1, glyph)] = np.linspace(255, 20, bar_y1 - bar_y0, dtype=np.float32)[:, None].astype(np.uint8)


def _speckle_sigmas(w: int, h: int) -> tuple[float, float]:
    # speckle grain: ~1/80 of the sector width laterally, ~1/150 of its depth axially (at least 0.6 px)
    return max(0.6, w / 80.0), max(0.5, h / 150.0)


def _neck_background(rng: np.random.Generator, h: int, w: int, xx: np.ndarray, yy: np.ndarray,
                     gland: bool = True) -> tuple[np.ndarray, dict]:
    """Echo map of a transverse/longitudinal neck view; returns it and the gland geometry."""
    v = yy / h
    echo = np.full((h, w), 0.32, np.float32)
    t_fat, t_mus = rng.uniform(0.07, 0.11), rng.uniform(0.19, 0.24)
    echo = np.where(v < 0.035, 1.2, echo)
    echo = np.where((v >= 0.035) & (v < t_fat), 0.35, echo)
    striation = 1 + 0.35 * np.sin(2 * math.pi * yy / max(2.0, h / 30) + rng.uniform(0, 6))
    echo = np.where((v >= t_fat) & (v < t_mus), _MUSCLE * striation, echo).astype(np.float32)
    for t in (t_fat, t_mus):
        echo = echo + 1.6 * _band(v, t - 0.006, t + 0.006, 0.004)
    geo = {}
    if gland:
        gcx = w * rng.uniform(0.42, 0.58)
        gcy = h * rng.uniform(0.47, 0.53)
        ax, ay = w * rng.uniform(0.40, 0.48), h * (0.5 - t_mus + 0.02) + h * rng.uniform(0.0, 0.06)
        gcy = h * t_mus + ay + 1
        d = np.sqrt(((xx - gcx) / ax) ** 2 + ((yy - gcy) / ay) ** 2)
        inside = _sigmoid((1 - d) / 0.02)
        gl = _GLAND * np.exp(0.12 * smooth_noise(rng, h, w, max(1.0, w / 25)))
        echo = echo * (1 - inside) + gl * inside
        echo = echo + 1.0 * _band(d, 0.985, 1.015, 0.006)
        geo = {"cx": gcx, "cy": gcy, "ax": ax, "ay": ay, "top": h * t_mus}
    # carotid artery at one side, below the muscles
    side = rng.choice([0.06, 0.94])
    ccx, ccy, cr = w * side, h * rng.uniform(0.45, 0.6), w * rng.uniform(0.07, 0.1)
    dc = np.hypot(xx - ccx, yy - ccy) / cr
    echo = np.where(dc < 1, 0.004, echo) + 1.2 * _band(dc, 0.97, 1.07, 0.02)
    echo = echo * (1 + 0.7 * _sigmoid((yy - ccy - cr) / 2) * _sigmoid((cr - np.abs(xx - ccx)) / 2))
    return echo.astype(np.float32), geo


def attenuate(echo: np.ndarray, h: int, yy: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Depth attenuation left after time-gain compensation: ``exp(-alpha * depth / h)``."""
    return echo * np.exp(-alpha * yy / h)


@dataclass
class ViewRender:
    """A rendered thyroid view and where things are in it."""

    image: np.ndarray                       # uint8, (size, size)
    polygon: list[list[float]] | None       # the nodule outline in image pixels
    frame: Frame                            # where the sector lies
    placement: Placement | None             # the nodule's placement, in sector pixels


def _render_view(rng: np.random.Generator, size: int, nodule: Lesion | None, features: dict | None,
                 framed: bool = True) -> ViewRender:
    fr = _frame_for(size, rng, framed)
    h, w = fr.y1 - fr.y0, fr.x1 - fr.x0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    echo, geo = _neck_background(rng, h, w, xx, yy, gland=True)
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
    echo = attenuate(echo, h, yy)
    sx, sy = _speckle_sigmas(w, h)
    sector = bmode(echo, speckle(rng, h, w, sx, sy), gain_db=rng.uniform(-1.5, 1.5))
    img = np.zeros((size, size), np.uint8)
    img[fr.y0:fr.y1, fr.x0:fr.x1] = sector
    _draw_ui(img, fr, rng)
    return ViewRender(img, polygon, fr, pl)


def render_thyroid_view(rng: np.random.Generator, size: int, nodule: Lesion | None, features: dict | None,
                        framed: bool = True) -> tuple[np.ndarray, list[list[float]] | None]:
    """One thyroid view (uint8 size x size) and the nodule's polygon in image pixels (None without nodule)."""
    view = _render_view(rng, size, nodule, features, framed)
    return view.image, view.polygon


# --------------------------------------------------------------------------------------------------
# Burned-in marks (calipers, measurement lines, text, scale and marker), drawn at known positions
# --------------------------------------------------------------------------------------------------

#: Colours of coloured marks; white marks are (255, 255, 255).
MARK_COLOURS = ((0, 255, 0), (0, 230, 255), (255, 230, 0))
#: Echo level above which a pixel of a foci map counts as an echogenic focus (3 dB over the gland).
FOCI_LEVEL = 2.0


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


def _draw_text(canvas, mask, text: str, org: tuple[int, int], scale: float, colour) -> None:
    layer = np.zeros(mask.shape, np.uint8)
    cv2.putText(layer, text, org, cv2.FONT_HERSHEY_PLAIN, scale, 255, 1, cv2.LINE_8)
    _paint(canvas, mask, layer > 0, colour)


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
    the sector's lower left corner, and a depth scale with ticks and a focus marker along the
    sector's right edge.  Each mark is white or, with probability ``colour_p``, green, cyan or
    yellow.  ``calipers=False`` draws the label, scale and marker only.

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
    scale = 0.7 if size < 256 else 0.9
    _draw_text(canvas, mask, text, (frame.x0 + 3, frame.y1 - 4), scale, _mark_colour(rng, colour_p))
    drawn["text"] = True
    sx = frame.x1 - 3
    sy0, sy1 = frame.y0 + (frame.y1 - frame.y0) // 5, frame.y1 - (frame.y1 - frame.y0) // 5
    _draw_scale(canvas, mask, sx, sy0, sy1, int(rng.integers(sy0 + 4, sy1 - 4)), _mark_colour(rng, colour_p))
    drawn["scale"] = True
    coloured = (canvas[..., 0] != canvas[..., 1]) | (canvas[..., 1] != canvas[..., 2])
    out = canvas if coloured.any() else canvas[..., 0].copy()
    return out, mask, drawn


def view_foci_mask(nodule: Lesion | None, view: ViewRender) -> np.ndarray:
    """Boolean mask of the echogenic foci (punctate, comet-tail, calcifications, rim) of a view."""
    size = view.image.shape[0]
    out = np.zeros((size, size), dtype=bool)
    if nodule is None or view.placement is None:
        return out
    fr = view.frame
    out[fr.y0:fr.y1, fr.x0:fr.x1] = foci_map(nodule, view.placement, fr.y1 - fr.y0, fr.x1 - fr.x0) >= FOCI_LEVEL
    return out


# --------------------------------------------------------------------------------------------------
# Cohort
# --------------------------------------------------------------------------------------------------


def _check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise DataError(f"phantom image size must be an integer of at least 64 pixels, got {size!r}.")
    return int(size)


def _prepare_out_dir(out_dir: Path, marker: str) -> None:
    """Refuse to overwrite a folder that is not empty and not an earlier output of the same kind."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DataError(f"{out_dir}: exists and is not a folder; choose another --out.")
        if any(out_dir.iterdir()) and not (out_dir / marker).is_file():
            raise DataError(f"{out_dir}: folder is not empty and was not written by thyro ({marker} missing); "
                            "choose an empty or new --out folder.")


def generate_cohort(out_dir: str | os.PathLike, *, n_patients: int = 120, images_per_patient: tuple[int, int] = (1, 3),
                    size: int = 128, seed: int = 0, framed: bool = True, marks: bool = False,
                    marks_bias: float = 0.0) -> Path:
    """Write a synthetic thyroid-ultrasound cohort (PNG images and ``manifest.csv``) to ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder (created; an earlier phantom there is replaced; any other non-empty folder is refused).
    n_patients : int
        Synthetic patients, one nodule each.
    images_per_patient : (int, int)
        Inclusive range of views per patient (different views of the same nodule).
    size : int
        Image side in pixels (>= 64).
    seed : int
        Patient ``i`` depends only on ``(seed, i)``, so a larger cohort extends a smaller one.
    framed : bool
        Draw the scanner frame (black borders, depth dots, settings text) around the sector.
    marks : bool
        Burn scanner marks into the sector (:func:`draw_marks`: calipers, dotted measurement
        lines, a label, a depth scale with a marker; white or coloured) and save, for each image,
        ``masks/NAME.marks.png`` (every pixel a mark changed) and ``masks/NAME.foci.png`` (the
        nodule's echogenic foci), so mark removal and the survival of foci can be measured.  The images
        are otherwise the same as without marks (marks use their own random stream).
    marks_bias : float
        In [0, 1]: calipers are drawn on a view with probability ``(1 + marks_bias) / 2`` when
        the nodule is malignant and ``(1 - marks_bias) / 2`` when benign (0: no shortcut; as in
        clinics, where suspicious nodules are measured more often, a shortcut a model can learn).

    Returns
    -------
    Path of the manifest.  Columns beyond the manifest schema: ``p_malignant``, ``tirads``,
    ``tirads_points``, ``composition``, ``echogenicity``, ``shape``, ``margin``, ``foci``, ``view``;
    with marks also ``mark_mask``, ``foci_mask`` (paths like ``image``), ``calipers`` (count) and
    ``marks`` (what was drawn).  ``roi`` holds the nodule outline polygon.  The label is drawn per
    patient from ``p_malignant``.
    """
    out_dir = Path(out_dir)
    size = _check_size(size)
    if int(n_patients) < 1:
        raise DataError(f"n_patients must be at least 1, got {n_patients}.")
    lo, hi = (int(images_per_patient), int(images_per_patient)) if np.isscalar(images_per_patient) else \
        (int(images_per_patient[0]), int(images_per_patient[1]))
    if lo < 1 or hi < lo:
        raise DataError(f"images_per_patient must be a range (lo, hi) with 1 <= lo <= hi, got {images_per_patient}.")
    if not 0.0 <= float(marks_bias) <= 1.0:
        raise DataError(f"marks_bias must be between 0 and 1, got {marks_bias}.")
    _prepare_out_dir(out_dir, "phantom.json")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        records = []
        for i, ss in enumerate(np.random.SeedSequence(seed).spawn(int(n_patients))):
            rng = np.random.default_rng(ss)
            features = sample_features(rng)
            points = tirads_points(features)
            p = float(malignancy_probability(points))
            label = int(rng.random() < p)
            nodule = thyroid_nodule(rng, features)
            pid = f"P{i + 1:04d}"
            for v in range(int(rng.integers(lo, hi + 1))):
                view = _render_view(rng, size, nodule, features, framed=framed)
                img, poly = view.image, view.polygon
                name = f"images/{pid}_v{v + 1}.png"
                extra = {}
                if marks:
                    mrng = np.random.default_rng(np.random.SeedSequence([seed, i, v, 0x6D61726B]))
                    p_cal = (1 + marks_bias) / 2 if label else (1 - marks_bias) / 2
                    img, mask, drawn = draw_marks(img, poly, view.frame, mrng, calipers=bool(mrng.random() < p_cal))
                    stem = f"masks/{pid}_v{v + 1}"
                    (tmp / "masks").mkdir(exist_ok=True)
                    cv2.imwrite(str(tmp / f"{stem}.marks.png"), mask.astype(np.uint8) * 255)
                    cv2.imwrite(str(tmp / f"{stem}.foci.png"), view_foci_mask(nodule, view).astype(np.uint8) * 255)
                    extra = {"mark_mask": f"{stem}.marks.png", "foci_mask": f"{stem}.foci.png",
                             "calipers": drawn["calipers"],
                             "marks": ",".join(k for k in ("dotted", "text", "scale") if drawn[k])}
                cv2.imwrite(str(tmp / name), img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                records.append({"image": name, "label": label, "patient_id": pid, "group": pid,
                                "roi": roi_to_json({"polygons": [poly]}), "label_source": "synthetic",
                                "p_malignant": round(p, 6),
                                "tirads": tirads_level(points), "tirads_points": points, **features,
                                "view": v + 1, **extra})
        manifest = manifest_from_records(records, tmp)
        write_manifest(manifest.df, tmp / "manifest.csv", root=tmp)
        labels = manifest.df["label"].astype(int).to_numpy()
        write_json(tmp / "phantom.json", {
            "kind": "thyroid-phantom", "seed": seed, "n_patients": int(n_patients), "n_images": len(records),
            "images_per_patient": [lo, hi], "size": size, "framed": framed,
            **({"marks": True, "marks_bias": float(marks_bias)} if marks else {}),
            "malignancy_model": {"intercept": MALIGNANCY_INTERCEPT, "slope": MALIGNANCY_SLOPE,
                                 "formula": "p = sigmoid(intercept + slope * tirads_points)"},
            "n_malignant_images": int(labels.sum()),
            "best_auroc": auroc_or_none(labels, manifest.df["p_malignant"].to_numpy(float)),
        })
    return out_dir / "manifest.csv"


def best_auroc(manifest: Manifest | str | os.PathLike | pd.DataFrame) -> float:
    """AUROC of the known ``p_malignant`` against the drawn labels: the best achievable on the cohort.

    No classifier can beat it in expectation, since ``p_malignant`` is the true probability of the
    label given the nodule's features (what the images show).
    """
    if isinstance(manifest, (str, os.PathLike)):
        manifest = read_manifest(manifest)
    df = manifest.df if isinstance(manifest, Manifest) else manifest
    if "p_malignant" not in df.columns:
        raise DataError("manifest has no 'p_malignant' column: best_auroc needs a phantom cohort.")
    df = df[df["label"].notna()]
    labels = df["label"].astype(int).to_numpy()
    auc = auroc_or_none(labels, df["p_malignant"].to_numpy(float))
    if auc is None:
        raise DataError("best_auroc needs both classes among the labelled images.")
    return auc


# --------------------------------------------------------------------------------------------------
# Multi-class radiology corpus
# --------------------------------------------------------------------------------------------------

#: Classes of the synthetic corpus, as ``modality/region/class``.
CORPUS_CLASSES = (
    "US/thyroid/normal", "US/thyroid/nodule",
    "US/liver/normal", "US/liver/cyst", "US/liver/hemangioma", "US/liver/metastasis",
    "US/kidney/normal", "US/kidney/cyst", "US/kidney/stone",
    "US/breast/fibroadenoma", "US/breast/carcinoma",
    "CT/lung/normal", "CT/lung/nodule",
    "MR/brain/normal", "MR/brain/tumor",
)


def _us_finish(rng: np.random.Generator, echo: np.ndarray, yy: np.ndarray, size: int, fr: Frame,
               alpha: float = 0.5) -> np.ndarray:
    h, w = echo.shape
    echo = attenuate(echo, h, yy, alpha)
    sx, sy = _speckle_sigmas(w, h)
    sector = bmode(echo, speckle(rng, h, w, sx, sy), gain_db=rng.uniform(-2, 2))
    img = np.zeros((size, size), np.uint8)
    img[fr.y0:fr.y1, fr.x0:fr.x1] = sector
    _draw_ui(img, fr, rng)
    return img


def _simple_lesion(rng: np.random.Generator, margin: str, aspect: float, echo: float, **kw) -> Lesion:
    les = make_outline(rng, margin, aspect)
    les.echo = echo
    for k, v in kw.items():
        setattr(les, k, v)
    return les


def _vessels(rng: np.random.Generator, echo: np.ndarray, xx: np.ndarray, yy: np.ndarray, n: int, width: float) -> np.ndarray:
    """Anechoic tubular vessels with bright walls (straight segments at random angles)."""
    h, w = echo.shape
    for _ in range(n):
        x0, y0 = rng.uniform(0, w), rng.uniform(0.2 * h, h)
        ang = rng.uniform(0, math.pi)
        d = np.abs((xx - x0) * math.sin(ang) - (yy - y0) * math.cos(ang))
        along = np.abs((xx - x0) * math.cos(ang) + (yy - y0) * math.sin(ang))
        r = width * rng.uniform(0.6, 1.4)
        seg = _sigmoid((w * rng.uniform(0.15, 0.35) - along) / 2)
        lumen = _sigmoid((r - d) / 0.7) * seg
        wall = _band(d, r * 0.9, r * 1.3, 0.5) * seg
        echo = echo * (1 - lumen) + 0.004 * lumen + 0.8 * wall
    return echo


def _render_us_class(rng: np.random.Generator, cls: str, size: int) -> np.ndarray:
    region, kind = cls.split("/")[1:]
    fr = _frame_for(size, rng, framed=True)
    h, w = fr.y1 - fr.y0, fr.x1 - fr.x0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    side = min(w, h)
    if region == "thyroid":
        echo, geo = _neck_background(rng, h, w, xx, yy, gland=True)
        if kind == "nodule":
            features = sample_features(rng)
            les = thyroid_nodule(rng, features)
            pl = Placement(geo["cx"] + rng.uniform(-0.25, 0.25) * geo["ax"], geo["cy"] + rng.uniform(-0.15, 0.15) * geo["ay"],
                           side * rng.uniform(0.12, 0.22), rng.uniform(-0.2, 0.2), bool(rng.random() < 0.5))
            echo = paint_lesion(echo, les, pl, rng, xx, yy)
        return _us_finish(rng, echo, yy, size, fr)
    if region == "liver":
        echo = 0.55 * np.exp(0.08 * smooth_noise(rng, h, w, max(1.0, w / 20))).astype(np.float32)
        echo = np.where(yy < h * 0.05, 1.1, echo).astype(np.float32)
        echo = _vessels(rng, echo, xx, yy, int(rng.integers(2, 5)), side * 0.03)
        # diaphragm: bright curve near the bottom
        curve = h * rng.uniform(0.8, 0.92) - 0.15 * h * ((xx - w / 2) / w) ** 2 * 4
        echo = echo + 2.0 * _band(yy - curve, -1.5, 1.5, 0.8)
        pl = Placement(w * rng.uniform(0.3, 0.7), h * rng.uniform(0.35, 0.6), side * rng.uniform(0.1, 0.2),
                       rng.uniform(-0.5, 0.5), bool(rng.random() < 0.5))
        if kind == "cyst":
            les = _simple_lesion(rng, "smooth", rng.uniform(0.7, 1.3), 0.003, texture=0.0, enhancement=2.0)
        elif kind == "hemangioma":
            les = _simple_lesion(rng, str(rng.choice(["smooth", "lobulated"])), rng.uniform(0.7, 1.2), 1.6, texture=0.25)
        elif kind == "metastasis":  # target lesion: iso/hyper centre, thick hypoechoic halo
            les = _simple_lesion(rng, str(rng.choice(["smooth", "ill-defined"])), rng.uniform(0.8, 1.2),
                                 rng.uniform(0.5, 1.0), texture=0.3, halo=rng.uniform(0.3, 0.45))
        else:
            les = None
        if les is not None:
            echo = paint_lesion(echo, les, pl, rng, xx, yy)
        return _us_finish(rng, echo, yy, size, fr, alpha=0.8)
    if region == "kidney":
        echo = 0.5 * np.exp(0.08 * smooth_noise(rng, h, w, max(1.0, w / 20))).astype(np.float32)
        kcx, kcy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.45, 0.55)
        kax, kay, rot = w * rng.uniform(0.3, 0.4), h * rng.uniform(0.18, 0.25), rng.uniform(-0.4, 0.4)
        c, s = math.cos(rot), math.sin(rot)
        u, v = ((xx - kcx) * c + (yy - kcy) * s) / kax, (-(xx - kcx) * s + (yy - kcy) * c) / kay
        d = np.sqrt(u ** 2 + v ** 2)
        cortex = _sigmoid((1 - d) / 0.04)
        echo = echo * (1 - cortex) + 0.22 * cortex + 1.2 * _band(d, 0.97, 1.04, 0.01)
        sinus = _sigmoid((0.5 - np.sqrt((u / 1.0) ** 2 + (v / 0.55) ** 2) + 0.08 * smooth_noise(rng, h, w, 2.0)) / 0.05)
        echo = echo * (1 - sinus) + 1.3 * sinus
        if kind == "cyst":
            ang = rng.uniform(0, 2 * math.pi)
            pl = Placement(kcx + 0.75 * kax * math.cos(ang) * c, kcy + 0.75 * kay * math.sin(ang), side * rng.uniform(0.08, 0.14))
            les = _simple_lesion(rng, "smooth", rng.uniform(0.8, 1.2), 0.003, texture=0.0, enhancement=2.0)
            echo = paint_lesion(echo, les, pl, rng, xx, yy)
        elif kind == "stone":
            pl = Placement(kcx + rng.uniform(-0.3, 0.3) * kax, kcy, side * rng.uniform(0.06, 0.1))
            les = _simple_lesion(rng, "smooth", 1.0, 1.3, texture=0.0, foci="macrocalcifications",
                                 foci_pts=np.zeros((1, 2)))
            echo = paint_lesion(echo, les, pl, rng, xx, yy)
        return _us_finish(rng, echo, yy, size, fr, alpha=0.8)
    if region == "breast":
        v = yy / h
        echo = np.full((h, w), 0.9, np.float32) * np.exp(0.2 * smooth_noise(rng, h, w, max(1.0, w / 30)))
        echo = np.where(v < 0.04, 1.3, echo)
        fat = smooth_noise(rng, h, w, max(1.5, w / 14)) > 0.6
        echo = np.where(fat & (v < 0.45), 0.25, echo).astype(np.float32)
        pl = Placement(w * rng.uniform(0.35, 0.65), h * rng.uniform(0.4, 0.6), side * rng.uniform(0.14, 0.22),
                       rng.uniform(-0.15, 0.15), bool(rng.random() < 0.5))
        if kind == "fibroadenoma":
            les = _simple_lesion(rng, str(rng.choice(["smooth", "lobulated"], p=[0.7, 0.3])), rng.uniform(0.5, 0.8),
                                 0.3, texture=0.15, enhancement=1.3)
        else:
            les = _simple_lesion(rng, "irregular", rng.uniform(1.1, 1.6), 0.08, texture=0.2,
                                 shadow=rng.uniform(0.4, 0.7), halo=0.0)
            if rng.random() < 0.5:
                les.foci = "punctate"
                les.foci_pts = _random_points_in_lesion(rng, les, int(rng.integers(3, 7)), 0.7)
        echo = paint_lesion(echo, les, pl, rng, xx, yy)
        return _us_finish(rng, echo, yy, size, fr, alpha=0.6)
    raise DataError(f"unknown ultrasound corpus class {cls!r}")


def _render_ct_lung(rng: np.random.Generator, size: int, nodule: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    body = _sigmoid((1 - np.sqrt(((xx - c) / (0.46 * size)) ** 2 + ((yy - c) / (0.34 * size)) ** 2)) / 0.01)
    img = 0.02 + 0.5 * body
    for sgn in (-1, 1):
        lx = c + sgn * size * rng.uniform(0.18, 0.22)
        lung = _sigmoid((1 - np.sqrt(((xx - lx) / (0.16 * size)) ** 2 + ((yy - c) / (0.26 * size)) ** 2)) / 0.03)
        img = img * (1 - lung) + 0.06 * lung
        for _ in range(12):  # vessels: small bright dots and short lines
            vx, vy = lx + rng.uniform(-0.12, 0.12) * size, c + rng.uniform(-0.2, 0.2) * size
            r = size * rng.uniform(0.004, 0.012)
            img = np.maximum(img, 0.45 * lung * np.exp(-((xx - vx) ** 2 + (yy - vy) ** 2) / (2 * r ** 2)))
    spine = np.exp(-(((xx - c) / (0.05 * size)) ** 2 + ((yy - c - 0.25 * size) / (0.05 * size)) ** 2))
    img = np.maximum(img, 0.95 * spine)
    if nodule:
        sgn = rng.choice([-1, 1])
        les = make_outline(rng, str(rng.choice(["smooth", "lobulated", "irregular"])), rng.uniform(0.8, 1.2))
        pl = Placement(c + sgn * size * rng.uniform(0.15, 0.25), c + rng.uniform(-0.15, 0.15) * size,
                       size * rng.uniform(0.025, 0.06), rng.uniform(0, math.pi))
        lx, ly = _local(xx, yy, les, pl)
        rho = np.hypot(lx, ly) / _outline_radius(np.arctan2(ly, lx), les)
        img = np.maximum(img, 0.55 * _sigmoid((1 - rho) / 0.08))
    img = img + rng.normal(0, 0.025, img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _render_mr_brain(rng: np.random.Generator, size: int, tumor: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    d = np.sqrt(((xx - c) / (0.38 * size)) ** 2 + ((yy - c) / (0.45 * size)) ** 2)
    skull = _band(d, 0.93, 1.0, 0.01)
    brain = _sigmoid((0.92 - d) / 0.01)
    gyri = smooth_noise(rng, size, size, max(1.0, size / 40))
    tissue = np.where(gyri > 0.0, 0.62, 0.45) * brain
    vent = _sigmoid((1 - np.sqrt(((xx - c) / (0.08 * size)) ** 2 + ((yy - c) / (0.14 * size)) ** 2)) / 0.08)
    img = 0.85 * skull + tissue * (1 - vent) + 0.12 * vent * brain
    if tumor:
        les = make_outline(rng, str(rng.choice(["lobulated", "irregular", "smooth"])), rng.uniform(0.8, 1.25))
        pl = Placement(c + rng.uniform(-0.2, 0.2) * size, c + rng.uniform(-0.25, 0.25) * size,
                       size * rng.uniform(0.06, 0.11), rng.uniform(0, math.pi))
        lx, ly = _local(xx, yy, les, pl)
        rho = np.hypot(lx, ly) / _outline_radius(np.arctan2(ly, lx), les)
        edema = _sigmoid((1.8 - rho) / 0.2) * brain
        img = img * (1 - 0.35 * edema)
        ring = _band(rho, 0.75, 1.0, 0.05)
        core = _sigmoid((0.75 - rho) / 0.05)
        img = img * (1 - core) + 0.15 * core + 0.5 * ring
    # Rician noise
    sigma = 0.03
    re = img + rng.normal(0, sigma, img.shape)
    im = rng.normal(0, sigma, img.shape)
    return np.clip(np.hypot(re, im) * 255, 0, 255).astype(np.uint8)


#: Thyroid nodule appearances, each one TI-RADS feature value on an otherwise plain nodule (solid,
#: isoechoic, wider than tall, smooth, no echogenic foci), seen as a study sees it after its ROI crop.
#: They teach a backbone what nodules look like, by appearance: never by any cohort's malignancy labels.
NEUTRAL_FEATURES = {"composition": "solid", "echogenicity": "isoechoic", "shape": "wider-than-tall",
                    "margin": "smooth", "foci": "none"}
APPEARANCE_CLASSES: dict[str, dict[str, str]] = {
    "US/thyroid-nodule/plain": {},
    "US/thyroid-nodule/cystic": {"composition": "cystic"},
    "US/thyroid-nodule/spongiform": {"composition": "spongiform"},
    "US/thyroid-nodule/mixed-cystic": {"composition": "mixed"},
    "US/thyroid-nodule/hyperechoic": {"echogenicity": "hyperechoic"},
    "US/thyroid-nodule/hypoechoic": {"echogenicity": "hypoechoic"},
    "US/thyroid-nodule/very-hypoechoic": {"echogenicity": "very hypoechoic"},
    "US/thyroid-nodule/taller-than-wide": {"shape": "taller-than-wide"},
    "US/thyroid-nodule/lobulated": {"margin": "lobulated"},
    "US/thyroid-nodule/irregular": {"margin": "irregular"},
    "US/thyroid-nodule/extrathyroidal": {"margin": "extrathyroidal"},
    "US/thyroid-nodule/comet-tail": {"foci": "comet-tail"},
    "US/thyroid-nodule/macrocalcification": {"foci": "macrocalcifications"},
    "US/thyroid-nodule/rim-calcification": {"foci": "peripheral"},
    "US/thyroid-nodule/punctate-foci": {"foci": "punctate"},
}
#: How far beyond the nodule's outline an appearance crop reaches (as a study's ``roi_margin``).
APPEARANCE_MARGIN = 0.3

#: A non-medical corpus (shapes, textures, gradients) standing in for natural-image pretraining such as ImageNet.
GENERIC_CLASSES = ("shape/disc", "shape/square", "shape/triangle", "shape/ring", "shape/cross",
                   "texture/stripes", "texture/checkerboard", "texture/dots", "texture/blobs", "texture/grain",
                   "scene/gradient", "scene/horizon")


def render_appearance(rng: np.random.Generator, cls: str, size: int, render_size: int = 128) -> np.ndarray:
    """A nodule crop of appearance class ``cls`` (see :data:`APPEARANCE_CLASSES`), ``size`` x ``size``."""
    features = {**NEUTRAL_FEATURES, **APPEARANCE_CLASSES[cls]}
    nodule = thyroid_nodule(rng, features)
    img, poly = render_thyroid_view(rng, render_size, nodule, features)
    pts = np.asarray(poly, dtype=float)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    mx, my = APPEARANCE_MARGIN * (x1 - x0), APPEARANCE_MARGIN * (y1 - y0)
    x0, x1 = int(max(0, np.floor(x0 - mx))), int(min(render_size, np.ceil(x1 + mx)))
    y0, y1 = int(max(0, np.floor(y0 - my))), int(min(render_size, np.ceil(y1 + my)))
    from thyro.data.preprocess import resize_square

    # letterboxed like a study's crop (preprocess.keep_aspect): the nodule keeps its shape
    return resize_square(img[y0:y1, x0:x1], size, keep_aspect=True)


def render_generic(rng: np.random.Generator, cls: str, size: int) -> np.ndarray:
    """One image of a non-medical class of :data:`GENERIC_CLASSES` (uint8, ``size`` x ``size``)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    bg = 0.35 + 0.25 * smooth_noise(rng, size, size, size / 6) * rng.uniform(0.3, 1.0)
    kind = cls.split("/")[1]
    cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.12, 0.3)
    fg = rng.uniform(0.05, 0.95)
    ang = rng.uniform(0, math.pi)
    u = (xx - cx) * math.cos(ang) + (yy - cy) * math.sin(ang)
    v = -(xx - cx) * math.sin(ang) + (yy - cy) * math.cos(ang)
    d = np.hypot(xx - cx, yy - cy)
    mask = None
    if kind == "disc":
        mask = d < r
    elif kind == "square":
        mask = (np.abs(u) < r * 0.8) & (np.abs(v) < r * 0.8)
    elif kind == "triangle":
        mask = (v > -r * 0.6) & (v < r * 0.9 - 1.6 * np.abs(u))
    elif kind == "ring":
        mask = (d < r) & (d > r * rng.uniform(0.5, 0.75))
    elif kind == "cross":
        w = r * rng.uniform(0.2, 0.35)
        mask = ((np.abs(u) < w) & (np.abs(v) < r)) | ((np.abs(v) < w) & (np.abs(u) < r))
    if mask is not None:
        img = np.where(mask, fg, bg)
    elif kind == "stripes":
        img = 0.5 + 0.4 * np.sin(2 * math.pi * u * rng.uniform(4, 12) + rng.uniform(0, 6.3))
    elif kind == "checkerboard":
        k = rng.uniform(3, 9)
        img = np.where((np.floor(u * k) + np.floor(v * k)) % 2 == 0, 0.2, 0.8) * rng.uniform(0.6, 1.0)
    elif kind == "dots":
        img = bg.copy()
        for _ in range(int(rng.integers(8, 30))):
            px, py, pr = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.015, 0.05)
            img = np.where(np.hypot(xx - px, yy - py) < pr, rng.uniform(0.6, 1.0), img)
    elif kind == "blobs":
        img = 0.5 + 0.45 * np.tanh(3 * smooth_noise(rng, size, size, size / rng.uniform(8, 16)))
    elif kind == "grain":
        img = bg + 0.25 * smooth_noise(rng, size, size, rng.uniform(0.6, 1.5))
    elif kind == "gradient":
        img = np.clip(0.5 + u * rng.uniform(0.8, 2.0), 0, 1)
    else:  # horizon: a bright upper half above a darker textured ground, at an angle
        img = np.where(v < rng.uniform(-0.2, 0.2), rng.uniform(0.6, 0.9), bg * 0.6)
    img = img + rng.normal(0, 0.03, img.shape)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def render_corpus_image(rng: np.random.Generator, cls: str, size: int) -> np.ndarray:
    """One uint8 ``size`` x ``size`` image of corpus class ``cls`` (``modality/region/class``, an
    appearance class, or a generic one)."""
    if cls in APPEARANCE_CLASSES:
        return render_appearance(rng, cls, size)
    if cls in GENERIC_CLASSES:
        return render_generic(rng, cls, size)
    if cls not in CORPUS_CLASSES:
        raise DataError(f"unknown corpus class {cls!r}; known: {', '.join(ALL_CORPUS_CLASSES)}")
    modality = cls.split("/")[0]
    if modality == "US":
        return _render_us_class(rng, cls, size)
    if modality == "CT":
        return _render_ct_lung(rng, size, nodule=cls.endswith("nodule"))
    return _render_mr_brain(rng, size, tumor=cls.endswith("tumor"))


def generate_corpus(out_dir: str | os.PathLike, *, n_per_class: int | dict[str, int] = 100, size: int = 128,
                    seed: int = 0, classes: list[str] | tuple[str, ...] | None = None) -> Path:
    """Write a synthetic radiology corpus in RadImageNet's layout for supervised pretraining.

    Parameters
    ----------
    out_dir : path
        Output folder: ``MODALITY/REGION/CLASS/NNNNN.png`` plus ``corpus.csv`` (an earlier corpus
        there is replaced; any other non-empty folder is refused).
    n_per_class : int or dict
        Images per class, or per class name (every chosen class must have a count).
    size : int
        Image side (>= 64).
    seed : int
        Image ``k`` of a class depends only on ``(seed, class, k)``.
    classes : list of str, optional
        Subset of :data:`CORPUS_CLASSES` (``modality/region/class``); default all.

    Returns
    -------
    Path of ``corpus.csv`` with columns ``image`` (path relative to the CSV), ``class``
    (``modality/region/class``), ``class_index`` (in the order of ``classes``), ``modality``,
    ``region``.  It has no binary ``label``, so it reads as an (unlabelled) manifest and caches like
    one.  The ultrasound classes share the thyroid phantom's speckle, lesion outlines, echogenic foci
    and acoustic shadows; CT and MR classes add other textures.
    """
    out_dir = Path(out_dir)
    size = _check_size(size) if classes is None or any(c in CORPUS_CLASSES for c in classes) else int(size)
    chosen = list(CORPUS_CLASSES if classes is None else classes)
    unknown = [c for c in chosen if c not in ALL_CORPUS_CLASSES]
    if unknown or not chosen:
        raise DataError(f"unknown corpus class(es) {unknown or chosen!r}; known: {', '.join(ALL_CORPUS_CLASSES)}")
    if isinstance(n_per_class, dict):
        missing = [c for c in chosen if c not in n_per_class]
        if missing:
            raise DataError(f"n_per_class has no count for class(es) {', '.join(missing)}.")
        counts = {c: int(n_per_class[c]) for c in chosen}
    else:
        counts = {c: int(n_per_class) for c in chosen}
    low = {c: n for c, n in counts.items() if n < 1}
    if low:
        raise DataError(f"n_per_class must be at least 1, got {low}.")
    _prepare_out_dir(out_dir, "corpus.csv")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        records = []
        for ci, cls in enumerate(chosen):
            folder = tmp / cls
            folder.mkdir(parents=True)
            class_seed = int.from_bytes(cls.encode(), "little") % (2 ** 32)
            for k, ss in enumerate(np.random.SeedSequence([seed, class_seed]).spawn(counts[cls])):
                img = render_corpus_image(np.random.default_rng(ss), cls, size)
                name = f"{cls}/{k:05d}.png"
                cv2.imwrite(str(tmp / name), img)
                modality, region = (cls.split("/") + [""])[:2]
                records.append({"image": name, "class": cls, "class_index": ci, "modality": modality, "region": region})
        write_csv(tmp / "corpus.csv", pd.DataFrame.from_records(records))
    return out_dir / "corpus.csv"


#: Every class :func:`generate_corpus` can render.
ALL_CORPUS_CLASSES = CORPUS_CLASSES + tuple(APPEARANCE_CLASSES) + GENERIC_CLASSES
