"""How well the scan area and mark removal do, measured on hand-checked real images and on the phantom.

Real images (``tests/data/fixtures/real_images.json``, coordinates only; images in ../shared/data):

* scan area: the share of the fixture's tissue image inside the crop (min and median), and the crop's
  area outside it (as a share of the tissue image);
* DDTI outlines: the farthest an outline point lies outside the crop;
* marks: the share of mark pixels (coloured, or thin and bright, inside the fixture's boxes) that the
  default preprocessing inpaints, by data set and kind; the share of nodule pixels it changes
  (DDTI outline, UD-TN caliper box; mark boxes excluded).

Phantom (``generate_cohort(marks=True)``): the share of drawn mark pixels found, and of echogenic
foci pixels touched.

Usage::

    python benchmarks/marks_quality.py                      # needs ../shared/data
    python benchmarks/marks_quality.py --phantom-patients 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from thyro.cli.console import set_quiet
from thyro.data.marks import _tophat
from thyro.data.preprocess import PreprocessConfig, Preprocessor
from thyro.data.readers import load_image

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data" / "fixtures" / "real_images.json"


def _area(b) -> int:
    return max(0, b[2] - b[0]) * max(0, b[3] - b[1])


def _inter(a, b) -> int:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def ddti_outlines(ddti: Path) -> dict[str, list]:
    from thyro.data.importers import import_ddti

    set_quiet(True)
    res = import_ddti(ddti, Path(tempfile.mkdtemp(prefix="thyro-ddti-")))
    man = res.manifest
    return {Path(str(man.abspath(i))).name: r for i, r in zip(man.ids, man.rois()) if r}


def real_images(data: Path) -> None:
    doc = json.loads(FIXTURES.read_text(encoding="utf-8"))["images"]
    outlines = ddti_outlines(data / "ddti")
    pre = Preprocessor(PreprocessConfig())
    kept, extra, removed, nodule, strays = [], [], {}, {}, []
    for e in doc:
        rgb = load_image(data / e["dataset"] / e["file"], color=True).pixels
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        _, g = pre.process(rgb)
        crop, scan = g.crop_box, e["scan_area"]
        kept.append(_inter(crop, scan) / _area(scan))
        extra.append((_area(crop) - _inter(crop, scan)) / _area(scan))
        mask = pre.mark_mask(rgb, crop)
        th = _tophat(gray)
        chroma = rgb.max(axis=2).astype(int) - rgb.min(axis=2).astype(int)
        inside = np.zeros(gray.shape, bool)
        inside[crop[1]:crop[3], crop[0]:crop[2]] = True
        boxes = np.zeros(gray.shape, bool)
        for m in e["marks"]:
            x0, y0, x1, y1 = m["box"]
            boxes[max(0, y0 - 3):y1 + 3, max(0, x0 - 3):x1 + 3] = True
            b = np.zeros(gray.shape, bool)
            b[y0:y1, x0:x1] = True
            px = b & inside & ((chroma > 12) | ((th >= 60) & (gray >= 150)))
            c = removed.setdefault((e["dataset"], m["kind"]), [0, 0])
            c[0] += int((px & mask).sum())
            c[1] += int(px.sum())
        nod = np.zeros(gray.shape, np.uint8)
        if e["dataset"] == "ddti":
            roi = outlines.get(e["file"])
            for poly in (roi or {}).get("polygons", []):
                cv2.fillPoly(nod, [np.round(np.asarray(poly)).astype(np.int32)], 1)
            if roi:
                pts = np.concatenate([np.asarray(p, float) for p in roi["polygons"]])
                strays.append(float(np.maximum.reduce([crop[0] - pts[:, 0], pts[:, 0] - crop[2],
                                                       crop[1] - pts[:, 1], pts[:, 1] - crop[3]]).max()))
        else:
            x0, y0, x1, y1 = e["nodule"]
            nod[y0:y1, x0:x1] = 1
        nod = nod.astype(bool) & ~boxes & inside
        c = nodule.setdefault(e["dataset"], [0, 0])
        c[0] += int((nod & mask).sum())
        c[1] += int(nod.sum())
    print(f"## real images: {len(doc)} fixture images ({sum(e['dataset'] == 'ddti' for e in doc)} DDTI)")
    print(f"scan area kept: min {min(kept):.2%}, median {statistics.median(kept):.2%}; "
          f"crop outside it: median {statistics.median(extra):.2%}, max {max(extra):.2%}")
    print(f"DDTI outline points past the crop: at most {max(strays):.0f} px "
          f"(sorted, largest five: {sorted(strays)[-5:]})")
    print("| data set | kind | mark pixels | removed |")
    print("| --- | --- | ---: | ---: |")
    for (ds, kind), (a, b) in sorted(removed.items()):
        print(f"| {ds} | {kind} | {b} | {a / max(b, 1):.1%} |")
    for ds in ("udtn-sample", "ddti", None):
        pairs = [v for (d, k), v in removed.items() if k in ("caliper", "marker") and (ds is None or d == ds)]
        a, b = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        print(f"calipers and markers removed, {ds or 'both'}: {a / b:.1%} of {b} pixels")
    a, b = sum(v[0] for v in nodule.values()), sum(v[1] for v in nodule.values())
    print(f"nodule pixels changed: {a} of {b} ({a / b:.3%})")


def phantom(patients: int) -> None:
    from thyro.data.phantom import generate_cohort

    root = Path(tempfile.mkdtemp(prefix="thyro-marks-"))
    path = generate_cohort(root / "c", n_patients=patients, images_per_patient=(1, 2), size=256, seed=5, marks=True)
    df = pd.read_csv(path)
    pre = Preprocessor(PreprocessConfig(size=256, remove_frame=False))
    drawn = found = foci = touched = 0
    for img, mm, fm in zip(df["image"], df["mark_mask"], df["foci_mask"]):
        rgb = load_image(path.parent / img, color=True).pixels
        marks = np.asarray(Image.open(path.parent / mm)) > 0
        focus = np.asarray(Image.open(path.parent / fm)) > 0
        mask = pre.mark_mask(rgb)
        drawn += int(marks.sum())
        found += int((marks & mask).sum())
        free = focus & ~cv2.dilate(marks.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        foci += int(free.sum())
        touched += int((free & mask).sum())
    print(f"## phantom with marks: {len(df)} images, 256 px")
    print(f"mark pixels found: {found / drawn:.1%} of {drawn}; echogenic-foci pixels touched: "
          f"{touched / max(foci, 1):.2%} of {foci}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--phantom-patients", type=int, default=40)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    if (args.data / "ddti").is_dir():
        real_images(args.data)
    else:
        print(f"no real images at {args.data}: skipped", file=sys.stderr)
    phantom(args.phantom_patients)


if __name__ == "__main__":
    main()
