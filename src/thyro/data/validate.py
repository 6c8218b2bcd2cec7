"""Check a manifest and report every problem at once, each with its CSV line and file."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import thyro.progress
from thyro.data.manifest import (
    REQUIRED_COLUMNS,
    WRITTEN_BY_THYRO,
    image_path_problem,
    normalise_image_path,
    normalise_labels,
    parse_roi,
    roi_bbox,
)
from thyro.data.readers import ImageReadError, load_image, probe_image
from thyro.errors import DataError
from thyro.fileio import read_csv, unescape_frame

log = logging.getLogger(__name__)

#: ROI points may lie this many pixels outside the image (outlines drawn on the border).
ROI_TOLERANCE = 2.0


@dataclass(frozen=True)
class Problem:
    """One problem in a manifest.

    Attributes
    ----------
    row : int or None
        Line number in the CSV (the header is line 1), None for the whole file.
    file : str or None
        The image named on that row (or the manifest itself).
    message : str
        What is wrong and what to do.
    """

    row: int | None
    file: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.row}" if self.row is not None else "manifest"
        return f"{where}" + (f" ({self.file})" if self.file else "") + f": {self.message}"


def validate_manifest(path: str | os.PathLike, *, decode: bool = True, progress: bool = False) -> list[Problem]:
    """Every problem of a manifest CSV, in row order.

    Checks: the file is a CSV with an ``image`` column; labels are 1, 0 or empty; image ids are not
    empty, have no spaces around them and are not repeated, compared in their one spelling
    (:func:`~thyro.data.manifest.normalise_image_path`: ``./a.png`` is ``a.png``; rows repeated
    exactly are said so); each image exists, is within the pixel limit and (with
    ``decode``) decodes; ``roi`` is valid JSON within the image; patient ids are not empty and each
    patient sits in one group; images with the same ``content_hash`` (when the column exists) share
    a group.

    Parameters
    ----------
    path : path-like
        The manifest CSV.
    decode : bool, default True
        Decode every image (finds truncated and corrupt files; slower than an existence check).
    progress : bool, default False
        Report progress through :mod:`thyro.progress`.

    Returns
    -------
    list of Problem
        Empty when the manifest is sound.  What a reader found odd in a file it still read (a DICOM
        file's notes) is not a problem: it is logged as a warning naming the line.
    """
    path = Path(path)
    df, problem = _read(path)
    if problem is not None:
        return [problem]
    rows = df.to_dict("records")
    usable, id_problems = _image_id_problems(rows)
    problems = _label_problems(df) + id_problems + _patient_problems(df) + _hash_problems(df)
    rois, roi_problems = _rois(df)
    problems += roi_problems
    problems += _file_problems(rows, usable, rois, path.parent, decode=decode, progress=progress)
    problems.sort(key=lambda p: (p.row or 0))
    return problems


def _read(path: Path) -> tuple[pd.DataFrame | None, Problem | None]:
    """The manifest as text cells, or the one problem that stops its check."""
    if not path.is_file():
        return None, Problem(None, str(path), "manifest not found")
    try:
        df = read_csv(path, unescape=False, dtype=str, keep_default_na=False)
        if WRITTEN_BY_THYRO in df.columns:  # as read_manifest reads it
            unescape_frame(df)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        return None, Problem(None, str(path), f"not a readable CSV ({exc})")
    if "image" not in df.columns:
        return None, Problem(None, str(path), f"no 'image' column; a manifest needs {', '.join(REQUIRED_COLUMNS)} "
                                              f"(found: {', '.join(map(str, df.columns))})")
    if df.empty:
        return None, Problem(None, str(path), "no rows: the manifest names no images (one row per image under the "
                                              "header; `thyro data import` writes one)")
    return df, None


def _label_problems(df: pd.DataFrame) -> list[Problem]:
    if "label" not in df.columns:
        return []
    _, bad = normalise_labels(df["label"])
    return [Problem(i + 2, df["image"].iat[i], f"label {value!r} is not 1 (malignant), 0 (benign) or empty (unlabelled)")
            for i, value in bad]


def _image_id_problems(rows: list[dict]) -> tuple[dict[int, str], list[Problem]]:
    """``(row -> the image path in its one spelling, problems)``: empty or padded paths, repeated ids."""
    problems: list[Problem] = []
    first_row: dict[str, int] = {}
    usable: dict[int, str] = {}  # row -> the image path in its one spelling (normalise_image_path)
    for i, rec in enumerate(rows):
        raw = rec["image"]
        bad = image_path_problem(raw)
        if bad is not None:
            problems.append(Problem(i + 2, raw.strip() or None, bad))
            continue
        image = normalise_image_path(raw)
        usable[i] = image
        if image in first_row:
            j = first_row[image]
            same = rows[j] == rec
            spelled = "" if rows[j]["image"] == raw else f" ({rows[j]['image']!r} and {raw!r} are one file)"
            problems.append(Problem(i + 2, raw, f"repeats line {j + 2} exactly" if same
                                    else f"same image id as line {j + 2}{spelled}; each image may appear once"))
        else:
            first_row[image] = i
    return usable, problems


def _patient_problems(df: pd.DataFrame) -> list[Problem]:
    """Empty patient ids, and patients spread over several groups."""
    if "patient_id" not in df.columns:
        return []
    problems = [Problem(i + 2, df["image"].iat[i], "empty patient_id")
                for i, pid in enumerate(df["patient_id"]) if not pid.strip()]
    if "group" in df.columns:
        groups_of = df.groupby("patient_id")["group"].agg(lambda s: sorted(set(s)))
        for pid, groups in groups_of.items():
            if pid.strip() and len(groups) > 1:
                i = int(df.index[df["patient_id"] == pid][0])
                problems.append(Problem(i + 2, df["image"].iat[i],
                                        f"patient {pid!r} is in {len(groups)} groups ({', '.join(groups[:5])}); "
                                        f"all images of a patient must share one group"))
    return problems


def _hash_problems(df: pd.DataFrame) -> list[Problem]:
    """Images with the same ``content_hash`` in different groups (leakage)."""
    if "content_hash" not in df.columns or "group" not in df.columns:
        return []
    problems = []
    first_hash: dict[str, int] = {}
    for i, (h, g) in enumerate(zip(df["content_hash"], df["group"])):
        if not h.strip():
            continue
        j = first_hash.setdefault(h, i)
        if j != i and df["group"].iat[j] != g and df["image"].iat[j] != df["image"].iat[i]:
            problems.append(Problem(i + 2, df["image"].iat[i],
                                    f"same pixels as line {j + 2} ({df['image'].iat[j]}) but in group {g!r}, "
                                    f"not {df['group'].iat[j]!r} (leakage); re-import with `thyro data import csv`"))
    return problems


def _rois(df: pd.DataFrame) -> tuple[dict[int, dict], list[Problem]]:
    """``(row -> parsed roi, problems)`` of the ``roi`` column."""
    rois: dict[int, dict] = {}
    problems = []
    if "roi" in df.columns:
        for i, value in enumerate(df["roi"]):
            try:
                roi = parse_roi(value, where=f"line {i + 2}")
            except DataError as exc:
                msg = str(exc).split(": ", 1)[-1]
                problems.append(Problem(i + 2, df["image"].iat[i], f"bad roi: {msg}"))
                continue
            if roi is not None:
                rois[i] = roi
    return rois, problems


def _file_problems(rows: list[dict], usable: dict[int, str], rois: dict[int, dict], root: Path, *, decode: bool,
                   progress: bool) -> list[Problem]:
    """Each image: there, within the pixel limit, readable (decoded with ``decode``), its ROI inside it.
    What a reader found odd in a file it still read is logged as a warning, not a problem."""
    problems = []
    indices = range(len(rows))
    for i in (thyro.progress.track(indices, "checking images", unit="image") if progress else indices):
        if i not in usable:
            continue
        image = rows[i]["image"]
        file = root / usable[i]
        if not file.is_file():
            problems.append(Problem(i + 2, image, f"file not found (looked at {file})"))
            continue
        try:
            read = load_image(file, us_region=False) if decode else probe_image(file)
        except ImageReadError as exc:
            problems.append(Problem(i + 2, image, f"unreadable: {str(exc).split(': ', 1)[-1]}"))
            continue
        for text in read.notes:
            log.warning(f"line {i + 2}: {text}")
        if i in rois:
            x0, y0, x1, y1 = roi_bbox(rois[i])
            w, h = read.size
            t = ROI_TOLERANCE
            if x0 < -t or y0 < -t or x1 > w + t or y1 > h + t:
                problems.append(Problem(i + 2, image, f"roi ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside "
                                                      f"the {w}x{h} image"))
    return problems
