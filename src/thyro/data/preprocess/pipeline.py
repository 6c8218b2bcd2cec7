"""The :class:`Preprocessor`: one decoded image (or one file) in, the model's square ``uint8`` input out."""

from __future__ import annotations

import numpy as np

from thyro.data.marks import detect_marks, inpaint
from thyro.data.preprocess.config import PreprocessConfig
from thyro.data.preprocess.geometry import Box, Geometry, intersect, resize_plan, resize_square
from thyro.data.preprocess.steps import as_uint8_image, roi_box, to_gray
from thyro.data.readers import ImageSource, LoadedImage, load_image
from thyro.data.scan_area import ScanArea, find_scan_area

#: Pixels around the crop in which marks are looked for and from which the inpainting draws.
MARK_CONTEXT = 8


class Preprocessor:
    """Apply a :class:`PreprocessConfig` to images.

    Parameters
    ----------
    cfg : PreprocessConfig or dict or None
        Settings; None uses the defaults.

    Examples
    --------
    >>> pre = Preprocessor(PreprocessConfig(size=64))
    >>> pre(np.zeros((100, 120), np.uint8)).shape
    (64, 64)
    """

    def __init__(self, cfg: PreprocessConfig | dict | None = None):
        if cfg is None:
            cfg = PreprocessConfig()
        elif isinstance(cfg, dict):
            cfg = PreprocessConfig.parse(cfg, source="preprocess")
        elif not isinstance(cfg, PreprocessConfig):
            raise TypeError(f"cfg must be a PreprocessConfig, dict or None, got {type(cfg).__name__}")
        self.cfg = cfg

    def __repr__(self) -> str:
        return f"Preprocessor({self.cfg!r})"

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The gray image the scan area is found on (no marks removed: that happens in the crop)."""
        return to_gray(as_uint8_image(image))

    def scan_area(self, gray: np.ndarray, region: bool = False) -> ScanArea:
        """The scan area of a gray image (the whole image when ``region``: a DICOM ultrasound region)."""
        h, w = gray.shape
        if not self.cfg.remove_frame:
            return ScanArea((0, 0, w, h), "off")
        if region:
            return ScanArea((0, 0, w, h), "dicom-region")
        return find_scan_area(gray, self.cfg.frame_threshold, self.cfg.frame_min_area)

    def crop_box(self, gray: np.ndarray, roi: dict | None = None, origin: tuple[float, float] = (0, 0), *,
                 region: bool = False) -> Box:
        """The crop ``(x0, y0, x1, y1)`` (exclusive ends) this configuration takes from a gray image."""
        return self._crop(gray.shape, self.scan_area(gray, region).box, roi, origin)

    def _crop(self, shape: tuple[int, int], scan: Box, roi: dict | None, origin: tuple[float, float]) -> Box:
        box = scan
        if self.cfg.roi_crop and roi is not None:
            rbox = roi_box(roi, origin, self.cfg.roi_margin, self.cfg.roi_min_size, shape)
            if rbox is not None:
                box = intersect(rbox, box) or rbox
        return box

    def _marks(self, image: np.ndarray, box: Box) -> tuple[Box, np.ndarray]:
        """Marks around a crop: the searched region (the crop and ``MARK_CONTEXT`` pixels) and its mask."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = box
        c = MARK_CONTEXT
        region = max(0, x0 - c), max(0, y0 - c), min(w, x1 + c), min(h, y1 + c)
        part = image[region[1]:region[3], region[0]:region[2]]
        return region, detect_marks(part, self.cfg.mark_settings(), white=self.cfg.mark_white)

    def mark_mask(self, image: np.ndarray, box: Box | None = None) -> np.ndarray:
        """Boolean mask, over the whole image, of the marks this configuration removes from a crop.

        ``box`` defaults to the crop without an ROI (the scan area).  Empty when mark removal is off.
        """
        image = as_uint8_image(image)
        out = np.zeros(image.shape[:2], dtype=bool)
        if not self.cfg.inpaint_marks:
            return out
        if box is None:
            box = self.scan_area(to_gray(image)).box
        (x0, y0, x1, y1), mask = self._marks(image, box)
        out[y0:y1, x0:x1] = mask
        return out

    def process(self, image: np.ndarray, roi: dict | None = None, origin: tuple[float, float] = (0, 0), *,
                region: bool = False, frame_size: tuple[int, int] | None = None) -> tuple[np.ndarray, Geometry]:
        """Preprocess one decoded image and say how (see :class:`Geometry`).

        Parameters
        ----------
        image : ndarray of uint8, shape (H, W) or (H, W, 3)
            Decoded pixels (RGB when colour: coloured marks are found on the colour image).
        roi : dict or None
            The manifest ROI (``{"polygons": ...}`` or ``{"box": ...}``) in original image pixels.
        origin : (x0, y0)
            Where ``image`` starts in the original image (e.g. a DICOM ultrasound region crop);
            subtracted from the ROI's coordinates.
        region : bool
            ``image`` is the file's DICOM ultrasound region: it is the scan area.
        frame_size : (width, height), optional
            Of the file's full frame (default: the image's own size).

        Returns
        -------
        (ndarray of uint8, shape (size, size), Geometry)
        """
        image = as_uint8_image(image)
        gray = to_gray(image)
        h, w = gray.shape
        scan = self.scan_area(gray, region)
        x0, y0, x1, y1 = box = self._crop((h, w), scan.box, roi, origin)
        marks_fraction = 0.0
        crop = gray[y0:y1, x0:x1]
        if self.cfg.inpaint_marks:
            (cx0, cy0, cx1, cy1), mask = self._marks(image, box)
            inner = mask[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
            marks_fraction = float(inner.mean()) if inner.size else 0.0
            if inner.any():
                filled = inpaint(gray[cy0:cy1, cx0:cx1], mask, self.cfg.inpaint_radius)
                crop = filled[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
        size = self.cfg.size
        nw, nh, left, top = resize_plan(y1 - y0, x1 - x0, size, self.cfg.keep_aspect)
        out = resize_square(crop, size, self.cfg.keep_aspect, self.cfg.pad_value)
        geometry = Geometry(
            source_size=(w, h), frame_size=tuple(frame_size) if frame_size else (w, h),
            origin=(int(origin[0]), int(origin[1])), scan_box=tuple(int(v) for v in scan.box),
            scan_method=scan.method, crop_box=tuple(int(v) for v in box),
            scale=(nw / (x1 - x0), nh / (y1 - y0)), offset=(left, top), resized=(nw, nh), size=size,
            marks_fraction=round(marks_fraction, 6), warning=scan.warning)
        return out, geometry

    def __call__(self, image: np.ndarray, roi: dict | None = None, origin: tuple[float, float] = (0, 0), *,
                 region: bool = False) -> np.ndarray:
        """Preprocess one decoded image (see :meth:`process`); returns the (size, size) uint8 array."""
        return self.process(image, roi, origin, region=region)[0]

    def process_file(self, source: ImageSource, roi: dict | None = None, frame: int = 0, *, name: str | None = None
                     ) -> tuple[np.ndarray, Geometry]:
        """Read an image (any format thyro reads: a path, bytes or a binary file object, named ``name`` in
        messages) and preprocess it exactly as for training."""
        loaded = read_image(source, frame=frame, color=self.cfg.inpaint_marks, name=name)
        out, geometry = self.process(loaded.pixels, roi=roi, origin=loaded.origin, region=loaded.region,
                                     frame_size=loaded.size)
        return out, geometry.with_notes(loaded.notes)

    def from_file(self, source: ImageSource, roi: dict | None = None, frame: int = 0, *, name: str | None = None
                  ) -> np.ndarray:
        """Read an image (see :meth:`process_file`) and preprocess it exactly as for training."""
        return self.process_file(source, roi, frame, name=name)[0]


def read_image(source: ImageSource, *, frame: int = 0, color: bool = False, name: str | None = None) -> LoadedImage:
    """Decode an image as preprocessing reads it: a :class:`thyro.data.readers.LoadedImage`, cropped to the
    DICOM ultrasound region when the file has one (``source`` and ``name`` as
    :func:`thyro.data.readers.load_image` takes them)."""
    return load_image(source, frame=frame, color=color, us_region=True, name=name)


def read_pixels(source: ImageSource, *, frame: int = 0, color: bool = False, name: str | None = None
                ) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image to uint8 pixels and the origin of its ultrasound region (see :func:`read_image`)."""
    loaded = read_image(source, frame=frame, color=color, name=name)
    return loaded.pixels, (int(loaded.origin[0]), int(loaded.origin[1]))


__all__ = ["MARK_CONTEXT", "Preprocessor", "read_image", "read_pixels"]
