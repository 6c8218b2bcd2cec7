"""A bootstrap CI that lies wholly on one side of its estimate (a few patients) still draws."""

from __future__ import annotations


def test_oof_vs_test_figure_takes_a_ci_beside_the_estimate():
    from thyro.report import figures

    oof = {"a": {"auroc": 0.70, "lower": 0.72, "upper": 0.90}}  # lower above the estimate
    test = {"a": {"auroc": 0.80, "lower": 0.60, "upper": 0.78}}  # upper below it
    assert figures.oof_vs_test_figure(["a"], oof, test)
