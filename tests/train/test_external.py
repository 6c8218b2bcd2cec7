"""External validation sets, data-efficiency curves and frozen arms, end to end on tiny phantoms; and the
bad inputs that must stop a study before any training."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from thyro.errors import DataError
from thyro import metrics
from thyro.run import JobKey, RunDir


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    from thyro.data.phantom import generate_cohort

    root = tmp_path_factory.mktemp("cohorts")
    dev = generate_cohort(root / "dev", n_patients=40, size=64, seed=3)
    # 40 patients (14 malignant): enough for calibration (thyro.stats.support)
    ext = generate_cohort(root / "ext", n_patients=40, images_per_patient=(2, 2), size=64, seed=77)
    return dev, ext


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    from thyro.models import build_model, save_backbone

    path = tmp_path_factory.mktemp("weights") / "backbone.safetensors"
    model, _ = build_model("resnet18", "none", seed=99)
    save_backbone(path, model)
    return path


def write_config(path, dev, ext, standin, **data):
    cfg = {"name": "ext", "data": {"manifest": str(dev), "test_size": 0.2, "folds": 2, "seed": 1,
                                    "external": [{"name": "siteb", "manifest": str(ext)}], **data},
           "preprocess": {"size": 32},
           "arms": [{"name": "scratch", "weights": "none"},
                    {"name": "probe", "weights": {"file": str(standin)}, "train_backbone": "none",
                     "allow_untrained_weights": True}],
           "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "tensorboard": False, "selection": "last",
                     "threads": 1}}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def finished(cohorts, standin, tmp_path_factory):
    """A finished study with an external set, training fractions 0.5 and 1, a frozen arm and its report."""
    import os

    from thyro.train.study import run_study

    root = tmp_path_factory.mktemp("study")
    os.environ["THYRO_CACHE_DIR"] = str(root / "cache")
    config = write_config(root / "study.yaml", *cohorts, standin, train_fractions=[0.5])
    results = run_study(config, run_dir=root / "run", report=True)
    return root / "run", results


def test_external_set_is_scored_by_every_fold_model_and_ensemble(finished, cohorts):
    run, results = finished
    rd = RunDir(run)
    preds = rd.read_predictions()
    ext_ids = set(pd.read_csv(cohorts[1])["image"])
    for arm in ("scratch", "probe"):
        for fraction in (0.5, 1.0):
            for k in range(2):
                rows = preds.rows(arm=arm, split="siteb", fold=k, fraction=fraction)
                assert set(rows["image"]) == ext_ids
            ens = preds.rows(arm=arm, split="siteb", ensemble=True, fraction=fraction)
            assert set(ens["image"]) == ext_ids
            folds = preds.rows(arm=arm, split="siteb", ensemble=False, fraction=fraction)
            mean = folds.groupby("image")["probability"].mean()
            assert np.allclose(ens.set_index("image")["probability"].sort_index(), mean.sort_index())
    assert set(preds.df.loc[preds.df.split == "siteb", "label_source"]) == {"synthetic"}
    assert results.arms["scratch"].external_auroc["siteb"] is not None


def test_report_has_an_external_section_with_intervals_calibration_and_thresholds(finished):
    run, _ = finished
    rd = RunDir(run)
    data = json.loads(rd.report_path.with_suffix(".json").read_text())
    s = data["sets"]["siteb"]
    assert s["kind"] == "external" and s["n"] == 80
    assert s["method"] == "cluster-bootstrap"  # two views per patient
    for arm in ("scratch", "probe"):
        a = s["auroc"][arm]
        assert a["lower"] <= a["auroc"] <= a["upper"] and a["n_clusters"] == 40
        cal = s["calibration"][arm]
        assert {"intercept", "slope", "line"} <= set(cal)
        op = s["operating"][arm]
        # thresholds chosen on the development data's out-of-fold predictions, applied to the new site
        oof = rd.read_predictions().rows(arm=arm, split="val")
        assert op["points"]["youden"]["threshold"] == metrics.choose_thresholds(oof)["youden"]["threshold"]
        assert op["at"]["youden"]["sensitivity"]["n"] == int(pd.Series(s["n_pos"]).item())
    assert s["comparisons"] and all("p_holm" in c for c in s["comparisons"])
    html = rd.report_path.read_text()
    assert "External validation set: siteb" in html and 'id="headline-siteb"' in html


def test_data_efficiency_curves_and_plot(finished):
    run, _ = finished
    rd = RunDir(run)
    data = json.loads(rd.report_path.with_suffix(".json").read_text())
    eff = data["efficiency"]
    assert eff["fractions"] == [0.5, 1.0]
    for split in ("val", "test", "siteb"):
        for arm in ("scratch", "probe"):
            pts = eff["curves"][split][arm]
            assert [p["fraction"] for p in pts] == [0.5, 1.0]
            assert pts[0]["n_train"] < pts[1]["n_train"]
    assert "AUROC against training images" in rd.report_path.read_text()
    # nested subsets, the same for every arm
    subsets = rd.read_fractions()
    splits = rd.read_splits()
    for k in range(2):
        assert set(subsets[(k, 0.5)]) < set(splits.train_ids(k))
        for arm in ("scratch", "probe"):
            assert rd.read_job(JobKey(arm, k, 0.5)).train_images == len(subsets[(k, 0.5)])


def test_frozen_arm_keeps_the_pretrained_backbone(finished, standin):
    """train_backbone: none trains the head only: every backbone tensor, BatchNorm statistics included, is kept."""
    from safetensors.torch import load_file

    run, _ = finished
    start = load_file(standin)
    trained = load_file(RunDir(run).model_file(JobKey("probe", 0)))
    for key, value in start.items():
        assert np.array_equal(value.numpy(), trained[key].numpy()), key
    assert "fc.weight" in trained and "fc.weight" not in start


@pytest.mark.parametrize("case", ["unlabelled", "one_class", "shared", "unreadable", "fraction"])
def test_bad_external_sets_and_fractions_stop_before_training(case, cohorts, standin, tmp_path, monkeypatch):
    from thyro.train.study import run_study

    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    dev, ext = cohorts
    bad = tmp_path / "ext"
    shutil.copytree(ext.parent, bad)
    df = pd.read_csv(bad / "manifest.csv")
    data = {}
    if case == "unlabelled":
        df.loc[[3, 5], "label"] = np.nan
        match = "2 image\\(s\\) without a label, at rows \\[5, 7\\]"
    elif case == "one_class":
        df["label"] = 0
        match = "every image is benign"
    elif case == "shared":
        shutil.copy(dev.parent / pd.read_csv(dev)["image"][0], bad / "images" / "copy.png")
        df.loc[len(df)] = {**df.iloc[0].to_dict(), "image": "images/copy.png", "patient_id": "X", "group": "X"}
        match = "1 image\\(s\\) are also in the development data.*images/copy.png.*identical pixels"
    elif case == "unreadable":
        (bad / df["image"][2]).write_bytes(b"not a png")
        match = "row 4"
    else:
        data = {"train_fractions": [0.02]}
        match = "train_fractions 0.02 leaves the training part of fold"
    df.to_csv(bad / "manifest.csv", index=False)
    config = write_config(tmp_path / "study.yaml", dev, bad / "manifest.csv", standin, **data)
    with pytest.raises(DataError, match=match) as exc:
        run_study(config, run_dir=tmp_path / "run", report=False)
    assert "siteb" in str(exc.value) or case in ("fraction", "unreadable")
    rd = RunDir(tmp_path / "run")
    assert rd.read_record() is None and not (tmp_path / "run" / "jobs").exists()  # nothing half-written
