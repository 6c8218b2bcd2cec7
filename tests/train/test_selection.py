"""Model selection and nested tuning never see the fold they are scored on.

``train.selection: inner`` (the default) picks each fold model's epoch on an inner, group-respecting
split of its training part; ``train.tune`` tries its grid on the same inner split; ``selection: oof``
(early stopping on the held-out fold) is allowed but the report labels its out-of-fold figures.
Every call of the training loop is watched: what it selects on must lie inside the training part.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

import thyro.train.arms.fitters as arms_mod
from thyro.run import JobKey, RunDir
from thyro.train.study import run_study


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from thyro.data.phantom import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("cohort") / "phantom", n_patients=60, images_per_patient=(1, 2),
                           size=64, seed=5)


def _config(tmp_path, cohort, **train):
    cfg = {
        "name": "selection",
        "data": {"manifest": str(cohort), "test_size": 0.2, "folds": 2, "seed": 1},
        "preprocess": {"size": 32},
        "arms": [{"name": "scratch", "weights": "none"}],
        "train": {"epochs": 2, "batch_size": 16, "device": "cpu", "tensorboard": False, **train},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def watched_fit(monkeypatch):
    """Record the image ids every call of ``fit`` trains on and selects on."""
    calls = []
    real = arms_mod.fit

    def spy(model, train, val, cfg, out_dir, **kw):
        calls.append({"train": list(train.ids), "select": list(val.ids), "select_best": kw.get("select_best"),
                      "lr": cfg.lr, "folder": str(out_dir)})
        return real(model, train, val, cfg, out_dir, **kw)

    monkeypatch.setattr(arms_mod, "fit", spy)
    return calls


def _groups(cohort) -> dict[str, str]:
    df = pd.read_csv(cohort)
    return dict(zip(df["image"], df["patient_id"].astype(str)))


def test_inner_selection_and_tuning_stay_inside_the_training_part(tmp_path, cohort, watched_fit, monkeypatch):
    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    config = _config(tmp_path, cohort, selection="inner", tune={"lr": [0.001, 0.01]})
    run_study(config, run_dir=tmp_path / "run", report=True)
    rd = RunDir(tmp_path / "run")
    splits = rd.read_splits()
    patient = _groups(cohort)
    assert len(watched_fit) == 2 * (2 + 1)  # per fold: two tuning trials, then the fold model
    for k in range(2):
        part = set(splits.train_ids(k))
        scored = set(splits.val_ids(k)) | set(splits.test)
        calls = [c for c in watched_fit if f"fold{k}" in c["folder"]]
        assert len(calls) == 3
        for c in calls:
            assert c["select_best"] is True
            assert set(c["select"]) <= part and not set(c["select"]) & scored
            assert set(c["train"]) <= part and not set(c["train"]) & set(c["select"])
            # group-respecting: no patient on both sides of the inner split
            assert not {patient[i] for i in c["train"]} & {patient[i] for i in c["select"]}
            assert len(c["train"]) + len(c["select"]) == len(part)
        record = rd.read_job(JobKey("scratch", k))
        assert "inner split" in record.selection and record.train_images == len(calls[-1]["train"])
        tuned = record.extra["tuned"]
        assert [t["params"] for t in tuned["trials"]] == [{"lr": 0.001}, {"lr": 0.01}]
        best = max(tuned["trials"], key=lambda t: t["inner_auroc"])
        assert tuned["chosen"] == best["params"] and calls[-1]["lr"] == best["params"]["lr"]
    report = json.loads(rd.report_path.with_suffix(".json").read_text())
    assert report["selection"]["mode"] == "inner" and not report["selection"]["biased"]
    assert report["tuning"]["grid"] == {"lr": [0.001, 0.01]} and len(report["tuning"]["chosen"]) == 2
    md = rd.report_path.with_suffix(".md").read_text()
    assert "inner split" in md and "selection-biased" not in md and "Tuned per arm" in md


def test_selection_on_the_held_out_fold_is_labelled_biased(tmp_path, cohort, watched_fit, monkeypatch):
    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    config = _config(tmp_path, cohort, selection="oof")
    run_study(config, run_dir=tmp_path / "run", report=True)
    rd = RunDir(tmp_path / "run")
    splits = rd.read_splits()
    for k in range(2):
        call = next(c for c in watched_fit if f"fold{k}" in c["folder"])
        assert set(call["select"]) == set(splits.val_ids(k))  # chosen on the fold it then scores
        record = rd.read_job(JobKey("scratch", k))
        assert "selection-biased" in record.selection
        # the epoch was chosen for this very AUROC: selection and out-of-fold figures coincide
        assert record.selection_auroc == pytest.approx(record.val_auroc, abs=1e-9)
    report = json.loads(rd.report_path.with_suffix(".json").read_text())
    assert report["selection"]["biased"] and report["tuning"] is None
    assert "Out-of-fold figures are selection-biased" in rd.report_path.with_suffix(".md").read_text()
    assert "(selection-biased)" in rd.report_path.read_text()
