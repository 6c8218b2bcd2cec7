"""The thyroid phantom and the synthetic radiology corpus."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from thyro.cli import main
from thyro.data.manifest import read_manifest
from thyro.data.phantom import (
    CORPUS_CLASSES,
    best_auroc,
    generate_cohort,
    generate_corpus,
    malignancy_probability,
    render_thyroid_view,
    sample_features,
    thyroid_nodule,
    tirads_level,
    tirads_points,
)
from thyro.data.preprocess import PreprocessConfig, Preprocessor
from thyro.errors import DataError


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "cohort"
    return generate_cohort(out, n_patients=10, images_per_patient=(1, 3), size=64, seed=3)


def test_cohort_is_a_manifest_like_an_importer_writes(cohort):
    man = read_manifest(cohort)
    df = man.df
    assert len(df) >= 10
    for col in ("p_malignant", "tirads", "tirads_points", "composition", "echogenicity", "shape", "margin", "foci", "roi"):
        assert col in df.columns
    assert set(df["label"].astype(int)) <= {0, 1}
    assert (df["group"] == df["patient_id"]).all()
    assert df.groupby("patient_id").size().max() > 1  # several views per patient
    for path in man.paths():
        with Image.open(path) as im:
            assert im.size == (64, 64) and im.mode == "L"
    # one nodule per patient: its features, probability and label are the same in every view
    per_patient = df.groupby("patient_id")[["p_malignant", "label", "composition", "margin", "foci"]].nunique()
    assert (per_patient == 1).all().all()


def test_probabilities_follow_the_tirads_points(cohort):
    df = read_manifest(cohort).df
    for row in df.itertuples():
        feats = {"composition": row.composition, "echogenicity": row.echogenicity, "shape": row.shape,
                 "margin": row.margin, "foci": row.foci}
        assert tirads_points(feats) == row.tirads_points
        assert str(tirads_level(row.tirads_points)) == str(row.tirads)  # manifests read TI-RADS as text
        assert row.p_malignant == pytest.approx(float(malignancy_probability(row.tirads_points)), abs=1e-6)


def test_rois_are_polygons_inside_the_image(cohort):
    man = read_manifest(cohort)
    for roi in man.rois():
        pts = np.array(roi["polygons"][0])
        assert pts.shape[0] >= 16
        assert (pts >= -1).all() and (pts <= 65).all()


def test_same_seed_same_cohort_and_patients_do_not_depend_on_cohort_size(tmp_path, cohort):
    again = generate_cohort(tmp_path / "again", n_patients=10, images_per_patient=(1, 3), size=64, seed=3)
    a, b = pd.read_csv(cohort), pd.read_csv(again)
    pd.testing.assert_frame_equal(a, b)
    for img in a["image"]:
        assert (cohort.parent / img).read_bytes() == (again.parent / img).read_bytes()
    bigger = pd.read_csv(generate_cohort(tmp_path / "bigger", n_patients=12, images_per_patient=(1, 3), size=64, seed=3))
    pd.testing.assert_frame_equal(bigger.iloc[: len(a)].reset_index(drop=True), a)
    other = pd.read_csv(generate_cohort(tmp_path / "other", n_patients=10, images_per_patient=(1, 3), size=64, seed=4))
    assert not a["p_malignant"].equals(other["p_malignant"])


def test_malignancy_model_is_calibrated_and_auroc_in_target_range():
    rng = np.random.default_rng(0)
    feats = [sample_features(rng) for _ in range(20000)]
    points = np.array([tirads_points(f) for f in feats])
    p = malignancy_probability(points)
    y = rng.random(len(p)) < p
    for lo, hi in [(0, 0.1), (0.1, 0.4), (0.4, 0.7), (0.7, 1.0)]:
        sel = (p >= lo) & (p < hi)
        if sel.sum() > 200:
            assert abs(y[sel].mean() - p[sel].mean()) < 0.03
    from sklearn.metrics import roc_auc_score

    assert 0.84 < roc_auc_score(y, p) < 0.92
    assert 0.3 < y.mean() < 0.5
    assert set(np.unique([tirads_level(k) for k in points])) == {1, 2, 3, 4, 5}


def test_best_auroc_is_the_auroc_of_the_known_probability(tmp_path):
    path = generate_cohort(tmp_path / "c", n_patients=60, images_per_patient=(1, 2), size=64, seed=0)
    df = pd.read_csv(path)
    from sklearn.metrics import roc_auc_score

    assert best_auroc(path) == pytest.approx(roc_auc_score(df["label"], df["p_malignant"]))
    assert 0.6 < best_auroc(path) <= 1.0
    meta = json.loads((path.parent / "phantom.json").read_text())
    assert meta["best_auroc"] == pytest.approx(best_auroc(path))
    with pytest.raises(DataError, match="p_malignant"):
        best_auroc(df.drop(columns=["p_malignant"]))


def _ring_means(img, poly):
    inside = np.zeros(img.shape, np.uint8)
    cv2.fillPoly(inside, [np.round(np.array(poly)).astype(np.int32)], 1)
    ring = cv2.dilate(inside, np.ones((9, 9), np.uint8)) - inside
    return img[inside.astype(bool)].astype(float), img[ring.astype(bool)].astype(float)


BASE = {"composition": "solid", "shape": "wider-than-tall", "margin": "smooth", "foci": "none"}


@pytest.mark.parametrize("echo, darker", [("very hypoechoic", True), ("hypoechoic", True), ("hyperechoic", False)])
def test_echogenicity_is_visible(echo, darker):
    diffs = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        feats = {**BASE, "echogenicity": echo}
        img, poly = render_thyroid_view(rng, 128, thyroid_nodule(rng, feats), feats, framed=False)
        inside, ring = _ring_means(img, poly)
        diffs.append(np.median(inside) - np.median(ring))
    assert (np.mean(diffs) < -15) if darker else (np.mean(diffs) > 5)


def test_shape_foci_and_cysts_are_visible():
    rng = np.random.default_rng(1)
    tall = {**BASE, "echogenicity": "hypoechoic", "shape": "taller-than-wide"}
    _, poly = render_thyroid_view(rng, 128, thyroid_nodule(rng, tall), tall, framed=False)
    pts = np.array(poly)
    assert np.ptp(pts[:, 1]) > 1.1 * np.ptp(pts[:, 0])
    punct = {**BASE, "echogenicity": "hypoechoic", "foci": "punctate"}
    img, poly = render_thyroid_view(rng, 128, thyroid_nodule(rng, punct), punct, framed=False)
    inside, _ = _ring_means(img, poly)
    assert inside.max() >= 230 and np.median(inside) < 150  # bright dots in a dark nodule
    cyst = {**BASE, "composition": "cystic", "echogenicity": "anechoic"}
    img, poly = render_thyroid_view(rng, 128, thyroid_nodule(rng, cyst), cyst, framed=False)
    inside, ring = _ring_means(img, poly)
    assert np.median(inside) < 40 < np.median(ring)


def test_frame_is_removed_by_the_preprocessing():
    rng = np.random.default_rng(0)
    feats = {**BASE, "echogenicity": "hypoechoic"}
    img, _ = render_thyroid_view(rng, 128, thyroid_nodule(rng, feats), feats, framed=True)
    assert (img[:, -6:] < 5).mean() > 0.8  # black margin with a little text
    x0, y0, x1, y1 = Preprocessor(PreprocessConfig(size=64)).crop_box(img)
    assert x0 >= 5 and x1 <= 128 - 10 and y1 <= 128 - 6
    assert (img[y0:y1, x0:x1] < 5).mean() < 0.05


def test_bad_arguments_and_foreign_folders(tmp_path):
    with pytest.raises(DataError, match="64"):
        generate_cohort(tmp_path / "x", n_patients=2, size=32)
    with pytest.raises(DataError, match="images_per_patient"):
        generate_cohort(tmp_path / "x", n_patients=2, images_per_patient=(3, 1))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate_cohort(foreign, n_patients=2, size=64)
    assert (foreign / "notes.txt").read_text() == "mine"
    # an earlier phantom is replaced, and no temporary folders are left behind
    first = generate_cohort(tmp_path / "ph", n_patients=3, size=64, seed=1)
    generate_cohort(tmp_path / "ph", n_patients=2, size=64, seed=2)
    assert read_manifest(first).df["patient_id"].nunique() == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_corpus_layout_and_classes(tmp_path):
    chosen = ["US/liver/cyst", "US/breast/carcinoma", "CT/lung/nodule", "MR/brain/tumor"]
    csv = generate_corpus(tmp_path / "corpus", n_per_class=2, size=64, seed=0, classes=chosen)
    df = pd.read_csv(csv)
    assert list(df["class"].unique()) == chosen
    assert df.groupby("class").size().tolist() == [2, 2, 2, 2]
    assert df["class_index"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert read_manifest(csv).df["label"].isna().all()  # reads as an unlabelled manifest
    for row in df.itertuples():
        path = csv.parent / row.image
        assert path.parent.relative_to(csv.parent).as_posix() == row._2  # modality/region/class folders
        arr = np.asarray(Image.open(path))
        assert arr.shape == (64, 64) and arr.dtype == np.uint8 and arr.std() > 5
    with pytest.raises(DataError, match="unknown corpus class"):
        generate_corpus(tmp_path / "bad", n_per_class=1, size=64, classes=["US/spleen/cyst"])
    assert len(CORPUS_CLASSES) >= 12


def test_corpus_classes_differ():
    from thyro.data.phantom import render_corpus_image

    means = {}
    for cls in ("US/liver/cyst", "US/liver/hemangioma", "CT/lung/normal"):
        means[cls] = np.mean([render_corpus_image(np.random.default_rng(s), cls, 64).mean() for s in range(3)])
    assert means["US/liver/cyst"] < means["US/liver/hemangioma"]  # anechoic vs hyperechoic lesion


def test_cli_phantom_and_corpus(tmp_path, capsys):
    assert main(["data", "phantom", "--out", str(tmp_path / "ph"), "--patients", "6", "--size", "64",
                 "--images-per-patient", "2"]) == 0
    out = capsys.readouterr().out
    assert "images 12" in out and "patients 6" in out
    assert main(["data", "corpus", "--out", str(tmp_path / "co"), "--n-per-class", "1", "--size", "64",
                 "--classes", "US/kidney/stone,MR/brain/normal"]) == 0
    assert "classes 2" in capsys.readouterr().out
    assert main(["data", "phantom", "--out", str(tmp_path / "bad"), "--images-per-patient", "x"]) == 2
