"""What ``thyro predict``, ``thyro explain`` and the server score: inputs collected from files, folders,
DICOM and manifests (:func:`collect_inputs`), multi-frame files unrolled (:func:`frame_items`), and one input
preprocessed exactly as in training (:func:`prepare_item`).  See :mod:`thyro.use.predict` for the frame
policies and the output.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from thyro.data.readers import DICOM_SUFFIXES as _DICOM
from thyro.data.readers import IMAGE_SUFFIXES as _SUFFIXES
from thyro.data.readers import is_dicom
from thyro.errors import DataError, ThyroError

#: File name endings picked up in folders: the readers' one list (``thyro.data.readers.IMAGE_SUFFIXES``), here
#: split into DICOM's and the others'; extensionless files are taken when they are DICOM.
IMAGE_SUFFIXES = set(_SUFFIXES) - set(_DICOM)
DICOM_SUFFIXES = set(_DICOM)
MIN_SIDE = 16
#: How multi-frame files are scored (see :mod:`thyro.use.predict`).
FRAME_POLICIES = ("first", "all", "mean")


@dataclass
class InputItem:
    """One image to score: its path, the name written in the output, and an optional ROI."""

    path: Path
    name: str
    roi: dict | None = None
    error: str | None = None  # set when the input itself is already known to be bad
    frame: int | None = None  # None: frame 0, with a warning when the file has more
    extra: dict = field(default_factory=dict)  # a manifest row's other columns (label, patient_id, group, ...)




# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def _wanted(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in _SUFFIXES:
        return True
    return suffix == "" and is_dicom(path)


def parse_roi_arg(value: str | None) -> dict | None:
    """``--roi``: a JSON object (``{"box": [x0, y0, x1, y1]}`` or ``{"polygons": ...}``) or a path to a JSON file."""
    from thyro.data.manifest import MAX_ROI_CHARS, parse_roi

    if value is None or not str(value).strip():
        return None
    text = str(value)
    where = "--roi"
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise DataError(f"--roi {text[:200]!r}: neither a JSON object nor an existing JSON file.")
        where = f"--roi {path}"
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read(MAX_ROI_CHARS + 1)  # parse_roi refuses anything longer
        except OSError as exc:
            raise DataError(f"{where}: cannot read the file ({exc.strerror or exc}).") from None
    return parse_roi(text, where=where)


def collect_inputs(inputs: Iterable[str | os.PathLike], roi: dict | None = None) -> list[InputItem]:
    """Expand files, folders (recursively, sorted), DICOM files and manifest CSVs into items.

    A path that does not exist becomes an item carrying an error (so it gets an error row).
    ``roi`` applies to every item that has none of its own (a manifest's ``roi`` column wins).
    """
    from thyro.data.manifest import parse_roi, read_manifest

    items: list[InputItem] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and _wanted(p))
            items.extend(InputItem(p, str(p), roi) for p in found)
        elif path.is_file() and path.suffix.lower() == ".csv":
            manifest = read_manifest(path, check_labels=False)
            cells = manifest.df["roi"].tolist() if "roi" in manifest.df.columns else [None] * len(manifest)
            # what the manifest says of each image travels into the output (labels, patients, groups, ...)
            others = [c for c in manifest.df.columns if c not in ("image", "roi")]
            raw = manifest.df[others].astype(object).where(manifest.df[others].notna(), "")
            for i, (image, cell, extra) in enumerate(zip(manifest.ids, cells, raw.to_dict("records"))):
                try:  # a bad roi cell fails its own row only
                    r = parse_roi(cell, where=f"{path} row {i + 2}")
                except DataError as exc:
                    items.append(InputItem(manifest.abspath(image), image, None, error=str(exc), extra=extra))
                    continue
                items.append(InputItem(manifest.abspath(image), image, r if r is not None else roi, extra=extra))
        elif path.is_file():
            items.append(InputItem(path, str(path), roi))
        else:
            items.append(InputItem(path, str(path), roi, error="file or folder not found"))
    return items


# ----------------------------------------------------------------------------------------------
# Preprocessing one file
# ----------------------------------------------------------------------------------------------

def image_info(path: Path):
    """:class:`~thyro.data.readers.ImageInfo` from the file header, without decoding (None when unreadable:
    the reader then gives the real error)."""
    from thyro.data.readers import ImageReadError, probe_image

    try:
        return probe_image(path, check_limit=False)
    except ImageReadError:
        return None


def check_frames(frames: str) -> str:
    if frames not in FRAME_POLICIES:
        raise ThyroError(f"--frames {frames!r}: choose one of {', '.join(FRAME_POLICIES)}.")
    return frames


def frame_items(items: Iterable[InputItem], frames: str = "first") -> Iterator[tuple[int, InputItem, int]]:
    """``(file index, item, number of frames scored)`` for each unit to score, files in order.

    ``first`` yields each item as it is (frame 0); ``all`` and ``mean`` yield one item per frame of a
    multi-frame file (``all`` names it ``NAME#frame=K``), read from the header only.
    """
    check_frames(frames)
    for i, item in enumerate(items):
        info = None if (frames == "first" or item.error) else image_info(item.path)
        n = info.frames if info is not None else 1
        if n <= 1:
            yield i, item, 1
            continue
        for k in range(n):
            yield i, replace(item, frame=k, name=f"{item.name}#frame={k}" if frames == "all" else item.name), n


@dataclass
class Prepared:
    """One input, preprocessed: the model's input, a warning, and how it was made.

    ``frame`` (the file's full frame as RGB, for showing a heatmap on it) is filled only when asked.
    """

    image: np.ndarray
    warning: str
    geometry: object  # thyro.data.preprocess.Geometry
    frame: np.ndarray | None = None


def prepare_item(preprocessor, item: InputItem, size: int, *, frame: bool = False) -> Prepared:
    """Preprocess one input and keep its geometry (and, with ``frame``, its full frame in RGB).

    Raises :class:`DataError` (or the reader's error) on an unreadable file.
    """
    from thyro.data.preprocess import read_image

    if item.error:
        raise DataError(f"{item.path}: {item.error}")
    warnings: list[str] = []
    info = image_info(item.path)
    if info is not None:
        w, h = info.size
        if min(w, h) < MIN_SIDE:
            raise DataError(f"{item.path}: image is {w} x {h} px, under the minimum of {MIN_SIDE} px on a side.")
        if item.roi is None and (w < size or h < size):
            warnings.append(f"image {w} x {h} px is smaller than the model input {size} x {size}: upscaled")
        if item.frame is None and info.frames > 1:
            warnings.append(f"{info.frames} frames: frame 0 scored (--frames all or mean scores every frame)")
    if not frame:
        img, geometry = preprocessor.process_file(item.path, roi=item.roi, frame=item.frame or 0)
        full = None
    else:
        loaded = read_image(item.path, frame=item.frame or 0, color=True)
        img, geometry = preprocessor.process(loaded.pixels, roi=item.roi, origin=loaded.origin,
                                             region=loaded.region, frame_size=loaded.size)
        geometry = geometry.with_notes(loaded.notes)
        full = loaded.pixels
        if loaded.region:
            from thyro.data.readers import load_image

            full = load_image(item.path, frame=item.frame or 0, color=True, us_region=False).pixels
    img = np.asarray(img)
    if img.shape != (size, size) or img.dtype != np.uint8:
        raise DataError(f"{item.path}: preprocessing gave {img.dtype} {img.shape}, expected uint8 ({size}, {size}).")
    if geometry.warning:  # the scan area was not understood: the whole frame was used
        warnings.append(geometry.warning)
    return Prepared(img, "; ".join(warnings), geometry, full)


def prepare(preprocessor, item: InputItem, size: int) -> tuple[np.ndarray, str]:
    """Preprocessed ``(S, S)`` uint8 image and a warning ('' when none).

    Raises :class:`DataError` (or the reader's error) on an unreadable file.
    """
    prepared = prepare_item(preprocessor, item, size)
    return prepared.image, prepared.warning


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())

