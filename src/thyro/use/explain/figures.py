"""The pictures of a heatmap: on the model's input (inside the image, never on the letterbox padding), on
the original image at full resolution (put back through the preprocessing's
:class:`~thyro.data.preprocess.Geometry` inside the crop box, which is outlined), a colour bar (the heatmap
is relative: 0 to 1 within the image), and the figure ``thyro explain`` writes, with its caption wrapped in a
band of its own below the pictures."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pytorch_grad_cam.utils.image import show_cam_on_image

from thyro.fileio import atomic_path


def overlay(image: np.ndarray, heatmap: np.ndarray, weight: float = 0.55) -> np.ndarray:
    """RGB uint8 overlay of a heatmap (jet colormap) on a grayscale uint8 image of the same size."""
    gray = np.asarray(image, dtype=np.float32) / 255.0
    rgb = np.repeat(gray[..., None], 3, axis=2)
    return show_cam_on_image(rgb, np.clip(heatmap, 0, 1).astype(np.float32), use_rgb=True, image_weight=weight)


def colour_map(heatmap: np.ndarray) -> np.ndarray:
    """RGB uint8 jet colours of a map in [0, 1] (the colours of :func:`overlay` and the colour bar)."""
    values = np.uint8(np.round(255 * np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1)))
    return cv2.cvtColor(cv2.applyColorMap(values, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def image_region(geometry) -> tuple[slice, slice]:
    """Rows and columns of the model's input that show the image (the rest is letterbox padding)."""
    left, top = geometry.offset
    width, height = geometry.resized
    return slice(top, top + height), slice(left, left + width)


def within_image(heatmap: np.ndarray, geometry) -> np.ndarray:
    """The heatmap with the letterbox padding dropped (0 there) and scaled to [0, 1] over the image alone.

    Grad-CAM scales a map by its maximum over the whole input, padding included; evidence "found" in the
    padding says nothing about the scan, so it is left out before the map is shown.
    """
    hm = np.asarray(heatmap, dtype=np.float32)
    rows, cols = image_region(geometry)
    part = np.clip(hm[rows, cols], 0, None)
    top = float(part.max()) if part.size else 0.0
    out = np.zeros_like(hm)
    out[rows, cols] = part / top if top > 0 else 0.0
    return out


def overlay_input(image: np.ndarray, heatmap: np.ndarray, geometry, weight: float = 0.55) -> np.ndarray:
    """:func:`overlay` on the model's input, inside the image only: the letterbox padding stays grey."""
    gray = np.asarray(image, dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2).copy()
    rows, cols = image_region(geometry)
    rgb[rows, cols] = overlay(gray[rows, cols], within_image(heatmap, geometry)[rows, cols], weight)
    return rgb


def on_original(frame: np.ndarray, geometry, heatmap: np.ndarray, weight: float = 0.5,
                box_colour: tuple[int, int, int] = (255, 220, 0)) -> np.ndarray:
    """The original frame (RGB or gray uint8, full resolution) with a model-input heatmap put back
    on it inside the crop box, and the crop box outlined.

    ``geometry`` is the preprocessing's :class:`thyro.data.preprocess.Geometry`: the padding is dropped
    (:func:`within_image`) and the rest resized onto the crop box's pixels; outside the crop the frame is
    shown as it is.
    """
    rgb = np.repeat(frame[..., None], 3, axis=2) if frame.ndim == 2 else frame[..., :3]
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    hm = geometry.to_frame_map(within_image(heatmap, geometry))
    x0, y0, x1, y1 = geometry.to_frame(geometry.crop_box)
    part = rgb[y0:y1, x0:x1].astype(np.float32)
    colours = colour_map(hm[y0:y1, x0:x1]).astype(np.float32)
    rgb[y0:y1, x0:x1] = np.clip((1 - weight) * part + weight * colours, 0, 255).astype(np.uint8)
    thick = max(1, round(max(rgb.shape[:2]) / 400))
    cv2.rectangle(rgb, (x0, y0), (x1 - 1, y1 - 1), box_colour, thick)
    return rgb


def colour_bar(height: int, label: str = "relative evidence for malignant") -> np.ndarray:
    """A vertical colour bar (high at the top) with ticks 0, 0.5, 1 and a label, RGB uint8."""
    height = max(int(height), 60)
    bar_w, width = 14, 118
    ramp = colour_map(np.linspace(1, 0, height - 20)[:, None].repeat(bar_w, axis=1))
    img = Image.new("RGB", (width, height), "white")
    img.paste(Image.fromarray(ramp), (4, 10))
    draw = ImageDraw.Draw(img)
    for value, y in ((1.0, 10), (0.5, 10 + (height - 21) // 2), (0.0, height - 11)):
        draw.line([(4 + bar_w, y), (4 + bar_w + 3, y)], fill=(0, 0, 0))
        draw.text((4 + bar_w + 5, y - 5), f"{value:.1f}", fill=(0, 0, 0))
    lines, line = [], ""
    for word in label.split():  # wrap the label beside the ticks
        if line and len(line) + 1 + len(word) > 11:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    for k, text in enumerate(lines[: max(1, (height - 20) // 12)]):
        draw.text((46, 10 + k * 12), text, fill=(60, 60, 60))
    return np.asarray(img)


def with_colour_bar(rgb: np.ndarray, evidence_for: str = "malignant") -> np.ndarray:
    """An RGB image with :func:`colour_bar` beside it (as tall as the image, at least 60 pixels), labelled
    with what the heatmap is evidence for (label 1's name)."""
    bar = colour_bar(rgb.shape[0], f"relative evidence for {evidence_for}")
    h = max(rgb.shape[0], bar.shape[0])
    out = np.full((h, rgb.shape[1] + 6 + bar.shape[1], 3), 255, np.uint8)
    out[:rgb.shape[0], :rgb.shape[1]] = rgb
    out[:bar.shape[0], rgb.shape[1] + 6:] = bar
    return out


def caption_band(text: str, width: int, font_px: int) -> np.ndarray:
    """A white band ``width`` pixels wide holding ``text`` wrapped to it (as many lines as it takes), RGB uint8.

    The caption gets a band of its own below the pictures, so it never covers the image or the heatmap.
    """
    font = ImageFont.load_default(size=font_px)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(3, font_px // 3)
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            while measure.textlength(word, font=font) > width - 2 * pad and len(word) > 1:  # a long path: cut it
                cut = max(1, int(len(word) * (width - 2 * pad) / measure.textlength(word, font=font)))
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cut])
                word = word[cut:]
            trial = f"{line} {word}".strip()
            if line and measure.textlength(trial, font=font) > width - 2 * pad:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    step = round(font_px * 1.3)
    band = Image.new("RGB", (width, 2 * pad + step * len(lines)), "white")
    draw = ImageDraw.Draw(band)
    for k, line in enumerate(lines):
        draw.text((pad, pad + k * step), line, fill=(0, 0, 0), font=font)
    return np.asarray(band)


def explanation_figure(frame: np.ndarray, geometry, model_input: np.ndarray, heatmap: np.ndarray,
                       caption: str = "", evidence_for: str = "malignant") -> np.ndarray:
    """The figure ``explain`` writes: the original frame at full resolution with the heatmap on it
    (:func:`on_original`), the model's input with its heatmap inside the image (scaled to the frame's
    height; :func:`overlay_input`), a colour bar labelled with what the heatmap is evidence for (label 1's
    name, in the bitmap font's characters), and the caption wrapped in a band below them
    (:func:`caption_band`).  RGB uint8."""
    left = on_original(frame, geometry, heatmap)
    h = left.shape[0]
    right = np.asarray(Image.fromarray(overlay_input(model_input, heatmap, geometry)).resize((h, h), Image.BILINEAR))
    bar = colour_bar(h, f"relative evidence for {evidence_for}")
    gap = 8
    width = left.shape[1] + gap + h + gap + bar.shape[1]
    band = caption_band(caption, width, font_px=max(11, round(width / 90)))
    fig = Image.new("RGB", (width, h + band.shape[0]), "white")
    fig.paste(Image.fromarray(left), (0, 0))
    fig.paste(Image.fromarray(right), (left.shape[1] + gap, 0))
    fig.paste(Image.fromarray(bar), (left.shape[1] + gap + h + gap, 0))
    fig.paste(Image.fromarray(band), (0, h))
    return np.asarray(fig)


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB (or gray) uint8 array as PNG, atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")
    return path


__all__ = ["caption_band", "colour_bar", "colour_map", "explanation_figure", "image_region", "on_original", "overlay",
           "overlay_input", "save_png", "with_colour_bar", "within_image"]
