"""Burned-in marks: found and inpainted, while echogenic foci and calcifications survive.

Synthetic cases check each detector and each kind of tissue it must leave alone; the phantom with
marks (drawn at known pixels, with the nodule's foci known) measures removal and survival.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from thyro.data.marks import colour_mask, detect_marks, inpaint, mark_kinds, white_marks
from thyro.data.phantom import draw_marks, generate_cohort, text_bitmap
from thyro.data.preprocess import PreprocessConfig, Preprocessor
from thyro.data.readers import load_image


def _tissue(h=160, w=200, seed=0, level=90.0) -> np.ndarray:
    """Speckle-like gray tissue (smoothed noise) around ``level``."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.2)
    return np.clip(level + 28 * noise / noise.std(), 0, 255).astype(np.uint8)


def _cross(img, cx, cy, arm=4, shape="+", gap=1, value=245):
    dirs = ((1, 0), (-1, 0), (0, 1), (0, -1)) if shape == "+" else ((1, 1), (1, -1), (-1, 1), (-1, -1))
    drawn = np.zeros(img.shape[:2], bool)
    for dx, dy in dirs:
        for k in range(gap + 1, gap + arm + 1):
            drawn[cy + dy * k, cx + dx * k] = True
    img[drawn] = value
    return drawn


def _focus(img, cx, cy, sigma=1.6, peak=255):
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
    out = np.maximum(img.astype(np.float32), peak * blob)
    img[:] = out.astype(np.uint8)
    return blob > 0.5


def test_white_calipers_are_found_and_foci_are_not():
    img = _tissue()
    strokes = np.zeros(img.shape, bool)
    for (cx, cy), shape, gap in (((40, 40), "+", 0), ((90, 40), "x", 1), ((140, 40), "+", 1), ((60, 110), "x", 0)):
        strokes |= _cross(img, cx, cy, arm=4, shape=shape, gap=gap)
    foci = np.zeros(img.shape, bool)
    for cx, cy, sigma in ((110, 100, 1.4), (130, 120, 2.0), (160, 100, 3.0), (175, 130, 1.0)):
        foci |= _focus(img, cx, cy, sigma)
    mask = detect_marks(img)
    assert (mask & strokes).sum() >= 0.95 * strokes.sum()
    assert not (mask & foci).any()  # punctate foci and calcifications are blobs, never crosses


def test_a_caliper_on_a_calcification_takes_only_its_own_stroke():
    img = _tissue(seed=6)
    cx, cy = 80, 70
    band = np.zeros(img.shape, bool)  # a rim calcification crossing the end of the lower arm
    band[cy + 6:cy + 9, cx - 14:cx + 15] = True
    img[band] = 235
    strokes = _cross(img, cx, cy, arm=4, shape="+", gap=1)
    mask = detect_marks(img)
    assert (mask & strokes).sum() >= 0.95 * strokes.sum()
    beside = band.copy()
    beside[:, cx - 3:cx + 4] = False  # the arm, one pixel either side, and the mask's one-pixel growth
    assert not (mask & beside).any()


def test_bright_interfaces_and_comet_tails_are_tissue():
    img = _tissue(seed=1)
    img[30:32, 20:180] = 235  # stacked near-field interfaces, bridged here and there
    img[34:36, 20:180] = 230
    img[38:40, 25:175] = 240
    img[32:34, 60] = 220
    img[32:38, 120] = 225
    tail = np.zeros(img.shape, bool)  # a comet-tail artefact: short, fading, vertical
    for k in range(9):
        img[90 + k, 100] = max(img[90 + k, 100], int(250 - 14 * k))
        tail[90 + k, 100] = True
    mask = detect_marks(img)
    assert mask[28:42].sum() < 0.02 * 160 * 14
    assert not (mask & tail).any()


def test_scale_text_and_dotted_line_are_found():
    img = _tissue(seed=2)
    scale = np.zeros(img.shape, bool)
    scale[20:140, 185] = True
    for y in range(20, 140, 20):
        scale[y, 181:185] = True
    img[scale] = 250
    text = np.zeros(img.shape, np.uint8)
    cv2.putText(text, "12.3 mm", (20, 150), cv2.FONT_HERSHEY_PLAIN, 0.9, 255, 1, cv2.LINE_8)
    img[text > 0] = 255
    dots = np.zeros(img.shape, bool)
    for x in range(30, 130, 5):
        dots[60 + (x - 30) // 10, x] = True
    img[dots] = 255
    kinds = white_marks(img)
    assert (kinds["scale"] & scale).sum() >= 0.95 * scale.sum()
    assert (kinds["text"] & (text > 0)).sum() >= 0.8 * (text > 0).sum()
    assert (kinds["dotted"] & dots).sum() >= 0.9 * dots.sum()


@pytest.mark.parametrize("glyph_px", [1, 2])
def test_a_labels_words_and_digits_are_text_and_a_focus_beside_it_is_not(glyph_px):
    img = _tissue(seed=7)
    label = text_bitmap("2 1.37cm", glyph_px)  # digits with no vertical stroke; "2" a word of its own
    text = np.zeros(img.shape, bool)
    text[150 - label.shape[0]:150, 20:20 + label.shape[1]] = label
    img[text] = 255
    focus = _focus(img, 20 + label.shape[1] + 4 * glyph_px + 2, 150 - 3 * glyph_px, sigma=1.6)
    kinds = white_marks(img)
    assert (kinds["text"] & text).sum() >= 0.95 * text.sum()
    assert (kinds["text"] & text)[:, 20:20 + 5 * glyph_px].sum() == text[:, 20:20 + 5 * glyph_px].sum()
    assert not (detect_marks(img) & focus).any()


def test_coloured_marks_with_their_jpeg_halo():
    gray = _tissue(seed=3)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    _cross(rgb, 60, 60, arm=4, shape="+", gap=1, value=0)
    drawn = np.zeros(gray.shape, bool)
    drawn[60, 54:67] = drawn[54:67, 60] = True
    rgb[drawn] = (0, 220, 220)
    # JPEG-like chroma subsampling: the colour is averaged over 2x2 blocks (a pale cyan halo)
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    for c in (1, 2):
        small = cv2.resize(ycc[..., c], (100, 80), interpolation=cv2.INTER_AREA)
        ycc[..., c] = cv2.resize(small, (200, 160), interpolation=cv2.INTER_LINEAR)
    jpeg_like = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
    mask = colour_mask(jpeg_like)
    assert mask[drawn].mean() >= 0.95
    assert mask.sum() < 6 * drawn.sum()  # the halo, not the image
    assert not colour_mask(np.repeat(gray[..., None], 3, axis=2)).any()


def test_inpainting_fills_from_the_surroundings():
    img = _tissue(seed=4, level=100)
    strokes = _cross(img, 80, 80, arm=5, gap=1, value=250)
    filled = inpaint(img, detect_marks(img))
    assert abs(float(filled[strokes].mean()) - 100) < 25 and filled[strokes].max() < 200
    untouched = ~cv2.dilate(strokes.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert np.array_equal(filled[untouched], img[untouched])  # only the mark's surroundings change


def test_mark_kinds_and_white_off():
    gray = _tissue(seed=5)
    _cross(gray, 50, 50)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[100, 90:110] = (0, 255, 0)
    kinds = mark_kinds(rgb)
    assert set(kinds) == {"colour", "caliper", "text", "scale", "icon", "dotted"}
    assert kinds["caliper"].any() and kinds["colour"].any()
    coloured_only = detect_marks(rgb, white=False)
    assert coloured_only[100, 95] and not coloured_only[50, 52]


# ------------------------------------------------------------------------------------------------
# the phantom with marks: removal and survival, measured


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    root = tmp_path_factory.mktemp("marks")
    plain = generate_cohort(root / "plain", n_patients=14, images_per_patient=(1, 2), size=256, seed=11)
    marked = generate_cohort(root / "marked", n_patients=14, images_per_patient=(1, 2), size=256, seed=11, marks=True)
    return plain, marked


def test_marked_phantom_equals_the_plain_one_outside_the_marks(marked):
    plain, with_marks = marked
    a, b = pd.read_csv(plain), pd.read_csv(with_marks)
    assert a["image"].tolist() == b["image"].tolist()
    assert (b["mark_mask"].str.startswith("masks/")).all() and (b["calipers"] >= 0).all()
    for img, mm in zip(b["image"], b["mark_mask"]):
        clean = load_image(plain.parent / img).pixels
        drawn = load_image(with_marks.parent / img, color=True).pixels
        marks = np.asarray(Image.open(with_marks.parent / mm)) > 0
        assert marks.any()
        gray_drawn = cv2.cvtColor(drawn, cv2.COLOR_RGB2GRAY)
        assert np.array_equal(gray_drawn[~marks], clean[~marks])


def test_marks_removed_and_echogenic_foci_survive(marked):
    """On the phantom: >= 95% of the drawn mark pixels removed; <= 1% of foci pixels touched."""
    plain, with_marks = marked
    df = pd.read_csv(with_marks)
    pre = Preprocessor(PreprocessConfig(size=256, remove_frame=False))
    drawn = found = foci_total = foci_hit = nodule_total = nodule_hit = 0
    foci_bright_before, foci_bright_after = [], []
    for img, mm, fm, roi in zip(df["image"], df["mark_mask"], df["foci_mask"], df["roi"]):
        rgb = load_image(with_marks.parent / img, color=True).pixels
        marks = np.asarray(Image.open(with_marks.parent / mm)) > 0
        foci = np.asarray(Image.open(with_marks.parent / fm)) > 0
        mask = pre.mark_mask(rgb)
        drawn += int(marks.sum())
        found += int((marks & mask).sum())
        # foci away from the marks (a caliper may sit on a focus; those pixels are the mark's)
        free = foci & ~cv2.dilate(marks.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        foci_total += int(free.sum())
        foci_hit += int((free & mask).sum())
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        filled = inpaint(gray, mask)
        foci_bright_before.append(gray[free])
        foci_bright_after.append(filled[free])
        # the nodule's pixels away from the marks
        import json

        nod = np.zeros(gray.shape, np.uint8)
        cv2.fillPoly(nod, [np.round(np.array(json.loads(roi)["polygons"][0])).astype(np.int32)], 1)
        nod = nod.astype(bool) & ~cv2.dilate(marks.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        nodule_total += int(nod.sum())
        nodule_hit += int((nod & mask).sum())
    assert foci_total > 200  # the cohort has foci to lose
    assert found >= 0.95 * drawn, f"{found}/{drawn} mark pixels removed"
    assert foci_hit <= 0.01 * foci_total, f"{foci_hit}/{foci_total} foci pixels touched"
    assert nodule_hit <= 0.01 * nodule_total
    before, after = np.concatenate(foci_bright_before), np.concatenate(foci_bright_after)
    assert abs(float(after.mean()) - float(before.mean())) < 1.0  # foci as bright as before


def test_clean_phantom_loses_nothing_to_mark_removal(marked):
    """Without marks, mark removal changes no foci pixel and almost no pixel at all."""
    plain, with_marks = marked
    df = pd.read_csv(with_marks)
    on = Preprocessor(PreprocessConfig(size=128))
    off = Preprocessor(PreprocessConfig(size=128, inpaint_marks=False))
    changed = total = 0
    for img in df["image"]:
        a, b = on.from_file(plain.parent / img), off.from_file(plain.parent / img)
        changed += int((a != b).sum())
        total += a.size
    assert changed <= 0.002 * total


def test_caliper_shortcut_is_planted_when_asked(tmp_path):
    path = generate_cohort(tmp_path / "biased", n_patients=40, images_per_patient=(1, 1), size=96, seed=2,
                           marks=True, marks_bias=0.9)
    df = pd.read_csv(path)
    has = df["calipers"] > 0
    assert has[df["label"] == 1].mean() > has[df["label"] == 0].mean() + 0.5


def test_draw_marks_reports_what_it_drew():
    from thyro.data.phantom import Frame

    rng = np.random.default_rng(0)
    img = _tissue(256, 256, seed=6)
    poly = [[100 + 30 * np.cos(t), 120 + 20 * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 24, endpoint=False)]
    out, mask, drawn = draw_marks(img, poly, Frame(10, 10, 240, 240), rng, colour_p=0.0)
    assert out.ndim == 2 and drawn["calipers"] >= 2 and drawn["text"] and drawn["scale"]
    assert np.array_equal(out[~mask], img[~mask]) and (out[mask] == 255).all()
