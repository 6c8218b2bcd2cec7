"""Preprocessing measured against hand-checked coordinates on the shared real images.

``fixtures/real_images.json`` holds, for every UD-TN sample image and 41 DDTI images, the scan area
and the burned-in marks (boxes by kind), drawn semi-automatically and checked by eye; UD-TN images
also give the nodule's box (from its calipers), DDTI nodules come from the data set's outlines.
Coordinates only: the images stay in ../shared/data.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from thyro.data.marks import _tophat
from thyro.data.preprocess import PreprocessConfig, Preprocessor
from thyro.data.readers import load_image

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "real_images.json").read_text(encoding="utf-8"))["images"]
#: Kinds the removal target is measured on (calipers and markers); scales, icons and text are reported.
MEASURED = ("caliper", "marker")


def _area(box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def _intersection(a, b) -> int:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


@pytest.fixture(scope="module")
def processed(shared_data):
    """Each fixture image read, preprocessed with the defaults, with its mark mask."""
    pre = Preprocessor(PreprocessConfig())
    out = []
    for entry in FIXTURES:
        path = shared_data / entry["dataset"] / entry["file"]
        if not path.is_file():
            pytest.skip(f"{path} not found")
        rgb = load_image(path, color=True).pixels
        _, geometry = pre.process(rgb)
        out.append((entry, rgb, geometry, pre.mark_mask(rgb, geometry.crop_box)))
    return out


def test_fixtures_are_well_formed():
    assert sum(e["dataset"] == "udtn-sample" for e in FIXTURES) == 25
    assert sum(e["dataset"] == "ddti" for e in FIXTURES) >= 36
    for e in FIXTURES:
        w, h = e["size"]
        for box in [e["scan_area"]] + [m["box"] for m in e["marks"]] + ([e["nodule"]] if "nodule" in e else []):
            assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h, (e["file"], box)
        assert {m["kind"] for m in e["marks"]} <= {"caliper", "marker", "scale", "icon", "text"}
    assert sum(m["kind"] == "caliper" for e in FIXTURES for m in e["marks"]) >= 150


@pytest.mark.shared
def test_crop_keeps_the_scan_area_on_every_image(processed):
    """At least 98% of the tissue image is kept on every image, and little else."""
    worst = []
    for entry, rgb, geometry, _ in processed:
        scan, crop = entry["scan_area"], geometry.crop_box
        kept = _intersection(scan, crop) / _area(scan)
        extra = (_area(crop) - _intersection(scan, crop)) / _area(scan)
        worst.append((kept, entry["file"]))
        assert kept >= 0.98, (entry["file"], crop, scan, kept)
        assert extra <= 0.10, (entry["file"], crop, scan, extra)  # borders, text columns and scales cut
        if entry["dataset"] == "ddti":
            assert geometry.scan_method == "layout" and not geometry.warning
    assert min(worst)[0] >= 0.98


@pytest.mark.shared
def test_every_ddti_outline_stays_inside_the_crop(processed, ddti_import):
    """The part of each nodule outline that lies on the tissue image is inside the crop.

    Hand-drawn outlines stray a few pixels past the tissue image into the black border; those
    points are not tissue and may be cut.  Both the fixture and the crop place the tissue image's
    JPEG-blurred edge, so a point may lie up to one pixel past the crop.
    """
    man = ddti_import.manifest
    rois = {Path(str(man.abspath(i))).name: r for i, r in zip(man.ids, man.rois())}
    checked = 0
    for entry, _, geometry, _ in processed:
        if entry["dataset"] != "ddti" or not rois.get(entry["file"]):
            continue
        pts = np.concatenate([np.asarray(p, float) for p in rois[entry["file"]]["polygons"]])
        sx0, sy0, sx1, sy1 = entry["scan_area"]
        on_tissue = pts[(pts[:, 0] >= sx0) & (pts[:, 0] <= sx1) & (pts[:, 1] >= sy0) & (pts[:, 1] <= sy1)]
        x0, y0, x1, y1 = geometry.crop_box
        inside = ((on_tissue[:, 0] >= x0 - 1) & (on_tissue[:, 0] <= x1 + 1) & (on_tissue[:, 1] >= y0 - 1)
                  & (on_tissue[:, 1] <= y1 + 1))
        assert inside.all(), (entry["file"], geometry.crop_box, on_tissue[~inside][:5])
        checked += 1
    assert checked >= 30


def _mark_pixels(rgb: np.ndarray, gray: np.ndarray, box) -> np.ndarray:
    """A fixture box's mark pixels: coloured (chroma > 12) or thin and bright (top-hat >= 60, >= 150)."""
    x0, y0, x1, y1 = box
    chroma = rgb[y0:y1, x0:x1].max(axis=2).astype(int) - rgb[y0:y1, x0:x1].min(axis=2).astype(int)
    th = _tophat(gray)[y0:y1, x0:x1]
    out = np.zeros(gray.shape, bool)
    out[y0:y1, x0:x1] = (chroma > 12) | ((th >= 60) & (gray[y0:y1, x0:x1] >= 150))
    return out


@pytest.mark.shared
def test_calipers_and_markers_removed_nodules_kept(processed, ddti_import):
    """>= 95% of caliper and marker pixels removed, <= 1% of nodule pixels changed (pooled)."""
    man = ddti_import.manifest
    rois = {Path(str(man.abspath(i))).name: r for i, r in zip(man.ids, man.rois())}
    removed: dict[str, list[int]] = {}
    nodule = {"changed": 0, "total": 0}
    for entry, rgb, geometry, mask in processed:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        crop = np.zeros(gray.shape, bool)
        x0, y0, x1, y1 = geometry.crop_box
        crop[y0:y1, x0:x1] = True
        boxes = np.zeros(gray.shape, bool)
        for m in entry["marks"]:
            bx0, by0, bx1, by1 = m["box"]
            boxes[max(0, by0 - 3):by1 + 3, max(0, bx0 - 3):bx1 + 3] = True
            px = _mark_pixels(rgb, gray, m["box"]) & crop
            counts = removed.setdefault(f"{entry['dataset']}:{m['kind']}", [0, 0])
            counts[0] += int((px & mask).sum())
            counts[1] += int(px.sum())
        nod = np.zeros(gray.shape, np.uint8)
        if entry["dataset"] == "ddti":
            for poly in (rois.get(entry["file"]) or {}).get("polygons", []):
                cv2.fillPoly(nod, [np.round(np.asarray(poly)).astype(np.int32)], 1)
        else:
            bx0, by0, bx1, by1 = entry["nodule"]
            nod[by0:by1, bx0:bx1] = 1
        nod = nod.astype(bool) & ~boxes & crop
        changed = int((nod & mask).sum())
        assert changed <= 0.05 * max(int(nod.sum()), 1), entry["file"]  # no image loses much of its nodule
        nodule["changed"] += changed
        nodule["total"] += int(nod.sum())

    def share(kinds, datasets=("udtn-sample", "ddti")) -> float:
        pairs = [removed.get(f"{d}:{k}", [0, 0]) for d in datasets for k in kinds]
        return sum(p[0] for p in pairs) / max(sum(p[1] for p in pairs), 1)

    assert share(MEASURED) >= 0.95, {k: round(v[0] / max(v[1], 1), 3) for k, v in removed.items()}
    assert share(MEASURED, ("ddti",)) >= 0.95
    assert share(MEASURED, ("udtn-sample",)) >= 0.90  # dim gray calipers are the ones missed
    assert nodule["changed"] <= 0.01 * nodule["total"]
    assert nodule["total"] > 500_000


@pytest.mark.shared
def test_all_ddti_outlines_within_the_crop(ddti_import):
    """Over every outlined DDTI image, no outline point lies more than 8 pixels past the crop.

    Hand-drawn outlines stray up to 7 pixels into the black border beside the tissue image (329_1);
    338_2's second outline lies wholly in the border below the image (an annotation error), so it is
    the one exception.
    """
    from thyro.data.readers import read_gray

    man = ddti_import.manifest
    pre = Preprocessor(PreprocessConfig())
    strays = {}
    for image, roi in zip(man.ids, man.rois()):
        if not roi:
            continue
        path = man.abspath(image)
        x0, y0, x1, y1 = pre.crop_box(read_gray(path))
        pts = np.concatenate([np.asarray(p, float) for p in roi["polygons"]])
        out = np.maximum.reduce([x0 - pts[:, 0], pts[:, 0] - x1, y0 - pts[:, 1], pts[:, 1] - y1])
        strays[Path(str(path)).name] = float(out.max())
    assert len(strays) >= 450
    worst = {k: v for k, v in strays.items() if v > 8}
    assert set(worst) <= {"338_2.jpg"}, worst
