"""Image readers: every supported file becomes a ``uint8`` array (one gray channel, or RGB on request).

Formats
-------
PNG, JPEG, BMP, TIFF (and anything else Pillow opens) through Pillow; DICOM through pydicom.
A file is taken for DICOM when it carries the ``DICM`` marker after its 128-byte preamble, whatever
its name, or when it is named ``*.dcm``/``*.dicom`` (files written without a preamble).

Decisions
---------
* **EXIF orientation** is applied (``ImageOps.exif_transpose``): the pixels come out the way an image
  viewer shows them, which is the orientation a person annotates in.  Ultrasound scanners do not
  write the tag, so their exports are unchanged.
* **Transparency** (RGBA, LA, palette with transparency) is composited onto black, the background of
  an ultrasound image.
* **More than 8 bits** (16-bit PNG/TIFF, float TIFF, 12/16-bit DICOM): DICOM applies the modality
  LUT (rescale slope/intercept) and then its VOI LUT or first window (centre/width) when present;
  otherwise, and for every non-DICOM image, the image's own minimum..maximum is stretched linearly to
  0..255.
* **Gray**: colour becomes gray with the ITU-R 601-2 luma weights (Pillow's ``convert("L")``).
  MONOCHROME1 DICOM is inverted so that bright always means echogenic.
* **Ultrasound region**: for DICOM with a Sequence of Ultrasound Regions (0018,6011) the image is
  cropped (``us_region=True``) to the bounding box of the regions holding 2-D tissue images
  (Region Spatial Format 1), or of all regions when none says so.  ``LoadedImage.origin`` gives the
  crop's offset so that ROIs drawn on the full frame can be shifted.
* **Pixel limit**: a frame of more than :func:`max_pixels` pixels (default :data:`DEFAULT_MAX_PIXELS`)
  is refused from its header, before anything is decoded, by :func:`load_image` and
  :func:`probe_image` alike, so every command (import, validate, inspect, cache, predict, explain,
  serve) refuses the same files with the same message.  A small file can declare a huge image (a
  "decompression bomb": a 13000 x 13000 grey PNG compresses to 200 KB); decoding and preprocessing
  take about 20 bytes per pixel at their peak (frame detection's connected components), so the
  default keeps one image under about 0.6 GB.  Change it with ``thyro --max-pixels N ...``, the
  ``THYRO_MAX_PIXELS`` environment variable or :func:`set_max_pixels`.  A multi-frame file is
  decoded one frame at a time, so the limit is per frame.
* **DICOM sanity before decoding** (:func:`check_dicom`): the Image Pixel module must agree with itself
  and with the pixel data, or the file is refused with one line naming it and the mismatch, before a
  pixel is decoded (a file that claims 1 bit per pixel over 8-bit data would otherwise decode to a
  0/1 image and be scored).  :func:`load_image` and :func:`probe_image` both run it, so validate,
  import, inspect, predict, explain and serve refuse the same files with the same words.
* **pydicom's warnings** are never printed: each read collects them (:func:`dicom_notes`) and they
  come back as ``LoadedImage.notes`` / ``ImageInfo.notes``, lines naming the file that thyro shows
  in its own outputs (a prediction's warning, preprocess.csv).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from thyro.errors import DataError

# thyro's pixel limit (check_pixels) replaces Pillow's warning with an error that names the file.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# pydicom sends every warning to its logger too (pydicom.misc.warn_and_log): thyro collects them there, per
# read and per thread (dicom_notes), and keeps the raw copy off the terminal.
warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
#: Largest frame read, in pixels (width x height): larger than any ultrasound scanner's output (at most a
#: few megapixels) and than a 24-megapixel photograph of a screen; see the module docstring.
DEFAULT_MAX_PIXELS = 25_000_000
MAX_PIXELS_ENV = "THYRO_MAX_PIXELS"
_limits: dict[str, int | None] = {"max_pixels": None}
#: File name endings the folder importer picks up (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp") + DICOM_SUFFIXES


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
    """

    pixels: np.ndarray
    origin: tuple[int, int] = (0, 0)
    source_mode: str = ""
    size: tuple[int, int] = (0, 0)
    region: bool = False
    notes: tuple[str, ...] = ()


def max_pixels() -> int:
    """The largest frame (width x height, in pixels) the readers decode.

    :func:`set_max_pixels` wins, then the ``THYRO_MAX_PIXELS`` environment variable (so that worker
    processes inherit the command line's setting), then :data:`DEFAULT_MAX_PIXELS`.
    """
    if _limits["max_pixels"] is not None:
        return int(_limits["max_pixels"])
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if raw:
        try:
            value = int(float(raw))
        except ValueError:
            raise DataError(f"{MAX_PIXELS_ENV}={raw!r}: expected a number of pixels, e.g. 25000000.") from None
        if value < 1:
            raise DataError(f"{MAX_PIXELS_ENV}={raw!r}: the pixel limit must be at least 1.")
        return value
    return DEFAULT_MAX_PIXELS


def set_max_pixels(value: int | None, *, environ: bool = True) -> None:
    """Set the pixel limit for this process (and, with ``environ``, for the worker processes it starts);
    None returns to the environment variable or the default."""
    if value is not None and int(value) < 1:
        raise DataError(f"--max-pixels {value}: the pixel limit must be at least 1.")
    _limits["max_pixels"] = None if value is None else int(value)
    if environ:
        if value is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = str(int(value))


def check_pixels(path: str | os.PathLike, width: int, height: int, what: str = "image") -> None:
    """Raise :class:`ImageReadError` naming ``path`` when a ``width`` x ``height`` frame is over the limit."""
    limit = max_pixels()
    if int(width) * int(height) > limit:
        raise ImageReadError(
            f"{path}: {what} is {int(width)} x {int(height)} = {int(width) * int(height):,} pixels, over the limit "
            f"of {limit:,} pixels (a decompression bomb or an unusually large image); nothing was decoded. "
            f"Raise the limit with `thyro --max-pixels N ...` or {MAX_PIXELS_ENV}=N if you trust the file.")


def _bomb_error(path: Path, exc: BaseException) -> ImageReadError:
    """Pillow's own decompression-bomb guard (images over twice ``Image.MAX_IMAGE_PIXELS``)."""
    return ImageReadError(f"{path}: image is over the pixel limit ({exc}); nothing was decoded. Raise the limit "
                          f"with `thyro --max-pixels N ...` or {MAX_PIXELS_ENV}=N if you trust the file.")


def has_dicom_marker(head: bytes) -> bool:
    """True when a file's first bytes carry the DICOM ``DICM`` marker after the 128-byte preamble."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def is_dicom(path: str | os.PathLike) -> bool:
    """True when ``path`` has the DICOM ``DICM`` marker at byte 128 or a DICOM file name ending."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return has_dicom_marker(head) or path.suffix.lower() in DICOM_SUFFIXES


def load_image(path: str | os.PathLike, *, frame: int = 0, color: bool = False, us_region: bool = True) -> LoadedImage:
    """Read an image file as ``uint8``.

    Parameters
    ----------
    path : path-like
        PNG, JPEG, BMP, TIFF, ... or DICOM (detected by content).
    frame : int, default 0
        Frame of a multi-frame DICOM (or animated/multi-page Pillow image) to read.
    color : bool, default False
        Return ``(H, W, 3)`` RGB instead of ``(H, W)`` gray.  Gray sources are repeated to 3 channels.
    us_region : bool, default True
        Crop DICOM to its ultrasound region (0018,6011) when the file has one.

    Returns
    -------
    LoadedImage
        With ``notes``: what pydicom found odd in a DICOM file it still read (one line each, naming the file).

    Raises
    ------
    ImageReadError
        Missing, truncated or corrupt file, unsupported format, DICOM without pixel data, frame out
        of range, a DICOM header that disagrees with itself or with its pixel data (:func:`check_dicom`).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found.")
    if frame < 0:
        raise ImageReadError(f"{path}: frame must be >= 0, got {frame}.")
    region, notes = False, []
    if is_dicom(path):
        with dicom_notes(path) as notes:
            arr, origin, mode, size, region = _read_dicom(path, frame, us_region)
    else:
        arr, mode = _read_pillow(path, frame, gray=not color)
        origin, size = (0, 0), (arr.shape[1], arr.shape[0])
    arr = to_rgb(arr) if color else to_gray(arr)
    return LoadedImage(pixels=np.ascontiguousarray(arr), origin=origin, source_mode=mode, size=size, region=region,
                       notes=tuple(notes))


def read_gray(path: str | os.PathLike, frame: int = 0) -> np.ndarray:
    """Gray ``uint8`` pixels ``(H, W)`` of an image (DICOM cropped to its ultrasound region)."""
    return load_image(path, frame=frame).pixels


# ---------------------------------------------------------------------------------------------
# colour helpers

def to_gray(arr: np.ndarray) -> np.ndarray:
    """``uint8`` gray from gray or RGB (ITU-R 601-2 luma, computed by Pillow's ``convert("L")``)."""
    if arr.ndim == 2:
        return arr
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB").convert("L"))


def to_rgb(arr: np.ndarray) -> np.ndarray:
    """``uint8`` RGB ``(H, W, 3)`` from gray or RGB."""
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    return arr[..., :3]


def stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Linear map of the array's own minimum..maximum to 0..255 (constant images become 0)."""
    a = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _composite_on_black(arr: np.ndarray) -> np.ndarray:
    """``(H, W, 2|4)`` with alpha last -> gray/RGB premultiplied onto black."""
    alpha = arr[..., -1:].astype(np.uint32)
    colour = arr[..., :-1].astype(np.uint32)
    out = ((colour * alpha + 127) // 255).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


# ---------------------------------------------------------------------------------------------
# Pillow

def _read_pillow(path: Path, frame: int, gray: bool = False) -> tuple[np.ndarray, str]:
    try:
        with Image.open(path) as im:
            check_pixels(path, *im.size)  # from the header: nothing is decoded yet
            n_frames = getattr(im, "n_frames", 1)
            if frame >= n_frames:
                raise ImageReadError(f"{path}: frame {frame} requested but the image has {n_frames} frame(s) "
                                     f"(frames count from 0).")
            if frame:
                im.seek(frame)
                check_pixels(path, *im.size, what=f"frame {frame}")
            im.load()
            mode = im.mode
            if frame == 0 and im.getexif().get(0x0112, 1) != 1:
                im = ImageOps.exif_transpose(im)
            if gray and im.mode == "RGB":
                # the same luma as to_gray, converted before the RGB array exists (a third of the memory)
                return np.asarray(im.convert("L")), mode
            return _pil_to_array(im, path), mode
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image format Pillow or pydicom can read "
                             f"(supported: PNG, JPEG, BMP, TIFF, DICOM, ...).") from None
    except Image.DecompressionBombError as exc:
        raise _bomb_error(path, exc) from None
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to decode this image.") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file can make a decoder raise almost anything
        raise ImageReadError(f"{path}: corrupt or truncated image ({type(exc).__name__}: {exc}).") from None


#: Rows copied at a time out of a large decoded RGB image (see :func:`_rgb_array`).
_STRIP_PIXELS = 1 << 20


def _rgb_array(im: Image.Image) -> np.ndarray:
    """An RGB Pillow image as a ``(H, W, 3)`` array, copied in strips when it is large.

    ``np.asarray(im)`` goes through ``im.tobytes()``, so a large image is held three times at once
    (Pillow's 4-byte pixels, the bytes, the array); strips of about a megapixel hold it about twice.
    """
    w, h = im.size
    if w * h <= 4 * _STRIP_PIXELS:
        return np.asarray(im)
    out = np.empty((h, w, 3), dtype=np.uint8)
    step = max(1, _STRIP_PIXELS // max(w, 1))
    for y in range(0, h, step):
        out[y:y + step] = np.asarray(im.crop((0, y, w, min(h, y + step))))
    return out


def _pil_to_array(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode == "L":
        return np.asarray(im)
    if mode in ("LA", "La"):
        return _composite_on_black(np.asarray(im.convert("LA")))
    if mode in ("RGBA", "RGBa"):
        return _composite_on_black(np.asarray(im.convert("RGBA")))
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return stretch_to_uint8(np.asarray(im))
    if mode == "RGB":
        return _rgb_array(im)
    try:  # CMYK, YCbCr, LAB, HSV, ...
        return np.asarray(im.convert("RGB"))
    except (ValueError, OSError) as exc:
        raise ImageReadError(f"{path}: image mode {mode!r} cannot be converted to RGB ({exc}).") from None


# ---------------------------------------------------------------------------------------------
# DICOM

def _read_dicom(path: Path, frame: int, us_region: bool) -> tuple[np.ndarray, tuple[int, int], str, tuple[int, int],
                                                                 bool]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ImageReadError(f"{path}: not a readable DICOM file ({exc}).") from None
    except Exception as exc:  # noqa: BLE001 - pydicom's parser on a damaged file
        raise ImageReadError(f"{path}: damaged DICOM file ({type(exc).__name__}: {exc}).") from None
    if len(ds) == 0:
        raise ImageReadError(f"{path}: not a DICOM file (no DICOM elements found).")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if getattr(ds, "preamble", None) is None and "SOPClassUID" not in ds:
            raise ImageReadError(f"{path}: not a DICOM file (no DICM marker, no SOP class, no pixel data).")
        raise ImageReadError(f"{path}: DICOM file has no pixel data (7FE0,0010); it may be a report, "
                             f"presentation state or other non-image object.")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    n_frames = _dicom_frames(ds)
    if frame >= n_frames:
        raise ImageReadError(f"{path}: frame {frame} requested but the DICOM file has {n_frames} frame(s) "
                             f"(frames count from 0).")
    check_pixels(path, *_dicom_size(ds, path))  # from the header: one frame is decoded at a time
    check_dicom(ds, path)  # before a pixel is decoded
    arr = _dicom_pixels(ds, path, frame if n_frames > 1 else None)
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4) and n_frames == 1:
        arr = arr[0]
    out = _dicom_to_uint8(arr, ds, photometric, path)
    height, width = out.shape[:2]
    origin, region = (0, 0), False
    if us_region:
        box = ultrasound_region(ds, width, height)
        if box is not None:
            x0, y0, x1, y1 = box
            out = out[y0:y1, x0:x1]
            origin, region = (x0, y0), True
    return out, origin, f"DICOM {photometric}", (width, height), region


# ---------------------------------------------------------------------------------------------
# DICOM: pydicom's warnings, and the header checked against itself and the pixel data

_notes = threading.local()


class _NoteHandler(logging.Handler):
    """Hands pydicom's log records to the read in progress on the same thread (:func:`dicom_notes`)."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = getattr(_notes, "sink", None)
        if sink is not None and record.levelno >= logging.WARNING:
            with contextlib.suppress(Exception):
                sink.append(" ".join(record.getMessage().split()))


_pydicom_log = logging.getLogger("pydicom")
if not any(isinstance(h, _NoteHandler) for h in _pydicom_log.handlers):
    _pydicom_log.addHandler(_NoteHandler())


@contextlib.contextmanager
def dicom_notes(path: str | os.PathLike):
    """Collect what pydicom warns about while this thread reads ``path``; yields the list, which fills
    with thyro's own lines (``PATH: DICOM: ...``, each once) as the block runs.

    Every pydicom warning is also a log record (``pydicom.misc.warn_and_log``): it is taken from the
    ``pydicom`` logger on the reading thread, so concurrent reads (the web app's) each get their own,
    with no change to the process's warning filters while reading.
    """
    raw: list[str] = []
    out: list[str] = []
    outer = getattr(_notes, "sink", None)
    _notes.sink = raw
    try:
        yield out
    finally:
        _notes.sink = outer
        for text in dict.fromkeys(raw):
            out.append(f"{path}: DICOM: {text}" if text else f"{path}: DICOM: pydicom warned without a message")
        if outer is not None:
            outer.extend(raw)


#: Samples per pixel each Photometric Interpretation needs (DICOM PS3.3 C.7.6.3.1.2).
_PHOTOMETRIC_SAMPLES = {"MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3, "YBR_FULL": 3,
                        "YBR_FULL_422": 3, "YBR_PARTIAL_420": 3, "YBR_PARTIAL_422": 3, "YBR_ICT": 3, "YBR_RCT": 3,
                        "HSV": 3, "ARGB": 4, "CMYK": 4}
#: Transfer syntaxes whose codestreams start with a JPEG SOI and carry a SOF (or JPEG-LS SOF55) header.
_JPEG_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                  "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_RLE_LOSSLESS = "1.2.840.10008.1.2.5"
_PIXEL_TAGS = ((0x7FE00010, "PixelData"), (0x7FE00008, "FloatPixelData"), (0x7FE00009, "DoubleFloatPixelData"))


def _int_attr(ds, name: str, default: int | None = None) -> int | None:
    value = ds.get(name, default)
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else default
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not f.is_integer():
        raise ValueError(f"{name} {value!r} is not a whole number")
    return int(f)


def _pixel_element(ds):
    """``(keyword, length in bytes or None when undefined, value or None when not read yet)`` of the
    pixel data element, without reading a deferred value (None when the dataset has none)."""
    for tag, keyword in _PIXEL_TAGS:
        if tag not in ds:
            continue
        elem = ds.get_item(tag, keep_deferred=True)
        value = getattr(elem, "value", None)
        length = getattr(elem, "length", None)
        if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
            value = None  # converted to something else: the length below still holds
        if length is None:
            length = len(value) if value is not None else None
        if length == 0xFFFFFFFF:
            length = None
        return keyword, length, value
    return None


def check_dicom(ds, path: str | os.PathLike) -> None:
    """Refuse a DICOM image whose header disagrees with itself or with its pixel data, before decoding.

    Checked (DICOM PS3.3 C.7.6.3, PS3.5 8 and A.4): Rows and Columns positive; SamplesPerPixel as the
    Photometric Interpretation needs; BitsAllocated 1 or a multiple of 8, BitsStored at most that,
    HighBit = BitsStored - 1, PixelRepresentation 0 or 1; NumberOfFrames positive.  Native (not
    compressed) pixel data must hold exactly Rows x Columns x NumberOfFrames x SamplesPerPixel x
    BitsAllocated bits (plus the one padding byte to an even length); encapsulated pixel data must be
    encapsulated, hold at least one fragment per frame, have a Basic (or Extended) Offset Table of one
    entry per frame when it has one, and a first frame whose JPEG header or RLE segment count agrees
    with the image's size and samples.

    Raises
    ------
    ImageReadError
        One line: the file, what disagrees with what, and that nothing was decoded.
    """
    problem = _dicom_problem(ds)
    if problem is not None:
        raise ImageReadError(f"{path}: inconsistent DICOM image: {problem}; refused before decoding (fix or "
                             "re-export the file).")


def _dicom_problem(ds) -> str | None:
    """What is inconsistent in a DICOM image's header and pixel data (see :func:`check_dicom`), or None."""
    element = _pixel_element(ds)
    if element is None:
        return None  # the reader says "no pixel data" itself
    keyword, length, value = element
    try:
        rows, cols = _int_attr(ds, "Rows"), _int_attr(ds, "Columns")
        samples = _int_attr(ds, "SamplesPerPixel", 1)
        allocated = _int_attr(ds, "BitsAllocated")
        stored = _int_attr(ds, "BitsStored", allocated)
        high = _int_attr(ds, "HighBit", None if stored is None else stored - 1)
        representation = _int_attr(ds, "PixelRepresentation", 0)
        frames = _int_attr(ds, "NumberOfFrames", 1)
    except ValueError as exc:
        return str(exc)
    if rows is None or cols is None or rows < 1 or cols < 1:
        return f"Rows {rows} x Columns {cols} is not an image size"
    if frames is None or frames < 1:
        return f"NumberOfFrames {frames} (at least 1)"
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    need = _PHOTOMETRIC_SAMPLES.get(photometric)
    if photometric and need is None:
        return f"PhotometricInterpretation {photometric!r} is not a DICOM value"
    if samples not in (1, 3, 4) or (need is not None and samples != need):
        want = f" ({photometric} needs {need})" if need is not None else " (1 for gray, 3 for colour)"
        return f"SamplesPerPixel {samples}{want}"
    if keyword == "PixelData":
        if allocated is None or not (allocated == 1 or (allocated % 8 == 0 and 8 <= allocated <= 64)):
            return f"BitsAllocated {allocated} (1 or a multiple of 8 up to 64)"
    else:
        want = 32 if keyword == "FloatPixelData" else 64
        if allocated != want:
            return f"BitsAllocated {allocated} with {keyword} ({want} expected)"
        stored = high = None  # not used by float pixel data
    if stored is not None and not 1 <= stored <= allocated:
        return f"BitsStored {stored} with BitsAllocated {allocated} (BitsStored must be 1 to {allocated})"
    if stored is not None and high != stored - 1:
        return f"HighBit {high} with BitsStored {stored} (HighBit must be {stored - 1})"
    if representation not in (0, 1):
        return f"PixelRepresentation {representation} (0 unsigned or 1 signed)"
    if photometric == "PALETTE COLOR" and allocated not in (8, 16):
        return f"BitsAllocated {allocated} with PALETTE COLOR (8 or 16)"
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    encapsulated = bool(getattr(syntax, "is_encapsulated", False)) and keyword == "PixelData"
    shape = f"{rows} rows x {cols} columns x {frames} frame(s) x {samples} sample(s)"
    if not encapsulated:
        if length is None:
            return (f"{keyword} is encapsulated (undefined length) but the transfer syntax "
                    f"{getattr(syntax, 'name', syntax) or 'native'} is not a compressed one")
        pixels = rows * cols * frames * samples
        if photometric == "YBR_FULL_422" and allocated >= 8:
            pixels = pixels // 3 * 2  # two chroma samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
        expected = (pixels * allocated + 7) // 8
        if length in (expected, expected + 1):
            return None
        fits = [b for b in (1, 8, 16, 32) if b != allocated and length in ((pixels * b + 7) // 8, (pixels * b + 7) // 8 + 1)]
        hint = f"; {length:,} bytes is what BitsAllocated {fits[0]} would need" if fits else ""
        return (f"{keyword} holds {length:,} bytes but {shape} at BitsAllocated {allocated} need "
                f"{expected:,}{hint}")
    return _encapsulated_problem(ds, value, rows, cols, frames, samples, allocated, str(syntax), shape)


def _encapsulated_problem(ds, value, rows: int, cols: int, frames: int, samples: int, allocated: int, syntax: str,
                          shape: str) -> str | None:
    from pydicom.encaps import parse_basic_offsets, parse_fragments

    if value is None:
        value = ds.PixelData  # encapsulated data has no defined length: pydicom has read it already
    if value[:4] != b"\xfe\xff\x00\xe0":
        return "the transfer syntax says the pixel data is compressed, but it is not encapsulated in items"
    try:
        offsets = parse_basic_offsets(value)
        start = 8 + 4 * len(offsets)
        n_fragments, positions = parse_fragments(value[start:])
    except (ValueError, Exception) as exc:  # noqa: BLE001 - struct errors on truncated data too
        return f"encapsulated pixel data cannot be parsed ({' '.join(str(exc).split())})"
    if n_fragments < 1:
        return "encapsulated pixel data holds no fragments"
    if n_fragments < frames:
        return f"NumberOfFrames {frames} but the encapsulated pixel data holds {n_fragments} fragment(s)"
    if offsets and len(offsets) != frames:
        return f"the Basic Offset Table lists {len(offsets)} frame(s) but NumberOfFrames is {frames}"
    if offsets and (offsets[0] != 0 or any(b <= a for a, b in zip(offsets, offsets[1:]))):
        return "the Basic Offset Table's offsets do not start at 0 and increase"
    if "ExtendedOffsetTable" in ds:
        ext = ds.get_item(0x7FE00001)
        n = len(getattr(ext, "value", b"") or b"") // 8
        if n != frames:
            return f"the Extended Offset Table lists {n} frame(s) but NumberOfFrames is {frames}"
    first = value[start + positions[0] + 8:start + positions[0] + 8 + 64 * 1024]
    if syntax in _JPEG_SYNTAXES:
        try:
            from pydicom.pixels.utils import _get_jpg_parameters

            info = _get_jpg_parameters(first)
        except Exception:  # noqa: BLE001 - a helper of pydicom's that may move: skip this check then
            info = None
        if info is not None and not info:
            return "the first frame is not a JPEG codestream (no SOI/SOF marker)"
        if info and (info.get("height"), info.get("width")) != (rows, cols) and info.get("height"):
            return f"the first frame's JPEG header says {info.get('height')} x {info.get('width')}, the DICOM " \
                   f"header {rows} x {cols}"
        if info and info.get("components") not in (None, samples):
            return f"the first frame's JPEG header has {info.get('components')} component(s), SamplesPerPixel is " \
                   f"{samples}"
    elif syntax == _RLE_LOSSLESS and len(first) >= 4:
        segments = int.from_bytes(first[:4], "little")
        need = samples * ((allocated + 7) // 8)
        if segments != need:
            return f"the first frame's RLE header has {segments} segment(s); {shape} at BitsAllocated {allocated} " \
                   f"need {need}"
    return None


def _dicom_size(ds, path: Path) -> tuple[int, int]:
    """``(Columns, Rows)`` of a DICOM dataset."""
    try:
        return int(ds.Columns), int(ds.Rows)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageReadError(f"{path}: DICOM image without a usable Rows/Columns ({exc}).") from None


def _dicom_frames(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _dicom_pixels(ds, path: Path, index: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        # raw=False converts YBR_FULL / YBR_FULL_422 (native or JPEG) to RGB.
        return pixel_array(ds, index=index, raw=False)
    except (NotImplementedError, RuntimeError) as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", str(ts))
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data in transfer syntax {name!r} ({exc}). "
                             f"Install a decoder plugin (pylibjpeg, python-gdcm) or convert the file.") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many kinds of errors on damaged data
        raise ImageReadError(f"{path}: corrupt or truncated DICOM pixel data ({type(exc).__name__}: {exc}).") from None


def _dicom_to_uint8(arr: np.ndarray, ds, photometric: str, path: Path) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(arr, ds)
        except (ValueError, KeyError, AttributeError) as exc:
            raise ImageReadError(f"{path}: PALETTE COLOR DICOM without a usable colour table ({exc}).") from None
        if rgb.dtype == np.uint16:  # 16-bit palette entries span 0..65535
            return (rgb >> 8).astype(np.uint8)
        return rgb if rgb.dtype == np.uint8 else stretch_to_uint8(rgb)
    if arr.ndim == 3:  # RGB (YBR already converted by pydicom)
        if arr.shape[-1] == 4:
            arr = arr[..., :3]
        return arr if arr.dtype == np.uint8 else stretch_to_uint8(arr)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(f"{path}: unsupported DICOM photometric interpretation {photometric!r}.")
    bits = int(ds.get("BitsStored", 8) or 8)
    has_rescale = "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds
    has_voi = "VOILUTSequence" in ds or "WindowCenter" in ds
    if arr.dtype == np.uint8 and bits <= 8 and not has_rescale and not has_voi:
        out = arr
    else:
        values = apply_modality_lut(arr, ds) if has_rescale else arr.astype(np.float64)
        if "VOILUTSequence" in ds:
            values = apply_voi_lut(arr if not has_rescale else values, ds, prefer_lut=True)
            out = stretch_to_uint8(values)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            out = _window(values, ds.WindowCenter, ds.WindowWidth)
        else:
            out = stretch_to_uint8(values)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out.astype(np.uint8)


def _first(value) -> float:
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _window(values: np.ndarray, center, width) -> np.ndarray:
    """DICOM linear VOI window (PS3.3 C.11.2.1.2) mapped to 0..255."""
    c, w = _first(center), max(_first(width), 1.0)
    y = ((np.asarray(values, dtype=np.float64) - (c - 0.5)) / max(w - 1.0, 1.0) + 0.5) * 255.0
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def ultrasound_region(ds, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Crop box ``(x0, y0, x1, y1)`` (x1/y1 exclusive) from the Sequence of Ultrasound Regions.

    The union of the regions whose Region Spatial Format is 1 (2-D tissue image), or of all
    regions when none is; None when the file has no usable region.
    """
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        return None
    boxes, tissue = [], []
    for item in regions:
        try:
            box = (int(item.RegionLocationMinX0), int(item.RegionLocationMinY0),
                   int(item.RegionLocationMaxX1) + 1, int(item.RegionLocationMaxY1) + 1)
        except (AttributeError, TypeError, ValueError):
            continue
        x0, y0 = max(box[0], 0), max(box[1], 0)
        x1, y1 = min(box[2], width), min(box[3], height)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        boxes.append((x0, y0, x1, y1))
        if int(item.get("RegionSpatialFormat", 0) or 0) == 1:
            tissue.append((x0, y0, x1, y1))
    chosen = tissue or boxes
    if not chosen:
        return None
    xs0, ys0, xs1, ys1 = zip(*chosen)
    return min(xs0), min(ys0), max(xs1), max(ys1)


@dataclass
class ImageInfo:
    """What an image file holds, read from its header without decoding the pixels."""

    size: tuple[int, int]
    mode: str
    frames: int = 1
    format: str = ""
    notes: tuple[str, ...] = ()


def probe_image(path: str | os.PathLike, *, check_limit: bool = True) -> ImageInfo:
    """Size ``(width, height)``, mode, frame count and format of an image, from its header only.

    Parameters
    ----------
    check_limit : bool, default True
        Refuse a frame over :func:`max_pixels`, as :func:`load_image` would.

    A DICOM file's header is checked against its pixel data (:func:`check_dicom`) without reading
    native pixel data: its length is known from the element's header.

    Raises
    ------
    ImageReadError
        When the file is missing, its header cannot be read, a DICOM header disagrees with itself or
        with its pixel data, or (``check_limit``) it is over the limit.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found.")
    if is_dicom(path):
        import pydicom
        from pydicom.errors import InvalidDicomError

        with dicom_notes(path) as notes:
            try:
                # a native pixel data element larger than this is not read, only its length
                ds = pydicom.dcmread(path, defer_size=4096, force=True)
                size = (int(ds.Columns), int(ds.Rows))
            except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError) as exc:
                raise ImageReadError(f"{path}: not a readable DICOM image header ({exc}).") from None
            except Exception as exc:  # noqa: BLE001 - pydicom's parser on a damaged file
                raise ImageReadError(f"{path}: damaged DICOM header ({type(exc).__name__}: {exc}).") from None
            if check_limit:
                check_pixels(path, *size)
            check_dicom(ds, path)
            photometric = str(ds.get("PhotometricInterpretation", "")).strip()
            frames = _dicom_frames(ds)
        info = ImageInfo(size, f"DICOM {photometric}", frames, "DICOM", tuple(notes))
    else:
        try:
            with Image.open(path) as im:
                if check_limit:
                    check_pixels(path, *im.size)
                info = ImageInfo(im.size, im.mode, getattr(im, "n_frames", 1), im.format or "")
        except ImageReadError:
            raise
        except UnidentifiedImageError:
            raise ImageReadError(f"{path}: not an image format Pillow or pydicom can read.") from None
        except Image.DecompressionBombError as exc:
            raise _bomb_error(path, exc) from None
        except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, struct.error... from a damaged header
            raise ImageReadError(f"{path}: corrupt image header ({type(exc).__name__}: {exc}).") from None
    return info
