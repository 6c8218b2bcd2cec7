"""What every importer shares: grouping duplicates, writing the manifest and its report, the result."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from thyro.data.dedup import NEAR_THRESHOLD, DuplicateReport, assign_groups
from thyro.data.manifest import LabelMeaning, Manifest, manifest_from_records, write_manifest
from thyro.errors import DataError, Problems
from thyro.fileio import escape_frame, escaped_note, write_json

MANIFEST_NAME = "manifest.csv"
REPORT_NAME = "import_report.json"


@dataclass
class ImportResult:
    """Outcome of an import.

    Attributes
    ----------
    manifest_path : Path
        The manifest written (image paths relative to its folder; the images are not copied).
    manifest : Manifest
        The manifest itself (groups merged, hash columns added).
    duplicates : DuplicateReport
    warnings : list of str
        Problems that did not stop the import (e.g. an outline that could not be read, so the image
        has no ROI), one line each, naming the file.
    notes : list of str
        Informational lines (files or folders ignored, cells written with a leading ``'``, ...).
    escaped : list of (row, column)
        Cells of the manifest that start with ``=``, ``+``, ``-``, ``@``, tab or CR and were written with a
        leading ``'`` (rows count from 0, None is the header; :func:`thyro.fileio.escape_cell`).  Their values
        are unchanged: thyro reads them back without the ``'``.
    title : str
        What was imported, in a few words (``DDTI import (347 cases)``), for a summary's heading.
    """

    manifest_path: Path
    manifest: Manifest
    duplicates: DuplicateReport
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    escaped: list[tuple[int | None, str]] = field(default_factory=list)
    title: str = "import"

    @property
    def counts(self) -> dict:
        """Images, labelled/unlabelled, patients, groups and images per class."""
        df = self.manifest.df
        labels = df["label"]
        return {
            "images": len(df),
            "labelled": int(labels.notna().sum()),
            "unlabelled": int(labels.isna().sum()),
            "patients": int(df["patient_id"].nunique()),
            "groups": int(df["group"].nunique()),
            "malignant": int((labels == 1).sum()),
            "benign": int((labels == 0).sum()),
        }

    def to_dict(self) -> dict:
        return {"manifest": str(self.manifest_path), "counts": self.counts, "duplicates": self.duplicates.to_dict(),
                "warnings": self.warnings, "notes": self.notes,
                "escaped_cells": [{"row": None if r is None else r + 2, "column": c} for r, c in self.escaped]}


def refuse_overwrite(out_dir: str | os.PathLike, manifest_name: str = MANIFEST_NAME, *, force: bool = False) -> None:
    """Stop before any work when the manifest an import would write already exists (unless ``force``).

    A manifest is often edited by hand after an import (patients, labels, ROIs); writing over it
    silently would lose that work.
    """
    target = Path(out_dir) / manifest_name
    if target.exists() and not force:
        raise DataError(f"{target} already exists (an earlier import, perhaps edited by hand); nothing was written. "
                        "Import into another out_dir, or pass force=True to replace it.")


def relative_image_path(path: Path, out_dir: Path) -> str:
    """Path of an image as a manifest in ``out_dir`` names it, with forward slashes: relative to that folder
    as both are spelled (symbolic links are not followed, so images reached through a linked folder stay
    reached through it, and the manifest keeps working where the link does), or absolute when the two share
    no folder but the file system's root (a relative path would only climb to the root and down again)."""
    image, folder = os.path.abspath(path), os.path.abspath(out_dir)
    try:
        common = os.path.commonpath([image, folder])
    except ValueError:  # another drive
        return Path(image).as_posix()
    if os.path.dirname(common) == common:
        return Path(image).as_posix()
    return Path(os.path.relpath(image, folder)).as_posix()


def finish_import(records: list[dict], out_dir: Path, *, title: str, warnings: list[str], notes: list[str],
                  near_threshold: int = NEAR_THRESHOLD, manifest_name: str = MANIFEST_NAME,
                  extra_columns: list[str] | None = None, label_source: str | None = None,
                  label_definition: str | None = None) -> ImportResult:
    """Hash and group the rows (progress reported through :mod:`thyro.progress`), write the manifest and report
    atomically; returns what was imported (the command line prints its counts).

    ``label_source``/``label_definition`` (how the labels were obtained; see
    :class:`thyro.data.manifest.LabelMeaning`) are written into every row when given.

    Raises :class:`~thyro.errors.Problems` listing every unreadable image (nothing is written then).
    """
    out_dir = Path(out_dir)
    if label_source is not None or label_definition is not None:
        meaning = LabelMeaning(label_source or "unknown", label_definition or "")  # checks the vocabulary
        for rec in records:
            rec["label_source"], rec["label_definition"] = meaning.source, meaning.definition
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = manifest_from_records(records, root=out_dir)
    for col in extra_columns or []:
        if col not in manifest.df.columns:
            manifest.df[col] = ""
    manifest, report = assign_groups(manifest, near_threshold=near_threshold, progress=True)
    path = write_manifest(manifest.df, out_dir / manifest_name, root=manifest.root, announce=False)
    manifest.path = path.resolve()
    escaped = escape_frame(manifest.df)[1]
    if escaped:
        notes = [*notes, escaped_note(path, escaped)]
    result = ImportResult(manifest_path=path, manifest=manifest, duplicates=report, warnings=warnings, notes=notes,
                          escaped=escaped, title=title)
    report_path = out_dir / (REPORT_NAME if manifest_name == MANIFEST_NAME else f"{Path(manifest_name).stem}.report.json")
    write_json(report_path, result.to_dict())
    return result


def raise_if(problems: list[str], title: str) -> None:
    if problems:
        raise Problems(title, problems)

