"""What preprocessing did to one image (:class:`Geometry`), the boxes it works with, and the square resize."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from thyro.errors import DataError

#: A box of pixels ``(x0, y0, x1, y1)``, ends exclusive.
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Geometry:
    """What :meth:`Preprocessor.process` did to one image, in numbers.

    Coordinates are pixels of the image handed to the preprocessor ("source"), with exclusive
    ends; ``origin`` says where that image sits in the file's full frame (non-zero after a DICOM
    ultrasound-region crop).  Output pixel ``(u, v)`` shows source pixel
    ``(crop_box[0] + (u - offset[0]) / scale[0], crop_box[1] + (v - offset[1]) / scale[1])``.

    Attributes
    ----------
    source_size : (width, height)
    frame_size : (width, height)
        Of the file's full frame.
    origin : (x, y)
    scan_box : (x0, y0, x1, y1)
        The scan area found (or the whole image).
    scan_method : str
        ``"layout"``, ``"whole-image"``, ``"dicom-region"`` or ``"off"`` (see :class:`ScanArea`).
    crop_box : (x0, y0, x1, y1)
        What was cut out and resized (the scan area, or the ROI crop inside it).
    scale : (sx, sy)
        Output pixels per source pixel.
    offset : (left, top)
        Padding before the resized crop in the output.
    resized : (width, height)
        Size of the resized crop inside the output.
    size : int
        Output side.
    marks_fraction : float
        Share of the crop's pixels inpainted as marks (0 when mark removal is off).
    warning : str
        Why the whole frame was used, when unsure, and what the reader found odd in the file (a DICOM
        file's header, :attr:`thyro.data.readers.LoadedImage.notes`); empty otherwise.
    """

    source_size: tuple[int, int]
    frame_size: tuple[int, int]
    origin: tuple[int, int]
    scan_box: Box
    scan_method: str
    crop_box: Box
    scale: tuple[float, float]
    offset: tuple[int, int]
    resized: tuple[int, int]
    size: int
    marks_fraction: float = 0.0
    warning: str = ""

    def with_notes(self, notes) -> Geometry:
        """This geometry with the reader's ``notes`` added to its warning."""
        if not notes:
            return self
        return replace(self, warning="; ".join(w for w in (self.warning, *notes) if w))

    @property
    def frame_kept(self) -> float:
        """Share of the full frame's area inside the crop."""
        w, h = self.frame_size
        return _area(self.crop_box) / float(max(w * h, 1))

    @property
    def scan_kept(self) -> float:
        """Share of the scan area's area inside the crop (1.0 unless an ROI crop narrows it)."""
        inter = intersect(self.crop_box, self.scan_box)
        return (_area(inter) if inter else 0) / float(max(_area(self.scan_box), 1))

    def to_frame(self, box: Box) -> Box:
        """A source box in the full frame's pixels."""
        ox, oy = self.origin
        return box[0] + ox, box[1] + oy, box[2] + ox, box[3] + oy

    def to_source(self, heatmap: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """A map over the model's input (``size`` x ``size``) put back on the source pixels.

        The padding is dropped, the rest is resized (bilinear) to the crop box and placed there;
        source pixels outside the crop get ``fill``.  Returns float32, shape (H, W) of the source.
        """
        hm = np.asarray(heatmap, dtype=np.float32)
        if hm.shape != (self.size, self.size):
            raise DataError(f"map of shape {hm.shape} does not match the model input ({self.size}, {self.size}).")
        left, top = self.offset
        rw, rh = self.resized
        x0, y0, x1, y1 = self.crop_box
        part = hm[top:top + rh, left:left + rw]
        out = np.full((self.source_size[1], self.source_size[0]), fill, dtype=np.float32)
        out[y0:y1, x0:x1] = cv2.resize(part, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        return out

    def to_frame_map(self, heatmap: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """:meth:`to_source`, placed in the file's full frame (shape (H, W) of ``frame_size``)."""
        src = self.to_source(heatmap, fill)
        if self.origin == (0, 0) and self.frame_size == self.source_size:
            return src
        out = np.full((self.frame_size[1], self.frame_size[0]), fill, dtype=np.float32)
        ox, oy = self.origin
        h, w = src.shape
        out[oy:oy + h, ox:ox + w] = src[:max(0, min(h, out.shape[0] - oy)), :max(0, min(w, out.shape[1] - ox))]
        return out

    def as_dict(self) -> dict:
        """Plain JSON-able fields plus ``frame_kept`` and ``scan_kept``."""
        d = asdict(self)
        d.update(frame_kept=round(self.frame_kept, 6), scan_kept=round(self.scan_kept, 6))
        return d


def _area(box: Box | None) -> int:
    return 0 if box is None else max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def intersect(a: Box, b: Box) -> Box | None:
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[2] > box[0] and box[3] > box[1] else None


def resize_plan(h: int, w: int, size: int, keep_aspect: bool) -> tuple[int, int, int, int]:
    """``(resized width, resized height, left, top)`` of an ``h`` x ``w`` crop in the output."""
    if not keep_aspect:
        return size, size, 0, 0
    scale = size / max(h, w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    return nw, nh, (size - nw) // 2, (size - nh) // 2


def resize_square(image: np.ndarray, size: int, keep_aspect: bool = True, pad_value: int = 0) -> np.ndarray:
    """Resize a gray uint8 image to ``size`` x ``size`` (aspect kept with centred padding, or stretched)."""
    h, w = image.shape
    nw, nh, left, top = resize_plan(h, w, size, keep_aspect)
    interp = cv2.INTER_AREA if (nw <= w and nh <= h) else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    if (nw, nh) == (size, size):
        return np.ascontiguousarray(resized)
    out = np.full((size, size), pad_value, dtype=np.uint8)
    out[top:top + nh, left:left + nw] = resized
    return out


__all__ = ["Box", "Geometry", "resize_square"]
