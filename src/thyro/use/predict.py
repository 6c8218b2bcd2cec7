"""Predict with a model package on new images: files, folders, DICOM, or a manifest.

Each image goes through exactly the training preprocessing stored in the package (including the ROI
crop when an ROI is given), then through every fold model; the probability is the mean of the fold
models' probabilities.  Images are read and scored in batches, so memory stays bounded however large
the folder.  A file that cannot be read gets an error row and the others go on.

Images smaller than the model input are upscaled by the preprocessing (as in training) and get a
warning in the ``warning`` column; images under :data:`thyro.use.inputs.MIN_SIDE` pixels on a side are refused.

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

import numpy as np

from thyro.errors import DataError, ThyroError
from thyro.fileio import CsvWriter, announce_escaped, atomic_open
from thyro.use.bundle import ModelPackage, load_package
from thyro.use.engines import make_engine
from thyro.use.inputs import (DICOM_SUFFIXES, IMAGE_SUFFIXES, InputItem, _error_text, check_frames, collect_inputs,
                              frame_items, prepare)

#: Columns of the predictions CSV, then the manifest's own (label, patient_id, group, ...) for manifest inputs,
#: so ``thyro report``, ``thyro compare`` and R's pROC read the file as it is.  What the probability is of
#: travels in every row, so the file stays one plain table (pandas, Excel, R): ``probability_of`` names
#: class 1 of the labels the model was trained on (``malignant``, ``TI-RADS ≥ 4c``), ``model_label_source``
#: says how those labels were obtained (pathology, cytology, tirads, ...) and ``model_label_definition``
#: what label 1 meant, when stated.  They describe the model; a manifest's own ``label_source`` and
#: ``label_definition`` columns, kept further right, describe the labels of the images scored.
CSV_COLUMNS = ["image", "probability", "probability_of", "model_label_source", "model_label_definition", "class",
               "prediction", "roi", "warning", "error"]
#: How multi-frame files are scored (see the module docstring).


@dataclass
class PredictionRow:
    input: str
    probability: float | None
    cls: int | None
    prediction: str
    roi: str
    warning: str = ""
    error: str = ""
    file_done: bool = True  # False on the rows of a file's frames before its last (progress only)
    extra: dict = field(default_factory=dict)

    def as_csv(self, model_labels=("", "", ""), extra_columns: list[str] | None = None) -> list:
        """The CSV row: ``model_labels`` is (probability_of, model_label_source, model_label_definition)."""
        return [self.input, "" if self.probability is None else f"{self.probability:.6f}", *model_labels,
                "" if self.cls is None else self.cls, self.prediction, self.roi, self.warning, self.error,
                *(self.extra.get(c, "") for c in extra_columns or [])]


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


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

def iter_predictions(package: ModelPackage, items: list[InputItem], engine, *, batch_size: int = 16,
                     threshold: float = 0.5, on_item=None, frames: str = "first") -> Iterator[PredictionRow]:
    """Yield one row per item (per frame with ``frames="all"``), in order, scoring ``batch_size``
    preprocessed images at a time."""
    if batch_size < 1:
        raise ThyroError(f"--batch-size must be at least 1, got {batch_size}.")
    check_frames(frames)
    names = (package.label_meaning.positive, package.label_meaning.negative)
    rows = _score_units(package, frame_items(items, frames), engine, batch_size, threshold, names)
    if frames == "mean":
        rows = _mean_of_frames(rows, threshold, names)
    for _, row in rows:
        if on_item is not None:
            on_item(row)
        yield row


def _score_units(package: ModelPackage, units: Iterator[tuple[int, InputItem, int]], engine, batch_size: int,
                 threshold: float, names: tuple[str, str]) -> Iterator[tuple[tuple[int, int], PredictionRow]]:
    """``((file index, frames of the file), row)`` for every unit, scored ``batch_size`` at a time."""
    from itertools import islice

    from thyro.data.manifest import roi_to_json

    pre = package.preprocessor()
    size = package.image_size
    while chunk := list(islice(units, batch_size)):
        arrays: list[np.ndarray] = []
        # file index, item, frames of the file, index in the batch, warning, error
        slots: list[tuple[int, InputItem, int, int | None, str, str]] = []
        for i, item, n in chunk:
            try:
                img, warning = prepare(pre, item, size)
                slots.append((i, item, n, len(arrays), warning, ""))
                arrays.append(img)
            except (ThyroError, OSError, ValueError) as exc:
                slots.append((i, item, n, None, "", _error_text(exc)))
            except Exception as exc:  # a reader's unexpected failure on one file must not stop the batch
                slots.append((i, item, n, None, "", f"{type(exc).__name__}: {_error_text(exc)}"))
        probs = engine(np.stack(arrays)) if arrays else np.empty(0)
        for i, item, n, idx, warning, error in slots:
            done = item.frame is None or item.frame == n - 1
            extra = item.extra
            if n > 1 and item.frame is not None and not extra.get("group"):  # a file's frames form one group
                extra = {**extra, "group": str(item.path)}
            if idx is None:
                row = PredictionRow(item.name, None, None, "", roi_to_json(item.roi), warning, error, file_done=done,
                                    extra=extra)
            else:
                p = float(probs[idx])
                cls = int(p >= threshold)
                row = PredictionRow(item.name, p, cls, names[0] if cls else names[1], roi_to_json(item.roi), warning,
                                    file_done=done, extra=extra)
            yield (i, n), row


def _mean_of_frames(rows: Iterator[tuple[tuple[int, int], PredictionRow]], threshold: float,
                    names: tuple[str, str]) -> Iterator[tuple[tuple[int, int], PredictionRow]]:
    """One row per file: the mean probability of its frames (rows of single-frame files pass through)."""
    group: list[PredictionRow] = []
    for key, row in rows:
        n = key[1]
        if n <= 1:
            yield key, row
            continue
        group.append(row)
        if len(group) < n:
            continue
        failed = [(k, r) for k, r in enumerate(group) if r.error]
        first = group[0]
        if failed:
            k, bad = failed[0]
            more = f" ({len(failed)} of {n} frames failed)" if len(failed) > 1 else ""
            merged = PredictionRow(first.input, None, None, "", first.roi, "", f"frame {k}: {bad.error}{more}",
                                   extra=first.extra)
        else:
            p = float(np.mean([r.probability for r in group]))
            cls = int(p >= threshold)
            notes = [f"mean of {n} frames"] + sorted({r.warning for r in group if r.warning})
            merged = PredictionRow(first.input, p, cls, names[0] if cls else names[1], first.roi, "; ".join(notes),
                                   extra=first.extra)
        group = []
        yield key, merged


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
    point : operating point name (default: the package's default)
    keep_rows : how many rows the summary keeps in memory for display
    frames : ``"first"``, ``"all"`` or ``"mean"``: how multi-frame files are scored (module docstring)

    Returns
    -------
    PredictionSummary
    """
    check_frames(frames)
    package = model_dir if isinstance(model_dir, ModelPackage) else load_package(model_dir)
    point_name, threshold = package.operating_point(point)
    items = collect_inputs(inputs, roi)
    if not items:
        raise DataError("no images found in " + ", ".join(map(str, inputs))
                        + f" (looked for {', '.join(sorted(IMAGE_SUFFIXES | DICOM_SUFFIXES))} and DICOM files).")
    eng = make_engine(package, engine, onnx_path)
    meaning = package.label_meaning
    stream = out if hasattr(out, "write") else None  # a text stream: the command line's standard output
    summary = PredictionSummary(operating_point=point_name, threshold=threshold, engine=engine,
                                out=Path(out) if out and stream is None else None, positive=meaning.positive,
                                negative=meaning.negative)
    model_labels = (meaning.positive, meaning.source, meaning.definition)
    extra_columns = list(dict.fromkeys(c for item in items for c in item.extra if c not in CSV_COLUMNS))
    if frames == "all" and "group" not in extra_columns:
        extra_columns.append("group")

    def consume(rows: Iterator[PredictionRow], writer) -> None:
        from thyro.console import progress_task

        with progress_task("predicting", len(items)) if progress else contextlib.nullcontext((None, None)) as (bar, task):
            for row in rows:
                summary.n += 1
                summary.n_failed += bool(row.error)
                summary.n_positive += row.cls == 1
                if len(summary.rows) < keep_rows:
                    summary.rows.append(row)
                if writer is not None:
                    writer.writerow(row.as_csv(model_labels, extra_columns))
                if bar is not None and row.file_done:
                    bar.advance(task)

    rows = iter_predictions(package, items, eng, batch_size=batch_size, threshold=threshold, frames=frames)
    if out:
        opened = contextlib.nullcontext(stream) if stream is not None else atomic_open(out, "w", newline="",
                                                                                        encoding="utf-8")
        with opened as fh:
            writer = CsvWriter(fh)
            writer.writerow(CSV_COLUMNS + extra_columns)
            consume(rows, writer)
        summary.escaped = writer.cells
        announce_escaped(out if stream is None else "standard output", writer.cells)
    else:
        consume(rows, None)
    return summary


def summary_table(summary: PredictionSummary, max_rows: int = 40):
    """A rich table of the first rows and a caption with the counts."""
    from rich.table import Table

    table = Table(title=f"Predictions ({summary.engine}; class at operating point {summary.operating_point}, "
                        f"probability >= {summary.threshold:.4f})")
    for col in ("input", "probability", "class", "roi", "note"):
        table.add_column(col, overflow="fold")
    shown = summary.rows[:max_rows]
    base = ""
    try:
        if len(shown) > 1:
            base = os.path.commonpath([os.path.dirname(r.input) for r in shown])
    except ValueError:  # mixed absolute and relative paths
        base = ""
    if base in (os.sep, "."):
        base = ""
    for row in shown:
        name = os.path.relpath(row.input, base) if base else row.input
        table.add_row(name, "" if row.probability is None else f"{row.probability:.4f}",
                      row.prediction, "yes" if row.roi else "", row.error or row.warning,
                      style="red" if row.error else None)
    more = summary.n - len(shown)
    table.caption = ((f"paths relative to {base}; " if base else "")
                     + f"{summary.n} image(s): {summary.n_positive} {summary.positive}, "
                     f"{summary.n - summary.n_positive - summary.n_failed} {summary.negative}, {summary.n_failed} failed"
                     + (f"; {more} more row(s) in the CSV" if more > 0 else ""))
    return table

