"""Look at what preprocessing does: contact sheets, one picture per image, and a per-image report.

Each picture shows the raw image with the scan area (yellow box), the crop (cyan box, when an ROI
crop narrows it), the manifest's ROI (green) and the marks that are removed (red), beside the
preprocessed image the model reads.  The report is one row per image with the :class:`Geometry`
of its preprocessing: scan area and how it was found, crop, share of the frame kept, share of marks,
and any warning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from thyro.data.manifest import Manifest, read_manifest
from thyro.data.preprocess import Geometry, PreprocessConfig, Preprocessor, read_image
from thyro.errors import DataError
from thyro.fileio import atomic_path, write_csv_rows

#: Columns of the per-image report (:func:`preprocess_report`).
REPORT_COLUMNS = ["image", "label", "width", "height", "scan_method", "scan_box", "crop_box", "frame_kept",
                  "scan_kept", "marks_fraction", "warning", "error"]


@dataclass
class PreviewItem:
    """One manifest row, read and preprocessed (``error`` set instead when it could not be)."""

    row: int
    image: str
    label: str
    pixels: np.ndarray | None = None
    roi: dict | None = None
    output: np.ndarray | None = None
    geometry: Geometry | None = None
    marks: np.ndarray | None = None
    error: str = ""


def _label_text(value, meaning=None) -> str:
    """``malignant``/``benign``, or the classes the manifest's labels name (``TI-RADS ≥ 4c``)."""
    if pd.isna(value):
        return "unlabelled"
    positive, negative = (meaning.positive, meaning.negative) if meaning is not None else ("malignant", "benign")
    return positive if int(value) == 1 else negative


def _drawable(text: str) -> str:
    """Text Pillow's built-in bitmap font can draw (it has no ``≥``; other characters outside Latin-1 become ?)."""
    text = text.replace("≥", ">=").replace("≤", "<=")
    return text.encode("latin-1", "replace").decode("latin-1")


def sheet_title(manifest) -> str:
    """The contact sheet's title: the manifest and what its label 1 means."""
    meaning = _meaning(manifest)
    return (f"{manifest.path.name if manifest.path else 'manifest'}: "
            + (meaning.summary() if meaning is not None else "labels of several provenances"))


def _meaning(manifest):
    """The manifest's :class:`~thyro.data.manifest.LabelMeaning` (None when it mixes provenances)."""
    try:
        return manifest.label_meaning()
    except DataError:
        return None


def _frames(manifest) -> list[int]:
    if "frame" not in manifest.df.columns:
        return [0] * len(manifest)
    out = []
    for v in manifest.df["frame"].tolist():
        text = str(v).strip()
        out.append(int(float(text)) if text not in ("", "nan", "None") else 0)
    return out


def iter_preview(manifest, cfg: PreprocessConfig | dict | None = None, rows=None, *,
                 marks: bool = True) -> Iterator[PreviewItem]:
    """Read and preprocess manifest rows (all, or ``rows``), one :class:`PreviewItem` each."""
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest, check_labels=False)
    pre = Preprocessor(cfg)
    rois = manifest.rois()
    frames = _frames(manifest)
    labels = manifest.df["label"].tolist() if "label" in manifest.df.columns else [None] * len(manifest)
    meaning = _meaning(manifest)
    for r in (range(len(manifest)) if rows is None else rows):
        r = int(r)
        item = PreviewItem(row=r, image=manifest.ids[r], label=_label_text(labels[r], meaning), roi=rois[r])
        try:
            loaded = read_image(manifest.abspath(item.image), frame=frames[r], color=True)
            item.pixels = loaded.pixels
            item.output, item.geometry = pre.process(loaded.pixels, roi=rois[r], origin=loaded.origin,
                                                     region=loaded.region, frame_size=loaded.size)
            if marks:
                item.marks = pre.mark_mask(loaded.pixels, item.geometry.crop_box)
        except DataError as exc:
            item.error = str(exc)
        yield item


def _roi_polygons(roi: dict | None) -> list[list[list[float]]]:
    if roi is None:
        return []
    if "box" in roi:
        x0, y0, x1, y1 = roi["box"]
        return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]]
    return list(roi.get("polygons") or [])


def overlay_picture(item: PreviewItem, height: int):
    """The raw image at ``height`` pixels tall with the scan area, crop, ROI and marks drawn on it."""
    pixels = item.pixels
    rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
    rgb = rgb.copy()
    if item.marks is not None and item.marks.any():
        rgb[item.marks] = (255, 40, 40)
    raw = Image.fromarray(rgb)
    scale = height / raw.height
    raw = raw.resize((max(1, round(raw.width * scale)), height), Image.BILINEAR if scale < 1 else Image.NEAREST)
    draw = ImageDraw.Draw(raw)
    g = item.geometry
    ox, oy = g.origin

    def rect(box, colour):
        draw.rectangle([box[0] * scale, box[1] * scale, box[2] * scale - 1, box[3] * scale - 1], outline=colour,
                       width=max(1, round(scale)))

    rect(g.scan_box, (255, 220, 0))
    if g.crop_box != g.scan_box:
        rect(g.crop_box, (0, 220, 255))
    for poly in _roi_polygons(item.roi):
        pts = [((px - ox) * scale, (py - oy) * scale) for px, py in poly]
        draw.line(pts + [pts[0]], fill=(0, 255, 0), width=max(1, round(scale)))
    return raw


def caption(item: PreviewItem) -> str:
    """One line on what preprocessing did to an image."""
    if item.error:
        return f"unreadable: {item.error[:100]}"
    g = item.geometry
    text = (f"{item.label}; scan area {g.scan_method}, {g.frame_kept:.0%} of frame kept; "
            f"marks {g.marks_fraction:.2%}")
    return text + ("; WARNING: " + g.warning if g.warning else "")


def preview_sheet(manifest, out: str | os.PathLike, cfg: PreprocessConfig | dict | None = None, *,
                  n: int = 16, seed: int = 0, cell: int | None = None) -> Path:
    """Write a contact sheet PNG: each raw image (scan area yellow, ROI green, marks red) beside its
    preprocessed version, for ``n`` images drawn at random (``seed``) from the manifest.

    ``cell`` is the side of each picture in pixels; by default the preprocessing's output size (at
    least 192), so ``--size 512`` gives a sheet where marks and their removal can be judged.
    Unreadable images get a cell saying why instead of stopping the sheet.
    """
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    cfg = cfg if isinstance(cfg, PreprocessConfig) else PreprocessConfig.parse(cfg or {}, source="preprocess")
    if len(manifest) == 0:
        raise DataError(f"{manifest.path or 'manifest'}: no images to preview.")
    cell = int(cell) if cell else max(192, cfg.size)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(manifest), size=min(int(n), len(manifest)), replace=False))
    pairs_per_row = 2
    caption_h = 30
    title_h = 18
    n_rows = (len(rows) + pairs_per_row - 1) // pairs_per_row
    width = pairs_per_row * 2 * cell + (pairs_per_row - 1) * 8
    sheet = Image.new("RGB", (width, title_h + n_rows * (cell + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((2, 3), _drawable(sheet_title(manifest)[: width // 6]), fill=(0, 0, 0))
    for k, item in enumerate(iter_preview(manifest, cfg, rows)):
        x = (k % pairs_per_row) * (2 * cell + 8)
        y = title_h + (k // pairs_per_row) * (cell + caption_h)
        if item.error:
            draw.text((x + 4, y + 4), f"unreadable:\n{item.error[:120]}", fill=(200, 0, 0))
        else:
            raw = overlay_picture(item, cell)
            if raw.width > cell:  # wide image: fit the width instead
                raw = raw.resize((cell, max(1, round(raw.height * cell / raw.width))), Image.BILINEAR)
            sheet.paste(raw, (x, y))
            sheet.paste(Image.fromarray(item.output).convert("RGB").resize((cell, cell), Image.BILINEAR), (x + cell, y))
        name = item.image if len(item.image) <= 60 else "..." + item.image[-57:]
        draw.text((x + 2, y + cell + 2), _drawable(f"{name}\n{caption(item)[:2 * cell // 6]}"), fill=(0, 0, 0))
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return out


def _safe_name(image: str) -> str:
    stem = os.path.splitext(image)[0].replace("\\", "/").strip("./")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace("/", "__"))[-150:] or "image"


def preview_images(manifest, out_dir: str | os.PathLike, cfg: PreprocessConfig | dict | None = None, *,
                   n: int | None = None, seed: int = 0) -> list[Path]:
    """Write one PNG per image into ``out_dir``: the raw image at full resolution with the scan
    area, ROI and marks drawn on it, beside the preprocessed image scaled to the same height, and a
    caption; plus ``preprocess.csv`` (the per-image report of those images).

    ``n`` images drawn at random (``seed``), or all of them.  Unreadable images get a line in the
    report and no picture.
    """
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    cfg = cfg if isinstance(cfg, PreprocessConfig) else PreprocessConfig.parse(cfg or {}, source="preprocess")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = None
    if n is not None and n < len(manifest):
        rows = np.sort(np.random.default_rng(seed).choice(len(manifest), size=int(n), replace=False))
    written: list[Path] = []
    records: list[dict] = []
    used: set[str] = set()
    for item in iter_preview(manifest, cfg, rows):
        records.append(report_row(item))
        if item.error:
            continue
        height = item.pixels.shape[0]
        raw = overlay_picture(item, height)
        model = Image.fromarray(item.output).convert("RGB").resize((height, height), Image.NEAREST)
        pic = Image.new("RGB", (raw.width + 8 + height, height + 22), "white")
        pic.paste(raw, (0, 0))
        pic.paste(model, (raw.width + 8, 0))
        ImageDraw.Draw(pic).text((2, height + 4), _drawable(f"{item.image}: {caption(item)}"), fill=(0, 0, 0))
        name = _safe_name(item.image)
        while name in used:
            name += "_"
        used.add(name)
        path = out_dir / f"{name}.png"
        with atomic_path(path, suffix=".png") as tmp:
            pic.save(tmp, format="PNG")
        written.append(path)
    _write_report(records, out_dir / "preprocess.csv")
    return written


def report_row(item: PreviewItem) -> dict:
    """One row of the per-image report (:data:`REPORT_COLUMNS`)."""
    if item.error or item.geometry is None:
        return {"image": item.image, "label": item.label, "error": item.error}
    g = item.geometry
    return {"image": item.image, "label": item.label, "width": g.source_size[0], "height": g.source_size[1],
            "scan_method": g.scan_method, "scan_box": " ".join(map(str, g.scan_box)),
            "crop_box": " ".join(map(str, g.crop_box)), "frame_kept": f"{g.frame_kept:.4f}",
            "scan_kept": f"{g.scan_kept:.4f}", "marks_fraction": f"{g.marks_fraction:.5f}", "warning": g.warning,
            "error": ""}


def _write_report(records: list[dict], path: Path) -> Path:
    write_csv_rows(path, records, REPORT_COLUMNS)
    return path


def preprocess_report(manifest, out: str | os.PathLike, cfg: PreprocessConfig | dict | None = None) -> Path:
    """Write the per-image report (:data:`REPORT_COLUMNS`) of every image of a manifest to a CSV."""
    records = [report_row(item) for item in iter_preview(manifest, cfg, marks=False)]
    return _write_report(records, Path(out))
