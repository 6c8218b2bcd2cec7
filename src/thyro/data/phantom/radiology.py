"""The radiology classes of the synthetic corpus: ultrasound of the thyroid, liver, kidney and breast
with their lesions, rendered with the thyroid phantom's speckle, lesion outlines, echogenic foci and
shadows, plus CT-like lung and MR-like brain images (:data:`CORPUS_CLASSES`, :func:`render_radiology`).
"""

from __future__ import annotations

import math

import numpy as np

from thyro.data.phantom.anatomy import Frame, frame_for, neck_background, screen
from thyro.data.phantom.imaging import band, sigmoid, smooth_noise
from thyro.data.phantom.lesion import (
    Lesion,
    Placement,
    lesion_polar,
    make_outline,
    paint_lesion,
    random_points_in_lesion,
    thyroid_nodule,
)
from thyro.data.phantom.tirads import sample_features
from thyro.errors import DataError


#: Classes of the synthetic corpus, as ``modality/region/class``.
CORPUS_CLASSES = (
    "US/thyroid/normal", "US/thyroid/nodule",
    "US/liver/normal", "US/liver/cyst", "US/liver/hemangioma", "US/liver/metastasis",
    "US/kidney/normal", "US/kidney/cyst", "US/kidney/stone",
    "US/breast/fibroadenoma", "US/breast/carcinoma",
    "CT/lung/normal", "CT/lung/nodule",
    "MR/brain/normal", "MR/brain/tumor",
)


def render_radiology(rng: np.random.Generator, cls: str, size: int) -> np.ndarray:
    """One uint8 ``size`` x ``size`` image of a class of :data:`CORPUS_CLASSES` (``modality/region/class``)."""
    modality = cls.split("/")[0]
    if modality == "US":
        return _render_us_class(rng, cls, size)
    if modality == "CT":
        return _render_ct_lung(rng, size, nodule=cls.endswith("nodule"))
    return _render_mr_brain(rng, size, tumor=cls.endswith("tumor"))


def _render_us_class(rng: np.random.Generator, cls: str, size: int) -> np.ndarray:
    """An ultrasound class: its region's echo map, imaged into a framed sector."""
    region, kind = cls.split("/")[1:]
    fr = frame_for(size, rng, framed=True)
    h, w = fr.y1 - fr.y0, fr.x1 - fr.x0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    render = {"thyroid": _thyroid, "liver": _liver, "kidney": _kidney, "breast": _breast}.get(region)
    if render is None:
        raise DataError(f"unknown ultrasound corpus class {cls!r}")
    return render(rng, kind, size, fr, xx, yy)


def _thyroid(rng: np.random.Generator, kind: str, size: int, fr: Frame, xx: np.ndarray, yy: np.ndarray
             ) -> np.ndarray:
    """The neck, with a thyroid nodule of random TI-RADS features (``nodule``) or without (``normal``)."""
    h, w = xx.shape
    side = min(w, h)
    echo, geo = neck_background(rng, h, w, xx, yy)
    if kind == "nodule":
        features = sample_features(rng)
        les = thyroid_nodule(rng, features)
        pl = Placement(geo["cx"] + rng.uniform(-0.25, 0.25) * geo["ax"],
                       geo["cy"] + rng.uniform(-0.15, 0.15) * geo["ay"],
                       side * rng.uniform(0.12, 0.22), rng.uniform(-0.2, 0.2), bool(rng.random() < 0.5))
        echo = paint_lesion(echo, les, pl, rng, xx, yy)
    return screen(rng, echo, yy, size, fr)


def _liver(rng: np.random.Generator, kind: str, size: int, fr: Frame, xx: np.ndarray, yy: np.ndarray
           ) -> np.ndarray:
    """Liver parenchyma with vessels and the diaphragm, and a cyst, a hemangioma or a target-like metastasis."""
    h, w = xx.shape
    side = min(w, h)
    echo = 0.55 * np.exp(0.08 * smooth_noise(rng, h, w, max(1.0, w / 20))).astype(np.float32)
    echo = np.where(yy < h * 0.05, 1.1, echo).astype(np.float32)
    echo = _vessels(rng, echo, xx, yy, int(rng.integers(2, 5)), side * 0.03)
    # diaphragm: bright curve near the bottom
    curve = h * rng.uniform(0.8, 0.92) - 0.15 * h * ((xx - w / 2) / w) ** 2 * 4
    echo = echo + 2.0 * band(yy - curve, -1.5, 1.5, 0.8)
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
    return screen(rng, echo, yy, size, fr, alpha=0.8)


def _kidney(rng: np.random.Generator, kind: str, size: int, fr: Frame, xx: np.ndarray, yy: np.ndarray
            ) -> np.ndarray:
    """A kidney (cortex, echogenic sinus) in its surroundings, with a cyst or a shadowing stone."""
    h, w = xx.shape
    side = min(w, h)
    echo = 0.5 * np.exp(0.08 * smooth_noise(rng, h, w, max(1.0, w / 20))).astype(np.float32)
    kcx, kcy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.45, 0.55)
    kax, kay, rot = w * rng.uniform(0.3, 0.4), h * rng.uniform(0.18, 0.25), rng.uniform(-0.4, 0.4)
    c, s = math.cos(rot), math.sin(rot)
    u, v = ((xx - kcx) * c + (yy - kcy) * s) / kax, (-(xx - kcx) * s + (yy - kcy) * c) / kay
    d = np.sqrt(u ** 2 + v ** 2)
    cortex = sigmoid((1 - d) / 0.04)
    echo = echo * (1 - cortex) + 0.22 * cortex + 1.2 * band(d, 0.97, 1.04, 0.01)
    sinus = sigmoid((0.5 - np.sqrt((u / 1.0) ** 2 + (v / 0.55) ** 2) + 0.08 * smooth_noise(rng, h, w, 2.0)) / 0.05)
    echo = echo * (1 - sinus) + 1.3 * sinus
    if kind == "cyst":
        ang = rng.uniform(0, 2 * math.pi)
        pl = Placement(kcx + 0.75 * kax * math.cos(ang) * c, kcy + 0.75 * kay * math.sin(ang),
                       side * rng.uniform(0.08, 0.14))
        les = _simple_lesion(rng, "smooth", rng.uniform(0.8, 1.2), 0.003, texture=0.0, enhancement=2.0)
        echo = paint_lesion(echo, les, pl, rng, xx, yy)
    elif kind == "stone":
        pl = Placement(kcx + rng.uniform(-0.3, 0.3) * kax, kcy, side * rng.uniform(0.06, 0.1))
        les = _simple_lesion(rng, "smooth", 1.0, 1.3, texture=0.0, foci="macrocalcifications",
                             foci_pts=np.zeros((1, 2)))
        echo = paint_lesion(echo, les, pl, rng, xx, yy)
    return screen(rng, echo, yy, size, fr, alpha=0.8)


def _breast(rng: np.random.Generator, kind: str, size: int, fr: Frame, xx: np.ndarray, yy: np.ndarray
            ) -> np.ndarray:
    """Breast tissue with fat lobules and a fibroadenoma or an irregular, shadowing carcinoma."""
    h, w = xx.shape
    side = min(w, h)
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
            les.foci_pts = random_points_in_lesion(rng, les, int(rng.integers(3, 7)), 0.7)
    echo = paint_lesion(echo, les, pl, rng, xx, yy)
    return screen(rng, echo, yy, size, fr, alpha=0.6)


def _simple_lesion(rng: np.random.Generator, margin: str, aspect: float, echo: float, **kw) -> Lesion:
    """A lesion with an outline of ``margin``, echo level ``echo`` and other :class:`Lesion` fields ``kw``."""
    les = make_outline(rng, margin, aspect)
    les.echo = echo
    for k, v in kw.items():
        setattr(les, k, v)
    return les


def _vessels(rng: np.random.Generator, echo: np.ndarray, xx: np.ndarray, yy: np.ndarray, n: int,
             width: float) -> np.ndarray:
    """Anechoic tubular vessels with bright walls (straight segments at random angles)."""
    h, w = echo.shape
    for _ in range(n):
        x0, y0 = rng.uniform(0, w), rng.uniform(0.2 * h, h)
        ang = rng.uniform(0, math.pi)
        d = np.abs((xx - x0) * math.sin(ang) - (yy - y0) * math.cos(ang))
        along = np.abs((xx - x0) * math.cos(ang) + (yy - y0) * math.sin(ang))
        r = width * rng.uniform(0.6, 1.4)
        seg = sigmoid((w * rng.uniform(0.15, 0.35) - along) / 2)
        lumen = sigmoid((r - d) / 0.7) * seg
        wall = band(d, r * 0.9, r * 1.3, 0.5) * seg
        echo = echo * (1 - lumen) + 0.004 * lumen + 0.8 * wall
    return echo


def _render_ct_lung(rng: np.random.Generator, size: int, nodule: bool) -> np.ndarray:
    """A CT-like axial chest slice: body, lungs with vessels, spine, and a lung nodule when ``nodule``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    body = sigmoid((1 - np.sqrt(((xx - c) / (0.46 * size)) ** 2 + ((yy - c) / (0.34 * size)) ** 2)) / 0.01)
    img = 0.02 + 0.5 * body
    for sgn in (-1, 1):
        lx = c + sgn * size * rng.uniform(0.18, 0.22)
        lung = sigmoid((1 - np.sqrt(((xx - lx) / (0.16 * size)) ** 2 + ((yy - c) / (0.26 * size)) ** 2)) / 0.03)
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
        rho = lesion_polar(les, pl, xx, yy)[3]
        img = np.maximum(img, 0.55 * sigmoid((1 - rho) / 0.08))
    img = img + rng.normal(0, 0.025, img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _render_mr_brain(rng: np.random.Generator, size: int, tumor: bool) -> np.ndarray:
    """An MR-like axial brain slice (skull, gyri, ventricles, Rician noise), with a ring-enhancing tumour
    and its oedema when ``tumor``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    d = np.sqrt(((xx - c) / (0.38 * size)) ** 2 + ((yy - c) / (0.45 * size)) ** 2)
    skull = band(d, 0.93, 1.0, 0.01)
    brain = sigmoid((0.92 - d) / 0.01)
    gyri = smooth_noise(rng, size, size, max(1.0, size / 40))
    tissue = np.where(gyri > 0.0, 0.62, 0.45) * brain
    vent = sigmoid((1 - np.sqrt(((xx - c) / (0.08 * size)) ** 2 + ((yy - c) / (0.14 * size)) ** 2)) / 0.08)
    img = 0.85 * skull + tissue * (1 - vent) + 0.12 * vent * brain
    if tumor:
        les = make_outline(rng, str(rng.choice(["lobulated", "irregular", "smooth"])), rng.uniform(0.8, 1.25))
        pl = Placement(c + rng.uniform(-0.2, 0.2) * size, c + rng.uniform(-0.25, 0.25) * size,
                       size * rng.uniform(0.06, 0.11), rng.uniform(0, math.pi))
        rho = lesion_polar(les, pl, xx, yy)[3]
        edema = sigmoid((1.8 - rho) / 0.2) * brain
        img = img * (1 - 0.35 * edema)
        ring = band(rho, 0.75, 1.0, 0.05)
        core = sigmoid((0.75 - rho) / 0.05)
        img = img * (1 - core) + 0.15 * core + 0.5 * ring
    # Rician noise
    sigma = 0.03
    re = img + rng.normal(0, sigma, img.shape)
    im = rng.normal(0, sigma, img.shape)
    return np.clip(np.hypot(re, im) * 255, 0, 255).astype(np.uint8)
