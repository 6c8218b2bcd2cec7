"""The shortcut audit with a model: does the model's AUROC depend on the marks?

:func:`audit` runs the data audit of :mod:`thyro.data.audit` (how much of each image is marks,
whether marks alone predict the label) and, given a model package, scores every image twice with
the package's preprocessing: with the marks left in (``inpaint_marks`` off) and with them removed
(on, white marks included).  A model that learned the marks loses AUROC when they are removed; the
paired comparison (:func:`thyro.stats.auto.compare_paired`, DeLong or the cluster bootstrap over
groups) says by how much, with a CI and a p-value.  Images are scored by a :class:`thyro.use.scoring.Scorer`,
as ``thyro predict`` scores them: one that cannot be read or preprocessed gets its error (``model_error``,
the words ``thyro predict`` writes) and is left out of the AUROCs, counted in ``n_failed``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from thyro import progress as progress_
from thyro.data.audit import MARK_FEATURES, mark_features, marks_only_auroc, summarize_marks, write_audit
from thyro.data.inspection import labels_of
from thyro.data.manifest import Manifest, read_manifest
from thyro.data.preprocess import PreprocessConfig
from thyro.data.splits import Splits
from thyro.errors import DataError
from thyro.stats.auto import compare_paired, interval
from thyro.use.inputs import manifest_items
from thyro.use.package import ModelPackage, load_package
from thyro.use.scoring import InputItem, Scorer

#: The places the model can be scored on with a splits file.
AUDIT_ON = ("test", "dev", "all")


def _scores(scorer: Scorer, items: list[InputItem], batch_size: int, progress: bool,
            label: str) -> tuple[np.ndarray, list[str]]:
    """Each item's probability (NaN when it failed) and error ('' when none), in order."""
    rows = scorer.rows(items, batch_size=batch_size)
    if progress:
        rows = progress_.track(rows, label, total=len(items), unit="image")
    probs, errors = [], []
    for row in rows:
        probs.append(np.nan if row.probability is None else row.probability)
        errors.append(row.error)
    return np.array(probs, dtype=float), errors


def model_audit(package, manifest, images: pd.DataFrame, *, ids: list[str] | None = None, batch_size: int = 16,
                level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """The model's AUROC on images with marks and with marks removed, and the paired difference.

    ``images`` is :func:`thyro.data.audit.mark_features`'s table; ``ids`` the images to score
    (default: every labelled one).  An image that cannot be scored either way is left out of the AUROCs
    and counted (``n_failed``).  Returns the JSON-able result and ``images`` with ``probability_marks``,
    ``probability_clean`` (empty where not scored) and ``model_error`` columns.
    """
    usable = images[images["label"].notna()]
    if ids is not None:
        usable = usable[usable["image"].isin(set(ids))]
    if usable.empty:
        raise DataError("model audit: no labelled images to score"
                        + (" among the requested ids" if ids is not None else "") + ".")
    chosen = usable["image"].tolist()
    by_id = {item.name: item for item in manifest_items(manifest)}
    items = [by_id[i] for i in chosen]
    scorer = Scorer(package, engine="torch")
    p_marks, err_marks = _scores(scorer.with_preprocessing(inpaint_marks=False, mark_white=True), items, batch_size,
                                 progress, "scoring with marks left in")
    p_clean, err_clean = _scores(scorer.with_preprocessing(inpaint_marks=True, mark_white=True), items, batch_size,
                                 progress, "scoring with marks removed")
    errors = [a or b for a, b in zip(err_marks, err_clean)]
    ok = np.array([not e for e in errors], dtype=bool)
    out_images = _with_scores(images, chosen, p_marks, p_clean, errors)
    y = usable["label"].astype(int).to_numpy()[ok]
    groups = usable["group"].astype(str).to_numpy()[ok]
    result: dict = {"package": str(package.root), "n": int(ok.sum()), "n_failed": int((~ok).sum()),
                    "n_positive": int(y.sum()), "n_groups": int(len(set(groups))),
                    "preprocess_trained": {k: package.preprocess.get(k) for k in ("inpaint_marks", "mark_white")}}
    if not ok.any() or y.min() == y.max():
        result["note"] = ("no image could be scored" if not ok.any()
                          else "the scored images hold one class only: AUROC undefined")
        return result, out_images
    result.update(_compare(y, p_clean[ok], p_marks[ok], groups, level=level, n_boot=n_boot, seed=seed))
    return result, out_images


def _with_scores(images: pd.DataFrame, chosen: list[str], p_marks: np.ndarray, p_clean: np.ndarray,
                 errors: list[str]) -> pd.DataFrame:
    """``images`` with the scored images' two probabilities and the error of those that failed."""
    out = images.copy()
    out["probability_marks"] = np.nan
    out["probability_clean"] = np.nan
    out["model_error"] = ""
    pos = out.index[out["image"].isin(chosen)]
    order = {img: k for k, img in enumerate(chosen)}
    at = [order[i] for i in out.loc[pos, "image"]]
    out.loc[pos, "probability_marks"] = p_marks[at]
    out.loc[pos, "probability_clean"] = p_clean[at]
    out.loc[pos, "model_error"] = [errors[k] for k in at]
    return out


def _compare(y: np.ndarray, p_clean: np.ndarray, p_marks: np.ndarray, groups: np.ndarray, *, level: float,
             n_boot: int, seed: int) -> dict:
    """Both AUROCs with CIs, their paired comparison, and what it means."""
    kw = {"level": level, "n_boot": n_boot, "seed": seed}
    comparison = compare_paired(y, p_clean, p_marks, groups, **kw).as_dict()
    return {
        "auroc_marks": interval(y, p_marks, groups, **kw).as_dict(),
        "auroc_clean": interval(y, p_clean, groups, **kw).as_dict(),
        "comparison": {**comparison, "a": "marks removed", "b": "marks left in"},
        "mean_abs_change": round(float(np.mean(np.abs(p_clean - p_marks))), 6),
        "interpretation": ("removing the marks changed the model's AUROC significantly: it depends on the marks"
                           if comparison["p_value"] < 1 - level else
                           "no evidence that the model's AUROC depends on the marks"),
    }


def audit(manifest, model: str | os.PathLike | None = None, *, out: str | os.PathLike | None = None,
          splits: str | os.PathLike | None = None, on: str = "test", cfg=None, folds: int = 5, seed: int = 0,
          level: float = 0.95, n_boot: int = 2000, batch_size: int = 16, progress: bool = True) -> dict:
    """Run the shortcut audit of a manifest (and of a model package, when given).

    Parameters
    ----------
    manifest : path or Manifest
    model : model directory or ModelPackage, optional
        A package from ``thyro bundle``: its preprocessing is used for the mark features, and it is
        scored with and without marks (an image that cannot be scored is counted, not fatal).
    out : folder, optional
        Where to write ``audit.json`` and ``audit_images.csv`` (e.g. a study's run directory, whose
        report then shows the audit).
    splits : path, optional
        A splits JSON; the model is scored on its ``on`` images.  The marks-only classifier always uses
        every labelled image.
    on : {"test", "dev", "all"}
        Which of the splits' images the model is scored on.
    cfg : PreprocessConfig or dict, optional
        Preprocessing for the mark features without a model (default: the defaults).

    Returns
    -------
    dict
        JSON-able: ``manifest``, ``labels`` (what label 1 means, :class:`~thyro.data.manifest.LabelMeaning`;
        None when the manifest mixes provenances), ``preprocess``, ``marks`` (:func:`summarize_marks`),
        ``marks_only`` (:func:`marks_only_auroc`) and, with a model, ``model``
        (:func:`model_audit`).
    """
    if on not in AUDIT_ON:
        raise DataError(f"on={on!r}: choose one of {', '.join(repr(o) for o in AUDIT_ON)}.")
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, check_labels=False)
    package = None
    if model is not None:
        package = model if isinstance(model, ModelPackage) else load_package(model)
        cfg = package.preprocessor().cfg
    elif cfg is None:
        cfg = PreprocessConfig()
    elif isinstance(cfg, dict):
        cfg = PreprocessConfig.parse(cfg, source="preprocess")
    images = _mark_features(manifest, cfg, progress)
    marks_only, scores = marks_only_auroc(images, folds=folds, seed=seed, level=level, n_boot=n_boot)
    images["marks_only_score"] = np.nan
    if scores is not None:
        mask = (images["error"] == "") & images["label"].notna()
        images.loc[mask, "marks_only_score"] = scores
    meaning = labels_of(manifest)[0]
    result: dict = {"manifest": str(manifest.path) if manifest.path else None, "n_images": int(len(images)),
                    "labels": meaning.to_dict() if meaning is not None else None,
                    "preprocess": cfg.model_dump(mode="json"), "marks": summarize_marks(images),
                    "marks_only": marks_only}
    if package is not None:
        ids = None
        if splits is not None and on != "all":
            sp = Splits.load(splits, manifest, check_hash=False)
            ids = sp.test if on == "test" else sp.dev_ids()
        result["model"], images = model_audit(package, manifest, images, ids=ids, batch_size=batch_size, level=level,
                                              n_boot=n_boot, seed=seed, progress=progress)
        result["model"]["on"] = on if splits is not None else "all"
    if out is not None:
        result["written"] = str(write_audit(Path(out), result, images))
    return result


def _mark_features(manifest: Manifest, cfg: PreprocessConfig, progress: bool) -> pd.DataFrame:
    """:func:`thyro.data.audit.mark_features` of every row; a row whose ``roi`` cell cannot be parsed gets its
    error (naming the row) instead of stopping the audit."""
    bad = {k: item.error for k, item in enumerate(manifest_items(manifest)) if item.error}
    if not bad:
        return mark_features(manifest, cfg, progress=progress)
    keep = [k for k in range(len(manifest)) if k not in bad]
    df = manifest.df
    parts = []
    if keep:
        clean = Manifest(df.iloc[keep].reset_index(drop=True), manifest.root, manifest.path)
        parts.append(mark_features(clean, cfg, progress=progress).assign(_row=keep))
    groups = df["group"].astype(str) if "group" in df.columns else df["image"]
    labels = df["label"] if "label" in df.columns else pd.Series([None] * len(df))
    parts.append(pd.DataFrame({"image": [manifest.ids[k] for k in bad], "label": [labels.iloc[k] for k in bad],
                               "group": [groups.iloc[k] for k in bad], "error": list(bad.values()), "_row": list(bad)}))
    out = pd.concat(parts, ignore_index=True).sort_values("_row").drop(columns="_row").reset_index(drop=True)
    for col in MARK_FEATURES + ["frame_kept"]:
        if col not in out.columns:
            out[col] = np.nan
    return out
