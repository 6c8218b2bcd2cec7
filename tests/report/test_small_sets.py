"""A set too small for a figure is named with the reason, never shown as a number: report, compare, plain CSVs."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from fakerun import make_run
from thyro.cli import main
from thyro.report import build_report
from thyro.run import RunDir

FAST = {"n_boot": 200}
NUMBER = re.compile(r"(?<![\w.#-])[-+]?\d+\.\d+")


def _section(html: str, name: str) -> str:
    """A set's section of the HTML report, as text (figures and markup left out)."""
    part = html.split(f'<h2 id="set-{name}"', 1)[1].split("<h2", 1)[0]
    return re.sub(r"<[^>]+>", " ", re.sub(r"<img[^>]*>", "", part))


@pytest.fixture(scope="module")
def small_test(tmp_path_factory):
    """A study whose test set is 3 images (1 malignant), every arm perfect on it: AUROC 1.000 [1.000, 1.000]."""
    run = make_run(tmp_path_factory.mktemp("small") / "study", n_cv=300, n_test=40, logs=True)
    r = RunDir(run)
    df = r.read_predictions().df
    first = df[df.split == "test"].drop_duplicates("patient")  # one image of each patient
    keep = list(first[first.label == 1].image[:1]) + list(first[first.label == 0].image[:2])
    df = df[(df.split != "test") | df.image.isin(keep)].copy()
    df.loc[(df.split == "test"), "probability"] = df.loc[(df.split == "test"), "label"] * 0.8 + 0.1
    r.write_predictions(df.drop(columns=["cluster"]))
    html, md = build_report(run, **FAST)
    return run, html.read_text(), md.read_text(), json.loads(html.with_suffix(".json").read_text())


def test_a_test_set_too_small_gets_no_number(small_test):
    run, html, md, data = small_test
    s = data["sets"]["test"]
    why = "not estimable: 1 malignant, 2 benign (an AUROC needs at least 5 of each)"
    assert s["not_estimable"] == why
    assert all(r["auroc"] is None and r["missing"] == why for r in s["table"])
    assert all(c["missing"] and c["p_holm"] is None and "diff" not in c for c in s["comparisons"])
    for part in ("operating", "calibration", "decision"):
        assert all(v["not_estimable"] for v in s[part].values()), part
    # the numbers are nowhere: the test section holds no decimal but the caption's alpha
    assert set(NUMBER.findall(_section(html, "test"))) <= {"0.05"}
    md_test = md.split("## Held-out test set", 1)[1].split("\n## ", 1)[0]
    assert set(NUMBER.findall(md_test)) <= {"0.05"} and why in md_test
    assert "1.000 [1.000, 1.000]" not in html and "1.000 [1.000, 1.000]" not in md
    # the answer comes from the next set that can give one, and says why the test set could not
    h = data["headline"]
    assert h["set"] == "val" and h["too_small"][0]["set"] == "test"
    assert h["text"][1] == f"The held-out test set (3 images, 1 labelled malignant) is too small for an AUROC: {why}."
    assert h["text"][1] in md and "Best elsewhere" not in " ".join(h["text"])
    assert any(m.startswith("The held-out test set is too small: not estimable") for m in data["missing"])
    # the out-of-fold vs test table: the pooled AUROC and the reason
    assert f"| {why} |" in md and not any(r["test"] is not None for r in data["folds"]["rows"])


def test_compare_says_not_estimable_and_exits_normally(small_test, capsys):
    run = small_test[0]
    path = str(RunDir(run).predictions_path)
    capsys.readouterr()
    assert main(["compare", path, path, "--arm-a", "radimagenet", "--arm-b", "scratch"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "not estimable: 1 malignant, 2 benign (a paired difference needs at least 5 of each)" in out
    assert "DeLong" not in out.split("method:")[0] and not NUMBER.search(out.split("method:")[0].split("fold=mean")[1])
    assert main(["compare", path, path, "--arm-a", "radimagenet", "--arm-b", "scratch", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["a"]["not_estimable"]["n_pos"] == 1 and "auroc" not in r["a"] and "diff" not in r["comparison"]
    assert r["not_estimable"].startswith("not estimable: 1 malignant, 2 benign")


def test_small_folds_are_not_estimable_and_their_curves_not_drawn(tmp_path):
    run = make_run(tmp_path / "run", n_cv=50, n_test=30, logs=True)
    html, md = build_report(run, **FAST)
    data = json.loads(html.with_suffix(".json").read_text())
    rows = data["folds"]["rows"]
    small = [r for r in rows if r.get("val_why")]
    assert small and all(r["val"] is None and r["val_missing"].startswith("not estimable (") for r in small)
    page = html.read_text()
    assert "Validation AUROC not drawn (not estimable" in page
    assert any(m.startswith("per-fold AUROCs not estimable") for m in data["missing"])
    # every fold's out-of-fold rows are still pooled
    assert all(data["oof"][arm]["folds"] == [0, 1, 2, 3, 4] for arm in data["oof"])


def test_report_of_a_plain_predictions_file_names_its_images_not_a_held_out_test_set(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    csv = tmp_path / "mine-pred.csv"  # a `thyro predict` file: no split column
    pd.DataFrame({"image": [f"img{i}.png" for i in range(40)], "label": y, "probability_of": "malignant",
                  "probability": 1 / (1 + np.exp(-(rng.normal(size=40) + y)))}).to_csv(csv, index=False)
    html, md = build_report(csv, tmp_path / "r", **FAST)
    for text in (html.read_text(), md.read_text()):
        assert "held-out test" not in text.lower() and "Test set ROC" not in text
        assert "the images in mine-pred.csv (40 images" in text
    assert "## The images in mine-pred.csv" in md.read_text()
    # a file that names its split keeps the name it gives
    csv2 = tmp_path / "with-split.csv"
    pd.read_csv(csv).assign(split="test").to_csv(csv2, index=False)
    html2, _ = build_report(csv2, tmp_path / "r2", **FAST)
    assert "On the held-out test set (40 images" in html2.read_text()


def test_a_shortcut_audit_on_too_few_images_shows_the_reason():
    from thyro.report.build import _audit_supported

    audit = {"marks_only": {"auroc": 0.9, "lower": 0.8, "upper": 1.0, "n_pos": 3, "n_neg": 20, "note": None},
             "model": {"auroc_marks": {"auroc": 0.9, "n_pos": 3, "n_neg": 20}, "comparison": {"diff": 0.1}}}
    shown = _audit_supported(audit)
    assert shown["marks_only"]["auroc"] is None and shown["marks_only"]["note"].startswith("not estimable: 3 malignant")
    assert shown["model"]["comparison"] is None and shown["model_note"].startswith("not estimable: 3 malignant")
    ok = {"marks_only": {"auroc": 0.7, "lower": 0.6, "upper": 0.8, "n_pos": 30, "n_neg": 20}}
    assert _audit_supported(ok) == ok and _audit_supported(None) is None
