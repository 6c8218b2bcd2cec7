"""Every format Pillow opens (PNG, JPEG, BMP, TIFF, GIF, WebP, ...): EXIF orientation, transparency onto
black, more than 8 bits stretched to 0..255."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from thyro.data.readers._library_hooks import install as install_library_hooks
from thyro.data.readers.base import RAISE_LIMIT, ImageInfo, ImageReadError, LoadedImage, Reader, check_pixels
from thyro.data.readers.colour import as_requested, composite_on_black, stretch_to_uint8
from thyro.data.readers.source import Source

#: Rows copied at a time out of a large decoded RGB image (see :func:`_rgb_array`).
_STRIP_PIXELS = 1 << 20


class PillowReader(Reader):
    """Images Pillow opens, recognised by Pillow from their content: the last reader asked, it accepts what
    no other reader took (and says so when Pillow cannot open it either).  ``suffixes`` are the formats
    folder walks pick up."""

    suffixes = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")

    def accepts(self, head: bytes, name: str) -> bool:
        return True

    def probe(self, source: Source, *, check_limit: bool = True) -> ImageInfo:
        name = source.name
        install_library_hooks()
        try:
            with Image.open(source.readable()) as im:
                if check_limit:
                    check_pixels(name, *im.size)
                return ImageInfo(im.size, im.mode, getattr(im, "n_frames", 1), im.format or "")
        except ImageReadError:
            raise
        except UnidentifiedImageError:
            raise ImageReadError(f"{name}: not an image format Pillow or pydicom can read.") from None
        except Image.DecompressionBombError as exc:
            raise _bomb_error(name, exc) from None
        except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, struct.error... from a damaged header
            raise ImageReadError(f"{name}: corrupt image header ({type(exc).__name__}: {exc}).") from None

    def load(self, source: Source, *, frame: int = 0, color: bool = False, us_region: bool = True) -> LoadedImage:
        arr, mode = _read(source, frame, gray=not color)
        return LoadedImage(pixels=as_requested(arr, color), origin=(0, 0), source_mode=mode,
                           size=(arr.shape[1], arr.shape[0]))


def _bomb_error(name: str, exc: BaseException) -> ImageReadError:
    """Pillow's own decompression-bomb guard (images over twice ``Image.MAX_IMAGE_PIXELS``)."""
    return ImageReadError(f"{name}: image is over the pixel limit ({exc}); nothing was decoded. {RAISE_LIMIT}")


def _read(source: Source, frame: int, gray: bool = False) -> tuple[np.ndarray, str]:
    """``(pixels, Pillow mode)`` of one frame; RGB is converted to gray before its array exists when ``gray``."""
    name = source.name
    install_library_hooks()
    try:
        with Image.open(source.readable()) as im:
            check_pixels(name, *im.size)  # from the header: nothing is decoded yet
            n_frames = getattr(im, "n_frames", 1)
            if frame >= n_frames:
                raise ImageReadError(f"{name}: frame {frame} requested but the image has {n_frames} frame(s) "
                                     f"(frames count from 0).")
            if frame:
                im.seek(frame)
                check_pixels(name, *im.size, what=f"frame {frame}")
            im.load()
            mode = im.mode
            if frame == 0 and im.getexif().get(0x0112, 1) != 1:
                im = ImageOps.exif_transpose(im)
            if gray and im.mode == "RGB":
                # the same luma as to_gray, converted before the RGB array exists (a third of the memory)
                return np.asarray(im.convert("L")), mode
            return _pil_to_array(im, name), mode
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{name}: not an image format Pillow or pydicom can read "
                             f"(supported: PNG, JPEG, BMP, TIFF, DICOM, ...).") from None
    except Image.DecompressionBombError as exc:
        raise _bomb_error(name, exc) from None
    except MemoryError:
        raise ImageReadError(f"{name}: not enough memory to decode this image.") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file can make a decoder raise almost anything
        raise ImageReadError(f"{name}: corrupt or truncated image ({type(exc).__name__}: {exc}).") from None


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


def _pil_to_array(im: Image.Image, name: str) -> np.ndarray:
    """A decoded Pillow image as ``uint8`` gray or RGB (palette expanded, alpha onto black, wide values
    stretched)."""
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode == "L":
        return np.asarray(im)
    if mode in ("LA", "La"):
        return composite_on_black(np.asarray(im.convert("LA")))
    if mode in ("RGBA", "RGBa"):
        return composite_on_black(np.asarray(im.convert("RGBA")))
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return stretch_to_uint8(np.asarray(im))
    if mode == "RGB":
        return _rgb_array(im)
    try:  # CMYK, YCbCr, LAB, HSV, ...
        return np.asarray(im.convert("RGB"))
    except (ValueError, OSError) as exc:
        raise ImageReadError(f"{name}: image mode {mode!r} cannot be converted to RGB ({exc}).") from None


__all__ = ["PillowReader"]
