"""The shortcut audit with a model: does the model's AUROC depend on the marks?

:func:`audit` runs the data audit of :mod:`thyro.data.audit` (how much of each image is marks,
whether marks alone predict the label) and, given a model package, scores every image twice with
the package's preprocessing: with the marks left in (``inpaint_marks`` off) and with them removed
(on, white marks included).  A model that learned the marks loses AUROC when they are removed; the
paired comparison (:func:`thyro.stats.auto.compare_paired`, DeLong or the cluster bootstrap over
groups) says by how much, with a CI and a p-value.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from thyro.data.audit import mark_features, marks_only_auroc, summarize_marks, write_audit
from thyro.errors import DataError


def _scores(package, engine, manifest, ids: list[str], inpaint: bool, batch_size: int, progress: bool) -> np.ndarray:
    from thyro.console import track
    from thyro.data.preprocess import Preprocessor

    cfg = package.preprocessor().cfg.model_copy(update={"inpaint_marks": inpaint, "mark_white": True})
    pre = Preprocessor(cfg)
    rois = dict(zip(manifest.ids, manifest.rois()))
    out = np.empty(len(ids))
    starts = range(0, len(ids), batch_size)
    label = "scoring with marks removed" if inpaint else "scoring with marks left in"
    for start in (track(starts, label) if progress else starts):
        chunk = ids[start:start + batch_size]
        batch = np.stack([pre.from_file(manifest.abspath(i), roi=rois[i]) for i in chunk])
        out[start:start + len(chunk)] = engine(batch)
    return out


def model_audit(package, manifest, images: pd.DataFrame, *, ids: list[str] | None = None, batch_size: int = 16,
                level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """The model's AUROC on images with marks and with marks removed, and the paired difference.

    ``images`` is :func:`thyro.data.audit.mark_features`'s table; ``ids`` the images to score
    (default: every labelled, readable one).  Returns the JSON-able result and ``images`` with
    ``probability_marks`` and ``probability_clean`` columns (empty where not scored).
    """
    from thyro.stats.auto import compare_paired, interval

    usable = images[(images["error"] == "") & images["label"].notna()]
    if ids is not None:
        wanted = set(ids)
        usable = usable[usable["image"].isin(wanted)]
    if usable.empty:
        raise DataError("model audit: no labelled, readable images to score"
                        + (" among the requested ids" if ids is not None else "") + ".")
    chosen = usable["image"].tolist()
    y = usable["label"].astype(int).to_numpy()
    groups = usable["group"].astype(str).to_numpy()
    from thyro.use.engines import TorchEngine

    engine = TorchEngine.from_package(package)
    p_marks = _scores(package, engine, manifest, chosen, False, batch_size, progress)
    p_clean = _scores(package, engine, manifest, chosen, True, batch_size, progress)
    out_images = images.copy()
    out_images["probability_marks"] = np.nan
    out_images["probability_clean"] = np.nan
    pos = out_images.index[out_images["image"].isin(chosen)]
    order = {img: k for k, img in enumerate(chosen)}
    out_images.loc[pos, "probability_marks"] = [p_marks[order[i]] for i in out_images.loc[pos, "image"]]
    out_images.loc[pos, "probability_clean"] = [p_clean[order[i]] for i in out_images.loc[pos, "image"]]
    result: dict = {"package": str(package.root), "n": int(len(y)), "n_positive": int(y.sum()),
                    "n_groups": int(len(set(groups))),
                    "preprocess_trained": {k: package.preprocess.get(k) for k in ("inpaint_marks", "mark_white")}}
    if y.min() == y.max():
        result["note"] = "the scored images hold one class only: AUROC undefined"
        return result, out_images
    kw = {"level": level, "n_boot": n_boot, "seed": seed}
    result["auroc_marks"] = interval(y, p_marks, groups, **kw).as_dict()
    result["auroc_clean"] = interval(y, p_clean, groups, **kw).as_dict()
    comparison = compare_paired(y, p_clean, p_marks, groups, **kw).as_dict()
    result["comparison"] = {**comparison, "a": "marks removed", "b": "marks left in"}
    result["mean_abs_change"] = round(float(np.mean(np.abs(p_clean - p_marks))), 6)
    result["interpretation"] = (
        "removing the marks changed the model's AUROC significantly: it depends on the marks"
        if comparison["p_value"] < 1 - level else
        "no evidence that the model's AUROC depends on the marks")
    return result, out_images


def audit(manifest, model: str | os.PathLike | None = None, *, out: str | os.PathLike | None = None,
          splits: str | os.PathLike | None = None, on: str = "test", cfg=None, folds: int = 5, seed: int = 0,
          level: float = 0.95, n_boot: int = 2000, batch_size: int = 16, progress: bool = True) -> dict:
    """Run the shortcut audit of a manifest (and of a model package, when given).

    Parameters
    ----------
    manifest : path or Manifest
    model : model directory, optional
        A package from ``thyro bundle``: its preprocessing is used for the mark features, and it is
        scored with and without marks.
    out : folder, optional
        Where to write ``audit.json`` and ``audit_images.csv`` (e.g. a study's run directory, whose
        report then shows the audit).
    splits : path, optional
        A splits JSON; the model is scored on its ``on`` images (``test``, ``dev`` or ``all``).
        The marks-only classifier always uses every labelled image.
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
    from thyro.data.manifest import Manifest, read_manifest
    from thyro.data.preprocess import PreprocessConfig

    if on not in ("test", "dev", "all"):
        raise DataError(f"--on {on!r}: choose test, dev or all.")
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, check_labels=False)
    package = None
    if model is not None:
        from thyro.use.bundle import load_package

        package = load_package(model)
        cfg = package.preprocessor().cfg
    elif cfg is None:
        cfg = PreprocessConfig()
    elif isinstance(cfg, dict):
        cfg = PreprocessConfig.parse(cfg, source="preprocess")
    images = mark_features(manifest, cfg, progress=progress)
    marks_only, scores = marks_only_auroc(images, folds=folds, seed=seed, level=level, n_boot=n_boot)
    images["marks_only_score"] = np.nan
    if scores is not None:
        mask = (images["error"] == "") & images["label"].notna()
        images.loc[mask, "marks_only_score"] = scores
    from thyro.data.inspection import labels_of

    meaning = labels_of(manifest)[0]
    result: dict = {"manifest": str(manifest.path) if manifest.path else None, "n_images": int(len(images)),
                    "labels": meaning.to_dict() if meaning is not None else None,
                    "preprocess": cfg.model_dump(mode="json"), "marks": summarize_marks(images),
                    "marks_only": marks_only}
    if package is not None:
        ids = None
        if splits is not None and on != "all":
            from thyro.data.splits import Splits

            sp = Splits.load(splits, manifest, check_hash=False)
            ids = sp.test if on == "test" else sp.dev_ids()
        result["model"], images = model_audit(package, manifest, images, ids=ids, batch_size=batch_size, level=level,
                                              n_boot=n_boot, seed=seed, progress=progress)
        result["model"]["on"] = on if splits is not None else "all"
    if out is not None:
        result["written"] = str(write_audit(Path(out), result, images))
    return result
