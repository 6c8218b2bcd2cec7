"""Importer for one folder per class (``benign/``, ``malignant/`` or names mapped by the user).

Rules
-----
* Every image below ``path`` is found (recursively).  Its class is given by the nearest folder
  above it whose name is a class name, matched case-insensitively: ``benign`` -> 0 and
  ``malignant`` -> 1 always, other names through ``classes`` (e.g. ``{"tumour": 1, "normal": 0}``).
  Images under no class folder are ignored and the folders are named in a note.
* ``patient_id`` is the file name without its extension: folder layouts carry no patient, and
  equal file names in different folders are often the same image (edit the manifest when you know
  the real patients; ``group`` follows ``patient_id`` and duplicates on the next import).
  ``patient_pattern`` (``--patient-pattern REGEX``) reads the patient from the name instead: the
  regular expression is searched in the file name (in the path below the root, ``site1/benign/P12_2.png``,
  when it contains a ``/``); its group named ``patient``, else its first group, else the whole match,
  is the patient id.  A file it does not match stops the import, naming every such file.
* An image found in two class folders (the UD-TN sample holds one, byte-identical, in ``Testdata``
  and ``Smalltest``) keeps **both rows**, so the manifest mirrors the source, but the copy gets
  ``duplicate_of`` = the first path and both share one ``group``: a split never separates them,
  and a training set can drop rows with ``duplicate_of`` set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from thyro.data.dedup import NEAR_THRESHOLD, natural_key
from thyro.data.importers._common import ImportResult, finish_import, refuse_overwrite, relative_image_path
from thyro.data.readers import IMAGE_SUFFIXES, is_dicom
from thyro.errors import ConfigError, DataError, Problems

DEFAULT_CLASSES = {"benign": 0, "malignant": 1}


def parse_classes(text: str | dict | None) -> dict[str, int | None]:
    """``"malignant=1,benign=0"`` -> ``{"malignant": 1, "benign": 0}`` (names lower-cased).

    A value may be 1, 0 or empty (``"unknown="``: imported unlabelled).
    """
    if text is None or text == "":
        return {}
    items = text.items() if isinstance(text, dict) else [
        part.split("=", 1) if "=" in part else (part, "?") for part in str(text).split(",") if part.strip()]
    out: dict[str, int | None] = {}
    for name, value in items:
        name, value = str(name).strip().lower(), str(value).strip() if value is not None else ""
        if not name:
            raise ConfigError(f"classes: empty folder name in {text!r}; write e.g. 'malignant=1,benign=0'")
        if value in ("1", "0"):
            out[name] = int(value)
        elif value == "":
            out[name] = None
        else:
            raise ConfigError(f"classes: {name!r} maps to {value!r}; use 1 (malignant), 0 (benign) or nothing "
                              f"(unlabelled), e.g. 'malignant=1,benign=0'")
    return out


def patient_reader(pattern: str | None):
    """A function ``(path below the root) -> patient id`` for ``patient_pattern`` (module docstring), or the
    file name without its extension when ``pattern`` is None; it returns None for a name it does not match."""
    if not pattern:
        return lambda rel: Path(rel).stem
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"patient_pattern {pattern!r}: not a regular expression ({exc}).") from None
    on_path = "/" in pattern
    group = "patient" if "patient" in regex.groupindex else (1 if regex.groups else 0)

    def read(rel: str) -> str | None:
        m = regex.search(rel if on_path else Path(rel).name)
        value = m.group(group) if m else None
        return value.strip() if value and value.strip() else None

    return read


def import_folders(path: str | os.PathLike, out_dir: str | os.PathLike, *, classes: str | dict | None = None,
                   near_threshold: int = NEAR_THRESHOLD, force: bool = False, label_source: str | None = None,
                   label_definition: str | None = None, patient_pattern: str | None = None) -> ImportResult:
    """Import class folders into ``out_dir/manifest.csv`` (images referenced, not copied).

    Parameters
    ----------
    path : path-like
        Root folder; class folders may sit at any depth below it.
    out_dir : path-like
        Where ``manifest.csv`` and ``import_report.json`` are written.
    classes : str or dict, optional
        Extra folder-name -> label mappings (``"tumour=1,normal=0"``); benign/malignant are built in
        and may be overridden.
    near_threshold : int
        pHash Hamming threshold for near duplicates.
    force : bool
        Replace an existing ``out_dir/manifest.csv`` (refused otherwise).
    patient_pattern : str, optional
        Regular expression that reads the patient id from each file name (module docstring).

    Raises
    ------
    DataError
        The folder is missing or holds no images, or no class folder, or the manifest exists already;
        :class:`~thyro.errors.Problems` listing every image that cannot be decoded, or every file
        ``patient_pattern`` does not match.
    """
    root = Path(path)
    patient_of = patient_reader(patient_pattern)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found.")
    refuse_overwrite(out_dir, force=force)
    mapping = {**DEFAULT_CLASSES, **parse_classes(classes)}
    files = sorted((p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: natural_key(p.relative_to(root).as_posix()))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES or (not p.suffix and is_dicom(p))]
    if not images:
        raise DataError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} and DICOM files, "
                        f"recursively).")
    records, ignored, unmatched = _records(images, root, Path(out_dir), mapping, patient_of)
    if not records:
        folders = sorted({p.parent.relative_to(root).as_posix() for p in images})
        raise DataError(f"{root}: no class folder found among {', '.join(folders[:20])}; class folders are named "
                        f"{', '.join(sorted(mapping))} (case-insensitive); map others with "
                        f"classes='NAME=1,NAME=0' (--classes).")
    if unmatched:
        where = "path below the folder" if "/" in str(patient_pattern) else "file name"
        raise Problems(f"patient_pattern {patient_pattern!r} (--patient-pattern) does not match the {where} of these "
                       f"images (or its patient group is empty); fix the pattern (e.g. '(?P<patient>[^_]+)_') or the "
                       f"names",
                       unmatched[:50] + ([f"... and {len(unmatched) - 50} more"] if len(unmatched) > 50 else []))
    notes = _notes(ignored, len(files) - len(images), patient_pattern)
    return finish_import(records, Path(out_dir), title=f"folder import ({root.name})", warnings=[], notes=notes,
                         near_threshold=near_threshold, label_source=label_source,
                         label_definition=label_definition)


def _records(images: list[Path], root: Path, out_dir: Path, mapping: dict[str, int | None], patient_of
             ) -> tuple[list[dict], dict[str, int], list[str]]:
    """``(manifest rows, images ignored per folder, images whose patient the pattern missed)``: each image's
    label from the nearest class folder above it."""
    records: list[dict] = []
    ignored: dict[str, int] = {}
    unmatched: list[str] = []
    for image in images:
        rel = image.relative_to(root).as_posix()
        parent = next((p for p in image.relative_to(root).parents if p.name and p.name.lower() in mapping), None)
        if parent is None:
            folder = image.parent.relative_to(root).as_posix()
            ignored[folder] = ignored.get(folder, 0) + 1
            continue
        patient = patient_of(rel)
        if patient is None:
            unmatched.append(str(image))
        records.append({"image": relative_image_path(image, out_dir), "label": mapping[parent.name.lower()],
                        "patient_id": patient, "group": patient, "class_folder": parent.as_posix()})
    return records, ignored, unmatched


def _notes(ignored: dict[str, int], non_images: int, patient_pattern: str | None) -> list[str]:
    notes = [f"ignored {n} image(s) in {folder!r} (not under a class folder; map it with classes, --classes)"
             for folder, n in sorted(ignored.items())]
    if non_images:
        notes.append(f"{non_images} non-image file(s) ignored")
    if patient_pattern:
        notes.append(f"patient_id read from the file names with patient_pattern {patient_pattern!r} "
                     f"(--patient-pattern)")
    else:
        notes.append("patient_id is the file name without extension (patient_pattern, --patient-pattern REGEX, reads "
                     "it from the names; or edit the manifest if you know the patients)")
    return notes
