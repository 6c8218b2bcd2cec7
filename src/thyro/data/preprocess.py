"""Ultrasound preprocessing: frame/UI removal, ROI crop, mark inpainting, square resize.

One :class:`Preprocessor` turns a decoded image into the square, one-channel uint8 array the cache
stores and the model reads.  Training (through :mod:`thyro.data.cache`) and prediction on new images
both call :meth:`Preprocessor.from_file`, so a model always sees exactly the preprocessing it was
trained with.

The steps, in order (each one can be switched off in :class:`PreprocessConfig`):

1. ``inpaint_marks``: burned-in coloured marks (calipers, measurement crosses, body-marker icons in
   colour) are found as pixels of high chroma and filled in with OpenCV's Telea inpainting.
2. Grayscale (always): ITU-R 601 luma, as Pillow's ``convert("L")`` and OpenCV's ``RGB2GRAY``.
3. ``remove_frame``: the ultrasound sector is found as the largest connected region that is not
   near-black after a small blur and a morphological opening; the opening removes thin text,
   scale ticks and side markers, so text/settings columns and black borders fall outside the box.
4. ``roi_crop``: crop to the nodule ROI's bounding box (from the manifest's polygons or box) grown by
   ``roi_margin`` of the ROI's width/height on each side, kept inside the sector.  Images without an
   ROI keep the sector crop.
5. Resize to ``size`` x ``size``: with ``keep_aspect`` the longer side is scaled to ``size`` and the
   shorter one padded (centred) with ``pad_value``; otherwise the crop is stretched.  Downscaling
   uses area averaging, upscaling bilinear interpolation.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from thyro.base import StrictModel
from thyro.errors import DataError

#: Bumped whenever the algorithm changes in a way that changes output pixels; part of the cache key.
PREPROCESS_VERSION = 1


class PreprocessConfig(StrictModel):
    """Preprocessing settings (``preprocess:`` block of a study configuration).

    Attributes
    ----------
    size : int, default 224
        Output side in pixels (square).
    remove_frame : bool, default True
        Crop to the ultrasound sector, dropping black borders and text/settings columns.
    frame_threshold : int, default 4
        Gray level (0-255, after a small blur) at or below which a pixel counts as frame background.
    frame_min_area : float, default 0.1
        If the largest non-black region covers less than this fraction of the image, no frame crop
        is made (the image is probably already cropped or mostly dark).
    roi_crop : bool, default False
        Crop to the nodule ROI (manifest ``roi``) grown by ``roi_margin``.
    roi_margin : float, default 0.15
        Margin added on each side of the ROI box, as a fraction of the ROI's width (left/right) and
        height (top/bottom).
    roi_min_size : int, default 32
        The ROI crop is grown around its centre to at least this many source pixels per side.
    inpaint_marks : bool, default False
        Fill in burned-in coloured marks (e.g. green calipers) by inpainting before grayscale.
    mark_chroma : int, default 40
        A pixel whose max(R, G, B) - min(R, G, B) exceeds this counts as a coloured mark.
    inpaint_radius : int, default 3
        Radius (pixels) of the inpainting neighbourhood; the mark mask is also dilated by 1 pixel.
    keep_aspect : bool, default True
        Keep the aspect ratio and pad to a square; False stretches the crop to a square.
    pad_value : int, default 0
        Gray level of the padding.
    """

    size: int = Field(224, ge=8, le=4096)
    remove_frame: bool = True
    frame_threshold: int = Field(4, ge=0, le=254)
    frame_min_area: float = Field(0.1, ge=0.0, le=1.0)
    roi_crop: bool = False
    roi_margin: float = Field(0.15, ge=0.0, le=5.0)
    roi_min_size: int = Field(32, ge=1)
    inpaint_marks: bool = False
    mark_chroma: int = Field(40, ge=1, le=255)
    inpaint_radius: int = Field(3, ge=1, le=32)
    keep_aspect: bool = True
    pad_value: int = Field(0, ge=0, le=255)

    def cache_fields(self) -> dict:
        """Settings that determine output pixels (all of them), plus the algorithm version."""
        return {"preprocess_version": PREPROCESS_VERSION, **self.model_dump(mode="json")}


Box = tuple[int, int, int, int]


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


def mark_mask(rgb: np.ndarray, chroma: int = 40) -> np.ndarray:
    """Boolean mask of coloured (high-chroma) pixels of an RGB uint8 image."""
    chan_max = rgb.max(axis=2).astype(np.int16)
    chan_min = rgb.min(axis=2).astype(np.int16)
    return (chan_max - chan_min) > chroma


def inpaint_marks(rgb: np.ndarray, chroma: int = 40, radius: int = 3) -> np.ndarray:
    """Fill coloured marks of an RGB uint8 image by Telea inpainting (returns a new RGB image)."""
    mask = mark_mask(rgb, chroma).astype(np.uint8)
    if not mask.any():
        return rgb
    # JPEG chroma subsampling smears a mark's colour over its neighbours: dilate by one pixel.
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    return cv2.inpaint(np.ascontiguousarray(rgb), mask, radius, cv2.INPAINT_TELEA)


def to_gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB uint8 image (gray images are returned unchanged)."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def find_sector(gray: np.ndarray, threshold: int = 4, min_area: float = 0.1) -> Box:
    """Bounding box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of the ultrasound sector of a gray image.

    The sector is the largest 4-connected region whose blurred gray level exceeds ``threshold`` after
    a morphological opening that removes text strokes, tick marks and thin lines, merged with large
    regions beside it on the same rows (dual views split by a black line).  Edge columns and
    rows of the box that the region fills for less than a quarter are trimmed (text stuck to the
    sector).  Returns the whole image when no region covers ``min_area`` of it.
    """
    h, w = gray.shape
    side = min(h, w)
    k_blur = max(3, int(round(side * 0.012)) | 1)
    k_open = max(3, int(round(side * 0.03)) | 1)
    blurred = cv2.blur(gray, (k_blur, k_blur))
    mask = np.greater(blurred, threshold).view(np.uint8)  # bool as 0/1 bytes, without a copy
    del blurred
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((k_open, k_open), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if n <= 1:
        return 0, 0, w, h
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = 1 + int(np.argmax(areas))
    if stats[best, cv2.CC_STAT_AREA] < min_area * h * w:
        return 0, 0, w, h
    # dual views (two sectors side by side, split by a thin black line) are one sector: merge large
    # components that share the rows of the largest one and sit next to it
    members = [best]
    x0, y0 = int(stats[best, 0]), int(stats[best, 1])
    x1, y1 = x0 + int(stats[best, 2]), y0 + int(stats[best, 3])
    changed = True
    while changed:
        changed = False
        for j in range(1, n):
            if j in members or stats[j, cv2.CC_STAT_AREA] < 0.2 * stats[best, cv2.CC_STAT_AREA]:
                continue
            jx0, jy0, jw, jh = (int(v) for v in stats[j, :4])
            overlap = min(y1, jy0 + jh) - max(y0, jy0)
            gap = max(jx0 - x1, x0 - (jx0 + jw))
            if overlap >= 0.5 * min(jh, y1 - y0) and gap <= 0.05 * w:
                members.append(j)
                x0, y0, x1, y1 = min(x0, jx0), min(y0, jy0), max(x1, jx0 + jw), max(y1, jy0 + jh)
                changed = True
    # equalities OR-ed in place rather than np.isin, which builds an int64 copy of the labels (8 bytes a
    # pixel: the largest allocation of the whole preprocessing on big images); same result
    window = labels[y0:y1, x0:x1]
    region = window == members[0]
    for j in members[1:]:
        region |= window == j
    cols = np.flatnonzero(region.mean(axis=0) >= 0.25)
    rows = np.flatnonzero(region.mean(axis=1) >= 0.25)
    if cols.size and rows.size:
        return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1
    return x0, y0, x1, y1


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


def resize_square(image: np.ndarray, size: int, keep_aspect: bool = True, pad_value: int = 0) -> np.ndarray:
    """Resize a gray uint8 image to ``size`` x ``size`` (aspect kept with centred padding, or stretched)."""
    h, w = image.shape
    if not keep_aspect:
        interp = cv2.INTER_AREA if (h >= size and w >= size) else cv2.INTER_LINEAR
        return cv2.resize(image, (size, size), interpolation=interp)
    scale = size / max(h, w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    out = np.full((size, size), pad_value, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
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
        """Steps before cropping: inpaint coloured marks (if on) and convert to gray."""
        image = _as_uint8_image(image)
        if image.ndim == 3 and self.cfg.inpaint_marks:
            image = inpaint_marks(image, self.cfg.mark_chroma, self.cfg.inpaint_radius)
        return to_gray(image)

    def crop_box(self, gray: np.ndarray, roi: dict | None = None, origin: tuple[float, float] = (0, 0)) -> Box:
        """The crop ``(x0, y0, x1, y1)`` (exclusive ends) this configuration takes from a gray image."""
        h, w = gray.shape
        box: Box = (0, 0, w, h)
        if self.cfg.remove_frame:
            box = find_sector(gray, self.cfg.frame_threshold, self.cfg.frame_min_area)
        if self.cfg.roi_crop and roi is not None:
            rbox = roi_box(roi, origin, self.cfg.roi_margin, self.cfg.roi_min_size, (h, w))
            if rbox is not None:
                box = _intersect(rbox, box) or rbox
        return box

    def __call__(self, image: np.ndarray, roi: dict | None = None, origin: tuple[float, float] = (0, 0)) -> np.ndarray:
        """Preprocess one decoded image.

        Parameters
        ----------
        image : ndarray of uint8, shape (H, W) or (H, W, 3)
            Decoded pixels (RGB when colour).
        roi : dict or None
            The manifest ROI (``{"polygons": ...}`` or ``{"box": ...}``) in original image pixels.
        origin : (x0, y0)
            Where ``image`` starts in the original image (e.g. a DICOM ultrasound region crop);
            subtracted from the ROI's coordinates.

        Returns
        -------
        ndarray of uint8, shape (size, size)
        """
        gray = self.prepare(image)
        x0, y0, x1, y1 = self.crop_box(gray, roi, origin)
        crop = gray[y0:y1, x0:x1]
        return resize_square(crop, self.cfg.size, self.cfg.keep_aspect, self.cfg.pad_value)

    def from_file(self, path: str | os.PathLike, roi: dict | None = None, frame: int = 0) -> np.ndarray:
        """Read an image file (any format thyro reads) and preprocess it exactly as for training."""
        pixels, origin = read_pixels(path, frame=frame, color=self.cfg.inpaint_marks)
        return self(pixels, roi=roi, origin=origin)


# -- process-pool helpers (the cache's workers import this module only) ---------------------------

_pool_state: dict = {}


def _pool_init(cfg_json: dict) -> None:
    """Initialise a worker process: one OpenCV thread, one Preprocessor."""
    cv2.setNumThreads(1)
    _pool_state["pre"] = Preprocessor(PreprocessConfig.model_validate(cfg_json))


def _pool_work(task: tuple[int, str, dict | None, int]) -> tuple[int, np.ndarray | None, str | None]:
    """Preprocess one ``(row, path, roi, frame)``; errors come back as text (reported together)."""
    i, path, roi, frame = task
    try:
        return i, _pool_state["pre"].from_file(path, roi=roi, frame=frame), None
    except DataError as exc:
        return i, None, str(exc)
    except Exception as exc:  # any decoder failure is reported with its file, not raised mid-build
        return i, None, f"{type(exc).__name__}: {exc}"


def read_pixels(path: str | os.PathLike, *, frame: int = 0, color: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image file to uint8 pixels and the origin of its ultrasound region.

    Uses :func:`thyro.data.readers.load_image` (Pillow formats and DICOM, ultrasound region crop).
    """
    from thyro.data.readers import load_image

    loaded = load_image(Path(path), frame=frame, color=color, us_region=True)
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


def preview_sheet(manifest, out: str | os.PathLike, cfg: PreprocessConfig | dict | None = None, *,
                  n: int = 16, seed: int = 0, cell: int = 192) -> Path:
    """Write a contact sheet PNG: each raw image (ROI outline in green, crop box in yellow) beside its
    preprocessed version, for ``n`` images drawn at random (``seed``) from the manifest.

    Unreadable images get a cell saying why instead of stopping the sheet.
    """
    import pandas as pd
    from PIL import Image, ImageDraw

    from thyro.data.manifest import Manifest, read_manifest
    from thyro.fileio import atomic_path

    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    pre = Preprocessor(cfg)
    if len(manifest) == 0:
        raise DataError(f"{manifest.path or 'manifest'}: no images to preview.")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(manifest), size=min(int(n), len(manifest)), replace=False))
    rois = manifest.rois()
    frames = manifest.df["frame"].tolist() if "frame" in manifest.df.columns else [0] * len(manifest)
    pairs_per_row = 2
    caption = 28
    n_rows = (len(rows) + pairs_per_row - 1) // pairs_per_row
    sheet = Image.new("RGB", (pairs_per_row * 2 * cell + (pairs_per_row - 1) * 8, n_rows * (cell + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, r in enumerate(rows):
        x = (k % pairs_per_row) * (2 * cell + 8)
        y = (k // pairs_per_row) * (cell + caption)
        image_id = manifest.ids[r]
        label = manifest.df["label"].iloc[r]
        label_text = "unlabelled" if pd.isna(label) else ("malignant" if int(label) == 1 else "benign")
        try:
            frame = int(frames[r]) if str(frames[r]).strip() not in ("", "nan") else 0
            pixels, origin = read_pixels(manifest.abspath(image_id), frame=frame, color=True)
            processed = pre(pixels, roi=rois[r], origin=origin)
            gray = pre.prepare(pixels)
            box = pre.crop_box(gray, rois[r], origin)
            raw = Image.fromarray(pixels if pixels.ndim == 3 else np.stack([pixels] * 3, -1))
            scale = cell / max(raw.width, raw.height)
            raw = raw.resize((max(1, round(raw.width * scale)), max(1, round(raw.height * scale))), Image.BILINEAR)
            rd = ImageDraw.Draw(raw)
            roi = rois[r]
            if roi is not None:
                polys = roi.get("polygons") or []
                if "box" in roi:
                    bx0, by0, bx1, by1 = roi["box"]
                    polys = [[[bx0, by0], [bx1, by0], [bx1, by1], [bx0, by1]]]
                for poly in polys:
                    pts = [((px - origin[0]) * scale, (py - origin[1]) * scale) for px, py in poly]
                    rd.line(pts + [pts[0]], fill=(0, 255, 0), width=1)
            rd.rectangle([box[0] * scale, box[1] * scale, box[2] * scale - 1, box[3] * scale - 1],
                         outline=(255, 220, 0), width=1)
            sheet.paste(raw, (x, y))
            sheet.paste(Image.fromarray(processed).convert("RGB").resize((cell, cell), Image.BILINEAR), (x + cell, y))
        except DataError as exc:
            draw.text((x + 4, y + 4), f"unreadable:\n{str(exc)[:120]}", fill=(200, 0, 0))
        name = image_id if len(image_id) <= 44 else "..." + image_id[-41:]
        draw.text((x + 2, y + cell + 2), f"{name}\n{label_text}", fill=(0, 0, 0))
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return out
