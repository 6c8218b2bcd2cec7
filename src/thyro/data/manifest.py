"""The manifest: one CSV schema every stage reads.

Columns
-------
image       path of the image, relative to the manifest's folder (also the image's id everywhere);
            see :func:`normalise_image_path` for the one spelling an image id has
label       1 malignant, 0 benign, empty = unlabelled
patient_id  the patient (or case) the image belongs to
group       the leakage group: the patient, merged with every duplicate image's patient
roi         optional JSON, in image pixels: ``{"polygons": [[[x, y], ...], ...]}`` or ``{"box": [x0, y0, x1, y1]}``
label_source      optional: how the labels were obtained, one of ``pathology``, ``cytology``, ``tirads``,
                  ``synthetic``, ``unknown`` (one value for the whole manifest)
label_definition  optional: what label 1 means in words (``TI-RADS >= 4c``), when not malignancy itself
...         any other columns (source fields such as tirads, composition) are kept as they are

Values are kept exactly as the source gave them.  On disk, a text cell that starts with ``=``, ``+``,
``-``, ``@``, tab, CR or NUL (a spreadsheet would run it as a formula) carries one leading ``'``, the
spreadsheet's mark for text; numbers never do.  :func:`read_manifest` (and every other reader in thyro)
removes that mark, so an image id, patient, group or any other cell compares equal to the source's
text, and a manifest read and written again is unchanged (:func:`thyro.fileio.escape_cell`).  A
spreadsheet shows the original text; another program reading the CSV sees the ``'`` and should drop one
before ``=``, ``+``, ``-``, ``@``, tab, CR or NUL.

The label's meaning travels from here into the run, the report, the model card, ``thyro predict``'s
output and the web page (:class:`~thyro.data.labels.LabelMeaning`), so a model trained on TI-RADS-derived
labels is never presented as a malignancy model.  The labels' meaning (:mod:`thyro.data.labels`) and the
``roi`` cell's parser (:mod:`thyro.data.roi`) have modules of their own; their names import from here too.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thyro.data.labels import LABEL_SOURCES, LabelMeaning
from thyro.data.roi import MAX_ROI_CHARS, MAX_ROI_DEPTH, parse_roi, roi_bbox, roi_to_json
from thyro.errors import DataError
from thyro.fileio import read_csv, unescape_frame, write_csv

REQUIRED_COLUMNS = ("image", "label", "patient_id", "group")
OPTIONAL_COLUMNS = ("roi",)
#: Columns always read as text (hashes such as "0123..." must not become numbers).
#: The column every manifest ``thyro data import`` writes, and so the sign that thyro wrote the file.
WRITTEN_BY_THYRO = "content_hash"
TEXT_COLUMNS = ("image", "patient_id", "group", "roi", "content_hash", "phash", "duplicate_of", "tirads", "label_source",
                "label_definition")


def normalise_image_path(text: str) -> str:
    """The one spelling of an image path in a manifest: forward slashes, no ``.`` or empty segments.

    ``./a.png``, ``a.png`` and ``sub//../a.png`` are all ``a.png``; ``sub\\a.png`` is ``sub/a.png``
    (a backslash is read as a folder separator, as Windows writes it: a file name with a backslash in
    it cannot be named in a manifest).  ``..`` segments that climb out of the manifest's folder and
    absolute paths are kept.  Importers write image ids in this form, and the validator compares
    ids in it, so one file cannot appear as two rows.  Spaces are kept: surrounding spaces are an
    error the validator reports (:func:`image_path_problem`), never silently removed.
    """
    text = str(text).replace("\\", "/")
    if not text:
        return text
    return posixpath.normpath(text)


def image_path_problem(text: str) -> str | None:
    """What is wrong with an ``image`` cell as written (None when nothing): empty, or surrounded by spaces."""
    if not str(text).strip():
        return "empty image path"
    if str(text) != str(text).strip():
        return (f"image path {str(text)!r} has spaces at its start or end; remove them from the manifest "
                "(or rename the file if its name really has them)")
    return None


@dataclass
class Manifest:
    """A manifest table and the folder its image paths are relative to."""

    df: pd.DataFrame
    root: Path
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.df)

    @property
    def ids(self) -> list[str]:
        """Image ids (the ``image`` column), in row order."""
        return self.df["image"].tolist()

    def abspath(self, image: str) -> Path:
        """Absolute path of an image id (spelled as :func:`normalise_image_path` reads it)."""
        return (self.root / normalise_image_path(image)).resolve()

    def paths(self) -> list[Path]:
        return [self.abspath(i) for i in self.df["image"]]

    def labels(self) -> np.ndarray:
        """Labels as float (NaN = unlabelled)."""
        return self.df["label"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)

    def labelled(self) -> Manifest:
        """The rows with a label."""
        return Manifest(self.df[self.df["label"].notna()].reset_index(drop=True), self.root, self.path)

    def label_meaning(self) -> LabelMeaning:
        """The labels' provenance from the ``label_source``/``label_definition`` columns (unknown without them).

        Raises :class:`DataError` naming the values when a manifest mixes provenances.
        """
        where = self.path or "manifest"
        values = {}
        for col in ("label_source", "label_definition"):
            if col in self.df.columns:
                cells = {str(v).strip() for v in self.df[col] if str(v).strip() not in ("", "nan", "<NA>")}
                if len(cells) > 1:
                    raise DataError(f"{where}: column {col} holds several values ({', '.join(sorted(cells)[:4])}); "
                                    "a manifest has one label provenance: split it into one manifest per source.")
                values[col] = cells.pop() if cells else ""
        source = values.get("label_source", "").lower() or "unknown"
        if source not in LABEL_SOURCES:
            raise DataError(f"{where}: label_source {source!r} is not one of {', '.join(LABEL_SOURCES)}.")
        return LabelMeaning(source, values.get("label_definition", ""))

    def rois(self) -> list[dict | None]:
        if "roi" not in self.df.columns:
            return [None] * len(self.df)
        prefix = f"{self.path}: " if self.path is not None else ""
        return [parse_roi(v, where=f"{prefix}row {i + 2}") for i, v in enumerate(self.df["roi"])]

    def write(self, path: str | os.PathLike) -> Path:
        return write_manifest(self.df, path, root=self.root)


def _coerce(df: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if "image" in missing:
        raise DataError(f"{where}: no 'image' column; a manifest needs columns {', '.join(REQUIRED_COLUMNS)}")
    df = df.copy()
    if "label" not in df.columns:
        df["label"] = pd.NA
    if "patient_id" not in df.columns:
        df["patient_id"] = df["image"]
    if "group" not in df.columns:
        df["group"] = df["patient_id"]
    df["image"] = df["image"].astype(str)
    df["patient_id"] = df["patient_id"].astype(str)
    df["group"] = df["group"].astype(str)
    return df


def read_manifest(path: str | os.PathLike, *, check_labels: bool = True) -> Manifest:
    """Read a manifest CSV.  Missing ``patient_id``/``group`` default to the image id / patient.

    A manifest thyro wrote (``thyro data import`` gives every one a ``content_hash`` column) has the cells
    that would run as spreadsheet formulas written with a leading ``'``, which is taken off again here; in
    a manifest a person wrote, a leading ``'`` is part of the value and is kept.

    Raises :class:`DataError` naming the file and rows when labels are not 0, 1 or empty.
    (``thyro data validate`` checks everything else, files included.)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found.")
    try:
        df = read_csv(path, unescape=False, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False,
                      na_values={"label": [""]})
        if WRITTEN_BY_THYRO in df.columns:  # thyro's escaping undone only in a manifest thyro wrote
            unescape_frame(df)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV manifest ({exc}).") from None
    if df.empty:
        raise DataError(f"{path}: the manifest names no images (a header and no rows); "
                        "`thyro data import` writes one.")
    df = _coerce(df, str(path))
    labels, bad = normalise_labels(df["label"])
    if bad and check_labels:
        rows = ", ".join(f"row {i + 2} ({v!r})" for i, v in bad[:20])
        raise DataError(f"{path}: label must be 1 (malignant), 0 (benign) or empty (unlabelled); "
                        f"{len(bad)} bad value(s): {rows}")
    df["label"] = labels
    return Manifest(df=df, root=path.parent.resolve(), path=path.resolve())


def normalise_labels(series: pd.Series) -> tuple[pd.Series, list[tuple[int, Any]]]:
    """Map label cells to nullable Int64 (1, 0, <NA>); return the bad (row index, value) pairs too."""
    out: list[Any] = []
    bad: list[tuple[int, Any]] = []
    for i, v in enumerate(series.tolist()):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()) or v is pd.NA:
            out.append(pd.NA)
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            bad.append((i, v))
            out.append(pd.NA)
            continue
        if f in (0.0, 1.0):
            out.append(int(f))
        else:
            bad.append((i, v))
            out.append(pd.NA)
    return pd.Series(out, index=series.index, dtype="Int64"), bad


def write_manifest(df: pd.DataFrame, path: str | os.PathLike, root: Path | None = None, *,
                   announce: bool = True) -> Path:
    """Write a manifest atomically; required columns first.  If ``root`` differs from the
    target folder, image paths are rewritten relative to the new folder.

    Text cells that a spreadsheet would run as a formula are written with a leading ``'``
    (:func:`thyro.fileio.write_csv`; the module docstring says what that means for the values);
    ``announce`` says so in one line."""
    path = Path(path)
    df = _coerce(df, str(path))
    target_root = path.parent.resolve()
    if root is not None and Path(root).resolve() != target_root:
        df["image"] = [os.path.relpath((Path(root) / p).resolve(), target_root) for p in df["image"]]
    cols = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in df.columns]
    cols += [c for c in df.columns if c not in cols]
    write_csv(path, df[cols], announce=announce)
    return path


def manifest_from_records(records: list[dict], root: Path) -> Manifest:
    """Build a manifest from row dicts (used by importers and the phantom)."""
    df = pd.DataFrame.from_records(records)
    df = _coerce(df, str(root))
    df["label"], _ = normalise_labels(df["label"])
    return Manifest(df=df, root=Path(root).resolve())


__all__ = ["LABEL_SOURCES", "MAX_ROI_CHARS", "MAX_ROI_DEPTH", "OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "TEXT_COLUMNS",
           "LabelMeaning", "Manifest", "image_path_problem", "manifest_from_records", "normalise_image_path",
           "normalise_labels", "parse_roi", "read_manifest", "roi_bbox", "roi_to_json", "write_manifest"]
