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
output and the web page (:class:`LabelMeaning`), so a model trained on TI-RADS-derived labels is never
presented as a malignancy model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thyro.errors import DataError
from thyro.fileio import read_csv, write_csv

REQUIRED_COLUMNS = ("image", "label", "patient_id", "group")
OPTIONAL_COLUMNS = ("roi",)
#: Columns always read as text (hashes such as "0123..." must not become numbers).
TEXT_COLUMNS = ("image", "patient_id", "group", "roi", "content_hash", "phash", "duplicate_of", "tirads", "label_source",
                "label_definition")


#: How labels may have been obtained, and how each is described.
LABEL_SOURCES: dict[str, str] = {
    "pathology": "pathology (histology of the resected or biopsied nodule)",
    "cytology": "cytology (fine-needle aspiration, Bethesda category)",
    "tirads": "radiologists' TI-RADS categories, not pathology",
    "synthetic": "synthetic (thyro phantom): drawn from a known probability given the simulated features",
    "unknown": "not recorded",
}


@dataclass(frozen=True)
class LabelMeaning:
    """What label 1 stands for, and where labels came from.

    Attributes
    ----------
    source : str
        One of :data:`LABEL_SOURCES`.
    definition : str
        What label 1 means when it is not malignancy itself (e.g. ``TI-RADS >= 4c``); empty otherwise.
    """

    source: str = "unknown"
    definition: str = ""

    def __post_init__(self):
        if self.source not in LABEL_SOURCES:
            raise DataError(f"label_source {self.source!r} is not one of {', '.join(LABEL_SOURCES)}")

    @property
    def malignancy(self) -> bool:
        """True when label 1 means malignant (pathology, cytology, the phantom, or not recorded)."""
        return self.source != "tirads"

    @property
    def positive(self) -> str:
        """Name of class 1: ``malignant``, or e.g. ``TI-RADS >= 4c``."""
        return "malignant" if self.malignancy else (self.definition or "suspicious (TI-RADS)")

    @property
    def negative(self) -> str:
        return "benign" if self.malignancy else (f"not {self.definition}" if self.definition else "not suspicious")

    @property
    def probability_name(self) -> str:
        """How a probability is called: ``malignancy probability`` or ``TI-RADS >= 4c probability``."""
        return "malignancy probability" if self.malignancy else f"{self.positive} probability"

    @property
    def provenance(self) -> str:
        """How the labels were obtained, in words (``radiologists' TI-RADS categories, not pathology``)."""
        return LABEL_SOURCES[self.source]

    def describe(self) -> str:
        """One sentence for reports and model cards."""
        text = self.provenance
        text = text[0].upper() + text[1:]
        if not self.malignancy:
            text += (f"; label 1 = {self.positive}. The model predicts a radiologist's suspicion category, "
                     "not the pathology result")
        else:
            if self.definition:
                text += f"; label 1 = malignant ({self.definition})"
            if self.source == "unknown":
                text += "; state how the labels were obtained (manifest column label_source) before using the model"
        return text + "."

    def summary(self) -> str:
        """One line for consoles, titles and captions: ``label 1 = TI-RADS ≥ 4c; labels: radiologists' ...``."""
        name = self.positive + (f" ({self.definition})" if self.malignancy and self.definition else "")
        return f"label 1 = {name}; labels: {self.provenance}"

    def same_as(self, other: LabelMeaning) -> bool:
        """Whether two label sets mean the same (same source; same definition, spelling of >= and case aside)."""
        def norm(text: str) -> str:
            return " ".join(text.replace("≥", ">=").replace("≤", "<=").lower().split())

        return self.source == other.source and norm(self.definition) == norm(other.definition)

    def mismatch(self, labels: LabelMeaning, where: str) -> str | None:
        """One sentence when ``labels`` (those of ``where``, e.g. an external set) differ from these, the
        labels a model was trained on; None when they agree (or neither is recorded)."""
        if self.same_as(labels) or (self.source == "unknown" and labels.source == "unknown"):
            return None
        if "unknown" in (self.source, labels.source):
            return (f"Whether the labels of {where} ({labels.positive}; {labels.provenance}) mean what the training "
                    f"labels meant ({self.positive}; {self.provenance}) cannot be checked: record label_source in "
                    "both manifests.")
        detail = f" ({labels.definition})" if labels.malignancy and labels.definition else ""
        return (f"Labels differ: the model was trained on {self.positive} ({self.provenance}) but {where} is "
                f"labelled {labels.positive}{detail} by {labels.provenance}, so its AUROC there measures how well a {self.probability_name} ranks "
                f"{labels.positive} cases.")

    def to_dict(self) -> dict:
        return {"source": self.source, "definition": self.definition, "positive": self.positive,
                "negative": self.negative, "probability_name": self.probability_name, "description": self.describe(),
                "summary": self.summary(), "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: dict | None) -> LabelMeaning:
        d = d or {}
        return cls(str(d.get("source") or "unknown"), str(d.get("definition") or ""))


def normalise_image_path(text: str) -> str:
    """The one spelling of an image path in a manifest: forward slashes, no ``.`` or empty segments.

    ``./a.png``, ``a.png`` and ``sub//../a.png`` are all ``a.png``; ``sub\\a.png`` is ``sub/a.png``
    (a backslash is read as a folder separator, as Windows writes it: a file name with a backslash in
    it cannot be named in a manifest).  ``..`` segments that climb out of the manifest's folder and
    absolute paths are kept.  Importers write image ids in this form, and the validator compares
    ids in it, so one file cannot appear as two rows.  Spaces are kept: surrounding spaces are an
    error the validator reports (:func:`image_path_problem`), never silently removed.
    """
    import posixpath

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


#: Largest ``roi`` text accepted (characters): about 15,000 outline points, far more than any outline.
MAX_ROI_CHARS = 256 * 1024
#: Deepest bracket nesting accepted: ``{"polygons": [[[x, y], ...]]}`` is 4 deep.
MAX_ROI_DEPTH = 4
_ROI_HINT = '{"polygons": [[[x, y], ...]]} or {"box": [x0, y0, x1, y1]}'


def _json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` outside JSON strings, in one linear pass.

    Hand-written because :mod:`json` has no depth limit: ``[[[[...`` makes it recurse until
    ``RecursionError``; this scan stops a nested value before the parser sees it.
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_ROI_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def parse_roi(value: Any, where: str = "") -> dict | None:
    """Parse an ROI (a manifest ``roi`` cell, ``predict --roi``, the web app's ``roi`` field) into
    ``{"polygons": [...]}`` or ``{"box": [...]}`` (None when empty).

    The one parser every entry point uses.  Text longer than :data:`MAX_ROI_CHARS` or nested deeper
    than :data:`MAX_ROI_DEPTH` is refused before it is parsed; coordinates must be finite numbers.

    Raises
    ------
    DataError
        Naming ``where`` (the row, option or field) and what is wrong.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dict):
        roi = value
    else:
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", errors="replace")
        if not isinstance(value, str):
            raise DataError(f"{where}: roi must be JSON text, got {type(value).__name__}; expected {_ROI_HINT}")
        if len(value) > MAX_ROI_CHARS:
            raise DataError(f"{where}: roi is {len(value):,} characters long, over the limit of {MAX_ROI_CHARS:,}; "
                            f"expected {_ROI_HINT}")
        if _json_depth(value) > MAX_ROI_DEPTH:
            raise DataError(f"{where}: roi is nested more than {MAX_ROI_DEPTH} levels deep; expected {_ROI_HINT}")
        try:
            roi = json.loads(value, parse_constant=_no_constant)
        except (TypeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise DataError(f"{where}: roi is not valid JSON ({exc}); expected {_ROI_HINT}") from None
    if not isinstance(roi, dict) or not ({"polygons", "box"} & set(roi)):
        shown = value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "..."
        raise DataError(f"{where}: roi must be a JSON object with 'polygons' or 'box', got {shown!r}")
    if "box" in roi:
        box = roi["box"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)
                and box[2] > box[0] and box[3] > box[1]):
            raise DataError(f"{where}: roi box must be [x0, y0, x1, y1] (finite numbers) with x1 > x0 and y1 > y0, "
                            f"got {str(box)[:200]}")
    if "polygons" in roi:
        polys = roi["polygons"]
        if not isinstance(polys, list) or not polys:
            raise DataError(f"{where}: roi polygons must be a non-empty list of [[x, y], ...] lists")
        for k, poly in enumerate(polys):
            if (not isinstance(poly, list) or len(poly) < 3
                    or not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_number(v) for v in p)
                               for p in poly)):
                raise DataError(f"{where}: roi polygon {k} needs at least 3 [x, y] points (finite numbers)")
    return roi


def roi_to_json(roi: dict | None) -> str:
    return "" if roi is None else json.dumps(roi, separators=(",", ":"))


def roi_bbox(roi: dict) -> tuple[float, float, float, float]:
    """Bounding box ``(x0, y0, x1, y1)`` of an ROI (all polygons together)."""
    if "box" in roi:
        x0, y0, x1, y1 = roi["box"]
        return float(x0), float(y0), float(x1), float(y1)
    pts = np.array([p for poly in roi["polygons"] for p in poly], dtype=float)
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


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

    Raises :class:`DataError` naming the file and rows when labels are not 0, 1 or empty.
    (``thyro data validate`` checks everything else, files included.)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found.")
    try:
        df = read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False, na_values={"label": [""]})
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
