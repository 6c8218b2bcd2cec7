"""Grad-CAM / Grad-CAM++ on one-logit models: the right target, the right place, PNGs, montage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from thyro.cli import main
from thyro.use.explain import LogitTarget, explain, find_target_layer, heatmaps, montage

from .conftest import SIZE


class RegionModel(nn.Module):
    """One logit that depends only on the image's top-left quadrant.

    ``features`` is a strided convolution whose output is masked to the top-left quadrant, so
    bright content elsewhere carries no evidence.  ``feature_info`` names it the way timm does.
    """

    def __init__(self, size: int = 32, sign: float = 1.0):
        super().__init__()
        self.features = _Masked(size)
        self.head = nn.Linear(4, 1)
        with torch.no_grad():
            self.head.weight.fill_(sign)
            self.head.bias.zero_()
        self.feature_info = [{"module": "features"}]

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3))).squeeze(-1)


class _Masked(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=4, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 9)
            self.conv.bias.zero_()
        m = size // 4
        mask = torch.zeros(1, 1, m, m)
        mask[..., : m // 2, : m // 2] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        return torch.relu(self.conv(x)) * self.mask


def _two_blobs(size=32):
    img = np.zeros((size, size), np.uint8)
    img[4:12, 4:12] = 255        # inside the region the logit reads
    img[20:28, 20:28] = 255      # outside it: just as bright, but no evidence
    return img


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_heatmap_highlights_the_region_the_logit_depends_on(method):
    model = RegionModel().eval()
    cam = heatmaps([model], _two_blobs()[None], method)[0]
    assert cam.shape == (32, 32) and 0 <= cam.min() and cam.max() <= 1
    inside, outside = cam[4:12, 4:12].mean(), cam[20:28, 20:28].mean()
    assert inside > 0.5 and inside > 5 * outside, (inside, outside)
    assert cam[:16, :16].sum() > 0.9 * cam.sum()


def test_target_is_the_logit_with_its_sign():
    # a model whose logit *falls* with the region's brightness: evidence for malignant is negative,
    # so the Grad-CAM (ReLU of positive evidence) is empty; sign=-1 shows the benign evidence there.
    model = RegionModel(sign=-1.0).eval()
    img = _two_blobs()[None]
    assert heatmaps([model], img, "gradcam")[0].max() == pytest.approx(0.0, abs=1e-6)
    benign = heatmaps([model], img, "gradcam", sign=-1.0)[0]
    assert benign[4:12, 4:12].mean() > 5 * benign[20:28, 20:28].mean()


def test_classifier_output_target_1_is_the_pitfall(package):
    """The library's usual binary target indexes a second output that a one-logit model lacks."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = package.load_torch_models()[0]
    out = model(torch.rand(1, 1, SIZE, SIZE))
    with pytest.raises((IndexError, RuntimeError)):
        ClassifierOutputTarget(1)(out[0])
    assert LogitTarget()(out[0]).item() == pytest.approx(out[0].item())


def test_target_layer_of_a_thyronet_is_the_last_stage(package):
    model = package.load_torch_models()[0]
    assert find_target_layer(model)[0] is model.backbone.layer4


def test_ensemble_heatmap_is_the_mean_of_fold_heatmaps(package):
    models = package.load_torch_models()
    img = (np.random.default_rng(0).random((1, SIZE, SIZE)) * 255).astype(np.uint8)
    each = [heatmaps([m], img)[0] for m in models]
    assert np.allclose(heatmaps(models, img)[0], np.mean(each, axis=0), atol=1e-6)


def test_explain_writes_overlays_and_reports_bad_files(model_dir, package, images, tmp_path):
    out = tmp_path / "cams"
    res = explain(model_dir, [images["good_dir"], images["not_image"]], out, method="gradcam++", progress=False)
    ok = [r for r in res if not r["error"]]
    assert len(ok) == 7 and len(res) == 8
    for r in ok:
        from thyro.data.readers import load_image

        h, w = load_image(Path(r["input"]), us_region=False).pixels.shape
        im = Image.open(out / r["png"])  # full resolution: the original, the model's input, a colour bar
        assert im.mode == "RGB" and im.size[1] > h and im.size[0] > w + h  # the caption's band below
        assert r["png"].endswith(".gradcampp.png") and r["input_png"].endswith(".gradcampp.input.png")
        assert Image.open(out / r["input_png"]).size == (SIZE, SIZE)
        x0, y0, x1, y1 = map(int, r["crop_box"].split())
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert len({r["png"] for r in ok}) == 7  # same file names in sub-folders do not collide
    index = pd.read_csv(out / "index.csv")
    assert len(index) == 8 and index["error"].notna().sum() == 1
    # what the probability is of, as predict's CSV says it
    assert set(index["probability_of"]) == {package.label_meaning.positive}
    assert set(index["model_label_source"]) == {package.label_meaning.source}


def test_heatmap_goes_back_onto_the_original_pixels():
    """A heatmap on the model's input lands on the original pixels it was computed from."""
    from thyro.data.preprocess import PreprocessConfig, Preprocessor
    from thyro.use.explain import explanation_figure, on_original

    frame = np.zeros((120, 200), np.uint8)
    frame[20:100, 40:180] = 120  # the tissue image in a black frame
    img, g = Preprocessor(PreprocessConfig(size=32)).process(frame)
    assert g.crop_box == (40, 20, 180, 100)
    cam = np.zeros((32, 32), np.float32)
    cam[g.offset[1]:g.offset[1] + g.resized[1], 24:] = 1.0  # the right quarter of the content
    shown = on_original(frame, g, cam)
    assert shown.shape == (120, 200, 3)
    red, blue = shown[60, 170], shown[60, 60]
    assert red[0] > red[2] + 50 and blue[2] > blue[0] + 50  # hot (red) on the right, cold (blue) on the left
    assert (shown[5, 5] == 0).all() and (shown[60, 20] == 0).all()  # outside the crop: the original
    assert tuple(shown[20, 100]) == (255, 220, 0)  # the crop box's outline
    fig = explanation_figure(frame, g, img, cam, "caption")
    assert fig.shape[0] > 120 and fig.shape[1] >= 200 + 8 + 120 + 8 + 60


def test_cli_explain(model_dir, images, tmp_path):
    out = tmp_path / "cams"
    assert main(["-q", "explain", str(model_dir), str(images["png0"]), "--out", str(out)]) == 0
    assert len(list(out.glob("*.gradcam.png"))) == 1
    assert main(["-q", "explain", str(model_dir), str(images["png0"]), "--out", str(out), "--method", "bogus"]) == 2


def test_montage_groups_cases_by_outcome(package, tmp_path):
    rng = np.random.default_rng(0)
    imgs = (rng.random((10, SIZE, SIZE)) * 255).astype(np.uint8)
    labels = [1, 1, 1, 0, 0, 0, 1, 0, 0, 1]
    probs = [0.9, 0.8, 0.2, 0.1, 0.7, 0.3, 0.95, 0.05, 0.6, 0.4]
    out = tmp_path / "montage.png"
    chosen = montage(package, imgs, labels, probs, out, threshold=0.5, per_group=2)
    assert chosen == {"TP": [6, 0], "FP": [4, 8], "TN": [7, 3], "FN": [2, 9]}
    assert out.is_file() and Image.open(out).size[0] > 200
    # a list of models works too, with threshold 0.5 by default
    chosen = montage(package.load_torch_models()[:1], imgs[:2], [1, 0], [0.9, 0.8], tmp_path / "m2.png")
    assert chosen["TP"] == [0] and chosen["FP"] == [1] and chosen["TN"] == [] and chosen["FN"] == []


def test_montage_reads_image_files_through_the_package(model_dir, images, tmp_path):
    files = [images["png0"], images["png1"], images["dcm"]]
    chosen = montage(model_dir, files, [1, 0, 1], [0.9, 0.2, 0.1], tmp_path / "m.png", threshold=0.5,
                     titles=["a", "b", "c"])
    assert chosen == {"TP": [0], "FP": [], "TN": [1], "FN": [2]}
    with pytest.raises(Exception, match="model directory"):
        montage([], files, [1, 0, 1], [0.9, 0.2, 0.1], tmp_path / "x.png")


def _letterboxed():
    """A wide scan (letterboxed top and bottom in the square model input), its input and a heatmap hot
    everywhere, padding included (as Grad-CAM's can be)."""
    from thyro.data.preprocess import PreprocessConfig, Preprocessor

    rng = np.random.default_rng(3)
    frame = rng.integers(60, 200, (90, 240), dtype=np.uint8)
    img, g = Preprocessor(PreprocessConfig(size=64, remove_frame=False, keep_aspect=True)).process(frame)
    assert g.offset[1] > 5  # padding above and below the image
    cam = np.ones((64, 64), np.float32)
    cam[:g.offset[1]] = 5.0  # the hottest "evidence" sits in the padding
    return frame, img, g, cam


def _grey(rgb: np.ndarray) -> np.ndarray:
    """Pixels with no colour (R = G = B), as text, the image and the padding are; heat is coloured."""
    rgb = rgb.astype(int)
    return (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])


def test_no_heat_on_the_letterbox_padding_of_the_models_input():
    from thyro.use.explain import image_region, overlay_input, within_image

    frame, img, g, cam = _letterboxed()
    shown = overlay_input(img, cam, g)
    rows, cols = image_region(g)
    padding = np.ones(img.shape, bool)
    padding[rows, cols] = False
    assert padding.sum() > 0 and _grey(shown[padding]).all()
    assert (shown[padding][:, 0] == img[padding]).all()  # the padding as the model saw it
    assert not _grey(shown[rows, cols]).any()  # heat over the whole image
    inside = within_image(cam, g)[rows, cols]
    assert inside.max() == 1.0 and np.allclose(inside, 1.0)  # scaled over the image, not by the padding's 5


def test_the_figure_keeps_heat_off_the_padding_and_the_caption_in_its_own_band():
    from thyro.use.explain import explanation_figure

    frame, img, g, cam = _letterboxed()
    caption = "a long caption that names the file, the probability and the crop box " * 6
    fig = explanation_figure(frame, g, img, cam, caption)
    h = frame.shape[0]
    band = fig[h:]
    assert band.shape[0] >= 3 * 11  # wrapped over several lines, below the pictures
    assert _grey(band).all()  # text and white only: no heat colour in the caption's rows
    assert (band < 128).any()  # the caption is there
    assert not _grey(fig[:h, :frame.shape[1]][10:80, 10:230]).all()  # heat on the original, above the band
    # the model's input panel (scaled to the frame's height): the padding rows carry no heat
    x0 = frame.shape[1] + 8
    panel = fig[:h, x0:x0 + h]
    pad_rows = int(np.floor(g.offset[1] * h / 64)) - 1  # bilinear scaling blends one row at the edge
    assert _grey(panel[:pad_rows]).all() and _grey(panel[h - pad_rows:]).all()
    assert not _grey(panel[h // 2 - 5:h // 2 + 5]).any()


def test_a_short_caption_is_one_line_and_never_cut():
    from thyro.use.explain import caption_band

    one = caption_band("scan.png: probability 0.42", 400, 12)
    two = caption_band("scan.png: probability 0.42 " * 8, 400, 12)
    assert one.shape[1] == two.shape[1] == 400 and two.shape[0] > one.shape[0]
    long_path = caption_band("x" * 300, 200, 12)  # a word wider than the band is cut into lines, not lost
    assert long_path.shape[0] > one.shape[0] * 2
