"""What every reader shares: the :class:`Reader` interface, what it returns, its error and the pixel limit."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from thyro.data.readers.source import Source
from thyro.errors import DataError
from thyro.settings import get_settings

#: How a message tells a user to raise the pixel limit, from the command line or from Python.
RAISE_LIMIT = ("Raise the limit with `thyro --max-pixels N ...`, THYRO_MAX_PIXELS=N or "
               "thyro.settings.set_settings(max_pixels=N) if you trust the file.")


class ImageReadError(DataError):
    """An image file that cannot be read; the message names the file and what is wrong."""


@dataclass
class LoadedImage:
    """Decoded pixels and where they sit in the file's full pixel grid.

    Attributes
    ----------
    pixels : np.ndarray
        ``uint8``, ``(H, W)`` gray or ``(H, W, 3)`` RGB.
    origin : tuple of int
        ``(x0, y0)`` of ``pixels[0, 0]`` in the original image (non-zero only after an ultrasound
        region crop).  An ROI point ``(x, y)`` of the original maps to ``(x - x0, y - y0)``.
    source_mode : str
        What the file held: a Pillow mode (``"RGB"``, ``"L"``, ``"I;16"``...) or
        ``"DICOM <PhotometricInterpretation>"``.
    size : tuple of int
        ``(width, height)`` of the full frame before any crop.
    region : bool
        True when ``pixels`` are the file's DICOM ultrasound region (0018,6011): the tissue image,
        as the scanner itself says (preprocessing then needs no scan-area detection).
    notes : tuple of str
        What the reader found odd in a file it still read (one line each, naming the file).
    """

    pixels: np.ndarray
    origin: tuple[int, int] = (0, 0)
    source_mode: str = ""
    size: tuple[int, int] = (0, 0)
    region: bool = False
    notes: tuple[str, ...] = ()


@dataclass
class ImageInfo:
    """What an image file holds, read from its header without decoding the pixels."""

    size: tuple[int, int]
    mode: str
    frames: int = 1
    format: str = ""
    notes: tuple[str, ...] = ()


class Reader(ABC):
    """One image format: recognise it, read its header, decode its pixels.

    A reader is stateless; :data:`thyro.data.readers.READERS` holds one instance of each, in the order
    they are asked (:func:`thyro.data.readers.reader_for`).

    Attributes
    ----------
    suffixes : tuple of str
        File name endings (lower case, with the dot) that folder walks pick up for this format.
    """

    suffixes: tuple[str, ...] = ()

    @abstractmethod
    def accepts(self, head: bytes, name: str) -> bool:
        """Whether this reader reads an image whose first bytes are ``head`` and whose name is ``name``."""

    @abstractmethod
    def probe(self, source: Source, *, check_limit: bool = True) -> ImageInfo:
        """Size, mode, frames and format from the header alone; with ``check_limit``, refuse a frame over
        the pixel limit (:func:`check_pixels`).  Raises :class:`ImageReadError` naming ``source.name``."""

    @abstractmethod
    def load(self, source: Source, *, frame: int = 0, color: bool = False, us_region: bool = True) -> LoadedImage:
        """Decode one frame as ``uint8`` (gray, or RGB with ``color``), refusing a frame over the pixel limit
        before decoding it.  Raises :class:`ImageReadError` naming ``source.name``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def max_pixels() -> int:
    """The largest frame (width x height, in pixels) the readers decode: ``thyro.settings``' ``max_pixels``."""
    return get_settings().max_pixels


def check_pixels(name: str, width: int, height: int, what: str = "image") -> None:
    """Raise :class:`ImageReadError` naming the image ``name`` when a ``width`` x ``height`` frame is over
    the pixel limit (:func:`max_pixels`)."""
    limit = max_pixels()
    if int(width) * int(height) > limit:
        raise ImageReadError(
            f"{name}: {what} is {int(width)} x {int(height)} = {int(width) * int(height):,} pixels, over the limit "
            f"of {limit:,} pixels (a decompression bomb or an unusually large image); nothing was decoded. "
            f"{RAISE_LIMIT}")


__all__ = ["RAISE_LIMIT", "ImageInfo", "ImageReadError", "LoadedImage", "Reader", "check_pixels", "max_pixels"]
