"""What a set can support: the rule at its boundaries, and estimable figures unchanged by it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thyro import metrics
from thyro.stats import interval
from thyro.stats.calibration import calibration_line
from thyro.stats.power import minimal_detectable_difference
from thyro.stats.roc import auroc
from thyro.stats.support import (
    MIN_CASES,
    MIN_EVENTS,
    NotEstimable,
    check,
    class_counts,
    estimable_auroc,
    review_sizes,
    slope_problem,
)


def _cases(n_pos: int, n_neg: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    return y, 1 / (1 + np.exp(-(rng.normal(size=y.size) + 0.8 * y)))


def _rows(y, p, patients=None) -> pd.DataFrame:
    df = pd.DataFrame({"image": [f"i{k:03d}" for k in range(len(y))], "label": y, "probability": p})
    if patients is not None:
        df["cluster"] = pd.factorize(pd.Series(patients))[0]
    return df


@pytest.mark.parametrize("figure", ["auroc", "difference", "operating", "decision"])
def test_one_case_below_the_minimum_is_not_estimable_and_at_it_is(figure):
    assert MIN_CASES == 5
    short = check(figure, *_cases(MIN_CASES - 1, MIN_CASES)[:1])
    assert isinstance(short, NotEstimable) and short.minimum == MIN_CASES
    assert short.text.startswith(f"not estimable: {MIN_CASES - 1} malignant, {MIN_CASES} benign (")
    assert check(figure, _cases(MIN_CASES, MIN_CASES - 1)[0]) is not None  # either class
    assert check(figure, _cases(MIN_CASES, MIN_CASES)[0]) is None


def test_calibration_needs_ten_of_each():
    assert MIN_EVENTS == 10
    assert check("calibration", _cases(MIN_EVENTS - 1, 40)[0]).text == (
        "not estimable: 9 malignant, 40 benign (calibration needs at least 10 of each)")
    assert check("calibration", _cases(MIN_EVENTS, MIN_EVENTS)[0]) is None


def test_patients_are_the_cases_when_some_have_several_images():
    y = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    patients = ["a", "a", "b", "b", "c", "c", "d", "e", "f", "g", "h"]  # 3 malignant patients, 5 benign
    assert class_counts(y, patients) == (6, 5, 3, 5, "patients")
    short = check("auroc", y, patients)
    assert short.describe() == ("not estimable: 6 malignant, 5 benign images from 3 and 5 patients (an AUROC needs "
                                "at least 5 patients of each class)")
    assert short.describe("TI-RADS ≥ 4c", "not TI-RADS ≥ 4c").startswith("not estimable: 6 TI-RADS ≥ 4c, 5 not")
    assert check("auroc", y) is None  # the same images as independent cases: 6 and 5
    assert class_counts(y, list("abcdefghijk"))[4] == "images"  # one image each: images are the cases
    assert NotEstimable.from_dict(short.as_dict()) == short


def test_the_udtn_test_set_of_the_issue():
    """3 images of 2 patients, 1 malignant: the set a new user's study reported AUROC 1.000 [1.000, 1.000] on."""
    short = check("auroc", [0, 0, 1], ["p1", "p1", "p2"])
    assert short.text.startswith("not estimable: 1 malignant, 2 benign images from 1 and 1 patients")


def test_estimable_auroc_for_logs_and_tracking():
    y, p = _cases(MIN_CASES, MIN_CASES)
    assert estimable_auroc(y, p) == auroc(y, p)
    assert estimable_auroc(y[1:], p[1:]) is None
    assert estimable_auroc(y, np.where(y == 1, np.nan, p)) is None
    assert estimable_auroc([], []) is None


def test_estimable_figures_are_unchanged_at_the_minimum():
    """At the minimum the figures are the statistics' own numbers (pinned to pROC in test_proc.py)."""
    y, p = _cases(MIN_CASES, MIN_CASES, seed=3)
    rows = _rows(y, p)
    r = metrics.auroc_summary(rows)
    ref = interval(y, p)
    assert (r["auroc"], r["lower"], r["upper"], r["method"]) == (ref.auroc, ref.lower, ref.upper, "delong")
    assert metrics.auroc(rows) == auroc(y, p)
    below = metrics.auroc_summary(rows.iloc[1:])
    assert below["missing"].startswith("not estimable: 4 malignant, 5 benign") and "auroc" not in below
    assert below["not_estimable"]["figure"] == "auroc" and metrics.auroc(rows.iloc[1:]) is None
    q = 1 / (1 + np.exp(-(np.random.default_rng(9).normal(size=y.size) + 0.3 * y)))
    c = metrics.compare(rows, _rows(y, q))
    assert c["missing"] is None and c["diff"] == pytest.approx(auroc(y, p) - auroc(y, q))
    c = metrics.compare(rows.iloc[1:], _rows(y, q).iloc[1:])
    assert c["not_estimable"]["figure"] == "difference" and "diff" not in c
    assert metrics.decision(rows.iloc[1:])["not_estimable"] and "model" in metrics.decision(rows)
    points = metrics.choose_thresholds(rows)
    assert "youden" in metrics.at_thresholds(rows, points)
    assert metrics.at_thresholds(rows.iloc[1:], points)["not_estimable"]["figure"] == "operating"


def test_calibration_numbers_unchanged_or_not_estimable():
    y, p = _cases(MIN_EVENTS, 30, seed=5)
    cal = metrics.calibration(_rows(y, p))
    line = calibration_line(y, p)
    assert cal["slope"] == line.slope and cal["line"]["slope_upper"] == line.slope_upper and not cal["slope_missing"]
    assert metrics.calibration(_rows(y, p).iloc[1:])["missing"].startswith("not estimable: 9 malignant, 30 benign")


def test_a_slope_on_separated_classes_has_no_finite_estimate():
    """The issue's "Slope 57607.55 [-2162519697.93, 2162634913.03]": separation, at any size."""
    y = np.r_[np.ones(12, int), np.zeros(12, int)]
    p = np.r_[np.linspace(0.6, 0.9, 12), np.linspace(0.1, 0.4, 12)]
    assert abs(calibration_line(y, p).slope_upper) > 1e4  # what maximum likelihood gives
    assert "separate the classes completely" in slope_problem(y, p)
    cal = metrics.calibration(_rows(y, p))
    assert cal["slope"] is None and cal["line"]["slope_lower"] is None and cal["slope_missing"]
    assert cal["intercept"] == pytest.approx(calibration_line(y, p).intercept)  # the intercept is finite
    assert slope_problem(*_cases(12, 12)) is None


def test_review_sizes_warns_of_small_sets_and_folds_with_the_detectable_difference():
    r = review_sizes({"test": (1, 2), "val": (8, 14), "udtn": (13, 13), "big": (300, 600)},
                     folds=[(3, 4), (1, 6), (4, 4)], comparisons=3)
    by = {s.name: s for s in r.sets}
    assert not by["test"].supports["auroc"] and by["test"].detectable is None
    assert by["val"].supports["auroc"] and not by["val"].supports["calibration"]
    assert by["big"].detectable == pytest.approx(minimal_detectable_difference(0.75, 300, 600, alpha=0.05 / 3))
    assert r.alpha_each == pytest.approx(0.05 / 3)
    text = "\n".join(r.warnings)
    assert "3 of 3 folds hold fewer than 5 malignant or benign cases (as few as 1 malignant and 6 benign in fold 1)" in text
    assert "The held-out test set (1 malignant, 2 benign) is too small for an AUROC" in text
    assert "The pooled out-of-fold predictions (8 malignant, 14 benign): calibration" in text
    assert "The external set udtn (13 malignant, 13 benign)" in text
    assert "big" not in text  # 0.05 / 3, 80% power: it detects about 0.06
    assert review_sizes({"test": (300, 600)}).warnings == []


def test_review_study_counts_patients_of_the_manifest_and_splits():
    rng = np.random.default_rng(0)
    patients = [f"p{k // 2}" for k in range(120)]  # two images each
    labels = np.repeat((rng.uniform(size=60) < 0.4).astype(int), 2)  # one label per patient
    manifest = pd.DataFrame({"image": [f"i{k}" for k in range(120)], "label": labels, "patient_id": patients,
                             "group": patients})
    test = [f"i{k}" for k in range(6)]  # 3 patients
    folds = [[f"i{k}" for k in range(6 + 38 * f, 6 + 38 * (f + 1))] for f in range(3)]
    r = metrics.review_study(manifest, test, folds, {"site-b": manifest}, comparisons=2)
    by = {s.name: s for s in r.sets}
    assert list(by) == ["site-b", "test", "val"]
    assert (by["test"].n_pos + by["test"].n_neg) == 3 and not by["test"].supports["auroc"]
    assert by["site-b"].n_pos + by["site-b"].n_neg == 60 and by["val"].n_pos + by["val"].n_neg == 57
    assert [f.n_pos + f.n_neg for f in r.folds] == [19, 19, 19]
    assert any(w.startswith("The held-out test set (") for w in r.warnings) and r.alpha_each == 0.025
