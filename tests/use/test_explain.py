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
        assert im.mode == "RGB" and im.size[1] == h + 22 and im.size[0] > w + h
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
    assert fig.shape[0] == 120 + 22 and fig.shape[1] >= 200 + 8 + 120 + 8 + 60


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
