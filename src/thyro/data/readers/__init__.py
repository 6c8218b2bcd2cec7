"""Image readers: every supported image becomes a ``uint8`` array (one gray channel, or RGB on request).

    from thyro.data.readers import load_image, probe_image

    load_image("scan.png").pixels                       # a file
    load_image(upload_bytes, name="scan.dcm")           # bytes in memory: nothing is written to disk
    probe_image(io.BytesIO(data), name="scan.dcm").size # a binary file object, header only

Formats
-------
One :class:`Reader` per format, asked in the order of :data:`READERS`; the first that accepts an image's
first bytes and name reads it (:func:`reader_for`), so :func:`load_image` and :func:`probe_image` make
the same choice.  :class:`DicomReader` (pydicom) takes a file with the ``DICM`` marker after its 128-byte
preamble, whatever its name, or named ``*.dcm``/``*.dicom``/``*.dic`` (files written without a preamble);
:class:`PillowReader` takes the rest (PNG, JPEG, BMP, TIFF, GIF, WebP and anything else Pillow opens).
:data:`IMAGE_SUFFIXES`, the file name endings folder walks pick up, is every reader's ``suffixes``.

**A new format is one class**: a :class:`Reader` subclass (``suffixes``, ``accepts``, ``probe``, ``load``)
added to :data:`READERS` in :mod:`thyro.data.readers.registry`, before Pillow; the suffix list, the
importers, predict and the web app pick it up from there.

Sources
-------
A path (its messages name the path), bytes or a binary file object (named by ``name=``), see
:class:`Source`.  Nothing is written to disk to read bytes.

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
* **Pixel limit**: a frame of more than ``thyro.settings.get_settings().max_pixels`` pixels (default
  25,000,000) is refused from its header, before anything is decoded, by :func:`load_image` and
  :func:`probe_image` alike, so every command (import, validate, inspect, cache, predict, explain,
  serve) refuses the same files with the same message.  A small file can declare a huge image (a
  "decompression bomb": a 13000 x 13000 grey PNG compresses to 200 KB); decoding and preprocessing
  take about 20 bytes per pixel at their peak (frame detection's connected components), so the
  default keeps one image under about 0.6 GB.  Change it with ``thyro.settings.set_settings(max_pixels=N)``
  (``thyro --max-pixels N ...`` or ``THYRO_MAX_PIXELS`` on the command line).  A multi-frame file is
  decoded one frame at a time, so the limit is per frame.
* **DICOM sanity before decoding** (:func:`check_dicom`): the Image Pixel module must agree with itself
  and with the pixel data, or the file is refused with one line naming it and the mismatch, before a
  pixel is decoded.  :func:`load_image` and :func:`probe_image` both run it, so validate, import,
  inspect, predict, explain and serve refuse the same files with the same words.
* **pydicom's warnings** are never printed: each read collects them (:func:`dicom_notes`) and they
  come back as ``LoadedImage.notes`` / ``ImageInfo.notes``, lines naming the file that thyro shows
  in its own outputs (a prediction's warning, preprocess.csv).  The process-wide part of this (a
  warning filter, a handler on pydicom's logger) is installed once, on the first read, by
  :mod:`thyro.data.readers._library_hooks`, the one place thyro changes other libraries' state.
"""

from thyro.data.readers.base import ImageInfo, ImageReadError, LoadedImage, Reader, check_pixels, max_pixels
from thyro.data.readers.colour import composite_on_black, stretch_to_uint8, to_gray, to_rgb
from thyro.data.readers.dicom import (
    DICOM_SUFFIXES,
    DicomReader,
    dicom_notes,
    has_dicom_marker,
    is_dicom,
    ultrasound_region,
)
from thyro.data.readers.dicom_checks import check_dicom
from thyro.data.readers.pillow import PillowReader
from thyro.data.readers.registry import (
    IMAGE_SUFFIXES,
    READERS,
    image_suffixes,
    load_image,
    probe_image,
    read_gray,
    reader_for,
)
from thyro.data.readers.source import ImageSource, Source
from thyro.settings import DEFAULT_MAX_PIXELS

__all__ = ["DEFAULT_MAX_PIXELS", "DICOM_SUFFIXES", "IMAGE_SUFFIXES", "READERS", "DicomReader", "ImageInfo",
           "ImageReadError", "ImageSource", "LoadedImage", "PillowReader", "Reader", "Source", "check_dicom",
           "check_pixels", "composite_on_black", "dicom_notes", "has_dicom_marker", "image_suffixes", "is_dicom",
           "load_image", "max_pixels", "probe_image", "read_gray", "reader_for", "stretch_to_uint8", "to_gray",
           "to_rgb", "ultrasound_region"]
