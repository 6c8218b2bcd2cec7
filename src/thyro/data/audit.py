"""Shortcut audit of the data: how much of each image is burned-in marks, and whether marks alone
predict the label.

Sonographers measure suspicious nodules more often, so calipers, measurement lines and labels are
drawn more often on malignant ones.  A model can then score the marks instead of the nodule, and its
AUROC says nothing about the nodule.  The audit answers a reviewer's first question about an
ultrasound model:

1. **How much of each image is marks** (what the model would see without mark removal): per image,
   the share of the crop's pixels that are marks, by kind (:data:`thyro.data.marks.KINDS`), and
   counts of calipers and coloured marks; summaries overall and by label.
2. **Do marks alone predict the label?** A logistic regression on those mark features only,
   cross-validated with folds grouped by the manifest's ``group`` (no patient or duplicate in two
   folds), gives out-of-fold scores; their AUROC, with a CI from :func:`thyro.stats.auto.interval`
   (cluster bootstrap over groups when a group has several images), is the shortcut's strength.
   An AUROC near 0.5 means the marks carry no label information a model could exploit.
3. With a model package (:mod:`thyro.use.audit`): the model's AUROC on the images with marks and
   with marks removed, and the paired difference.

The audit is written as ``audit.json`` (summary, JSON-able) and ``audit_images.csv`` (one row per
image) by :func:`write_audit` and read by :func:`read_audit`, which the study report uses to show
an audit placed in a run directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

import thyro.progress
from thyro.data.manifest import Manifest, read_manifest
from thyro.data.marks import KINDS, mark_kinds
from thyro.data.preprocess import PreprocessConfig, Preprocessor, read_image
from thyro.errors import DataError
from thyro.fileio import write_csv, write_json
from thyro.stats.auto import interval

AUDIT_FILE = "audit.json"
IMAGES_FILE = "audit_images.csv"
FORMAT = "thyro-audit"
FORMAT_VERSION = 1
#: Per-image mark features the marks-only classifier uses (shares of the crop's pixels, and counts).
MARK_FEATURES = ["marks_fraction"] + [f"{kind}_fraction" for kind in KINDS] + ["calipers", "coloured_marks"]


def _components(mask: np.ndarray, grow: int = 2) -> int:
    if not mask.any():
        return 0
    k = 2 * grow + 1
    n, _ = cv2.connectedComponents(cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)))
    return int(n - 1)


def image_mark_features(image: np.ndarray, pre: Preprocessor, *, roi: dict | None = None,
                        origin: tuple[int, int] = (0, 0), region: bool = False) -> dict:
    """Mark features of one decoded image, measured in the crop the preprocessing takes.

    Returns ``marks_fraction`` (share of the crop's pixels that are marks of any kind), one
    ``KIND_fraction`` per kind, ``calipers`` (caliper crosses) and ``coloured_marks`` (coloured
    pieces), plus the crop's ``frame_kept``.
    """
    gray = pre.prepare(image)
    box = pre.crop_box(gray, roi, origin, region=region)
    x0, y0, x1, y1 = box
    part = image[y0:y1, x0:x1]
    kinds = mark_kinds(part, pre.cfg.mark_settings(), white=pre.cfg.mark_white)
    union = np.zeros(part.shape[:2], dtype=bool)
    out: dict = {}
    for kind, mask in kinds.items():
        union |= mask
        out[f"{kind}_fraction"] = float(mask.mean())
    out["marks_fraction"] = float(union.mean())
    out["calipers"] = _components(kinds["caliper"])
    out["coloured_marks"] = _components(kinds["colour"])
    out["frame_kept"] = (x1 - x0) * (y1 - y0) / float(gray.shape[0] * gray.shape[1])
    return out


def mark_features(manifest, cfg: PreprocessConfig | dict | None = None, *, progress: bool = True) -> pd.DataFrame:
    """One row per manifest image: ``image, label, group`` and :data:`MARK_FEATURES` (``error`` when
    an image could not be read; the others go on); ``progress`` reports through :mod:`thyro.progress`."""
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, check_labels=False)
    pre = Preprocessor(cfg)
    rois = manifest.rois()
    df = manifest.df
    groups = df["group"].astype(str).tolist() if "group" in df.columns else list(manifest.ids)
    labels = df["label"].tolist() if "label" in df.columns else [None] * len(manifest)
    rows = []
    indices = range(len(manifest))
    for i in (thyro.progress.track(indices, "measuring marks", unit="image") if progress else indices):
        row = {"image": manifest.ids[i], "label": labels[i], "group": groups[i], "error": ""}
        try:
            loaded = read_image(manifest.abspath(manifest.ids[i]), color=True)
            row.update(image_mark_features(loaded.pixels, pre, roi=rois[i], origin=loaded.origin,
                                           region=loaded.region))
        except DataError as exc:
            row["error"] = str(exc)
        rows.append(row)
    out = pd.DataFrame(rows)
    for col in MARK_FEATURES + ["frame_kept"]:
        if col not in out.columns:
            out[col] = np.nan
    return out


def summarize_marks(features: pd.DataFrame) -> dict:
    """How much of the images are marks: overall, by kind and by label."""
    ok = features[features["error"] == ""]
    frac = ok["marks_fraction"].to_numpy(float)

    def stats(values: np.ndarray) -> dict:
        if values.size == 0:
            return {"n": 0}
        return {"n": int(values.size), "images_with_marks": int((values > 0).sum()),
                "share_with_marks": round(float((values > 0).mean()), 4),
                "mean": round(float(values.mean()), 6), "median": round(float(np.median(values)), 6),
                "p90": round(float(np.percentile(values, 90)), 6), "max": round(float(values.max()), 6)}

    by_kind = {kind: {"images_with": int((ok[f"{kind}_fraction"] > 0).sum()),
                      "mean_fraction": round(float(ok[f"{kind}_fraction"].mean()), 6) if len(ok) else None}
               for kind in KINDS}
    by_label = {}
    labelled = ok[ok["label"].notna()]
    for label, sub in labelled.groupby(labelled["label"].astype(int)):
        by_label[str(label)] = {**stats(sub["marks_fraction"].to_numpy(float)),
                                "share_with_calipers": round(float((sub["calipers"] > 0).mean()), 4)}
    return {"overall": stats(frac), "by_kind": by_kind, "by_label": by_label,
            "n_unreadable": int((features["error"] != "").sum())}


def marks_only_auroc(features: pd.DataFrame, *, folds: int = 5, seed: int = 0, level: float = 0.95,
                     n_boot: int = 2000) -> tuple[dict, np.ndarray | None]:
    """Whether marks alone predict the label: out-of-fold scores of a logistic regression on
    :data:`MARK_FEATURES`, folds grouped by ``group``, and their AUROC with a CI.

    Returns ``(result, scores)``: ``result`` is JSON-able (``auroc``, ``lower``, ``upper``,
    ``method``, ``n``, ``n_groups``, ``folds``, ``coefficients`` of a fit on all images, and a
    ``note`` when it cannot be computed); ``scores`` are the out-of-fold scores in the order of the
    labelled, readable rows (None when not computed).
    """
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn is heavy; read_audit needs none of it
    from sklearn.model_selection import GroupKFold  # lazy: as above
    from sklearn.pipeline import make_pipeline  # lazy: as above
    from sklearn.preprocessing import StandardScaler  # lazy: as above

    data = features[(features["error"] == "") & features["label"].notna()]
    y = data["label"].astype(int).to_numpy()
    groups = data["group"].astype(str).to_numpy()
    X = data[MARK_FEATURES].to_numpy(float)
    base = {"features": MARK_FEATURES, "n": int(len(y)), "n_groups": int(len(set(groups))),
            "n_positive": int(y.sum()) if len(y) else 0}
    if len(y) == 0 or y.min() == y.max():
        return {**base, "auroc": None, "note": "needs labelled images of both classes"}, None
    if not np.any(X.std(axis=0) > 0):
        return {**base, "auroc": None, "note": "no marks found in any image: marks cannot predict the label"}, None
    k = min(int(folds), len(set(groups)))
    if k < 2:
        return {**base, "auroc": None, "note": "needs at least two groups"}, None
    scores = np.zeros(len(y))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    for train, test in GroupKFold(n_splits=k).split(X, y, groups):
        if y[train].min() == y[train].max():  # a fold whose training part has one class: predict its rate
            scores[test] = float(y[train].mean())
            continue
        model.fit(X[train], y[train])
        scores[test] = model.predict_proba(X[test])[:, 1]
    res = interval(y, scores, groups, level=level, n_boot=n_boot, seed=seed)
    model.fit(X, y)
    coef = model.named_steps["logisticregression"].coef_[0]
    out = {**base, **res.as_dict(), "folds": k,
           "coefficients": {f: round(float(c), 4) for f, c in zip(MARK_FEATURES, coef)}}
    out["interpretation"] = (
        "marks alone predict the label better than chance: a model can learn them instead of the nodule"
        if res.lower > 0.5 else "no evidence that marks alone predict the label")
    return out, scores


def write_audit(out_dir: str | os.PathLike, result: dict, images: pd.DataFrame) -> Path:
    """Write ``audit.json`` and ``audit_images.csv`` into ``out_dir`` (atomically); returns the JSON path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **result}
    write_csv(out_dir / IMAGES_FILE, images)
    path = out_dir / AUDIT_FILE
    write_json(path, _json_safe(doc))
    return path


def read_audit(path: str | os.PathLike) -> dict | None:
    """The audit in a folder (or an ``audit.json`` path); None when there is none.

    Raises
    ------
    DataError
        When the file exists but is not an audit.
    """
    path = Path(path)
    if path.is_dir():
        path = path / AUDIT_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); run `thyro data audit` again.") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{path}: not a thyro audit (format {doc.get('format') if isinstance(doc, dict) else None!r}).")
    return doc


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj
