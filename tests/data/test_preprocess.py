"""Ultrasound preprocessing: frame removal, ROI crop, inpainting, resize; on synthetic and real images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from thyro.data.manifest import manifest_from_records, roi_bbox, write_manifest
from thyro.data.preprocess import (
    PreprocessConfig,
    Preprocessor,
    find_sector,
    load_preprocess_config,
    mark_mask,
    read_pixels,
    resize_square,
)
from thyro.data.preview import preview_sheet
from thyro.data.readers import load_image
from thyro.errors import ConfigError, DataError


def _screen(h=200, w=300, box=(30, 15, 240, 170), seed=0) -> np.ndarray:
    """A fake scanner screen: black, a speckled sector in ``box``, text blobs and depth dots outside."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = rng.integers(20, 200, (y1 - y0, x1 - x0))
    for k in range(8):  # settings text column at the right
        y = y0 + 4 + k * 12
        img[y:y + 7, x1 + 12:x1 + 14] = 255
        img[y + 3, x1 + 12:x1 + 20] = 255
    img[y0:y1:20, 10] = 230  # depth dots at the left
    img[y1 + 12:y1 + 19, x0 + 5:x0 + 6] = 255  # a label below
    return img


def test_find_sector_drops_black_border_text_and_dots():
    box = (30, 15, 240, 170)
    found = find_sector(_screen(box=box))
    assert all(abs(a - b) <= 2 for a, b in zip(found, box)), found


def test_find_sector_whole_image_when_no_frame():
    rng = np.random.default_rng(1)
    img = rng.integers(30, 220, (90, 120)).astype(np.uint8)
    assert find_sector(img) == (0, 0, 120, 90)
    assert find_sector(np.zeros((50, 60), np.uint8)) == (0, 0, 60, 50)


def test_output_shape_dtype_and_padding_keep_aspect():
    pre = Preprocessor(PreprocessConfig(size=64, remove_frame=False))
    out = pre(np.full((50, 100), 200, np.uint8))
    assert out.shape == (64, 64) and out.dtype == np.uint8
    # a 2:1 image keeps its aspect: 32 rows of content, 16 rows of padding above and below
    assert (out[:16] == 0).all() and (out[-16:] == 0).all() and (out[16:48] == 200).all()
    stretched = Preprocessor(PreprocessConfig(size=64, remove_frame=False, keep_aspect=False))(np.full((50, 100), 200, np.uint8))
    assert (stretched == 200).all()


def test_rgb_and_rgba_inputs_become_one_channel():
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 255
    out = Preprocessor(PreprocessConfig(size=20, remove_frame=False))(rgb)
    assert out.shape == (20, 20)
    assert abs(int(out.mean()) - round(0.299 * 255)) <= 1  # ITU-R 601 luma of pure red
    rgba = np.concatenate([rgb, np.full((40, 40, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(Preprocessor(PreprocessConfig(size=20, remove_frame=False))(rgba), out)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.float32), np.zeros((4, 4, 2), np.uint8), [[1, 2]]])
def test_bad_input_is_a_clear_error(bad):
    with pytest.raises(DataError):
        Preprocessor()(bad)


def test_frame_removal_then_resize_sees_only_the_sector():
    img = _screen()
    out = Preprocessor(PreprocessConfig(size=64, keep_aspect=False))(img)
    # the sector's speckle is everywhere: no black border columns/rows remain
    assert out[:, :2].mean() > 40 and out[:, -2:].mean() > 40 and out[:2].mean() > 40 and out[-2:].mean() > 40


def test_roi_crop_with_margin_and_origin():
    img = np.full((200, 300), 40, np.uint8)
    img[80:120, 100:160] = 220  # the "nodule"
    roi = {"box": [100, 80, 160, 120]}
    cfg = PreprocessConfig(size=32, remove_frame=False, roi_crop=True, roi_margin=0.0, keep_aspect=False)
    out = Preprocessor(cfg)(img, roi=roi)
    assert out.mean() > 200  # nothing but the nodule
    with_margin = Preprocessor(cfg.model_copy(update={"roi_margin": 0.5}))(img, roi=roi)
    assert 60 < with_margin.mean() < 200  # nodule plus surroundings
    # the same image handed over as a crop starting at (50, 30) gives the same result
    shifted = Preprocessor(cfg)(img[30:, 50:], roi=roi, origin=(50, 30))
    assert np.array_equal(shifted, out)
    # without an ROI the roi_crop setting falls back to the whole (frame-cropped) image
    assert Preprocessor(cfg)(img).mean() < 100


def test_inpaint_marks_removes_green_calipers():
    rng = np.random.default_rng(0)
    gray = rng.integers(90, 110, (80, 80)).astype(np.uint8)
    rgb = np.stack([gray] * 3, axis=2)
    rgb[40, 20:60] = (0, 255, 0)
    rgb[20:60, 40] = (0, 255, 0)
    assert mark_mask(rgb).sum() >= 79
    base = PreprocessConfig(size=80, remove_frame=False, inpaint_marks=False)
    plain = Preprocessor(base)(rgb)
    cleaned = Preprocessor(base.model_copy(update={"inpaint_marks": True}))(rgb)
    assert plain[40, 20:60].mean() > 140  # the cross shows through as bright gray
    assert abs(float(cleaned[40, 20:60].mean()) - 100) < 12  # filled in like its surroundings


def test_config_is_strict_and_loads_from_study_yaml(tmp_path):
    with pytest.raises(ConfigError, match="roi_marign"):
        PreprocessConfig.parse({"roi_marign": 0.2})
    study = tmp_path / "study.yaml"
    study.write_text("name: x\npreprocess:\n  size: 96\n  roi_crop: true\n")
    cfg = load_preprocess_config(study, size=None)
    assert cfg.size == 96 and cfg.roi_crop
    assert load_preprocess_config(study, size=48).size == 48
    block = tmp_path / "block.yaml"
    block.write_text("size: 80\n")
    assert load_preprocess_config(block).size == 80
    other = tmp_path / "other.yaml"
    other.write_text("train:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="preprocess"):
        load_preprocess_config(other)


def test_resize_square_upscales():
    out = resize_square(np.full((10, 20), 7, np.uint8), 40)
    assert out.shape == (40, 40) and (out[10:30] == 7).all() and (out[:10] == 0).all()


# ---------------------------------------------------------------------------------------------
# real images


def _ddti_rois(ddti_dir: Path, n: int) -> list[tuple[Path, dict]]:
    out = []
    for xml in sorted(ddti_dir.glob("*.xml"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0):
        text = xml.read_text(errors="replace")
        for m in re.finditer(r"<mark><image>(\d+)</image><svg>(.*?)</svg></mark>", text, re.S):
            path = ddti_dir / f"{xml.stem}_{m.group(1)}.jpg"
            try:
                polys = [[[p["x"], p["y"]] for p in r["points"]] for r in json.loads(m.group(2))]
            except (ValueError, KeyError, TypeError):
                continue
            polys = [p for p in polys if len(p) >= 3]
            if path.is_file() and polys:
                out.append((path, {"polygons": polys}))
        if len(out) >= n:
            break
    return out[:n]


@pytest.mark.shared
def test_ddti_sector_contains_the_nodule_and_drops_the_margins(ddti_dir):
    pre = Preprocessor(PreprocessConfig(size=128))
    cases = _ddti_rois(ddti_dir, 12)
    assert len(cases) >= 10
    for path, roi in cases:
        gray = load_image(path).pixels
        h, w = gray.shape
        x0, y0, x1, y1 = pre.crop_box(gray)
        rx0, ry0, rx1, ry1 = roi_bbox(roi)
        # the outline is hand-drawn and may stray a few pixels past the sector edge
        assert x0 <= rx0 + 8 and y0 <= ry0 + 8 and x1 >= rx1 - 8 and y1 >= ry1 - 8, (path.name, (x0, y0, x1, y1), roi_bbox(roi))
        inside = gray[y0:y1, x0:x1]
        outside = np.ones_like(gray, bool)
        outside[y0:y1, x0:x1] = False
        assert gray[outside].mean() < 0.35 * inside.mean(), path.name  # what is cut away is dark screen
        assert (inside < 5).mean() < (gray < 5).mean() / 2, path.name  # most of the near-black is gone
        assert (x1 - x0) * (y1 - y0) > 0.3 * h * w, path.name  # the sector itself is kept
        out = pre.from_file(path)
        assert out.shape == (128, 128) and out.dtype == np.uint8


@pytest.mark.shared
def test_ddti_text_column_and_dual_views(ddti_dir):
    gray = load_image(ddti_dir / "100_1.jpg").pixels  # settings column at the right, label below, dots left
    h, w = gray.shape
    x0, y0, x1, y1 = find_sector(gray)
    assert 25 <= x0 and x1 <= w - 25 and y1 <= h - 30
    gray = load_image(ddti_dir / "123_1.jpg").pixels  # two views split by a black line: one sector
    x0, y0, x1, y1 = find_sector(gray)
    assert x1 - x0 > 0.6 * gray.shape[1]


@pytest.mark.shared
def test_ddti_roi_crop_centres_on_the_nodule(ddti_dir):
    path, roi = _ddti_rois(ddti_dir, 1)[0]
    pre = Preprocessor(PreprocessConfig(size=64, roi_crop=True, roi_margin=0.15))
    gray = load_image(path).pixels
    x0, y0, x1, y1 = pre.crop_box(gray, roi)
    rx0, ry0, rx1, ry1 = roi_bbox(roi)
    assert x0 <= rx0 and y0 <= ry0 and x1 >= rx1 and y1 >= ry1
    assert (x1 - x0) <= 1.4 * (rx1 - rx0) + 2 and (y1 - y0) <= 1.4 * (ry1 - ry0) + 2


@pytest.mark.shared
def test_udtn_green_marks_are_inpainted(udtn_dir):
    files = sorted(udtn_dir.rglob("*.jpg"))
    assert files
    marked = [f for f in files if mark_mask(load_image(f, color=True).pixels).sum() > 20]
    assert marked, "the UD-TN sample should contain coloured caliper marks"
    cfg = PreprocessConfig(size=128, inpaint_marks=True)
    for f in marked[:3]:
        rgb = load_image(f, color=True).pixels
        from thyro.data.preprocess import inpaint_marks

        assert mark_mask(inpaint_marks(rgb)).sum() < 0.2 * mark_mask(rgb).sum()
        out = Preprocessor(cfg).from_file(f)
        assert out.shape == (128, 128) and out.dtype == np.uint8
        # from_file is exactly __call__ on the decoded pixels
        pixels, origin = read_pixels(f, color=True)
        assert np.array_equal(out, Preprocessor(cfg)(pixels, origin=origin))


@pytest.mark.shared
def test_udtn_already_cropped_images_keep_their_tissue(udtn_dir):
    for f in sorted(udtn_dir.rglob("*.jpg"))[:5]:
        gray = load_image(f).pixels
        h, w = gray.shape
        x0, y0, x1, y1 = find_sector(gray)
        assert (x1 - x0) * (y1 - y0) > 0.5 * h * w


def test_preview_sheet_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    recs = []
    for k in range(3):
        img = _screen(seed=k)
        Image.fromarray(img).save(tmp_path / f"im{k}.png")
        recs.append({"image": f"im{k}.png", "label": k % 2, "patient_id": f"p{k}",
                     "roi": json.dumps({"box": [60, 40, 120, 100]})})
    Image.fromarray(rng.integers(0, 255, (10, 10)).astype(np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    recs.append({"image": "broken.png", "label": "", "patient_id": "p9"})
    man = manifest_from_records(recs, tmp_path)
    path = write_manifest(man.df, tmp_path / "manifest.csv", root=tmp_path)
    out = preview_sheet(path, tmp_path / "sheet.png", PreprocessConfig(size=64), n=10, cell=64)
    with Image.open(out) as sheet:
        assert sheet.size == (2 * 2 * 64 + 8, 18 + 2 * (64 + 30))  # a title line: what label 1 means
        arr = np.asarray(sheet.convert("RGB"))
    assert ((arr[..., 1] > 200) & (arr[..., 0] < 80)).any()  # the green ROI outline is drawn
    assert not list(tmp_path.glob(".sheet.png*"))  # no temporary left behind


# ---------------------------------------------------------------------------------------------
# scan area from the layout; geometry


def _frameless(h=200, w=300, seed=0, floor=2) -> np.ndarray:
    """A frameless export: bright tissue above, dark deep tissue (sparse faint echoes) below, no border."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), floor, np.uint8)
    img[: h // 2] = rng.integers(40, 200, (h // 2, w))
    deep = rng.random((h - h // 2, w)) < np.linspace(0.35, 0.02, h - h // 2)[:, None]
    img[h // 2:][deep] = rng.integers(6, 40, int(deep.sum()))
    return img


def test_scan_area_keeps_dark_deep_tissue_of_a_frameless_export():
    from thyro.data.scan_area import find_scan_area

    img = _frameless()
    img[185:195, 10:40] = 230  # an icon drawn over the dark deep tissue
    area = find_scan_area(img)
    assert area.box == (0, 0, 300, 200) and area.method == "layout" and not area.warning


def test_scan_area_cuts_a_framed_screen_at_its_border():
    from thyro.data.scan_area import find_scan_area

    img = _screen(box=(30, 15, 240, 170))
    img[120:170, 30:240] = np.random.default_rng(3).integers(6, 25, (50, 210))  # dark deep tissue, above the floor
    assert find_scan_area(img).box == (30, 15, 240, 170)


def test_scan_area_unsure_uses_the_whole_frame_with_a_warning():
    from thyro.data.scan_area import find_scan_area

    img = np.zeros((120, 160), np.uint8)
    img[10:20, 10:20] = 200  # nothing that looks like a tissue image
    area = find_scan_area(img)
    assert area.box == (0, 0, 160, 120) and area.method == "whole-image" and "whole frame" in area.warning
    _, geometry = Preprocessor(PreprocessConfig(size=32)).process(img)
    assert geometry.scan_method == "whole-image" and geometry.warning and geometry.frame_kept == 1.0


def test_geometry_describes_the_crop_and_maps_back():
    img = _screen(box=(30, 15, 240, 170))
    out, g = Preprocessor(PreprocessConfig(size=64)).process(img)
    assert g.crop_box == g.scan_box == (30, 15, 240, 170) and g.scan_method == "layout"
    assert g.source_size == (300, 200) and g.size == 64
    assert g.resized == (64, round(155 * 64 / 210)) and g.offset == (0, (64 - g.resized[1]) // 2)
    assert g.frame_kept == pytest.approx(210 * 155 / (300 * 200)) and g.scan_kept == 1.0
    # a map on the model's input goes back onto the source pixels of the crop, zero elsewhere
    hm = np.zeros((64, 64), np.float32)
    hm[g.offset[1]:g.offset[1] + g.resized[1], :32] = 1.0  # left half of the image content
    back = g.to_source(hm)
    assert back.shape == (200, 300)
    assert back[100, 60] == pytest.approx(1.0) and back[100, 200] == pytest.approx(0.0)
    assert back[5, 5] == 0.0 and back[:, :30].max() == 0.0
    d = g.as_dict()
    assert json.loads(json.dumps(d))["crop_box"] == [30, 15, 240, 170]
    with pytest.raises(DataError, match="does not match"):
        g.to_source(np.zeros((10, 10)))


def test_dicom_ultrasound_region_is_the_scan_area(tmp_path):
    from test_readers import write_dicom  # tests/data is on the path of its own test modules

    frame = _screen(h=120, w=160, box=(20, 10, 130, 100))
    path = write_dicom(tmp_path / "us.dcm", frame, regions=[(20, 10, 129, 99, 1)])
    out, g = Preprocessor(PreprocessConfig(size=32)).process_file(path)
    assert g.scan_method == "dicom-region" and g.origin == (20, 10) and g.frame_size == (160, 120)
    assert g.crop_box == (0, 0, 110, 90) and g.to_frame(g.crop_box) == (20, 10, 130, 100)
    assert g.frame_kept == pytest.approx(110 * 90 / (160 * 120))


def _small_manifest(tmp_path, n=3):
    recs = []
    for k in range(n):
        Image.fromarray(_screen(seed=k)).save(tmp_path / f"im{k}.png")
        recs.append({"image": f"im{k}.png", "label": k % 2, "patient_id": f"p{k}",
                     "roi": json.dumps({"box": [60, 40, 120, 100]})})
    (tmp_path / "broken.png").write_bytes(b"not a png")
    recs.append({"image": "broken.png", "label": "", "patient_id": "p9"})
    man = manifest_from_records(recs, tmp_path)
    return write_manifest(man.df, tmp_path / "manifest.csv", root=tmp_path)


def test_preview_sheet_scales_with_the_output_size(tmp_path):
    path = _small_manifest(tmp_path)
    small = preview_sheet(path, tmp_path / "small.png", PreprocessConfig(size=64), n=4)
    large = preview_sheet(path, tmp_path / "large.png", PreprocessConfig(size=400), n=4)
    with Image.open(small) as a, Image.open(large) as b:
        assert a.size[0] == 2 * 2 * 192 + 8  # at least 192 px per picture
        assert b.size[0] == 2 * 2 * 400 + 8 and b.size[1] == 18 + 2 * (400 + 30)


def test_preview_per_image_and_report(tmp_path):
    from thyro.data.preview import REPORT_COLUMNS, preprocess_report, preview_images

    path = _small_manifest(tmp_path)
    written = preview_images(path, tmp_path / "pics", PreprocessConfig(size=64))
    assert sorted(p.name for p in written) == ["im0.png", "im1.png", "im2.png"]
    with Image.open(written[0]) as pic:  # the raw image at full resolution beside the model's input
        assert pic.size == (300 + 8 + 200, 200 + 22)
    report = pd.read_csv(tmp_path / "pics" / "preprocess.csv", keep_default_na=False)
    assert list(report.columns) == REPORT_COLUMNS and len(report) == 4
    row = report[report["image"] == "im0.png"].iloc[0]
    assert row["scan_method"] == "layout" and row["scan_box"] == "30 15 240 170"
    assert float(row["frame_kept"]) == pytest.approx(210 * 155 / (300 * 200), abs=1e-3)
    assert "broken.png" in report.loc[report["error"] != "", "image"].tolist()
    out = preprocess_report(path, tmp_path / "report.csv", PreprocessConfig(size=64))
    assert len(pd.read_csv(out)) == 4


def test_cli_preview_per_image_report_and_cache_summary(tmp_path, capsys):
    from thyro.cli import main

    path = _small_manifest(tmp_path)
    assert main(["-q", "data", "preview", str(path), "--out", str(tmp_path / "pics"), "--per-image",
                 "--size", "64", "--report", str(tmp_path / "r.csv")]) == 0
    assert len(list((tmp_path / "pics").glob("im*.png"))) == 3 and (tmp_path / "r.csv").is_file()
    good = manifest_from_records([{"image": f"im{k}.png", "label": k % 2, "patient_id": f"p{k}"} for k in range(3)],
                                 tmp_path)
    gpath = write_manifest(good.df, tmp_path / "good.csv", root=tmp_path)
    assert main(["data", "cache", str(gpath), "--size", "32", "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "scan area: 3 layout" in out and "preprocess.csv" in out


def test_scan_area_of_a_fan_keeps_the_deepest_point_of_its_arc():
    """A convex probe's image ends on an arc: the crop reaches its deepest point and cuts the text below."""
    from thyro.data.scan_area import find_scan_area

    rng = np.random.default_rng(5)
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - 160, yy + 60)
    fan = (r > 80) & (r < 250) & (np.abs(np.arctan2(xx - 160, yy + 60)) < 0.6)
    img = np.zeros((h, w), np.uint8)
    img[fan] = rng.integers(20, 200, int(fan.sum()))
    img[215:225, 40:120] = 230  # a label below the fan
    img[215:225, 45:115:6] = 0
    deepest = int(np.nonzero(fan.any(axis=1))[0].max()) + 1
    x0, y0, x1, y1 = find_scan_area(img).box
    assert deepest <= y1 <= deepest + 2 and y1 < 215
    cols = np.nonzero(fan.any(axis=0))[0]
    assert x0 <= cols.min() and x1 >= cols.max() + 1


def test_scan_area_of_dual_views_of_different_depths():
    from thyro.data.scan_area import find_scan_area

    rng = np.random.default_rng(6)
    img = np.zeros((220, 320), np.uint8)
    img[10:150, 20:150] = rng.integers(20, 200, (140, 130))   # left view, shallower
    img[10:190, 152:300] = rng.integers(20, 200, (180, 148))  # right view, deeper
    img[200:210, 30:100:3] = 230  # a label row below
    assert find_scan_area(img).box == (20, 10, 300, 190)
