"""A DICOM image's header checked against itself and against its pixel data, before anything is decoded.

Pure functions of a pydicom dataset: :func:`dicom_problem` says what disagrees (or None), :func:`check_dicom`
refuses the file with one line naming it.  A file that claims 1 bit per pixel over 8-bit data would otherwise
decode to a 0/1 image and be scored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.encaps import parse_basic_offsets, parse_fragments

from thyro.data.readers.base import ImageReadError

#: Samples per pixel each Photometric Interpretation needs (DICOM PS3.3 C.7.6.3.1.2).
PHOTOMETRIC_SAMPLES = {"MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3, "YBR_FULL": 3,
                       "YBR_FULL_422": 3, "YBR_PARTIAL_420": 3, "YBR_PARTIAL_422": 3, "YBR_ICT": 3, "YBR_RCT": 3,
                       "HSV": 3, "ARGB": 4, "CMYK": 4}
#: Transfer syntaxes whose codestreams start with a JPEG SOI and carry a SOF (or JPEG-LS SOF55) header.
JPEG_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                 "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
_PIXEL_TAGS = ((0x7FE00010, "PixelData"), (0x7FE00008, "FloatPixelData"), (0x7FE00009, "DoubleFloatPixelData"))
#: How much of the first fragment is read for its codestream header.
_FIRST_FRAGMENT_BYTES = 64 * 1024


def check_dicom(ds, name) -> None:
    """Refuse a DICOM image whose header disagrees with itself or with its pixel data, before decoding.

    Checked (DICOM PS3.3 C.7.6.3, PS3.5 8 and A.4): Rows and Columns positive; SamplesPerPixel as the
    Photometric Interpretation needs; BitsAllocated 1 or a multiple of 8, BitsStored at most that,
    HighBit = BitsStored - 1, PixelRepresentation 0 or 1; NumberOfFrames positive.  Native (not
    compressed) pixel data must hold exactly Rows x Columns x NumberOfFrames x SamplesPerPixel x
    BitsAllocated bits (plus the one padding byte to an even length); encapsulated pixel data must be
    encapsulated, hold at least one fragment per frame, have a Basic (or Extended) Offset Table of one
    entry per frame when it has one, and a first frame whose JPEG header or RLE segment count agrees
    with the image's size and samples.

    Parameters
    ----------
    ds : pydicom.Dataset
        Read with or without its pixel data deferred.
    name : str or path-like
        The image, as messages name it.

    Raises
    ------
    ImageReadError
        One line: the file, what disagrees with what, and that nothing was decoded.
    """
    problem = dicom_problem(ds)
    if problem is not None:
        raise ImageReadError(f"{name}: inconsistent DICOM image: {problem}; refused before decoding (fix or "
                             "re-export the file).")


def dicom_problem(ds) -> str | None:
    """What is inconsistent in a DICOM image's header and pixel data (see :func:`check_dicom`), or None."""
    element = pixel_element(ds)
    if element is None:
        return None  # the reader says "no pixel data" itself
    keyword, length, value = element
    try:
        rows, cols = int_attr(ds, "Rows"), int_attr(ds, "Columns")
        samples = int_attr(ds, "SamplesPerPixel", 1)
        allocated = int_attr(ds, "BitsAllocated")
        stored = int_attr(ds, "BitsStored", allocated)
        high = int_attr(ds, "HighBit", None if stored is None else stored - 1)
        representation = int_attr(ds, "PixelRepresentation", 0)
        frames = int_attr(ds, "NumberOfFrames", 1)
    except ValueError as exc:
        return str(exc)
    if rows is None or cols is None or rows < 1 or cols < 1:
        return f"Rows {rows} x Columns {cols} is not an image size"
    if frames is None or frames < 1:
        return f"NumberOfFrames {frames} (at least 1)"
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    problem = _pixel_module_problem(keyword, photometric, samples, allocated, stored, high, representation)
    if problem is not None:
        return problem
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    encapsulated = bool(getattr(syntax, "is_encapsulated", False)) and keyword == "PixelData"
    shape = f"{rows} rows x {cols} columns x {frames} frame(s) x {samples} sample(s)"
    if not encapsulated:
        if length is None:
            return (f"{keyword} is encapsulated (undefined length) but the transfer syntax "
                    f"{getattr(syntax, 'name', syntax) or 'native'} is not a compressed one")
        return _native_length_problem(keyword, length, rows * cols * frames * samples, photometric, allocated, shape)
    if value is None:
        value = ds.PixelData  # encapsulated data has no defined length: pydicom has read it already
    return _encapsulated_problem(ds, value, rows, cols, frames, samples, allocated, str(syntax), shape)


def _pixel_module_problem(keyword: str, photometric: str, samples, allocated, stored, high,
                          representation) -> str | None:
    """What disagrees inside the Image Pixel module (samples, bits, representation), or None."""
    need = PHOTOMETRIC_SAMPLES.get(photometric)
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
    return None


def _native_length_problem(keyword: str, length: int, pixels: int, photometric: str, allocated: int,
                           shape: str) -> str | None:
    """Whether native pixel data holds the bytes its header promises (one padding byte allowed)."""
    if photometric == "YBR_FULL_422" and allocated >= 8:
        pixels = pixels // 3 * 2  # two chroma samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
    expected = (pixels * allocated + 7) // 8
    if length in (expected, expected + 1):
        return None
    fits = [b for b in (1, 8, 16, 32) if b != allocated and length in ((pixels * b + 7) // 8, (pixels * b + 7) // 8 + 1)]
    hint = f"; {length:,} bytes is what BitsAllocated {fits[0]} would need" if fits else ""
    return f"{keyword} holds {length:,} bytes but {shape} at BitsAllocated {allocated} need {expected:,}{hint}"


def _encapsulated_problem(ds, value: bytes, rows: int, cols: int, frames: int, samples: int, allocated: int,
                          syntax: str, shape: str) -> str | None:
    """Encapsulated pixel data: items, fragments and offset tables against the header, then the first frame."""
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
    first = value[start + positions[0] + 8:start + positions[0] + 8 + _FIRST_FRAGMENT_BYTES]
    if syntax in JPEG_SYNTAXES:
        return _jpeg_problem(first, rows, cols, samples)
    if syntax == RLE_LOSSLESS and len(first) >= 4:
        segments = int.from_bytes(first[:4], "little")
        need = samples * ((allocated + 7) // 8)
        if segments != need:
            return f"the first frame's RLE header has {segments} segment(s); {shape} at BitsAllocated {allocated} " \
                   f"need {need}"
    return None


def _jpeg_problem(first: bytes, rows: int, cols: int, samples: int) -> str | None:
    """The first frame's JPEG (or JPEG-LS) frame header against Rows, Columns and SamplesPerPixel."""
    header = jpeg_frame_header(first)
    if header is None:
        return "the first frame is not a JPEG codestream (no SOI/SOF marker)"
    if header.height and (header.height, header.width) != (rows, cols):
        return f"the first frame's JPEG header says {header.height} x {header.width}, the DICOM header {rows} x {cols}"
    if header.components != samples:
        return f"the first frame's JPEG header has {header.components} component(s), SamplesPerPixel is {samples}"
    return None


@dataclass(frozen=True)
class JpegFrameHeader:
    """What a JPEG (ISO/IEC 10918-1) or JPEG-LS (ISO/IEC 14495-1) frame header (SOFn / SOF55) says."""

    precision: int
    height: int  # 0: given later by a DNL marker
    width: int
    components: int


#: Start-of-frame markers: SOF0..SOF15 of JPEG (not DHT C4, JPG C8 or DAC CC) and SOF55 of JPEG-LS.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}


def jpeg_frame_header(data: bytes) -> JpegFrameHeader | None:
    """The frame header of a JPEG or JPEG-LS codestream: from SOI, marker segments are skipped by their
    lengths up to the first SOFn (or SOF55).  None when ``data`` does not start with SOI or ends before a
    complete frame header (and, for JPEG-LS, before its scan header).

    Hand-written because no public API reads it: Pillow opens baseline and progressive JPEG only (not the
    lossless JPEG or JPEG-LS that DICOM also carries), and pydicom's parser of it is private.  Eight bytes
    of a documented layout (ISO/IEC 10918-1 B.2.2) are all that is needed.
    """
    if data[:2] != b"\xff\xd8":
        return None
    offset = 2
    while True:
        if offset + 4 > len(data):
            return None
        marker = data[offset + 1] if data[offset] == 0xFF else None
        if marker in _SOF_MARKERS:
            break
        offset += struct.unpack(">H", data[offset + 2:offset + 4])[0] + 2
    # SOF: marker (2), length (2), precision (1), rows (2), columns (2), components (1), then 3 bytes each
    if offset + 10 > len(data):
        return None
    precision, height, width, components = struct.unpack(">BHHB", data[offset + 4:offset + 10])
    end = offset + 10 + 3 * components
    if components and end - 3 >= len(data):
        return None  # the component list is cut
    if marker == 0xF7 and not _has_scan_header(data, end):
        return None
    return JpegFrameHeader(precision, height, width, components)


def _has_scan_header(data: bytes, offset: int) -> bool:
    """Whether a complete SOS header follows ``offset`` (a JPEG-LS frame's interleave mode is read there)."""
    while data[offset:offset + 2] != b"\xff\xda":
        if offset + 4 > len(data):
            return False
        offset += struct.unpack(">H", data[offset + 2:offset + 4])[0] + 2
    if offset + 4 >= len(data):
        return False
    return offset + 6 + data[offset + 4] * 2 < len(data)


def int_attr(ds, name: str, default: int | None = None) -> int | None:
    """A whole-number attribute of ``ds`` (the first value of a multi-valued one); ``default`` when absent.
    Raises ValueError naming the attribute when its value is not a whole number."""
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


def pixel_element(ds):
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


__all__ = ["JPEG_SYNTAXES", "PHOTOMETRIC_SAMPLES", "RLE_LOSSLESS", "JpegFrameHeader", "check_dicom",
           "dicom_problem", "int_attr", "jpeg_frame_header", "pixel_element"]
