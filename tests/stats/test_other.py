"""Holm, operating points, calibration, decision curves."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from thyro.errors import StatsError
from thyro.stats import (
    brier,
    confusion,
    decision_curve,
    ece,
    evaluate_threshold,
    fit_platt,
    fit_temperature,
    holm,
    net_benefit,
    operating_points,
    reliability,
    threshold_for_sensitivity,
    threshold_for_specificity,
    threshold_youden,
    wilson_ci,
)


def test_holm_against_hand_computation():
    # sorted p: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    out = holm([0.2, np.nan, 0.9])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.4) and out[2] == pytest.approx(0.9)
    assert holm([0.6, 0.7])[0] == pytest.approx(1.0)
    with pytest.raises(StatsError):
        holm([1.5])


def test_wilson_known_value():
    lo, hi = wilson_ci(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert np.isnan(wilson_ci(0, 0)[0])
    assert wilson_ci(0, 10)[0] == 0.0


def test_thresholds_and_confusion():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    t = threshold_youden(y, s)
    c = confusion(y, s, t)
    assert (c.tp, c.fp, c.tn, c.fn) in {(3, 0, 4, 1), (4, 1, 3, 0)}
    t90 = threshold_for_sensitivity(y, s, 0.9)
    assert confusion(y, s, t90).fn == 0 and t90 == 0.4
    t100 = threshold_for_specificity(y, s, 1.0)
    assert confusion(y, s, t100).fp == 0 and t100 == 0.7
    op = evaluate_threshold(y, s, 0.5)
    assert op.sensitivity.value == 0.75 and op.specificity.value == 0.75 and op.accuracy.k == 6


def test_operating_points_chosen_on_validation_applied_to_test():
    rng = np.random.default_rng(1)
    yv = rng.integers(0, 2, 300)
    sv = rng.normal(size=300) + yv
    yt = rng.integers(0, 2, 100)
    st = rng.normal(size=100) + yt
    pts = operating_points(yv, sv, yt, st)
    assert [a.rule for a, _ in pts] == ["youden", "sens@0.90", "sens@0.95", "spec@0.90"]
    for on_val, on_test in pts:
        assert on_val.threshold == on_test.threshold
    assert pts[1][0].sensitivity.value >= 0.9 and pts[3][0].specificity.value >= 0.9
    # an undefined PPV (nobody called malignant) is NaN, not 0
    op = evaluate_threshold(yt, st, 1e9)
    assert np.isnan(op.ppv.value) and op.ppv.n == 0


def test_calibration():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.01, 0.99, 5000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert ece(y, p) < 0.03
    assert brier(y, p) == pytest.approx(np.mean((p - y) ** 2))
    over = special.expit(3 * special.logit(p))  # overconfident
    assert ece(y, over) > 0.08
    t = fit_temperature(y, over)
    assert t.temperature == pytest.approx(3, rel=0.1)
    assert ece(y, t(over)) < 0.03
    platt = fit_platt(y, special.expit(2 * special.logit(p) + 1))
    assert platt.a == pytest.approx(0.5, abs=0.05) and platt.b == pytest.approx(-0.5, abs=0.1)
    r = reliability(y, p, n_bins=5, strategy="quantile")
    assert sum(r.count) == p.size and r.binning == "5 equal-count bins"
    with pytest.raises(StatsError, match="\\[0, 1\\]"):
        brier([0, 1], [0.5, 1.5])


def test_decision_curve():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.3, 0.6, 0.1, 0.2])
    nb = net_benefit(y, p, [0.25, 0.5])
    # t=0.25: calls 0.9, 0.3, 0.6 -> tp 2, fp 1: 2/5 - 1/5 * 1/3
    assert nb[0] == pytest.approx(0.4 - 0.2 / 3)
    # t=0.5: calls 0.9, 0.6 -> tp 1, fp 1
    assert nb[1] == pytest.approx(0.2 - 0.2)
    dc = decision_curve(y, p, [0.25, 0.5])
    assert dc.treat_all[0] == pytest.approx(0.4 - 0.6 / 3) and dc.treat_none == [0.0, 0.0]
    with pytest.raises(StatsError):
        net_benefit(y, p, [0.0])
