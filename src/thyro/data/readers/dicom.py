"""DICOM through pydicom: the modality and VOI LUTs, MONOCHROME1, colour, the ultrasound region, and what
pydicom warns about kept as notes naming the file.

pydicom is imported here at the top: nothing the command line loads for ``--help`` imports the readers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from thyro.data.readers._library_hooks import collect_pydicom_warnings
from thyro.data.readers.base import ImageInfo, ImageReadError, LoadedImage, Reader, check_pixels
from thyro.data.readers.colour import as_requested, stretch_to_uint8
from thyro.data.readers.dicom_checks import check_dicom
from thyro.data.readers.source import HEAD_BYTES, ImageSource, Source

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
#: A native pixel data element larger than this is not read by :meth:`DicomReader.probe`, only its length.
_PROBE_DEFER_BYTES = 4096


def has_dicom_marker(head: bytes) -> bool:
    """True when a file's first bytes carry the DICOM ``DICM`` marker after the 128-byte preamble."""
    return len(head) >= HEAD_BYTES and head[128:132] == b"DICM"


def is_dicom(source: ImageSource, name: str | None = None) -> bool:
    """True when an image has the DICOM ``DICM`` marker at byte 128 or a DICOM name ending
    (False for a file that cannot be opened)."""
    src = Source.of(source, name)
    try:
        with src.open() as fh:
            head = fh.read(HEAD_BYTES)
    except OSError:
        return False
    return has_dicom_marker(head) or Path(src.name).suffix.lower() in DICOM_SUFFIXES


@contextlib.contextmanager
def dicom_notes(name: str | os.PathLike) -> Iterator[list[str]]:
    """Collect what pydicom warns about while this thread reads the image ``name``; yields the list, which
    fills with thyro's own lines (``NAME: DICOM: ...``, each once) when the block ends.

    Every pydicom warning is also a log record (``pydicom.misc.warn_and_log``): it is taken from the
    ``pydicom`` logger on the reading thread, so concurrent reads (the web app's) each get their own,
    with no change to the process's warning filters while reading.
    """
    out: list[str] = []
    raw: list[str] = []
    try:
        with collect_pydicom_warnings() as raw:
            yield out
    finally:
        for text in dict.fromkeys(raw):
            out.append(f"{name}: DICOM: {text}" if text else f"{name}: DICOM: pydicom warned without a message")


class DicomReader(Reader):
    """DICOM files: recognised by the ``DICM`` marker after the 128-byte preamble, whatever their name, or by
    a ``.dcm``/``.dicom``/``.dic`` name (files written without a preamble)."""

    suffixes = DICOM_SUFFIXES

    def accepts(self, head: bytes, name: str) -> bool:
        return has_dicom_marker(head) or Path(name).suffix.lower() in self.suffixes

    def probe(self, source: Source, *, check_limit: bool = True) -> ImageInfo:
        """The header only; the pixel data's length is checked against it without reading native pixels."""
        name = source.name
        with dicom_notes(name) as notes:
            try:
                ds = pydicom.dcmread(source.readable(), defer_size=_PROBE_DEFER_BYTES, force=True)
                size = (int(ds.Columns), int(ds.Rows))
            except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError) as exc:
                raise ImageReadError(f"{name}: not a readable DICOM image header ({exc}).") from None
            except Exception as exc:  # noqa: BLE001 - pydicom's parser on a damaged file
                raise ImageReadError(f"{name}: damaged DICOM header ({type(exc).__name__}: {exc}).") from None
            if check_limit:
                check_pixels(name, *size)
            check_dicom(ds, name)
            photometric = str(ds.get("PhotometricInterpretation", "")).strip()
            frames = _frames(ds)
        return ImageInfo(size, f"DICOM {photometric}", frames, "DICOM", tuple(notes))

    def load(self, source: Source, *, frame: int = 0, color: bool = False, us_region: bool = True) -> LoadedImage:
        with dicom_notes(source.name) as notes:
            arr, origin, mode, size, region = _read(source, frame, us_region)
        return LoadedImage(pixels=as_requested(arr, color), origin=origin, source_mode=mode, size=size, region=region,
                           notes=tuple(notes))


def _read(source: Source, frame: int, us_region: bool) -> tuple[np.ndarray, tuple[int, int], str, tuple[int, int],
                                                               bool]:
    """``(pixels, origin, mode, full size, region)`` of one frame, the header checked before decoding."""
    ds = _dataset(source)
    name = source.name
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    n_frames = _frames(ds)
    if frame >= n_frames:
        raise ImageReadError(f"{name}: frame {frame} requested but the DICOM file has {n_frames} frame(s) "
                             f"(frames count from 0).")
    check_pixels(name, *_size(ds, name))  # from the header: one frame is decoded at a time
    check_dicom(ds, name)  # before a pixel is decoded
    arr = _pixels(ds, name, frame if n_frames > 1 else None)
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4) and n_frames == 1:
        arr = arr[0]
    out = _to_uint8(arr, ds, photometric, name)
    height, width = out.shape[:2]
    origin, region = (0, 0), False
    if us_region:
        box = ultrasound_region(ds, width, height)
        if box is not None:
            x0, y0, x1, y1 = box
            out = out[y0:y1, x0:x1]
            origin, region = (x0, y0), True
    return out, origin, f"DICOM {photometric}", (width, height), region


def _dataset(source: Source):
    """The whole dataset, refused unless it holds pixel data."""
    name = source.name
    try:
        ds = pydicom.dcmread(source.readable(), force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ImageReadError(f"{name}: not a readable DICOM file ({exc}).") from None
    except Exception as exc:  # noqa: BLE001 - pydicom's parser on a damaged file
        raise ImageReadError(f"{name}: damaged DICOM file ({type(exc).__name__}: {exc}).") from None
    if len(ds) == 0:
        raise ImageReadError(f"{name}: not a DICOM file (no DICOM elements found).")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if getattr(ds, "preamble", None) is None and "SOPClassUID" not in ds:
            raise ImageReadError(f"{name}: not a DICOM file (no DICM marker, no SOP class, no pixel data).")
        raise ImageReadError(f"{name}: DICOM file has no pixel data (7FE0,0010); it may be a report, "
                             f"presentation state or other non-image object.")
    return ds


def _size(ds, name: str) -> tuple[int, int]:
    """``(Columns, Rows)`` of a DICOM dataset."""
    try:
        return int(ds.Columns), int(ds.Rows)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageReadError(f"{name}: DICOM image without a usable Rows/Columns ({exc}).") from None


def _frames(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _pixels(ds, name: str, index: int | None) -> np.ndarray:
    try:
        # raw=False converts YBR_FULL / YBR_FULL_422 (native or JPEG) to RGB.
        return pydicom.pixels.pixel_array(ds, index=index, raw=False)
    except (NotImplementedError, RuntimeError) as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax = getattr(ts, "name", str(ts))
        raise ImageReadError(f"{name}: cannot decode DICOM pixel data in transfer syntax {syntax!r} ({exc}). "
                             f"Install a decoder plugin (pylibjpeg, python-gdcm) or convert the file.") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many kinds of errors on damaged data
        raise ImageReadError(f"{name}: corrupt or truncated DICOM pixel data ({type(exc).__name__}: {exc}).") from None


def _to_uint8(arr: np.ndarray, ds, photometric: str, name: str) -> np.ndarray:
    """Decoded values as ``uint8``: palette colour through its LUT, gray through the modality LUT and then the
    VOI LUT or the first window (else the image's own range stretched), MONOCHROME1 inverted."""
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(arr, ds)
        except (ValueError, KeyError, AttributeError) as exc:
            raise ImageReadError(f"{name}: PALETTE COLOR DICOM without a usable colour table ({exc}).") from None
        if rgb.dtype == np.uint16:  # 16-bit palette entries span 0..65535
            return (rgb >> 8).astype(np.uint8)
        return rgb if rgb.dtype == np.uint8 else stretch_to_uint8(rgb)
    if arr.ndim == 3:  # RGB (YBR already converted by pydicom)
        if arr.shape[-1] == 4:
            arr = arr[..., :3]
        return arr if arr.dtype == np.uint8 else stretch_to_uint8(arr)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(f"{name}: unsupported DICOM photometric interpretation {photometric!r}.")
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


__all__ = ["DICOM_SUFFIXES", "DicomReader", "dicom_notes", "has_dicom_marker", "is_dicom", "ultrasound_region"]
