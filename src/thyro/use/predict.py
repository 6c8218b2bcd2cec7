"""Predict with a model package on new images: files, folders, DICOM, or a manifest.

Each image goes through exactly the training preprocessing stored in the package (including the ROI
crop when an ROI is given), then through every fold model; the probability is the mean of the fold
models' probabilities.  Images are read and scored in batches by a :class:`thyro.use.scoring.Scorer`, so
memory stays bounded however large the folder.  A file that cannot be read gets an error row and the
others go on; any other exception is a bug and stops the run.

Images smaller than the model input are upscaled by the preprocessing (as in training) and get a
warning in the ``warning`` column; images under :data:`thyro.use.scoring.MIN_SIDE` pixels on a side are refused.

Multi-frame files (cine DICOM, multi-page TIFF, animated GIF) follow ``frames``:

``first`` (default)
    frame 0 is scored; the ``warning`` column names how many frames the file has;
``all``
    every frame is its own row, ``FILE#frame=K`` (K from 0), the rows of a file one after another;
``mean``
    one row per file whose probability is the mean of its frames' probabilities (a frame that cannot
    be read fails the file's row, naming the frame).

Engines: ``torch`` (the fold models, eager) or ``onnx`` (the graph written by ``thyro export``, run
with onnxruntime; torch is not imported on that path).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from thyro import progress as progress_
from thyro.errors import DataError
from thyro.fileio import CsvWriter, announce_escaped, atomic_open
from thyro.use.inputs import DICOM_SUFFIXES, IMAGE_SUFFIXES, collect_inputs
from thyro.use.package import ModelPackage, load_package
from thyro.use.scoring import InputItem, PredictionRow, Scorer, check_batch_size, check_frames

#: Columns of the predictions CSV, then the manifest's own (label, patient_id, group, ...) for manifest inputs,
#: so ``thyro report``, ``thyro compare`` and R's pROC read the file as it is.  What the probability is of
#: travels in every row, so the file stays one plain table (pandas, Excel, R): ``probability_of`` names
#: class 1 of the labels the model was trained on (``malignant``, ``TI-RADS ≥ 4c``), ``model_label_source``
#: says how those labels were obtained (pathology, cytology, tirads, ...) and ``model_label_definition``
#: what label 1 meant, when stated.  They describe the model; a manifest's own ``label_source`` and
#: ``label_definition`` columns, kept further right, describe the labels of the images scored.
CSV_COLUMNS = ["image", "probability", "probability_of", "model_label_source", "model_label_definition", "class",
               "prediction", "roi", "warning", "error"]


@dataclass
class PredictionSummary:
    """What :func:`predict` did: counts, the CSV path, and the first rows (for a table)."""

    n: int = 0
    n_failed: int = 0
    n_positive: int = 0
    out: Path | None = None
    operating_point: str = ""
    threshold: float = 0.5
    engine: str = "torch"
    positive: str = "malignant"
    negative: str = "benign"
    rows: list[PredictionRow] = field(default_factory=list)  # at most ``keep_rows``
    #: cells of the CSV written with a leading ``'`` (:func:`thyro.fileio.escape_cell`): (row, column)
    escaped: list[tuple[int | None, str]] = field(default_factory=list)


def iter_predictions(package: ModelPackage, items: list[InputItem], engine, *, batch_size: int = 16,
                     threshold: float = 0.5, frames: str = "first") -> Iterator[PredictionRow]:
    """Yield one row per item (per frame with ``frames="all"``), in order, scoring ``batch_size``
    preprocessed images at a time (:meth:`thyro.use.scoring.Scorer.rows`).

    ``engine`` is ``"torch"``, ``"onnx"`` or a callable ``uint8 (B, S, S) -> probabilities (B,)``;
    ``threshold`` decides the class.
    """
    scorer = Scorer(package, engine=engine)
    scorer.threshold = float(threshold)
    return scorer.rows(items, batch_size=batch_size, frames=frames)


def predict(model_dir: str | os.PathLike | ModelPackage, inputs: Iterable[str | os.PathLike], *,
            out: str | os.PathLike | None = None, roi: dict | None = None, engine: str = "torch",
            onnx_path: str | os.PathLike | None = None, batch_size: int = 16, point: str | None = None,
            progress: bool = True, keep_rows: int = 1000, frames: str = "first") -> PredictionSummary:
    """Score images with a model package and write the CSV (atomically) when ``out`` is given.

    Parameters
    ----------
    model_dir : path or ModelPackage
    inputs : image files, folders (recursive), DICOM files or manifest CSVs (their ``roi`` column is used)
    out : CSV path, or a text stream (written row by row); columns :data:`CSV_COLUMNS`, then a manifest
        input's own columns (label, patient_id, group, ...), so the file can be read by ``thyro report`` and
        ``thyro compare`` as it is
    roi : an ROI applied to inputs without their own
    engine : ``"torch"`` or ``"onnx"``
    onnx_path : the ONNX file for ``engine="onnx"`` (default ``MODEL_DIR/model.onnx``)
    batch_size : images prepared and scored at a time
    point : operating point name (default: the package's)
    progress : report progress through :mod:`thyro.progress` (one unit per input file)
    keep_rows : how many rows the summary keeps in memory for display
    frames : ``"first"``, ``"all"`` or ``"mean"``: how multi-frame files are scored (module docstring)

    Returns
    -------
    PredictionSummary
    """
    check_frames(frames)
    check_batch_size(batch_size)
    package = model_dir if isinstance(model_dir, ModelPackage) else load_package(model_dir)
    package.operating_point(point)  # an unknown point is refused before any work
    inputs = list(inputs)
    items = collect_inputs(inputs, roi)
    if not items:
        raise DataError("no images found in " + ", ".join(map(str, inputs))
                        + f" (looked for {', '.join(sorted(IMAGE_SUFFIXES | DICOM_SUFFIXES))} and DICOM files).")
    scorer = Scorer(package, engine=engine, onnx_path=onnx_path, point=point)
    meaning = scorer.labels
    stream = out if hasattr(out, "write") else None  # a text stream: the command line's standard output
    summary = PredictionSummary(operating_point=scorer.point, threshold=scorer.threshold, engine=engine,
                                out=Path(out) if out and stream is None else None, positive=meaning.positive,
                                negative=meaning.negative)
    rows = scorer.rows(items, batch_size=batch_size, frames=frames)
    extra_columns = list(dict.fromkeys(c for item in items for c in item.extra if c not in CSV_COLUMNS))
    if frames == "all" and "group" not in extra_columns:
        extra_columns.append("group")
    consume = _Consumer(summary, (meaning.positive, meaning.source, meaning.definition), extra_columns, keep_rows)
    if not out:
        consume(rows, None, len(items) if progress else None)
        return summary
    opened = contextlib.nullcontext(stream) if stream is not None else atomic_open(out, "w", newline="",
                                                                                    encoding="utf-8")
    with opened as fh:
        writer = CsvWriter(fh)
        writer.writerow(CSV_COLUMNS + extra_columns)
        consume(rows, writer, len(items) if progress else None)
    summary.escaped = writer.cells
    announce_escaped(out if stream is None else "standard output", writer.cells)
    return summary


@dataclass
class _Consumer:
    """Counts rows into the summary (keeping the first ``keep_rows``), writes them, and reports progress."""

    summary: PredictionSummary
    model_labels: tuple[str, str, str]
    extra_columns: list[str]
    keep_rows: int

    def __call__(self, rows: Iterator[PredictionRow], writer: CsvWriter | None, total: int | None) -> None:
        summary = self.summary
        task = progress_.task("predicting", total, unit="image") if total is not None else None
        with task if task is not None else contextlib.nullcontext():
            for row in rows:
                summary.n += 1
                summary.n_failed += bool(row.error)
                summary.n_positive += row.cls == 1
                if len(summary.rows) < self.keep_rows:
                    summary.rows.append(row)
                if writer is not None:
                    writer.writerow(row.as_csv(self.model_labels, self.extra_columns))
                if task is not None and row.file_done:
                    task.advance()


__all__ = ["CSV_COLUMNS", "PredictionRow", "PredictionSummary", "iter_predictions", "predict"]
