"""Writing a model package (:mod:`thyro.use.package` describes its layout and reads it): from a finished
study's arm (:func:`bundle`), or from fold model files alone (:func:`write_package`)."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors import safe_open

from thyro import __version__, metrics
from thyro.data.manifest import LabelMeaning
from thyro.data.preprocess import PREPROCESS_VERSION, PreprocessConfig
from thyro.errors import ModelPackageError, StatsError, ThyroError
from thyro.fileio import atomic_dir, sha256_file, write_json, write_text
from thyro.run import DATA, OOF, TEST, DataSummary, JobKey, RunDir, write_data_summary
from thyro.use.card import render_card
from thyro.use.package import (  # noqa: F401 (the package's names, where callers of bundle find them)
    CARD,
    DEFAULT_POINT,
    FORMAT,
    FORMAT_VERSION,
    MODEL_JSON,
    ONNX_FILE,
    ModelPackage,
    load_package,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Writing a package
# ----------------------------------------------------------------------------------------------

def _safetensors_metadata(path: Path) -> dict:
    """The JSON-decoded metadata header of a safetensors file (no tensors are read)."""
    try:
        with safe_open(str(path), framework="numpy") as fh:
            raw = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise ModelPackageError(f"{path}: not a readable safetensors file ({exc}).") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, json.JSONDecodeError):
            out[key] = value
    # thyro.models.save_model keeps its information under the key "thyro"
    return out["thyro"] if isinstance(out.get("thyro"), dict) else out


def _image_size(preprocess: dict, config: dict, spec: dict) -> int:
    in_spec = spec.get("input_spec") if isinstance(spec.get("input_spec"), dict) else {}
    for source in (preprocess, config, spec, in_spec):
        for key in ("size", "image_size", "input_size"):
            v = source.get(key) if isinstance(source, dict) else None
            if isinstance(v, int):
                return v
            if isinstance(v, (list, tuple)) and v and isinstance(v[-1], int):
                return int(v[-1])
    raise ModelPackageError("cannot tell the model's input size: neither the preprocess block (size) nor the "
                            "model files' metadata state it.")


def _resolve_preprocess(preprocess: dict) -> tuple[dict, int | None]:
    """Every preprocessing setting, defaults included (so later changes of defaults cannot alter
    the package), and the version of the preprocessing algorithm."""
    cfg = PreprocessConfig.parse(preprocess, source="preprocess block of the study configuration")
    return cfg.model_dump(mode="json"), PREPROCESS_VERSION


def write_package(out: str | os.PathLike, *, model_files: list[str | os.PathLike], preprocess: dict,
                  operating: dict[str, dict], metrics: dict | None = None, data: dict | None = None,
                  source: dict | None = None, labels: dict | None = None, image_size: int | None = None,
                  default_point: str = DEFAULT_POINT, overwrite: bool = False, tta_flip: bool = False) -> ModelPackage:
    """Write a model directory from fold model files (saved with ``thyro.models.save_model``).

    Used by :func:`bundle`; usable directly for a model trained outside a study run.
    Files are written under a temporary folder beside ``out`` and renamed into place at the end,
    so an interrupted call leaves no half-written package.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ModelPackageError(f"{out}: exists and is not empty; choose another --out or pass --overwrite.")
    if not model_files:
        raise ModelPackageError("no model files to bundle.")
    if default_point not in operating:
        raise ModelPackageError(f"default operating point {default_point!r} is not among {', '.join(operating)}.")
    specs = [_safetensors_metadata(Path(f)) for f in model_files]
    spec0 = specs[0]
    arch = spec0.get("arch")
    if any(s.get("arch") != arch for s in specs):
        raise ModelPackageError("the fold models have different architectures: "
                                + ", ".join(f"{f}: {s.get('arch')}" for f, s in zip(model_files, specs)))
    lab = labels or LabelMeaning().to_dict()
    preprocess, preprocess_version = _resolve_preprocess(preprocess)
    size = image_size or _image_size(preprocess, {}, spec0)
    with atomic_dir(out) as tmp:
        (tmp / "models").mkdir()
        entries = []
        for k, f in enumerate(model_files):
            rel = f"models/fold{k}.safetensors"
            shutil.copyfile(f, tmp / rel)
            entries.append({"file": rel, "fold": k, "sha256": sha256_file(tmp / rel), "source": str(f)})
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "thyro_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "task": f"thyroid nodule on ultrasound: {lab['positive']} (1) vs {lab['negative']} (0); "
                    "probability = sigmoid(logit)",
            "arch": arch,
            "weights": (source or {}).get("weights") or spec0.get("weights"),
            "image_size": int(size),
            "preprocess": preprocess,
            "preprocess_version": preprocess_version,
            "input_spec": spec0.get("input_spec"),
            "ensemble": "mean of the fold models' probabilities" if len(entries) > 1 else "single model",
            "tta_flip": bool(tta_flip),
            "models": entries,
            "operating_points": operating,
            "default_operating_point": default_point,
            "metrics": metrics or {},
            "labels": lab,
            "source": source or {},
        }
        write_json(tmp / MODEL_JSON, meta)
        write_data_summary(tmp / DATA, DataSummary.from_dict(data or {}, "training data summary"))
        write_text(tmp / CARD, render_card(meta, data or {}))
    return load_package(out)


def _finished_run(run_dir) -> tuple[RunDir, Any]:
    """The run directory and its :class:`thyro.run.Run`, read once, with its study record."""
    rundir = RunDir(run_dir)
    if not rundir.root.is_dir():
        raise ModelPackageError(f"{rundir.root}: run directory not found.")
    try:
        run = rundir.load(strict=True)
    except ThyroError as exc:
        raise ModelPackageError(str(exc)) from None
    if run.record is None:
        raise ModelPackageError(f"{rundir.root}: no study record ({rundir.config_path.name}); is this a study run "
                                "directory?")
    return rundir, run


def best_arm(rundir: RunDir, run) -> str:
    """The finished arm with the highest pooled out-of-fold AUROC (ties: the first in the study's order)."""
    results = run.results
    scored = {name: a.oof_auroc for name, a in (results.arms.items() if results is not None else [])
              if a.status == "done" and a.oof_auroc is not None}
    if not scored:
        raise ModelPackageError(f"{rundir.root}: no finished arm with an out-of-fold AUROC to choose from; name "
                                "the arm to package (arm=..., --arm).")
    best = max(scored, key=lambda name: scored[name])
    log.info(f"packaging arm {best}: the highest out-of-fold AUROC ({scored[best]:.3f}) of the finished arms "
             f"({', '.join(f'{n} {v:.3f}' for n, v in scored.items())})")
    return best


def _fold_models(rundir: RunDir, run, arm: str) -> list[Path]:
    """The fold model files of a finished arm (every fold's), or a :class:`ModelPackageError` naming what is not."""
    cfg = run.record.config
    arms = [a.name for a in cfg.arms]
    if arm not in arms:
        raise ModelPackageError(f"{rundir.config_path}: no arm {arm!r}; the study's arms are: {', '.join(arms)}.")
    entry = run.arm_result(arm)
    if entry is not None and entry.status and entry.status != "done":
        reason = f" ({entry.reason.splitlines()[0]})" if entry.reason else ""
        raise ModelPackageError(f"{rundir.results_path}: arm {arm!r} has status {entry.status!r}{reason}, "
                                "not 'done'; finish it first or bundle another arm.")
    files = [rundir.model_file(JobKey(arm, k)) for k in range(cfg.data.folds)]
    missing = [str(f.relative_to(rundir.root)) for f in files if not f.is_file()]
    if missing:
        raise ModelPackageError(f"{rundir.root}: cannot bundle arm {arm!r}; missing fold model(s): "
                                f"{', '.join(missing)}.")
    return files


def _package_metrics(run, arm: str, operating: dict, meaning: LabelMeaning) -> dict[str, Any]:
    """Each set's metrics as the report computes them (:mod:`thyro.metrics`): AUROC with its interval and,
    on the test and external sets, the operating points; ``not_estimable`` where a set is too small."""
    preds = run.predictions
    out: dict[str, Any] = {}
    for split in [OOF] + [s for s in preds.splits if s != OOF]:
        rows = preds.rows(arm=arm, split=OOF) if split == OOF else preds.rows(arm=arm, split=split, ensemble=True)
        if rows.empty:
            continue
        ext = run.recorded_labels(split) if split not in (OOF, TEST) else None
        labels = ext or meaning
        m = metrics.auroc_summary(rows, classes=(labels.positive, labels.negative))
        if split != OOF and not m.get("missing"):
            at = metrics.at_thresholds(rows, operating, classes=(labels.positive, labels.negative))
            m["operating_points" if not at.get("missing") else "operating_points_missing"] = at.get("missing") or at
        if ext is not None:  # an external set's labels, and whether they mean the training labels'
            m["labels"] = ext.to_dict()
            m["label_warning"] = meaning.mismatch(ext, f"the external set {split}")
        out[split] = m
    return out


def bundle(run_dir: str | os.PathLike, arm: str | None, out: str | os.PathLike, *,
           default_point: str = DEFAULT_POINT, label_source: str | None = None, label_definition: str | None = None,
           overwrite: bool = False) -> ModelPackage:
    """Turn one arm of a finished study into a model package.

    The run is read once, through its owner (:meth:`thyro.run.RunDir.load`): the study record
    (preprocessing, the arm, flip test-time augmentation), the predictions (out-of-fold rows choose
    the operating points; ensemble rows give the metrics of the test set and of every external set,
    computed by :mod:`thyro.metrics` exactly as the report computes them, "not estimable" where a set is
    too small), the results, the data summary and the fold models.  ``label_source``/``label_definition``
    override the labels' provenance the study recorded.  ``arm=None`` packages the finished arm with the
    highest pooled out-of-fold AUROC (chosen by cross-validation, never on the test or external sets).

    Raises
    ------
    ModelPackageError
        Naming what is missing: the run, the arm, its fold models or its out-of-fold predictions.
    """
    rundir, run = _finished_run(run_dir)
    arm = arm if arm is not None else best_arm(rundir, run)
    files = _fold_models(rundir, run, arm)
    cfg = run.record.config
    meaning = run.recorded_labels() or LabelMeaning()
    if label_source or label_definition:
        meaning = LabelMeaning(label_source or meaning.source, label_definition or meaning.definition)
    oof = run.predictions.rows(arm=arm, split=OOF)
    if oof.empty:
        raise ModelPackageError(f"{rundir.predictions_path}: no out-of-fold (split = 'val') rows for arm {arm!r}; "
                                "they are needed to choose the operating points.")
    try:
        operating = metrics.choose_thresholds(oof, classes=(meaning.positive, meaning.negative))
    except StatsError as exc:
        raise ModelPackageError(f"{rundir.predictions_path}: arm {arm!r}: {exc}") from None
    arm_cfg = cfg.arm(arm)
    weights = arm_cfg.weight_source(run.record.base_dir)
    results, recorded = run.results, run.arm_result(arm)
    source = {"run_dir": str(rundir.root.resolve()), "arm": arm, "backbone": arm_cfg.backbone,
              "weights": weights.describe(), "role": weights.role,
              "weights_status": recorded.weights_status if recorded else None,
              "provenance": recorded.provenance if recorded else None,
              "git_commit": results.git_commit if results is not None else None,
              "versions": results.versions if results is not None else None, "n_folds": len(files)}
    preprocess = cfg.arm_preprocess(arm_cfg)  # the study's, at the arm's own size when it has one
    return write_package(out, model_files=files, preprocess=preprocess.model_dump(mode="json"),
                         operating=operating, metrics=_package_metrics(run, arm, operating, meaning),
                         data=run.data.to_dict() if run.data is not None else {}, source=source,
                         labels=meaning.to_dict(), image_size=preprocess.size, default_point=default_point,
                         overwrite=overwrite, tta_flip=cfg.train.tta_flip)
