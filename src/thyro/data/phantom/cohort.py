"""The thyroid phantom cohort: synthetic patients with one nodule each, seen in several views, written
as PNG images and a manifest (:func:`generate_cohort`).

Each patient's nodule has TI-RADS features (:mod:`.tirads`) and a label drawn from the known
probability of malignancy given them, written per image with the features, so the AUROC of
``p_malignant`` against the drawn labels (:func:`best_auroc`) is the best any classifier can achieve on
that cohort (the probability is the Bayes-optimal score: it is the true conditional probability of the
label given the image).  With the feature frequencies used here it is about 0.88 in expectation, with
about 40% malignant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from thyro.data.manifest import Manifest, manifest_from_records, read_manifest, roi_to_json, write_manifest
from thyro.data.phantom._output import check_size, staged_output
from thyro.data.phantom.anatomy import ViewRender, render_view, view_foci_mask
from thyro.data.phantom.lesion import Lesion, thyroid_nodule
from thyro.data.phantom.marks import draw_marks
from thyro.data.phantom.tirads import (
    MALIGNANCY_INTERCEPT,
    MALIGNANCY_SLOPE,
    malignancy_probability,
    sample_features,
    tirads_level,
    tirads_points,
)
import thyro.progress
from thyro.errors import DataError
from thyro.fileio import write_json
from thyro.stats.roc import auroc_or_none


#: Seeds the marks' own random stream (with the cohort's seed, the patient and the view), so a
#: cohort's images are the same with and without marks.  (ASCII "mark".)
_MARKS_STREAM = 0x6D61726B


@dataclass(frozen=True)
class _Plan:
    """What every patient of a cohort is made with (see :func:`generate_cohort`)."""

    size: int
    views: tuple[int, int]
    framed: bool
    seed: int
    marks: bool
    marks_bias: float


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
    size = check_size(size)
    if int(n_patients) < 1:
        raise DataError(f"n_patients must be at least 1, got {n_patients}.")
    lo, hi = (int(images_per_patient), int(images_per_patient)) if np.isscalar(images_per_patient) else \
        (int(images_per_patient[0]), int(images_per_patient[1]))
    if lo < 1 or hi < lo:
        raise DataError(f"images_per_patient must be a range (lo, hi) with 1 <= lo <= hi, got {images_per_patient}.")
    if not 0.0 <= float(marks_bias) <= 1.0:
        raise DataError(f"marks_bias must be between 0 and 1, got {marks_bias}.")
    plan = _Plan(size, (lo, hi), framed, seed, marks, float(marks_bias))
    with staged_output(out_dir, "phantom.json") as tmp:
        (tmp / "images").mkdir()
        records = []
        seeds = np.random.SeedSequence(seed).spawn(int(n_patients))
        for i, ss in enumerate(thyro.progress.track(seeds, "drawing phantom patients", unit="patient")):
            records += _patient(tmp, i, np.random.default_rng(ss), plan)
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


def _patient(tmp: Path, i: int, rng: np.random.Generator, plan: _Plan) -> list[dict]:
    """Patient ``i``: a nodule with TI-RADS features, a label drawn from its malignancy probability and
    its views, written into ``tmp``; returns their manifest rows."""
    features = sample_features(rng)
    points = tirads_points(features)
    p = float(malignancy_probability(points))
    label = int(rng.random() < p)
    nodule = thyroid_nodule(rng, features)
    pid = f"P{i + 1:04d}"
    rows = []
    for v in range(int(rng.integers(plan.views[0], plan.views[1] + 1))):
        view = render_view(rng, plan.size, nodule, features, framed=plan.framed)
        img, stem, extra = view.image, f"{pid}_v{v + 1}", {}
        if plan.marks:
            mrng = np.random.default_rng(np.random.SeedSequence([plan.seed, i, v, _MARKS_STREAM]))
            p_cal = (1 + plan.marks_bias) / 2 if label else (1 - plan.marks_bias) / 2
            img, extra = _mark_view(tmp, stem, view, nodule, mrng, calipers=bool(mrng.random() < p_cal))
        name = f"images/{stem}.png"
        cv2.imwrite(str(tmp / name), img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows.append({"image": name, "label": label, "patient_id": pid, "group": pid,
                     "roi": roi_to_json({"polygons": [view.polygon]}), "label_source": "synthetic",
                     "p_malignant": round(p, 6),
                     "tirads": tirads_level(points), "tirads_points": points, **features,
                     "view": v + 1, **extra})
    return rows


def _mark_view(tmp: Path, stem: str, view: ViewRender, nodule: Lesion, rng: np.random.Generator, *,
               calipers: bool) -> tuple[np.ndarray, dict]:
    """Burn marks into a view (:func:`draw_marks`) and write its marks and foci masks into ``tmp``;
    returns the marked image and the manifest's mark columns."""
    img, mask, drawn = draw_marks(view.image, view.polygon, view.frame, rng, calipers=calipers)
    (tmp / "masks").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp / f"masks/{stem}.marks.png"), mask.astype(np.uint8) * 255)
    cv2.imwrite(str(tmp / f"masks/{stem}.foci.png"), view_foci_mask(nodule, view).astype(np.uint8) * 255)
    return img, {"mark_mask": f"masks/{stem}.marks.png", "foci_mask": f"masks/{stem}.foci.png",
                 "calipers": drawn["calipers"],
                 "marks": ",".join(k for k in ("dotted", "text", "scale") if drawn[k])}


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
