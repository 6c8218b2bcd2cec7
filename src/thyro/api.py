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

from thyro.errors import DataError, ThyroError
from thyro.settings import get_settings
from thyro.use.predict import CSV_COLUMNS

#: Columns of :meth:`Model.predict`'s table: those of ``thyro predict``'s CSV (then a manifest input's own).
PREDICTION_COLUMNS = list(CSV_COLUMNS)


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def as_pixels(image: Any, where: str = "image") -> np.ndarray:
    """An in-memory image as the preprocessing takes it: uint8, (H, W) or (H, W, 3).

    Accepts a PIL image (any mode: converted to RGB, or kept grey) or a numpy array of shape (H, W),
    (H, W, 1), (H, W, 3) or (H, W, 4) (alpha dropped): uint8 (0-255) as it is, float in [0, 1] scaled to
    0-255 (rounded).  Other dtypes, float values outside [0, 1], NaN, or other shapes are refused.
    """
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
        grey = image.mode in ("1", "L", "I", "I;16", "F", "LA")
        if image.mode in ("I", "I;16", "F"):
            raise DataError(f"{where}: a {image.mode!r} (16-bit or float) PIL image; convert it to 8 bits "
                            "(image.convert('L')) or pass a float array in [0, 1].")
        image = np.asarray(image.convert("L" if grey else "RGB"))
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 4):
        arr = arr[..., 0] if arr.shape[2] == 1 else arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise DataError(f"{where}: expected an image of shape (H, W) or (H, W, C) with C 1, 3 or 4; got {arr.shape}.")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min(initial=0.0) < 0 or arr.max(initial=0.0) > 1:
            raise DataError(f"{where}: float pixels must lie in [0, 1] (got {np.nanmin(arr):g} to "
                            f"{np.nanmax(arr):g}); scale them, or pass uint8 0-255.")
        return np.round(arr * 255.0).astype(np.uint8)
    raise DataError(f"{where}: {arr.dtype} pixels; pass uint8 (0-255) or float in [0, 1] (e.g. a 16-bit image "
                    "scaled by its window: (arr - lo) / (hi - lo)).")


class Model:
    """A model package (``thyro bundle``'s output) loaded to predict: ``thyro.load(model_dir)``.

    Attributes
    ----------
    package : thyro.use.bundle.ModelPackage
        The package: preprocessing, fold models, operating points, model card metadata.
    labels : thyro.data.manifest.LabelMeaning
        What label 1 means (``labels.positive`` is its name, e.g. "malignant"; ``labels.describe()``).
    operating_point, threshold : str, float
        The operating point that decides ``class`` and its probability threshold.
    engine : str
        ``"torch"`` or ``"onnx"``.
    """

    def __init__(self, model_dir: str | os.PathLike, *, engine: str = "torch", point: str | None = None,
                 onnx_file: str | os.PathLike | None = None):
        from thyro.use.bundle import load_package
        from thyro.use.engines import make_engine

        self.package = load_package(model_dir)
        self.engine = engine
        self._engine = make_engine(self.package, engine, onnx_file)
        self.operating_point, self.threshold = self.package.operating_point(point)
        self.labels = self.package.label_meaning

    def __repr__(self) -> str:
        return (f"thyro.Model({str(self.package.root)!r}: {len(self.package.model_files)} fold model(s), "
                f"{self.package.image_size} px, engine {self.engine}, label 1 = {self.labels.positive}, "
                f"{self.operating_point} threshold {self.threshold:.4f})")

    def predict(self, images: Any, *, roi: dict | None = None, batch_size: int = 16,
                frames: str = "first"):
        """Score images; one row per image (per frame with ``frames="all"``), in the order given.

        Parameters
        ----------
        images : one image or a list of them
            Each is a path (an image or DICOM file, a folder, searched recursively, or a manifest CSV whose
            label and patient columns are kept), a PIL image, or a numpy array: (H, W) grey or (H, W, C)
            colour with C 1, 3 or 4; uint8 0-255 or float in [0, 1] (see :func:`as_pixels`).  Arrays and
            PIL images are preprocessed exactly as files are (scan area, marks, crop, resize).
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
            ``array[K]`` for the K-th input given in memory), ``probability`` (float, the fold models' mean
            probability that label 1 applies; NaN when the image failed), ``probability_of`` (what label 1
            means, e.g. "malignant"), ``class`` (Int64: 1 at or above :attr:`threshold`, else 0; missing when
            failed), ``prediction`` (the class's name), ``roi`` (JSON), ``warning`` and ``error`` (empty
            strings when none), then a manifest input's own columns.  ``df.attrs`` holds the
            ``operating_point``, the ``threshold`` and the ``labels`` (a dict).  A file that cannot be read
            gets its ``error`` and the others go on.
        """
        import pandas as pd

        from thyro.data.manifest import roi_to_json
        from thyro.use.inputs import collect_inputs
        from thyro.use.predict import PredictionRow, iter_predictions

        many = isinstance(images, (list, tuple)) or (isinstance(images, Iterable) and not _is_path(images)
                                                    and not isinstance(images, np.ndarray)
                                                    and not hasattr(images, "convert"))
        given = list(images) if many else [images]
        if not given:
            raise DataError("predict: no images given.")
        names = (self.labels.positive, self.labels.negative)
        rows: list[PredictionRow] = []
        pending: list[tuple[int, np.ndarray, str, str]] = []  # row index, model input, warning, roi JSON

        def flush() -> None:
            if not pending:
                return
            probs = self._engine(np.stack([p[1] for p in pending]))
            for (index, _, warning, roi_json), p in zip(pending, probs):
                cls = int(float(p) >= self.threshold)
                rows[index] = PredictionRow(rows[index].input, float(p), cls, names[0] if cls else names[1],
                                            roi_json, warning)
            pending.clear()

        pre = self.package.preprocessor()
        for k, item in enumerate(given):
            if _is_path(item):
                flush()
                rows.extend(iter_predictions(self.package, collect_inputs([item], roi), self._engine,
                                             batch_size=batch_size, threshold=self.threshold, frames=frames))
                continue
            name = getattr(item, "filename", "") or f"array[{k}]"
            try:
                pixels = as_pixels(item, where=name)
                self._check_size(pixels, name)
                image, geometry = pre.process(pixels, roi=roi)
                rows.append(PredictionRow(name, None, None, "", roi_to_json(roi)))
                pending.append((len(rows) - 1, image, geometry.warning or "", roi_to_json(roi)))
            except ThyroError as exc:
                rows.append(PredictionRow(name, None, None, "", roi_to_json(roi), error=" ".join(str(exc).split())))
            if len(pending) >= batch_size:
                flush()
        flush()
        extra = list(dict.fromkeys(c for r in rows for c in r.extra if c not in PREDICTION_COLUMNS))
        model_labels = (self.labels.positive, self.labels.source, self.labels.definition)
        table = pd.DataFrame([r.as_csv(model_labels, extra) for r in rows], columns=PREDICTION_COLUMNS + extra)
        table["probability"] = pd.to_numeric(table["probability"], errors="coerce").astype(float)
        table["class"] = pd.to_numeric(table["class"], errors="coerce").astype("Int64")
        table.attrs.update(operating_point=self.operating_point, threshold=self.threshold,
                           labels=self.labels.to_dict())
        return table

    def predict_proba(self, images: Any, **kwargs) -> np.ndarray:
        """The probabilities alone (NaN for images that failed), as a float array in input order."""
        return self.predict(images, **kwargs)["probability"].to_numpy(dtype=float)

    def _check_size(self, pixels: np.ndarray, name: str) -> None:
        h, w = pixels.shape[:2]
        limit = get_settings().max_pixels
        if h * w > limit:
            raise DataError(f"{name}: {w} x {h} pixels is over the limit of {limit:,} "
                            "(thyro.settings.set_settings(max_pixels=N) raises it).")


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
    if _is_path(config):
        from thyro.train.study import run_study

        return run_study(config, run_dir=run_dir, only=list(only) if only else None, skip_missing=skip_missing,
                         device=device, overrides=overrides, report=report, workers=jobs)
    from thyro.config import StudyConfig, merge
    from thyro.train.study import Study

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
    from thyro.report.compare import compare_files

    return compare_files(predictions_a, predictions_b, **options)


def report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, **options) -> tuple[Path, Path]:
    """Write a study's report (HTML and Markdown), as ``thyro report``; returns both paths."""
    from thyro.report import build_report

    return build_report(run_dir, out, **options)


__all__ = ["Model", "PREDICTION_COLUMNS", "as_pixels", "compare", "load", "report", "study"]
