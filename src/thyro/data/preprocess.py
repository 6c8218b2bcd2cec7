"""Ultrasound preprocessing: scan area, mark removal, ROI crop, square resize.

One :class:`Preprocessor` turns a decoded image into the square, one-channel uint8 array the cache
stores and the model reads.  Training (through :mod:`thyro.data.cache`) and prediction on new images
both call :meth:`Preprocessor.from_file`, so a model always sees exactly the preprocessing it was
trained with.  :meth:`Preprocessor.process` also returns the :class:`Geometry` of what it did (scan
area, crop box, scale, padding, share of marks), so that a heatmap on the model's input can be put
back on the original pixels and a report can say how much of each frame was kept.

The steps, in order (each one can be switched off in :class:`PreprocessConfig`):

1. Grayscale (always): ITU-R 601 luma, as Pillow's ``convert("L")`` and OpenCV's ``RGB2GRAY``.
2. ``remove_frame``: the scan area (the tissue image) is found from the screen's layout by
   :func:`thyro.data.scan_area.find_scan_area`: borders, text and scales beside the image are cut,
   dark deep tissue is kept to the bottom of the field of view, and the whole frame is used, with a
   warning, when the layout is not understood.  A DICOM file's ultrasound region (0018,6011) is
   the scan area when the file has one (the reader crops to it).
3. ``roi_crop``: crop to the nodule ROI's bounding box (from the manifest's polygons or box) grown by
   ``roi_margin`` of the ROI's width/height on each side, kept inside the scan area.  Images without
   an ROI keep the scan-area crop.
4. ``inpaint_marks``: burned-in marks inside the crop (coloured marks, and with ``mark_white`` white
   calipers, dotted lines, scales and hairline icons) are found by :mod:`thyro.data.marks` and filled
   in with OpenCV's Telea inpainting; echogenic foci and calcifications are kept.  Marks are looked
   for in the crop and a few pixels around it, so the fill draws on the tissue beside the crop too.
5. Resize to ``size`` x ``size``: with ``keep_aspect`` the longer side is scaled to ``size`` and the
   shorter one padded (centred) with ``pad_value``; otherwise the crop is stretched.  Downscaling
   uses area averaging, upscaling bilinear interpolation.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from thyro.base import StrictModel
from thyro.data.marks import MarkSettings, colour_mask, detect_marks, inpaint
from thyro.data.readers import load_image
from thyro.data.scan_area import ScanArea, find_scan_area
from thyro.errors import DataError

#: Bumped whenever the algorithm changes in a way that changes output pixels; part of the cache key.
#: 2: scan area from the screen layout (dark deep tissue kept), white marks found and inpainted on
#: the gray image, mark removal on by default.  3: a caliper takes only the stroke along its arms,
#: and its arms must not lie inside bright tissue (echogenic foci are no longer taken for calipers).
#: 4: text rows are also found by glyphs standing on one baseline, and take the words beside them.
PREPROCESS_VERSION = 4

#: Pixels around the crop in which marks are looked for and from which the inpainting draws.
MARK_CONTEXT = 8


class PreprocessConfig(StrictModel):
    """Preprocessing settings (``preprocess:`` block of a study configuration): how a scan becomes the
    model's square uint8 input.  Each field's description is in the configuration reference
    (docs/config-reference.md, generated from these fields)."""

    size: int = Field(224, ge=8, le=4096, description="output side in pixels (square)")
    remove_frame: bool = Field(True, description="crop to the scan area (the tissue image), dropping borders, "
                                                 "text and scales beside it")
    frame_threshold: int = Field(4, ge=0, le=254, description="gray levels within which a pixel counts as the "
                                                              "screen's background level")
    frame_min_area: float = Field(0.1, ge=0.0, le=1.0, description="if no tissue region covers this fraction of "
                                  "the frame, the whole frame is used (with a warning)")
    roi_crop: bool = Field(False, description="crop to the nodule ROI (the manifest's roi column) grown by "
                                              "roi_margin")
    roi_margin: float = Field(0.15, ge=0.0, le=5.0, description="margin added on each side of the ROI box, as a "
                              "fraction of the ROI's width (left/right) and height (top/bottom)")
    roi_min_size: int = Field(32, ge=1, description="the ROI crop is grown around its centre to at least this many "
                                                    "source pixels per side")
    inpaint_marks: bool = Field(True, description="fill in burned-in marks (calipers, measurement lines, markers) "
                                                  "by inpainting")
    mark_white: bool = Field(True, description="also find white and light-gray marks (not only coloured ones)")
    mark_chroma: int = Field(25, ge=1, le=255, description="pixels whose max(R, G, B) - min(R, G, B) exceeds this "
                             "seed a coloured mark (which grows into its paler JPEG halo)")
    inpaint_radius: int = Field(3, ge=1, le=32, description="radius (pixels) of the inpainting neighbourhood")
    keep_aspect: bool = Field(True, description="keep the aspect ratio and pad to a square (letterbox); false "
                                                "stretches the crop to a square")
    pad_value: int = Field(0, ge=0, le=255, description="gray level of the letterbox padding")

    def cache_fields(self) -> dict:
        """Settings that determine output pixels (all of them), plus the algorithm version."""
        return {"preprocess_version": PREPROCESS_VERSION, **self.model_dump(mode="json")}

    def mark_settings(self) -> MarkSettings:
        return MarkSettings(chroma=self.mark_chroma)


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
        inter = _intersect(self.crop_box, self.scan_box)
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


def _as_uint8_image(image: np.ndarray, where: str = "image") -> np.ndarray:
    """Validate an input image: uint8, (H, W) or (H, W, 3|4); returns (H, W) or (H, W, 3)."""
    if not isinstance(image, np.ndarray):
        raise DataError(f"{where}: expected a numpy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise DataError(f"{where}: expected uint8 pixels, got {image.dtype}; read images with thyro.data.readers.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise DataError(f"{where}: expected an (H, W) or (H, W, 3) image, got shape {image.shape}.")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise DataError(f"{where}: image of shape {image.shape} is too small to preprocess.")
    return image


def mark_mask(rgb: np.ndarray, chroma: int = 25) -> np.ndarray:
    """Boolean mask of coloured marks of an RGB uint8 image (:func:`thyro.data.marks.colour_mask`)."""
    return colour_mask(rgb, chroma)


def inpaint_marks(rgb: np.ndarray, chroma: int = 25, radius: int = 3) -> np.ndarray:
    """Fill coloured marks of an RGB uint8 image by Telea inpainting (returns a new RGB image).

    Coloured marks only; :func:`thyro.data.marks.detect_marks` finds white ones too.
    """
    mask = colour_mask(rgb, chroma)
    if not mask.any():
        return rgb
    # JPEG chroma subsampling smears a mark's colour over its neighbours: dilate by one pixel.
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return inpaint(rgb, mask, radius)


def to_gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB uint8 image (gray images are returned unchanged)."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def find_sector(gray: np.ndarray, threshold: int = 4, min_area: float = 0.1) -> Box:
    """Bounding box ``(x0, y0, x1, y1)`` of the scan area of a gray image (see :func:`find_scan_area`)."""
    return find_scan_area(gray, threshold, min_area).box


def roi_box(roi: dict, origin: tuple[float, float], margin: float, min_size: int,
            shape: tuple[int, int]) -> Box | None:
    """The ROI's bounding box in the (possibly offset) image, grown by ``margin``; None if outside."""
    from thyro.data.manifest import roi_bbox  # lazy: keeps pandas out of cache worker processes

    h, w = shape
    x0, y0, x1, y1 = roi_bbox(roi)
    x0, x1 = x0 - origin[0], x1 - origin[0]
    y0, y1 = y0 - origin[1], y1 - origin[1]
    rw, rh = x1 - x0, y1 - y0
    x0, x1 = x0 - margin * rw, x1 + margin * rw
    y0, y1 = y0 - margin * rh, y1 + margin * rh
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = max(x1 - x0, min_size) / 2, max(y1 - y0, min_size) / 2
    box = (int(np.floor(cx - half_w)), int(np.floor(cy - half_h)), int(np.ceil(cx + half_w)), int(np.ceil(cy + half_h)))
    box = (max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3]))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return None
    return box


def _intersect(a: Box, b: Box) -> Box | None:
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[2] > box[0] and box[3] > box[1] else None


def _resize_plan(h: int, w: int, size: int, keep_aspect: bool) -> tuple[int, int, int, int]:
    """``(resized width, resized height, left, top)`` of an ``h`` x ``w`` crop in the output."""
    if not keep_aspect:
        return size, size, 0, 0
    scale = size / max(h, w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    return nw, nh, (size - nw) // 2, (size - nh) // 2


def resize_square(image: np.ndarray, size: int, keep_aspect: bool = True, pad_value: int = 0) -> np.ndarray:
    """Resize a gray uint8 image to ``size`` x ``size`` (aspect kept with centred padding, or stretched)."""
    h, w = image.shape
    nw, nh, left, top = _resize_plan(h, w, size, keep_aspect)
    interp = cv2.INTER_AREA if (nw <= w and nh <= h) else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    if (nw, nh) == (size, size):
        return np.ascontiguousarray(resized)
    out = np.full((size, size), pad_value, dtype=np.uint8)
    out[top:top + nh, left:left + nw] = resized
    return out


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
        return to_gray(_as_uint8_image(image))

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
                box = _intersect(rbox, box) or rbox
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
        image = _as_uint8_image(image)
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
        image = _as_uint8_image(image)
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
        nw, nh, left, top = _resize_plan(y1 - y0, x1 - x0, size, self.cfg.keep_aspect)
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

    def process_file(self, path: str | os.PathLike, roi: dict | None = None, frame: int = 0
                     ) -> tuple[np.ndarray, Geometry]:
        """Read an image file (any format thyro reads) and preprocess it exactly as for training."""
        loaded = read_image(path, frame=frame, color=self.cfg.inpaint_marks)
        out, geometry = self.process(loaded.pixels, roi=roi, origin=loaded.origin, region=loaded.region,
                                     frame_size=loaded.size)
        return out, geometry.with_notes(loaded.notes)

    def from_file(self, path: str | os.PathLike, roi: dict | None = None, frame: int = 0) -> np.ndarray:
        """Read an image file (any format thyro reads) and preprocess it exactly as for training."""
        return self.process_file(path, roi, frame)[0]


# -- process-pool helpers (the cache's workers import this module only) ---------------------------

_pool_state: dict = {}


def _pool_init(cfg_json: dict) -> None:
    """Initialise a worker process: one OpenCV thread, one Preprocessor."""
    cv2.setNumThreads(1)
    _pool_state["pre"] = Preprocessor(PreprocessConfig.model_validate(cfg_json))


def _pool_work(task: tuple[int, str, dict | None, int]) -> tuple[int, np.ndarray | None, dict | None, str | None]:
    """Preprocess one ``(row, path, roi, frame)``: ``(row, pixels, geometry dict, error)``.

    Errors come back as text (reported together).
    """
    i, path, roi, frame = task
    try:
        out, geometry = _pool_state["pre"].process_file(path, roi=roi, frame=frame)
        return i, out, geometry.as_dict(), None
    except DataError as exc:
        return i, None, None, str(exc)
    except Exception as exc:  # any decoder failure is reported with its file, not raised mid-build
        return i, None, None, f"{type(exc).__name__}: {exc}"


def read_image(path: str | os.PathLike, *, frame: int = 0, color: bool = False):
    """Decode an image file as preprocessing reads it: a :class:`thyro.data.readers.LoadedImage`,
    cropped to the DICOM ultrasound region when the file has one."""
    return load_image(Path(path), frame=frame, color=color, us_region=True)


def read_pixels(path: str | os.PathLike, *, frame: int = 0, color: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image file to uint8 pixels and the origin of its ultrasound region (see :func:`read_image`)."""
    loaded = read_image(path, frame=frame, color=color)
    return loaded.pixels, (int(loaded.origin[0]), int(loaded.origin[1]))


def load_preprocess_config(path: str | os.PathLike | None = None, **overrides) -> PreprocessConfig:
    """Preprocessing settings from a YAML file (a study configuration's ``preprocess:`` block, or a
    file holding that block alone), with keyword overrides (None values are ignored)."""
    from thyro.base import read_yaml
    from thyro.errors import ConfigError

    data: dict = {}
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path)
        if "preprocess" in loaded:
            data = loaded["preprocess"] or {}
        elif set(loaded) <= set(PreprocessConfig.model_fields):
            data = loaded
        else:
            raise ConfigError(f"{path}: no 'preprocess:' block (and the file is not a preprocessing block itself; "
                              f"allowed keys: {', '.join(PreprocessConfig.model_fields)}).")
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return PreprocessConfig.parse(data, source=str(path) if path else "preprocess settings")

