"""The readers, in the order they are asked, and the one choice of a reader that every read goes through."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from thyro.data.readers.base import ImageInfo, ImageReadError, LoadedImage, Reader
from thyro.data.readers.dicom import DicomReader
from thyro.data.readers.pillow import PillowReader
from thyro.data.readers.source import ImageSource, Source

#: Every reader, asked in this order; the first that accepts an image reads it.  DICOM comes first (it is
#: recognised by its marker or its name); Pillow comes last and takes the rest.  A new format is one
#: :class:`~thyro.data.readers.base.Reader` subclass added here, before Pillow.
READERS: tuple[Reader, ...] = (DicomReader(), PillowReader())


def image_suffixes(readers: Iterable[Reader] | None = None) -> tuple[str, ...]:
    """The file name endings the ``readers`` (default :data:`READERS`) claim: lower case, each once, in the
    readers' order."""
    readers = READERS if readers is None else readers
    return tuple(dict.fromkeys(s.lower() for reader in readers for s in reader.suffixes))


#: File name endings folder walks pick up (import, predict, pretraining corpora): every reader's.
IMAGE_SUFFIXES = image_suffixes()


def reader_for(source: ImageSource | Source, name: str | None = None, *,
               readers: Iterable[Reader] | None = None) -> Reader:
    """The reader for an image: the first of ``readers`` (default :data:`READERS`) that accepts its first
    bytes and its name."""
    readers = tuple(READERS if readers is None else readers)
    src = Source.of(source, name)
    head = src.head()
    for reader in readers:
        if reader.accepts(head, src.name):
            return reader
    raise ImageReadError(f"{src.name}: no reader takes this file (readers: "
                         f"{', '.join(type(r).__name__ for r in readers)}).")


def _checked(source: ImageSource | Source, name: str | None) -> Source:
    src = Source.of(source, name)
    if not src.exists():
        raise ImageReadError(f"{src.name}: image file not found.")
    return src


def load_image(source: ImageSource | Source, *, frame: int = 0, color: bool = False, us_region: bool = True,
               name: str | None = None) -> LoadedImage:
    """Read an image as ``uint8``.

    Parameters
    ----------
    source : path-like, bytes or binary file object
        PNG, JPEG, BMP, TIFF, GIF, WebP, ... or DICOM (recognised by content, see :func:`reader_for`).
        Bytes and file objects are read in memory; a file object is read from its current position
        and left open.
    frame : int, default 0
        Frame of a multi-frame DICOM (or animated/multi-page Pillow image) to read.
    color : bool, default False
        Return ``(H, W, 3)`` RGB instead of ``(H, W)`` gray.  Gray sources are repeated to 3 channels.
    us_region : bool, default True
        Crop DICOM to its ultrasound region (0018,6011) when the file has one.
    name : str, optional
        What messages and notes call the image (default: the path; ``<bytes>`` or ``<stream>`` otherwise).

    Returns
    -------
    LoadedImage
        With ``notes``: what pydicom found odd in a DICOM file it still read (one line each, naming the file).

    Raises
    ------
    ImageReadError
        Missing, truncated or corrupt file, unsupported format, DICOM without pixel data, frame out
        of range, a frame over the pixel limit, a DICOM header that disagrees with itself or with its
        pixel data (:func:`~thyro.data.readers.dicom_checks.check_dicom`).
    """
    src = _checked(source, name)
    if frame < 0:
        raise ImageReadError(f"{src.name}: frame must be >= 0, got {frame}.")
    return reader_for(src).load(src, frame=frame, color=color, us_region=us_region)


def probe_image(source: ImageSource | Source, *, check_limit: bool = True, name: str | None = None) -> ImageInfo:
    """Size ``(width, height)``, mode, frame count and format of an image, from its header only.

    Parameters
    ----------
    source : path-like, bytes or binary file object
        As :func:`load_image` takes it.
    check_limit : bool, default True
        Refuse a frame over the pixel limit, as :func:`load_image` would.
    name : str, optional
        What messages call the image.

    A DICOM file's header is checked against its pixel data (:func:`~thyro.data.readers.dicom_checks.check_dicom`)
    without reading native pixel data: its length is known from the element's header.

    Raises
    ------
    ImageReadError
        When the file is missing, its header cannot be read, a DICOM header disagrees with itself or
        with its pixel data, or (``check_limit``) it is over the limit.
    """
    src = _checked(source, name)
    return reader_for(src).probe(src, check_limit=check_limit)


def read_gray(source: ImageSource | Source, frame: int = 0, *, name: str | None = None) -> np.ndarray:
    """Gray ``uint8`` pixels ``(H, W)`` of an image (DICOM cropped to its ultrasound region)."""
    return load_image(source, frame=frame, name=name).pixels


__all__ = ["IMAGE_SUFFIXES", "READERS", "image_suffixes", "load_image", "probe_image", "read_gray", "reader_for"]
