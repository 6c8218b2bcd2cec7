"""Photographs available offline, and what an ImageNet classifier should say about them.

A weight file that carries its own ImageNet classifier (1,000 outputs) can be asked about real photographs.
thyro uses those that ship with installed packages, so nothing is downloaded: matplotlib's sample photograph of
Grace Hopper (``grace_hopper.jpg``, ImageNet class 652 "military uniform" for a trained network) and, where
scikit-image is installed, a few of ``skimage.data``'s photographs with their classes.

:func:`photographs` gives them at a network's input size with their mirror images (a trained classifier answers
the same for both); :func:`colour_crops` gives four crops of the Grace Hopper photograph in colour, in-domain
images for the BatchNorm check of ImageNet weights (:mod:`thyro.models.weights.bncheck`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

#: ImageNet classes a trained classifier may give a photograph as its answer (the first is the usual one).
GRACE_HOPPER_CLASSES = (652,)
#: ``skimage.data`` photographs and the ImageNet classes that answer them (tabby / tiger / Egyptian cat;
#: espresso / cup / coffee mug).
SKIMAGE_PHOTOS = {"chelsea": (281, 282, 285), "coffee": (967, 968, 504)}


@dataclass(frozen=True)
class Photograph:
    """One photograph at a network's size: ``rgb`` uint8 ``(S, S, 3)``, where it comes from, and the ImageNet
    classes a trained classifier answers for it."""

    name: str
    rgb: np.ndarray
    classes: tuple[int, ...]


def _grace_hopper() -> Image.Image | None:
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    try:
        return Image.open(path).convert("RGB")
    except OSError:  # a matplotlib installed without its sample data
        log.warning("matplotlib's sample photograph %s is missing: the checks use fewer photographs", path)
        return None


def _skimage_photos() -> list[tuple[str, Image.Image, tuple[int, ...]]]:
    try:
        import skimage.data  # lazy: optional; scikit-image is not a dependency of thyro
    except ImportError:
        return []
    out = []
    for name, classes in SKIMAGE_PHOTOS.items():
        try:
            out.append((name, Image.fromarray(getattr(skimage.data, name)()).convert("RGB"), classes))
        except Exception:  # noqa: BLE001 - a photograph skimage would have to download: left out
            continue
    return out


@functools.lru_cache(maxsize=4)
def photographs(size: int) -> tuple[Photograph, ...]:
    """The photographs resized to ``size`` x ``size``, each followed by its mirror image (cached; read only)."""
    found = []
    hopper = _grace_hopper()
    if hopper is not None:
        found.append(("grace_hopper.jpg", hopper, GRACE_HOPPER_CLASSES))
    found += _skimage_photos()
    out = []
    for name, image, classes in found:
        rgb = np.asarray(image.resize((size, size), Image.BICUBIC))
        out.append(Photograph(name, rgb, classes))
        out.append(Photograph(f"{name} (mirrored)", np.ascontiguousarray(rgb[:, ::-1]), classes))
    return tuple(out)


def _crops(image: Image.Image, size: int) -> np.ndarray:
    w, h = image.size
    boxes = [(0, 0, w, h), (w // 10, h // 10, w * 8 // 10, h * 7 // 10), (w // 5, 0, w, h // 2),
             (0, h // 3, w * 6 // 10, h)]
    return np.stack([np.asarray(image.crop(b).resize((size, size), Image.BICUBIC)) for b in boxes])


@functools.lru_cache(maxsize=4)
def colour_crops(size: int) -> np.ndarray:
    """uint8 ``(4, size, size, 3)``: four crops of the Grace Hopper photograph in colour (none without it;
    cached, read only)."""
    photo = _grace_hopper()
    return _crops(photo, size) if photo is not None else np.zeros((0, size, size, 3), np.uint8)


def grey_crops(size: int) -> np.ndarray:
    """uint8 ``(4, size, size)``: the same crops in grey, as thyro shows images to a network (none without it)."""
    photo = _grace_hopper()
    return _crops(photo.convert("L"), size) if photo is not None else np.zeros((0, size, size), np.uint8)


__all__ = ["GRACE_HOPPER_CLASSES", "Photograph", "colour_crops", "grey_crops", "photographs"]
