"""The one way an input becomes the model's input: read, checked and preprocessed exactly as in training.

:func:`prepare` gives a :class:`Prepared` image or a :class:`Failure`, never an exception for a bad input.
The policy, the same for every driver (``thyro predict``, ``thyro.load(...).predict``, ``thyro explain``,
the audit, the web app):

* an input problem, :class:`thyro.errors.ThyroError` (unreadable, corrupt or truncated file, not an image,
  too small, over the pixel limit, an inconsistent DICOM header, a bad ROI, a file not found) or an
  :class:`OSError` reading it (permission denied), is a :class:`Failure` whose text names the input;
* any other exception is a bug in thyro or a library: it is raised, never reported as an unreadable image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thyro.data.preprocess import Geometry, Preprocessor, read_image
from thyro.data.readers import LoadedImage, load_image
from thyro.data.roi import parse_roi
from thyro.errors import DataError, ThyroError
from thyro.use.scoring.items import MIN_SIDE, InputItem, image_info
from thyro.use.scoring.pixels import as_pixels, check_pixel_limit, is_pixels

#: The exceptions that are a problem of the input (a :class:`Failure`); anything else is raised.
INPUT_ERRORS = (ThyroError, OSError)


@dataclass
class Prepared:
    """One input, preprocessed: the model's input, a warning, and how it was made.

    Attributes
    ----------
    image : ndarray of uint8, shape (S, S)
        The model's input.
    warning : str
        What to know about the image ('' when nothing): upscaled, frames not scored, the scan area not
        understood, what the reader found odd in the file.
    geometry : thyro.data.preprocess.Geometry
        Where the model's input lies in the original image.
    frame : ndarray of uint8 or None
        The file's full frame (RGB for a file), to draw a heatmap on; filled only when asked.
    name : str
        The input's name in the outputs.
    """

    image: np.ndarray
    warning: str
    geometry: Geometry
    frame: np.ndarray | None = None
    name: str = ""


@dataclass(frozen=True)
class Failure:
    """An input that could not be prepared: its name in the outputs, and why (one line that names it)."""

    name: str
    error: str


def error_text(exc: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def prepare(preprocessor: Preprocessor, item: InputItem, size: int, *, frame: bool = False) -> Prepared | Failure:
    """``item`` preprocessed to ``size`` x ``size`` (see :func:`prepare_item`), or a :class:`Failure` when the
    input is the problem.  Exceptions other than :data:`INPUT_ERRORS` are raised: they are bugs, not bad images.
    """
    try:
        return prepare_item(preprocessor, item, size, frame=frame)
    except INPUT_ERRORS as exc:
        return Failure(item.name, error_text(exc))


def prepare_item(preprocessor: Preprocessor, item: InputItem, size: int, *, frame: bool = False) -> Prepared:
    """Preprocess one input and keep its geometry (and, with ``frame``, its full frame for a heatmap).

    Raises
    ------
    ThyroError or OSError
        The input's problem, naming it (:func:`prepare` turns these into a :class:`Failure`).
    """
    if item.error:
        raise DataError(f"{item.where}: {item.error}")
    if item.roi is not None:
        parse_roi(item.roi, where=item.where)  # a bad ROI given in Python is refused as a manifest cell is
    if is_pixels(item.source):
        pixels = as_pixels(item.source, where=item.name)
        check_pixel_limit(pixels, item.name)
        h, w = pixels.shape[:2]
        warnings = _size_warnings(item, (w, h), 1, size)
        img, geometry = preprocessor.process(pixels, roi=item.roi)
        full = pixels if frame else None
    else:
        info = image_info(item)
        warnings = _size_warnings(item, info.size, info.frames, size) if info is not None else []
        img, geometry, full = _process_file(preprocessor, item, frame)
    img = np.asarray(img)
    if img.shape != (size, size) or img.dtype != np.uint8:
        raise DataError(f"{item.where}: preprocessing gave {img.dtype} {img.shape}, expected uint8 ({size}, {size}).")
    if geometry.warning:  # the scan area was not understood (the whole frame was used), the reader's notes
        warnings.append(geometry.warning)
    return Prepared(img, "; ".join(warnings), geometry, full, item.name)


def _size_warnings(item: InputItem, size: tuple[int, int], frames: int, model_size: int) -> list[str]:
    """Refuse an image under :data:`MIN_SIDE`; warn of upscaling and of frames left unscored."""
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise DataError(f"{item.where}: image is {w} x {h} px, under the minimum of {MIN_SIDE} px on a side.")
    warnings = []
    if item.roi is None and (w < model_size or h < model_size):
        warnings.append(f"image {w} x {h} px is smaller than the model input {model_size} x {model_size}: upscaled")
    if item.frame is None and frames > 1:
        warnings.append(f"{frames} frames: frame 0 scored (the frames policy all or mean scores every frame)")
    return warnings


def _process_file(preprocessor: Preprocessor, item: InputItem,
                  frame: bool) -> tuple[np.ndarray, Geometry, np.ndarray | None]:
    """Read a file (or its bytes) and preprocess it; with ``frame``, read in colour and keep the full frame."""
    index = item.frame or 0
    if not frame:
        img, geometry = preprocessor.process_file(item.source, roi=item.roi, frame=index)
        return img, geometry, None
    loaded: LoadedImage = read_image(item.source, frame=index, color=True)
    img, geometry = preprocessor.process(loaded.pixels, roi=item.roi, origin=loaded.origin, region=loaded.region,
                                         frame_size=loaded.size)
    full = loaded.pixels
    if loaded.region:  # the reader cropped to the DICOM ultrasound region: the heatmap goes on the whole frame
        full = load_image(item.source, frame=index, color=True, us_region=False).pixels
    return img, geometry.with_notes(loaded.notes), full


__all__ = ["INPUT_ERRORS", "Failure", "Prepared", "error_text", "prepare", "prepare_item"]
