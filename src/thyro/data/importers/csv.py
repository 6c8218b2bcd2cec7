"""A CSV already in the manifest schema: validated, duplicates grouped, written beside the others.

The CSV can also be used as it is by every later stage (``read_manifest``); importing it adds what a
hand-made table usually lacks: the check of every row and file (:func:`thyro.data.validate.validate_manifest`),
the content and perceptual hashes, and ``group`` merged across duplicate images.
"""

from __future__ import annotations

import os
from pathlib import Path

from thyro.data.dedup import NEAR_THRESHOLD
from thyro.data.importers._common import ImportResult, finish_import, refuse_overwrite, relative_image_path
from thyro.data.manifest import normalise_image_path, read_manifest
from thyro.data.validate import validate_manifest
from thyro.errors import Problems


def import_target(path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """The manifest :func:`import_csv` writes: ``out_dir/manifest.csv``, or ``{stem}.grouped.csv`` beside the
    CSV when there is no ``out_dir`` (or when ``out_dir/manifest.csv`` is the CSV itself)."""
    path = Path(path)
    out = Path(out_dir) if out_dir is not None else path.parent
    name = "manifest.csv" if out_dir is not None else f"{path.stem}.grouped.csv"
    if (out / name).resolve() == path.resolve():
        name = f"{path.stem}.grouped.csv"
    return out / name


def import_csv(path: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
               near_threshold: int = NEAR_THRESHOLD, force: bool = False, label_source: str | None = None,
               label_definition: str | None = None) -> ImportResult:
    """Validate a manifest-schema CSV and write it, groups merged, to ``out_dir/manifest.csv``.

    Parameters
    ----------
    path : path-like
        CSV with at least an ``image`` column (paths relative to the CSV's folder); ``label``,
        ``patient_id``, ``group``, ``roi`` and any other columns are kept.
    out_dir : path-like, optional
        Output folder (image paths are rewritten relative to it).  Default: beside the CSV, as
        ``{stem}.grouped.csv``, so the input is never overwritten.
    force : bool
        Replace an existing output manifest (refused otherwise).

    Image paths are written in their one spelling (:func:`~thyro.data.manifest.normalise_image_path`:
    forward slashes, no ``./``), so ``./a.png`` and ``a.png`` are one image, and the validator
    refuses the second row.

    Raises
    ------
    Problems
        Every problem :func:`validate_manifest` finds (missing files, bad labels, repeated rows, ...).
    """
    path = Path(path)
    target = import_target(path, out_dir)
    out, name = target.parent, target.name
    refuse_overwrite(out, name, force=force)
    problems = validate_manifest(path)
    if problems:
        raise Problems(f"{path}: manifest has problems", [str(p) for p in problems])
    manifest = read_manifest(path)
    records = manifest.df.to_dict("records")
    source = Path(os.path.abspath(path)).parent  # as the user spells it: a linked folder stays linked
    for rec in records:  # image paths relative to the output folder, in their one spelling
        rec["image"] = relative_image_path(source / normalise_image_path(rec["image"]), out)
    return finish_import(records, out, title=f"CSV import ({path.name})", warnings=[], notes=[],
                         near_threshold=near_threshold, label_source=label_source,
                         label_definition=label_definition, manifest_name=name)
