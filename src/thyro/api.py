"""thyro's Python entry points: ``thyro.load``, ``thyro.study``, ``thyro.compare``, ``thyro.report``.

``import thyro`` loads none of this until it is used (``thyro/__init__.py`` resolves these names on first
access), so importing the package stays instant.  The functions here are thin: they call the same code as
the command line (``thyro predict``, ``thyro study``, ``thyro compare``, ``thyro report``) and return typed
values instead of printing.  docs/python-api.md shows them in use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thyro.errors import DataError
from thyro.report.compare import compare_files
from thyro.use.inputs import collect_inputs
from thyro.use.predict import CSV_COLUMNS
from thyro.use.scoring import InputItem, PredictionRow, Scorer, as_pixels, check_batch_size, check_frames, is_pixels

#: Columns of :meth:`Model.predict`'s table: those of ``thyro predict``'s CSV (then a manifest input's own).
PREDICTION_COLUMNS = list(CSV_COLUMNS)


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _is_one_image(x: Any) -> bool:
    """A single input rather than a list of them: a path, pixels, bytes or a binary file object."""
    return (_is_path(x) or is_pixels(x) or isinstance(x, (bytes, bytearray, memoryview))
            or callable(getattr(x, "read", None)))


class Model:
    """A model package (``thyro bundle``'s output) loaded to predict: ``thyro.load(model_dir)``.

    Attributes
    ----------
    package : thyro.use.package.ModelPackage
        The package: preprocessing, fold models, operating points, model card metadata.
    labels : thyro.data.manifest.LabelMeaning
        What label 1 means (``labels.positive`` is its name, e.g. "malignant"; ``labels.describe()``).
    operating_point, threshold : str, float
        The operating point that decides ``class`` and its probability threshold.
    engine : str
        ``"torch"`` or ``"onnx"``.
    scorer : thyro.use.scoring.Scorer
        The scoring path ``predict`` drives (the same as ``thyro predict``'s).
    """

    def __init__(self, model_dir: str | os.PathLike, *, engine: str = "torch", point: str | None = None,
                 onnx_file: str | os.PathLike | None = None):
        self.scorer = Scorer(model_dir, engine=engine, onnx_path=onnx_file, point=point)
        self.package = self.scorer.package
        self.engine = engine
        self.operating_point, self.threshold = self.scorer.point, self.scorer.threshold
        self.labels = self.scorer.labels

    def __repr__(self) -> str:
        return (f"thyro.Model({str(self.package.root)!r}: {len(self.package.model_files)} fold model(s), "
                f"{self.package.image_size} px, engine {self.engine}, label 1 = {self.labels.positive}, "
                f"{self.operating_point} threshold {self.threshold:.4f})")

    def predict(self, images: Any, *, roi: dict | None = None, batch_size: int = 16,
                frames: str = "first") -> pd.DataFrame:
        """Score images; one row per image (per frame with ``frames="all"``), in the order given.

        Parameters
        ----------
        images : one image or a list of them
            Each is a path (an image or DICOM file, a folder, searched recursively, or a manifest CSV whose
            label and patient columns are kept), a PIL image, a numpy array ((H, W) grey or (H, W, C) colour
            with C 1, 3 or 4; uint8 0-255 or float in [0, 1], see :func:`as_pixels`), or a file's bytes or
            binary file object.  Whatever the kind, an image is preprocessed exactly as a file is (scan area,
            marks, crop, resize) and scored in the same batches.
        roi : dict, optional
            An ROI (``{"box": [x0, y0, x1, y1]}`` in the image's pixels) for every image without its own.
        batch_size : int
            Images scored per model call.
        frames : {"first", "all", "mean"}
            How multi-frame files are scored (as ``thyro predict --frames``).

        Returns
        -------
        pandas.DataFrame
            Columns :data:`PREDICTION_COLUMNS`, the same as ``thyro predict``'s CSV: ``image`` (the path, or
            ``array[K]`` / ``bytes[K]`` for the K-th input given in memory; a PIL image or an open file by
            its file name), ``probability`` (float, the fold models' mean probability that label 1 applies;
            NaN when the image failed), ``probability_of`` (what label 1 means, e.g. "malignant"), ``class``
            (Int64: 1 at or above :attr:`threshold`, else 0; missing when failed), ``prediction`` (the class's
            name), ``roi`` (JSON), ``warning`` and ``error`` (empty strings when none), then a manifest
            input's own columns.  ``df.attrs`` holds the ``operating_point``, the ``threshold`` and the
            ``labels`` (a dict).  An image that cannot be read gets its ``error`` and the others go on.
        """
        check_batch_size(batch_size)
        check_frames(frames)
        given = [images] if _is_one_image(images) or not isinstance(images, Iterable) else list(images)
        if not given:
            raise DataError("images: none given; pass a path, an image or a list of them.")
        rows = list(self.scorer.rows(_items(given, roi), batch_size=batch_size, frames=frames))
        return self._table(rows)

    def predict_proba(self, images: Any, **kwargs) -> np.ndarray:
        """The probabilities alone (NaN for images that failed), as a float array in input order."""
        return self.predict(images, **kwargs)["probability"].to_numpy(dtype=float)

    def _table(self, rows: list[PredictionRow]) -> pd.DataFrame:
        extra = list(dict.fromkeys(c for r in rows for c in r.extra if c not in PREDICTION_COLUMNS))
        model_labels = (self.labels.positive, self.labels.source, self.labels.definition)
        table = pd.DataFrame([r.as_csv(model_labels, extra) for r in rows], columns=PREDICTION_COLUMNS + extra)
        table["probability"] = pd.to_numeric(table["probability"], errors="coerce").astype(float)
        table["class"] = pd.to_numeric(table["class"], errors="coerce").astype("Int64")
        table.attrs.update(operating_point=self.operating_point, threshold=self.threshold,
                           labels=self.labels.to_dict())
        return table


def _items(given: list, roi: dict | None) -> list[InputItem]:
    """The inputs in order: a path expanded (a folder's files, a manifest's rows), anything else one item."""
    items: list[InputItem] = []
    for k, image in enumerate(given):
        if _is_path(image):
            items.extend(collect_inputs([image], roi))
            continue
        own = getattr(image, "filename", None) or getattr(image, "name", None)
        kind = "array" if is_pixels(image) else "bytes"
        items.append(InputItem(image, own if isinstance(own, str) and own else f"{kind}[{k}]", roi))
    return items


def load(model_dir: str | os.PathLike, *, engine: str = "torch", point: str | None = None,
         onnx_file: str | os.PathLike | None = None) -> Model:
    """Load a model package to predict with: ``thyro.load("model/").predict(["scan.dcm", array])``.

    ``engine="onnx"`` runs the graph ``thyro export`` wrote (``MODEL_DIR/model.onnx`` or ``onnx_file``);
    ``point`` chooses the operating point (default: the package's).
    """
    return Model(model_dir, engine=engine, point=point, onnx_file=onnx_file)


def study(config: str | os.PathLike | dict | Any, *, run_dir: str | os.PathLike | None = None,
          overrides: dict | None = None, only: Sequence[str] | None = None, skip_missing: bool = False,
          device: str | None = None, jobs: int = 1, report: bool = True):
    """Run (or continue) a study, as ``thyro study``; returns its results, typed (:class:`thyro.run.Results`:
    ``results.arms["scratch"].test_auroc``).

    ``config`` is a YAML path (relative paths in it start from its folder), or a dict or
    :class:`thyro.config.StudyConfig` (relative paths start from the current directory).  ``overrides`` are
    ``--set``'s dotted keys (``{"train.epochs": 5}``); ``run_dir`` defaults to ``runs/NAME``.
    """
    from thyro.train.study import Study, run_study  # lazy: torch and timm, which thyro.load(engine="onnx") never needs

    if _is_path(config):
        return run_study(config, run_dir=run_dir, only=list(only) if only else None, skip_missing=skip_missing,
                         device=device, overrides=overrides, report=report, workers=jobs)
    from thyro.config import StudyConfig, merge  # lazy: as above

    data = config.model_dump(mode="json") if isinstance(config, StudyConfig) else dict(config)
    cfg = StudyConfig.parse(merge(data, overrides or {}), source="study configuration")
    folder = run_dir if run_dir is not None else Path("runs") / cfg.name
    return Study(cfg, base_dir=Path.cwd(), run_dir=folder).run(
        only=list(only) if only else None, skip_missing=skip_missing, device=device, report=report, workers=jobs)


def compare(predictions_a: str | os.PathLike, predictions_b: str | os.PathLike, **options) -> dict:
    """Paired comparison of two models' AUROC on the images both prediction files score, as ``thyro compare``.

    The files are ``thyro predict`` CSVs or a study's ``predictions.csv``; ``options`` are those of
    :func:`thyro.report.compare.compare_files` (``arm_a``, ``arm_b``, ``split``, ``method``, ...).  Returns
    both AUROCs with CIs and the difference with its CI and p-value.
    """
    return compare_files(predictions_a, predictions_b, **options)


def report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, **options) -> tuple[Path, Path]:
    """Write a study's report (HTML and Markdown), as ``thyro report``; returns both paths."""
    from thyro.report import build_report  # lazy: matplotlib and jinja2, which thyro.load never needs

    return build_report(run_dir, out, **options)


__all__ = ["Model", "PREDICTION_COLUMNS", "as_pixels", "compare", "load", "report", "study"]
