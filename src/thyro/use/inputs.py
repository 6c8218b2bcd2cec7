"""What ``thyro predict``, ``thyro explain`` and ``thyro.load(...).predict`` score: files, folders (recursive),
DICOM files and manifests expanded into :class:`~thyro.use.scoring.InputItem` values (:func:`collect_inputs`).

They are then prepared and scored by a :class:`thyro.use.scoring.Scorer`; the names it uses for one input
(``InputItem``, ``prepare_item``, ``Prepared``, ``image_info``, ``frame_items``, ``MIN_SIDE``) are
importable from here too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from thyro.data.manifest import Manifest, parse_roi, read_manifest
from thyro.data.readers import DICOM_SUFFIXES as _DICOM
from thyro.data.readers import IMAGE_SUFFIXES as _SUFFIXES
from thyro.data.readers import is_dicom
from thyro.errors import DataError
from thyro.use.scoring import (FRAME_POLICIES, MIN_SIDE, InputItem, Prepared, check_frames, frame_items, image_info,
                               prepare_item)

#: File name endings picked up in folders: the readers' one list (``thyro.data.readers.IMAGE_SUFFIXES``), here
#: split into DICOM's and the others'; extensionless files are taken when they are DICOM.
IMAGE_SUFFIXES = set(_SUFFIXES) - set(_DICOM)
DICOM_SUFFIXES = set(_DICOM)


def _wanted(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in _SUFFIXES:
        return True
    return suffix == "" and is_dicom(path)


def collect_inputs(inputs: Iterable[str | os.PathLike], roi: dict | None = None) -> list[InputItem]:
    """Expand files, folders (recursively, sorted), DICOM files and manifest CSVs into items.

    A path that does not exist becomes an item carrying an error (so it gets an error row).
    ``roi`` applies to every item that has none of its own (a manifest's ``roi`` column wins).
    """
    items: list[InputItem] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and _wanted(p))
            items.extend(InputItem(p, str(p), roi) for p in found)
        elif path.is_file() and path.suffix.lower() == ".csv":
            items.extend(manifest_items(read_manifest(path, check_labels=False), roi, where=path))
        elif path.is_file():
            items.append(InputItem(path, str(path), roi))
        else:
            items.append(InputItem(path, str(path), roi, error="file or folder not found"))
    return items


def manifest_items(manifest: Manifest, roi: dict | None = None, where: str | os.PathLike | None = None
                   ) -> list[InputItem]:
    """One item per manifest row, its ``roi`` cell parsed (a bad cell fails its own row only: the item carries
    the error, naming ``where`` (default the manifest's path) and the row) and its other columns (label,
    patient_id, group, ...) carried into the output; ``roi`` for rows without their own."""
    where = manifest.path if where is None else where
    df = manifest.df
    cells = df["roi"].tolist() if "roi" in df.columns else [None] * len(manifest)
    others = [c for c in df.columns if c not in ("image", "roi")]
    extras = df[others].astype(object).where(df[others].notna(), "").to_dict("records")
    items = []
    for i, (image, cell, extra) in enumerate(zip(manifest.ids, cells, extras)):
        try:
            own = parse_roi(cell, where=f"{where} row {i + 2}")
        except DataError as exc:
            items.append(InputItem(manifest.abspath(image), image, None, error=str(exc), extra=extra))
            continue
        items.append(InputItem(manifest.abspath(image), image, own if own is not None else roi, extra=extra))
    return items


__all__ = ["DICOM_SUFFIXES", "FRAME_POLICIES", "IMAGE_SUFFIXES", "MIN_SIDE", "InputItem", "Prepared", "check_frames",
           "collect_inputs", "frame_items", "image_info", "manifest_items", "prepare_item"]
