"""The typed files of a run directory: each has one reader and one writer, earlier versions' files load, and a
file read and written again is unchanged (thyro.run)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from thyro.data.manifest import LabelMeaning
from thyro.errors import ThyroError
from thyro.run import (
    ArmResult,
    DataSummary,
    JobKey,
    JobRecord,
    ModelMetadata,
    ReportFiles,
    Results,
    RunDir,
    load_run,
    predictions_frame,
)

#: Label meanings as the first versions wrote them (before the summary and provenance wording).
OLD_LABELS = {"source": "synthetic", "definition": "", "positive": "malignant", "negative": "benign",
              "probability_name": "malignancy probability",
              "description": "Synthetic (thyro phantom): drawn from a known probability given the simulated features."}

#: results.json as the first version of the run directory's owner wrote it: arms without role, jobs or
#: external AUROCs; no external labels, no selection.
RESULTS_V1 = {
    "study": "old", "config": {"name": "old", "data": {"folds": 2}}, "versions": {"thyro": "0.1.0", "torch": "2.4"},
    "git_commit": None, "labels": OLD_LABELS,
    "arms": {"scratch": {"status": "done", "backbone": "resnet18", "weights": "none", "weights_kind": "none",
                         "folds_done": [0, 1], "reason": None, "oof_auroc": 0.618, "test_auroc": 0.5},
             "missing": {"status": "skipped", "backbone": "resnet18", "weights": "file:/nonexistent.pt",
                         "weights_kind": "file", "folds_done": [], "reason": "weights file not found",
                         "oof_auroc": None, "test_auroc": None}},
    "skipped": {"missing": "weights file not found"}, "failed": {},
    "jobs": {"scratch:0": {"arm": "scratch", "fold": 0, "fraction": 1.0, "best_epoch": 1, "val_auroc": 0.6,
                           "epochs_run": 1, "stopped_early": False, "seconds": 5.1, "train_images_per_second": 3.2,
                           "selection": "early stopping on the held-out fold", "selection_auroc": 0.6,
                           "train_images": 30, "weights_report": "resnet18: random initialisation", "host": "h pid 1",
                           "finished": "2026-11-29T10:00:00", "extra": {}}},
    "updated": "2026-11-29T10:00:00",
}
#: data.json as the first versions wrote it: no external sets, no training fractions.
DATA_V1 = {"manifest": "/data/manifest.csv", "labels": OLD_LABELS, "images_total": 64, "images_labelled": 60,
           "images_unlabelled": 4, "class_balance": {"images": {"malignant (1)": 24, "benign (0)": 36, "all": 60}},
           "groups_merging_patients": 0, "test_images": 12, "fold_sizes": [24, 24], "preprocess": {"size": 32}}


def _text(obj: dict) -> str:
    return json.dumps(obj, indent=2) + "\n"


def _predictions(rd: RunDir) -> None:
    rng = np.random.default_rng(0)
    meta = pd.DataFrame({"patient_id": [f"p{i}" for i in range(20)], "group": [f"p{i}" for i in range(20)],
                         "label": [i % 2 for i in range(20)]}, index=[f"{i}.png" for i in range(20)])
    rows = [{"image": f"{i}.png", "arm": "scratch", "train_fraction": 1.0, "split": "val", "fold": i % 2,
             "ensemble": False, "probability": float(rng.uniform())} for i in range(20)]
    rd.write_predictions(predictions_frame(rows, meta, "synthetic"))


def test_results_and_data_of_the_first_version_load_typed_and_write_back_as_read(tmp_path):
    rd = RunDir(tmp_path)
    rd.results_path.write_text(_text(RESULTS_V1))
    rd.data_path.write_text(_text(DATA_V1))
    results, data = rd.read_results(), rd.read_data()
    arm = results.arms["scratch"]
    assert arm.status == "done" and arm.oof_auroc == 0.618 and arm.folds_done == [0, 1]
    assert arm.role is None and arm.external_auroc == {} and arm.jobs == 0  # keys it lacks take their defaults
    assert results.selection is None and results.external_labels == {} and results.complete
    assert results.jobs["scratch:0"].key == JobKey("scratch", 0) and results.jobs["scratch:0"].best_epoch == 1
    assert results.labels.positive == "malignant" and results.labels.summary().startswith("label 1 = malignant")
    assert data.fold_sizes == [24, 24] and data.external is None and data.external_labels("site") is None
    rd.write_results(results)
    rd.write_data(data)
    assert rd.results_path.read_text() == _text(RESULTS_V1)
    assert rd.data_path.read_text() == _text(DATA_V1)


def test_a_newer_versions_keys_are_kept(tmp_path):
    rd = RunDir(tmp_path)
    newer = {**RESULTS_V1, "arms": {"scratch": {**RESULTS_V1["arms"]["scratch"], "calibration_slope": 0.9}},
             "hardware": {"gpu": "H100"}}
    rd.results_path.write_text(_text(newer))
    results = rd.read_results()
    assert results.arms["scratch"].model_extra == {"calibration_slope": 0.9}
    rd.write_results(results)
    assert json.loads(rd.results_path.read_text()) == newer


def test_results_are_written_whole_and_in_order_and_the_runs_additions_are_not(tmp_path):
    rd = RunDir(tmp_path)
    meaning = LabelMeaning("tirads", "TI-RADS >= 4")
    results = Results(study="s", config={"name": "s"}, versions={"thyro": "x"}, git_commit=None, labels=meaning,
                      external_labels={"b": LabelMeaning("pathology")}, selection="last",
                      arms={"a": ArmResult(status="done", backbone="resnet18", weights="none", weights_kind="none",
                                           role="scratch", train_backbone="all", folds_done=[0], jobs_done=1, jobs=1,
                                           reason=None, oof_auroc=0.7, test_auroc=None, external_auroc={"b": 0.6})},
                      skipped={}, failed={}, jobs={}, updated="now")
    results.elsewhere = {"a:1": "host pid 2"}
    results.report = ReportFiles(html="r.html", markdown="r.md")
    rd.write_results(results)
    written = json.loads(rd.results_path.read_text())
    assert list(written) == ["study", "config", "versions", "git_commit", "labels", "external_labels", "selection",
                             "arms", "skipped", "failed", "jobs", "updated"]
    assert written["labels"] == meaning.to_dict() and written["arms"]["a"]["reason"] is None
    assert list(written["arms"]["a"]) == ["status", "backbone", "weights", "weights_kind", "role", "train_backbone",
                                          "folds_done", "jobs_done", "jobs", "reason", "oof_auroc", "test_auroc",
                                          "external_auroc"]
    again = rd.read_results()
    assert again.labels.positive == "TI-RADS >= 4" and again.external_labels["b"].source == "pathology"
    assert again.elsewhere == {} and again.report is None


def test_a_job_record_of_an_early_version_loads_and_is_written_whole(tmp_path):
    rd = RunDir(tmp_path)
    job = JobKey("scratch", 1)
    done = rd.job_files(job).done
    done.parent.mkdir(parents=True)
    # no fraction (whole training folds only), and a key this version does not know
    done.write_text(_text({"arm": "scratch", "fold": 1, "best_epoch": 3, "val_auroc": 0.7, "epochs_run": 4,
                           "stopped_early": True, "seconds": 2.0, "train_images_per_second": 9.0, "gpu": "none"}))
    rec = rd.read_job(job)
    assert rec.key == job and rec.fraction == 1.0 and rec.extra == {"gpu": "none"} and rec.host == ""
    written = rec.to_dict()
    assert list(written) == list(JobRecord.model_fields) and written["selection"] == ""


def test_model_metadata_is_written_with_the_model_and_read_back(tmp_path):
    from thyro.models import build_model

    rd = RunDir(tmp_path)
    model, _ = build_model("resnet18", "none", seed=0)
    rows = pd.DataFrame([{"image": "a.png", "arm": "a", "train_fraction": 0.5, "split": "val", "fold": 0,
                          "ensemble": False, "probability": 0.5}])
    rec = JobRecord(arm="a", fold=0, fraction=0.5, best_epoch=2, val_auroc=0.75, epochs_run=2, stopped_early=False,
                    seconds=1.0, train_images_per_second=5.0)
    job = JobKey("a", 0, 0.5)
    rd.finish_job(job, rec, rows, model.eval(), ModelMetadata(backbone="resnet18", weights="none",
                                                              preprocess={"size": 32}, study="s", tta_flip=True))
    meta = rd.model_metadata(job)
    assert (meta.arm, meta.fold, meta.train_fraction, meta.best_epoch, meta.val_auroc) == ("a", 0, 0.5, 2, 0.75)
    assert meta.backbone == "resnet18" and meta.preprocess == {"size": 32} and meta.tta_flip is True
    assert list(meta.to_dict())[:5] == ["arm", "fold", "train_fraction", "best_epoch", "val_auroc"]
    assert rd.read_job(job) == rec and rd.job_rows(job)["probability"].tolist() == [0.5]
    # without metadata the model says which job it is, and nothing more
    rd.finish_job(JobKey("a", 1), rec.model_copy(update={"fold": 1}), rows, model.eval())
    assert set(rd.model_metadata(JobKey("a", 1)).to_dict()) == {"arm", "fold", "train_fraction", "best_epoch",
                                                                 "val_auroc"}


def test_load_reads_the_whole_run_once_and_notes_what_it_cannot_read(tmp_path):
    rd = RunDir(tmp_path)
    _predictions(rd)
    rd.results_path.write_text(_text(RESULTS_V1))
    rd.data_path.write_text('{"images_total": 60, ')  # cut short
    run = rd.load()
    assert run.from_dir and run.results.study == "old" and run.data is None and run.record is None
    assert run.title == "old" and run.arm_result("scratch").oof_auroc == 0.618 and run.arm_result("x") is None
    assert any("data.json is not valid JSON" in n for n in run.notes)
    assert run.label_meaning().source == "synthetic"  # from the results
    with pytest.raises(ThyroError, match="data.json: not valid JSON"):
        rd.load(strict=True)
    rd.data_path.write_text(_text({"images_total": "many"}))
    assert any("images_total" in n for n in rd.load().notes)
    with pytest.raises(ThyroError, match=r"data.json: not a DataSummary .*images_total"):
        rd.load(strict=True)
    # a predictions CSV alone is a run too, without anything recorded beside it
    alone = load_run(rd.predictions_path)
    assert not alone.from_dir and alone.results is None and alone.label_meaning().source == "synthetic"


def test_data_summary_of_a_run_with_external_sets_and_fractions(tmp_path):
    rd = RunDir(tmp_path)
    summary = DataSummary(**{**DATA_V1, "labels": LabelMeaning("pathology")},
                          train_fractions={"0.5": [12, 12], "1": [24, 24]},
                          external={"site-b": {"manifest": "/b.csv", "labels": {"source": "tirads",
                                                                                "definition": "TI-RADS 5"},
                                               "images": 30, "class_balance": {"images": {"all": 30}}}})
    rd.write_data(summary)
    back = rd.read_data()
    assert back.external_labels("site-b").positive == "TI-RADS 5" and back.external["site-b"].images == 30
    assert back.train_fractions == {"0.5": [12, 12], "1": [24, 24]}
    assert list(json.loads(rd.data_path.read_text()))[-2:] == ["train_fractions", "external"]
