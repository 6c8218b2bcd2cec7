"""A model trained on DDTI's TI-RADS-derived labels, scored on the biopsy-labelled UD-TN sample: every
output that shows the external result says, in one sentence, that the labels differ.

Tiny settings (32 px, 2 folds, 1 epoch, one arm): the subject is what the outputs say, not the AUROC.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from thyro.cli import main
from thyro.run import RunDir

REPO = Path(__file__).resolve().parents[2]
WARNING = ("Labels differ: the model was trained on TI-RADS ≥ 4c (radiologists' TI-RADS categories, not pathology) "
           "but the external set udtn is labelled malignant by cytology (fine-needle aspiration, Bethesda category)")


@pytest.mark.slow
def test_ddti_model_on_biopsy_labelled_udtn_warns_that_labels_differ(ddti_dir, udtn_dir, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["-q", "data", "import", "ddti", str(ddti_dir), "--out", str(tmp_path / "ddti")]) == 0
    assert main(["-q", "data", "import", "folders", str(udtn_dir), "--out", str(tmp_path / "udtn"),
                 "--label-source", "cytology"]) == 0
    udtn = tmp_path / "udtn" / "manifest.csv"
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["study", str(REPO / "configs" / "ddti.yaml"), "--run-dir", str(run),
                 "--set", f"data.manifest={tmp_path / 'ddti' / 'manifest.csv'}",
                 "--set", f"data.external=[{{name: udtn, manifest: {udtn}}}]", "--set", "data.folds=2",
                 "--set", "arms=[{name: scratch, weights: none}]", "--set", "preprocess.size=32",
                 "--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "train.device=cpu",
                 "--set", "train.tensorboard=false", "--set", "train.threads=1", "--set", "train.tta_flip=false"]) == 0
    out = capsys.readouterr().out
    # the console, at the study's results
    assert f"warning: {WARNING}" in " ".join(out.split())
    # the report: the headline (on the external set) and the external section
    report = json.loads(RunDir(run).report_path.with_suffix(".json").read_text())
    assert report["headline"]["set"] == "udtn" and report["sets"]["udtn"]["label_warning"].startswith(WARNING)
    assert report["sets"]["udtn"]["labels"]["source"] == "cytology" and report["label"]["source"] == "tirads"
    assert report["sets"]["test"]["label_warning"] is None  # the test set's labels are the training labels
    html = RunDir(run).report_path.read_text()
    section = html.split('<h2 id="set-udtn">', 1)[1].split("<h2", 1)[0]
    assert 'class="box warn label-warning">Labels differ' in section
    assert html.index(WARNING.replace("'", "&#39;")) < html.index('<h2 id="set-udtn">')  # in the headline too
    # the model card of the bundled arm, at the external set's metrics
    assert main(["-q", "bundle", str(run), "--arm", "scratch", "--out", str(tmp_path / "model")]) == 0
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text()
    assert f"**{WARNING}" in card
    # predict on the external manifest, then the report of that file: the same warning
    preds = tmp_path / "udtn-predictions.csv"
    assert main(["-q", "predict", str(tmp_path / "model"), str(udtn), "--out", str(preds)]) == 0
    df = pd.read_csv(preds)
    assert set(df["probability_of"]) == {"TI-RADS ≥ 4c"} and set(df["model_label_source"]) == {"tirads"}
    assert set(df["label_source"]) == {"cytology"}  # the manifest's own column: the labels of the images scored
    assert main(["-q", "report", str(preds), "--out", str(tmp_path / "predictions-report"), "--n-boot", "100"]) == 0
    scored = json.loads((tmp_path / "predictions-report" / "report.json").read_text())
    assert scored["sets"]["test"]["label_warning"].startswith("Labels differ: the model was trained on TI-RADS ≥ 4c")
