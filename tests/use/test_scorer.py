"""The Scorer the drivers share: one preparation for every kind of input, batches scored and explained as a
whole, errors that name the parameter a Python caller typed, and the explain figure's words."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from thyro.cli import main
from thyro.data.labels import LABEL_SOURCES
from thyro.data.manifest import LabelMeaning
from thyro.errors import ThyroError
from thyro.use import explain as explain_pkg
from thyro.use.explain import caption, explain, heatmaps, montage
from thyro.use.predict import predict
from thyro.use.scoring import Failure, InputItem, Prepared, Scorer


@pytest.fixture(scope="module")
def scorer(package):
    return Scorer(package)


def test_a_path_bytes_a_file_object_pil_and_an_array_prepare_and_score_alike(scorer, images):
    path = images["png0"]
    data = path.read_bytes()
    grey = np.asarray(Image.open(path).convert("L"))
    given = [path, data, io.BytesIO(data), Image.open(path), grey]
    prepared = [scorer.prepare(x, name="scan.png") for x in given]
    assert all(isinstance(p, Prepared) for p in prepared)
    for p in prepared[1:]:
        np.testing.assert_array_equal(p.image, prepared[0].image)
    probs = scorer.score(prepared)
    assert probs.shape == (5,) and np.ptp(probs) < 1e-6
    assert probs[0] == pytest.approx(predict(scorer.package, [path], progress=False).rows[0].probability, abs=1e-6)
    assert scorer.classify(probs[0])[0] == int(probs[0] >= scorer.threshold)


def test_a_bad_upload_is_a_failure_naming_it_and_a_bug_is_raised(scorer, images, monkeypatch):
    failed = scorer.prepare(b"this is not an image", name="upload.png")
    assert isinstance(failed, Failure) and failed.name == "upload.png"
    assert failed.error.startswith("upload.png: not an image format")
    tiny = scorer.prepare(np.zeros((10, 40), np.uint8), name="array[0]")
    assert isinstance(tiny, Failure) and tiny.error == ("array[0]: image is 40 x 10 px, under the minimum of 16 px "
                                                        "on a side.")
    bad_roi = scorer.prepare(images["png0"], roi={"box": [9, 9, 1, 1]})
    assert isinstance(bad_roi, Failure) and "roi box must be" in bad_roi.error

    def bug(self, *args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(type(scorer.preprocessor), "process", bug)
    with pytest.raises(KeyError, match="a bug"):
        scorer.prepare(images["png0"].read_bytes(), name="upload.png")


def test_a_batch_is_explained_in_one_pass_with_the_heatmaps_of_one_at_a_time(scorer, images, tmp_path, monkeypatch):
    prepared = [scorer.prepare_item(InputItem(images[f"png{k}"], f"png{k}")) for k in range(3)]
    cams = scorer.explain(prepared)
    assert cams.shape == (3, scorer.image_size, scorer.image_size)
    for p, cam in zip(prepared, cams):
        np.testing.assert_allclose(cam, heatmaps(scorer.models, p.image[None])[0], atol=1e-5)
    calls = []
    real = explain_pkg.gradcam.heatmaps
    monkeypatch.setattr(explain_pkg.gradcam, "heatmaps", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    explain(scorer.package, [images["good_dir"]], tmp_path, batch_size=4, progress=False)
    assert calls == [4, 3]  # seven images, batch_size 4: two passes per fold model set, not seven


def test_montage_draws_through_the_scorer(model_dir, images, tmp_path, monkeypatch):
    seen = []
    real = Scorer.explain
    monkeypatch.setattr(Scorer, "explain", lambda self, batch, method="gradcam": seen.append(len(batch))
                        or real(self, batch, method))
    montage(model_dir, [images["png0"], images["png1"]], [1, 0], [0.9, 0.2], tmp_path / "m.png", threshold=0.5)
    assert seen == [2] and (tmp_path / "m.png").is_file()


def test_library_errors_name_the_parameter(package, images, tmp_path):
    with pytest.raises(ThyroError, match=r"^engine='tpu': choose 'torch' or 'onnx'\.$"):
        Scorer(package, engine="tpu")
    with pytest.raises(ThyroError, match=r"^batch_size=0: must be a whole number of at least 1\.$"):
        predict(package, [images["png0"]], batch_size=0, progress=False)
    with pytest.raises(ThyroError, match=r"^frames='every': choose one of 'first', 'all', 'mean'\.$"):
        predict(package, [images["png0"]], frames="every", progress=False)
    with pytest.raises(ThyroError, match=r"^frames='mean': choose one of 'first', 'all'\.$"):
        explain(package, [images["png0"]], tmp_path, frames="mean", progress=False)
    with pytest.raises(ThyroError, match=r"^method='cam': choose one of 'gradcam', 'gradcam\+\+'\.$"):
        explain(package, [images["png0"]], tmp_path, method="cam", progress=False)
    no_models = Scorer(package, engine=lambda batch: np.full(len(batch), 0.5))
    with pytest.raises(ThyroError, match="heatmaps need the fold models"):
        no_models.explain(np.zeros((1, 64, 64), np.uint8))


def test_the_command_line_checks_its_own_options(model_dir, images, capsys):
    assert main(["predict", str(model_dir), str(images["png0"]), "--engine", "tpu"]) == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "Invalid value for '--engine'" in err and "engine=" not in err
    assert main(["explain", str(model_dir), str(images["png0"]), "--out", "x", "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_help_speaks_of_label_1_not_of_malignancy_alone(command, capsys):
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "label 1" in text and "TI-RADS" in text and "malignancy" not in text


@pytest.mark.parametrize("source", sorted(LABEL_SOURCES))
def test_the_caption_has_no_doubled_parentheses(source):
    labels = LabelMeaning(source, "TI-RADS ≥ 4c" if source == "tirads" else "")
    text = caption("scan.png", 0.4321, labels, "gradcam", (1, 2, 30, 40))
    assert "((" not in text and "))" not in text and "≥" not in text
    assert text.count("(") == text.count(")") <= 1  # the provenance's own parentheses at most
    assert text.startswith(f"scan.png: {labels.probability_name.replace('≥', '>=')} 0.432; labels: ")
    assert text.endswith("gradcam inside the crop box 1,2-30,40")
