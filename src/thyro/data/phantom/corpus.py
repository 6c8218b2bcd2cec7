"""The synthetic pretraining corpus (:func:`generate_corpus`), in RadImageNet's layout
``modality/region/class/*.png``, from three families of classes:

* radiology (:data:`CORPUS_CLASSES`, :mod:`.radiology`): ultrasound of the thyroid, liver, kidney and
  breast, CT-like lung and MR-like brain images;
* thyroid nodule appearances (:data:`APPEARANCE_CLASSES`): one TI-RADS feature value each, cropped
  around the nodule as a study crops it;
* non-medical shapes and textures (:data:`GENERIC_CLASSES`), standing in for natural images.

Pretraining a small backbone on them is the demo's stand-in for RadImageNet and ImageNet weights.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from thyro.data.phantom._output import check_size, staged_output
from thyro.data.phantom.anatomy import render_thyroid_view
from thyro.data.phantom.imaging import smooth_noise
from thyro.data.phantom.lesion import thyroid_nodule
from thyro.data.phantom.radiology import CORPUS_CLASSES, render_radiology
from thyro.data.preprocess import resize_square
import thyro.progress
from thyro.errors import DataError
from thyro.fileio import write_csv


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


#: Every class :func:`generate_corpus` can render.
ALL_CORPUS_CLASSES = CORPUS_CLASSES + tuple(APPEARANCE_CLASSES) + GENERIC_CLASSES


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
    return render_radiology(rng, cls, size)


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
    size = check_size(size) if classes is None or any(c in CORPUS_CLASSES for c in classes) else int(size)
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
    with staged_output(out_dir, "corpus.csv") as tmp:
        records = []
        with thyro.progress.task("drawing corpus images", sum(counts.values()), unit="image") as task:
            for ci, cls in enumerate(chosen):
                (tmp / cls).mkdir(parents=True)
                class_seed = int.from_bytes(cls.encode(), "little") % (2 ** 32)
                for k, ss in enumerate(np.random.SeedSequence([seed, class_seed]).spawn(counts[cls])):
                    img = render_corpus_image(np.random.default_rng(ss), cls, size)
                    name = f"{cls}/{k:05d}.png"
                    cv2.imwrite(str(tmp / name), img)
                    modality, region = (cls.split("/") + [""])[:2]
                    records.append({"image": name, "class": cls, "class_index": ci, "modality": modality,
                                    "region": region})
                    task.advance()
        write_csv(tmp / "corpus.csv", pd.DataFrame.from_records(records))
    return out_dir / "corpus.csv"
