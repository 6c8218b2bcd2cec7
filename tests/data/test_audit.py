"""The shortcut audit: mark shares, a planted caliper shortcut found, none found where none is,
the model scored with and without marks, the files, the CLI and the report section."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from thyro.cli import main
from thyro.data.audit import AUDIT_FILE, IMAGES_FILE, MARK_FEATURES, marks_only_auroc, read_audit
from thyro.data.phantom import generate_cohort
from thyro.errors import DataError
from thyro.use.audit import audit


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model package (random fold models) bundled from a synthetic run directory."""
    from use.conftest import ARM, write_run_dir  # tests/use, importable from the tests folder

    from thyro.use.bundle import bundle

    root = tmp_path_factory.mktemp("pkg")
    out = root / "model"
    bundle(write_run_dir(root), ARM, out)
    return out


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    kw = dict(n_patients=60, images_per_patient=(1, 2), size=96, seed=4, marks=True)
    return {"biased": generate_cohort(root / "biased", marks_bias=0.9, **kw),
            "fair": generate_cohort(root / "fair", marks_bias=0.0, **kw)}


def test_a_planted_caliper_shortcut_is_found(cohorts, tmp_path):
    res = audit(cohorts["biased"], out=tmp_path, progress=False)
    mo = res["marks_only"]
    assert mo["auroc"] > 0.75 and mo["lower"] > 0.5, mo
    assert mo["method"] == "cluster-bootstrap"  # several images per patient: the group is the cluster
    assert "better than chance" in mo["interpretation"]
    by = res["marks"]["by_label"]
    assert by["1"]["share_with_calipers"] > by["0"]["share_with_calipers"] + 0.4
    assert res["marks"]["overall"]["images_with_marks"] == res["n_images"]  # every phantom image has a scale
    doc = read_audit(tmp_path)
    assert doc["format"] == "thyro-audit" and doc["marks_only"]["auroc"] == pytest.approx(mo["auroc"])
    images = pd.read_csv(tmp_path / IMAGES_FILE)
    assert len(images) == res["n_images"] and set(MARK_FEATURES) <= set(images.columns)
    assert images["marks_only_score"].notna().all()
    # the features measure what was drawn: calipers found where calipers were drawn (at 96 px; a
    # coloured caliper counts as a coloured mark, not a white one)
    truth = pd.read_csv(cohorts["biased"])
    merged = images.merge(truth[["image", "calipers"]], on="image", suffixes=("", "_drawn"))
    assert ((merged["calipers"] > 0) == (merged["calipers_drawn"] > 0)).mean() > 0.8


def test_no_shortcut_where_marks_carry_no_label(cohorts):
    mo = audit(cohorts["fair"], progress=False)["marks_only"]
    assert mo["lower"] <= 0.5 <= mo["upper"] or mo["auroc"] < 0.65, mo
    assert "no evidence" in mo["interpretation"] or mo["lower"] < 0.55


def test_marks_only_needs_two_classes_and_some_marks():
    rows = pd.DataFrame({"image": ["a", "b", "c", "d"], "label": [1, 0, 1, 0], "group": ["g1", "g2", "g3", "g4"],
                         "error": [""] * 4, **{f: [0.0] * 4 for f in MARK_FEATURES}})
    res, scores = marks_only_auroc(rows)
    assert res["auroc"] is None and "no marks" in res["note"] and scores is None
    one_class = rows.assign(label=[1, 1, 1, 1])
    assert "both classes" in marks_only_auroc(one_class)[0]["note"]


def test_model_scored_with_and_without_marks(cohorts, model_dir, tmp_path):
    from thyro.data.manifest import read_manifest
    from thyro.data.splits import make_splits

    man = read_manifest(cohorts["biased"])
    splits = make_splits(man, test_size=0.3, folds=3, seed=0)
    sp = splits.save(tmp_path / "splits.json")
    res = audit(cohorts["biased"], model_dir, out=tmp_path / "out", splits=sp, on="test", progress=False)
    m = res["model"]
    assert m["on"] == "test" and m["n"] == len(splits.test)
    for key in ("auroc_marks", "auroc_clean"):
        assert 0 <= m[key]["auroc"] <= 1 and m[key]["lower"] <= m[key]["auroc"] <= m[key]["upper"]
    c = m["comparison"]
    assert c["diff"] == pytest.approx(m["auroc_clean"]["auroc"] - m["auroc_marks"]["auroc"], abs=1e-9)
    assert 0 <= c["p_value"] <= 1 and c["a"] == "marks removed"
    images = pd.read_csv(tmp_path / "out" / IMAGES_FILE)
    scored = images[images["probability_marks"].notna()]
    assert set(scored["image"]) == set(splits.test)
    assert (scored["probability_marks"] != scored["probability_clean"]).any()  # the marks change the input
    with pytest.raises(DataError, match="on='train': choose one of 'test', 'dev', 'all'"):
        audit(cohorts["biased"], model_dir, splits=sp, on="train", progress=False)


def test_cli_audit_and_the_report_section(cohorts, tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parents[1] / "report"))
    from fakerun import make_run

    from thyro.report.build import build_report

    run = make_run(tmp_path / "run", n_test=40, n_cv=80, folds=2)
    assert main(["-q", "data", "audit", str(cohorts["biased"]), "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "marks alone predict the label with AUROC" in out
    assert (run / AUDIT_FILE).is_file()
    html, md = build_report(run, n_boot=200)
    text = html.read_text(encoding="utf-8")
    assert 'id="audit"' in text and "Marks alone predict the label with AUROC" in text
    assert "Shortcut audit" in md.read_text(encoding="utf-8")
    # without an audit the report has no such section
    (run / AUDIT_FILE).unlink()
    html, _ = build_report(run, n_boot=200)
    assert 'id="audit"' not in html.read_text(encoding="utf-8")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / AUDIT_FILE).write_text(json.dumps({"format": "other"}), encoding="utf-8")
    with pytest.raises(DataError, match="not a thyro audit"):
        read_audit(bad)
    shutil.rmtree(bad)


#: The audit's figures on DDTI, as BENCHMARKS.md states them ("Shortcut audit of a DDTI study").
DDTI_MARKS = {"images_with_marks": 131, "by_kind": {"text": 90, "scale": 32, "colour": 22, "caliper": 3, "dotted": 2,
                                                     "icon": 0}}


def test_ddti_audit_matches_benchmarks(ddti_import):
    """The marks in DDTI's crops, and whether they predict the labels, as BENCHMARKS.md reports them.

    A change to the scan area or the mark detector that moves these numbers must update BENCHMARKS.md.
    """
    res = audit(ddti_import.manifest_path, progress=False)
    marks = res["marks"]
    assert res["n_images"] == 480 and marks["overall"]["images_with_marks"] == DDTI_MARKS["images_with_marks"]
    assert {k: v["images_with"] for k, v in marks["by_kind"].items()} == DDTI_MARKS["by_kind"]
    assert res["labels"]["positive"] == "TI-RADS ≥ 4c"
    benchmarks = (Path(__file__).resolve().parents[2] / "BENCHMARKS.md").read_text(encoding="utf-8")
    o, by = marks["overall"], marks["by_label"]
    mo = res["marks_only"]
    rows = [
        f"| images with marks in the crop (any kind) | {o['images_with_marks']} of {o['n']} |",
        f"| ... by kind: text / depth scale / coloured / caliper / dotted line | {by_kind_text(marks)} |",
        f"| share of the crop that is marks: median / 90th percentile / largest | {o['median']:.2%} / {o['p90']:.2%} / "
        f"{o['max']:.2%} |",
        f"| labelled images with marks: below TI-RADS 4c / TI-RADS ≥ 4c (label 1) | "
        f"{by['0']['share_with_marks']:.0%} / {by['1']['share_with_marks']:.0%} |",
        f"| labelled images with calipers: below TI-RADS 4c / TI-RADS ≥ 4c | {by['0']['share_with_calipers']:.0%} / "
        f"{by['1']['share_with_calipers']:.0%} |",
        f"| **marks alone predict the label (logistic regression, {mo['folds']} group folds, {mo['n']} labelled "
        f"images)** | **AUROC {mo['auroc']:.3f} [{mo['lower']:.3f}, {mo['upper']:.3f}]** (cluster bootstrap) |",
    ]
    for row in rows:
        assert row in benchmarks, row


def by_kind_text(marks: dict) -> str:
    k = marks["by_kind"]
    return " / ".join(str(k[name]["images_with"]) for name in ("text", "scale", "colour", "caliper", "dotted"))
