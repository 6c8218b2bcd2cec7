"""One scoring path, one failure policy: the same bad inputs, driven through every driver (``thyro predict`` as
a library and on the command line, ``thyro.load(...).predict``, ``thyro explain``, the shortcut audit and the
web app), get one outcome each, a row whose error names the input and says the same words everywhere (the web
app: a 400 whose detail says them); and an exception that is not an input problem (a bug) is raised by every
driver (the web app: a 500 with an id), never reported as an unreadable image.  The good images get the same
probabilities from the web app as from predict and the Python API."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import thyro
from thyro.cli import main
from thyro.data.preprocess import Preprocessor
from thyro.settings import settings_context
from thyro.use.audit import audit
from thyro.use.explain import explain
from thyro.use.predict import predict
from thyro.use.serve import create_app

from .conftest import _speckle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_readers import write_dicom  # noqa: E402  (tests/data's DICOM builder)

#: The pixel limit while the drivers run: the good images (96 x 128) are under it, "large.png" is over it.
MAX_PIXELS = 30_000
#: Each bad input of the manifest and what its error says (besides naming it).
BAD = {
    "missing.png": "image file not found",
    "truncated.png": "truncated.png",
    "notes.png": "notes.png",
    "tiny.png": "image is 24 x 12 px, under the minimum of 16 px on a side",
    "large.png": "over the limit of 30,000 pixels",
    "onebit.dcm": "inconsistent DICOM image",
    "badroi.png": "roi box must be [x0, y0, x1, y1]",
}
GOOD = [f"good{k}.png" for k in range(6)]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A labelled manifest of six good images and one of each kind of bad input."""
    root = tmp_path_factory.mktemp("contract")
    rng = np.random.default_rng(7)
    for k, name in enumerate(GOOD):
        Image.fromarray(_speckle(rng, 96, 128, (40, 40 + 6 * k, 12))).save(root / name)
    Image.fromarray(_speckle(rng, 96, 128)).save(root / "badroi.png")
    whole = root / "whole.png"
    Image.fromarray(_speckle(rng, 96, 128)).save(whole)
    (root / "truncated.png").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    (root / "notes.png").write_text("this is not an image\n", encoding="utf-8")
    Image.fromarray(_speckle(rng, 12, 24)).save(root / "tiny.png")
    Image.fromarray(_speckle(rng, 200, 220)).save(root / "large.png")
    write_dicom(root / "onebit.dcm", rng.integers(0, 256, (40, 48), dtype=np.uint8), BitsAllocated=1, BitsStored=1,
                HighBit=0)
    names = GOOD + list(BAD)
    rois = ['{"box": [5, 5, 1, 1]}' if n == "badroi.png" else "" for n in names]
    path = root / "manifest.csv"
    pd.DataFrame({"image": names, "label": [k % 2 for k in range(len(names))],
                  "group": [f"p{k}" for k in range(len(names))], "roi": rois}).to_csv(path, index=False)
    return path


def _predict_library(model_dir, manifest, tmp_path) -> dict[str, str]:
    rows = predict(model_dir, [manifest], progress=False).rows
    return {r.input: r.error for r in rows}


def _predict_cli(model_dir, manifest, tmp_path) -> dict[str, str]:
    out = tmp_path / "cli.csv"
    assert main(["-q", "predict", str(model_dir), str(manifest), "--out", str(out)]) == 1  # exit 1: rows failed
    df = pd.read_csv(out, keep_default_na=False)
    return dict(zip(df["image"], df["error"]))


def _python_api(model_dir, manifest, tmp_path) -> dict[str, str]:
    table = thyro.load(model_dir).predict(manifest)
    return dict(zip(table["image"], table["error"]))


def _explain(model_dir, manifest, tmp_path) -> dict[str, str]:
    records = explain(model_dir, [manifest], tmp_path / "cams", progress=False, batch_size=4)
    return {r["input"]: r["error"] for r in records}


def _audit(model_dir, manifest, tmp_path) -> dict[str, str]:
    res = audit(manifest, model_dir, out=tmp_path / "audit", n_boot=100, progress=False)
    assert res["model"]["n"] == len(GOOD) and res["model"]["n_failed"] == len(BAD)  # counted, left out of the AUROCs
    assert "auroc_marks" in res["model"]
    df = pd.read_csv(tmp_path / "audit" / "audit_images.csv", keep_default_na=False)
    return dict(zip(df["image"], df["model_error"]))


DRIVERS = {"predict": _predict_library, "predict on the command line": _predict_cli, "thyro.load().predict": _python_api,
           "explain": _explain, "audit": _audit}


def test_every_driver_gives_each_bad_input_the_same_error_row(model_dir, manifest, tmp_path):
    with settings_context(max_pixels=MAX_PIXELS):
        seen = {name: driver(model_dir, manifest, tmp_path / f"driver{k}")
                for k, (name, driver) in enumerate(DRIVERS.items())}
    reference = seen["predict"]
    assert set(reference) == set(GOOD) | set(BAD)
    for image in GOOD:
        assert all(errors[image] == "" for errors in seen.values()), image
    for image, words in BAD.items():
        error = reference[image]
        assert image in error and words in error, (image, error)
        assert "\n" not in error
        for name, errors in seen.items():
            assert errors[image] == error, (name, image, errors[image], error)


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_an_unexpected_exception_is_raised_by_every_driver(name, model_dir, manifest, tmp_path, monkeypatch):
    def bug(self, *args, **kwargs):
        raise ZeroDivisionError("a bug in the preprocessing")

    monkeypatch.setattr(Preprocessor, "process", bug)
    (tmp_path / "run").mkdir()
    with settings_context(max_pixels=MAX_PIXELS), pytest.raises(ZeroDivisionError, match="a bug in the preprocessing"):
        DRIVERS[name](model_dir, manifest, tmp_path / "run")


# ------------------------------------------------------------------------------------------------
# the web app: uploads instead of a manifest

def _upload(client: TestClient, root: Path, image: str, roi: str, heatmap: bool = False):
    return client.post("/predict", files={"file": (image, (root / image).read_bytes())},
                       data={"heatmap": str(heatmap).lower(), **({"roi": roi} if roi else {})})


def test_the_web_app_scores_and_fails_as_the_other_drivers_do(model_dir, manifest):
    """Each good image's probability through the web app (with and without a heatmap) is predict's and the
    Python API's; each bad one (but the file not found, which a client cannot upload) gets a 400 whose
    detail is predict's error, the file named by the name it was uploaded under."""
    root = manifest.parent
    rois = dict(pd.read_csv(manifest, keep_default_na=False)[["image", "roi"]].values)
    with settings_context(max_pixels=MAX_PIXELS):
        rows = {r.input: r for r in predict(model_dir, [manifest], progress=False).rows}
        table = thyro.load(model_dir).predict(manifest).set_index("image")
        with TestClient(create_app(model_dir)) as client:
            answers = {image: [_upload(client, root, image, rois[image], heatmap) for heatmap in (False, True)]
                       for image in GOOD}
            refused = {image: _upload(client, root, image, rois[image]) for image in BAD if image != "missing.png"}
    for image in GOOD:
        for r in answers[image]:
            assert r.status_code == 200, r.text
            assert r.json()["probability"] == pytest.approx(rows[image].probability, abs=1e-6)
            assert r.json()["probability"] == pytest.approx(table.loc[image, "probability"], abs=1e-6)
            assert r.json()["class"] == int(rows[image].probability >= r.json()["threshold"])
        assert answers[image][1].json()["heatmap_png"]
    for image, r in refused.items():
        assert r.status_code == 400, (image, r.status_code, r.text)
        detail = r.json()["detail"]
        assert BAD[image] in detail and "\n" not in detail, (image, detail)
        if image != "badroi.png":  # the ROI: a cell of the manifest there, the form's roi field here
            assert detail == rows[image].error.replace(str(root / image), image), (image, detail)


def test_a_bug_is_a_500_with_an_id_in_the_web_app(model_dir, manifest, monkeypatch):
    def bug(self, *args, **kwargs):
        raise ZeroDivisionError("a bug in the preprocessing")

    with TestClient(create_app(model_dir)) as client:
        monkeypatch.setattr(Preprocessor, "process", bug)
        r = _upload(client, manifest.parent, GOOD[0], "")
        monkeypatch.undo()
        assert _upload(client, manifest.parent, GOOD[0], "").status_code == 200  # the app stays up
    assert r.status_code == 500 and r.json()["detail"].startswith("internal error ")
    assert "a bug" not in r.text and "ZeroDivisionError" not in r.text
