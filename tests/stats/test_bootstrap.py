"""Cluster bootstrap: exact weighted AUROC, seeding, stratification, clusters widen the interval."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from thyro.errors import StatsError
from thyro.stats import (
    auroc,
    auroc_ci,
    bootstrap_auroc,
    bootstrap_paired,
    bootstrap_roc_band,
    bootstrap_weights,
    choose_method,
    compare_paired,
    delong_paired,
    has_repeated_groups,
    interval,
    weighted_auroc,
)


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.round(rng.normal(size=n) + y, 1), rng


def test_weighted_auroc_matches_sklearn_sample_weight():
    y, s, rng = _data()
    w = rng.integers(0, 4, size=(5, y.size))
    ours = weighted_auroc(y, s, w)
    ref = [roc_auc_score(y, s, sample_weight=wi) for wi in w]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_weights_seeded_and_cluster_complete():
    y, _, _ = _data(60)
    groups = np.repeat(np.arange(30), 2)
    y = np.repeat(np.arange(30) % 2, 2)
    w1 = np.vstack(list(bootstrap_weights(y, groups, 50, seed=7)))
    w2 = np.vstack(list(bootstrap_weights(y, groups, 50, seed=7, chunk=7)))
    np.testing.assert_array_equal(w1, w2)
    assert w1.shape == (50, 60)
    # both images of a patient always get the same weight
    np.testing.assert_array_equal(w1[:, 0::2], w1[:, 1::2])
    # stratified: each replicate keeps the number of benign and malignant patients
    np.testing.assert_array_equal((w1 * y).sum(axis=1), np.full(50, 30))
    w3 = np.vstack(list(bootstrap_weights(y, groups, 50, seed=8)))
    assert not np.array_equal(w1, w3)


def test_bootstrap_close_to_delong_for_independent_cases():
    y, s, _ = _data(400, seed=1)
    b = bootstrap_auroc(y, s, n_boot=2000, seed=0)
    d = auroc_ci(y, s)
    assert b.auroc == d.auroc
    assert b.method == "bootstrap"
    assert b.se == pytest.approx(d.se, rel=0.15)
    assert b.lower == pytest.approx(d.lower, abs=0.02) and b.upper == pytest.approx(d.upper, abs=0.02)


def test_duplicated_images_widen_cluster_interval():
    """Four copies of each image: a naive CI shrinks by half, the cluster bootstrap does not."""
    y, s, _ = _data(150, seed=2)
    y4, s4 = np.repeat(y, 4), np.repeat(s, 4)
    groups = np.repeat(np.arange(150), 4)
    naive = auroc_ci(y4, s4)
    cluster = bootstrap_auroc(y4, s4, groups, n_boot=1000, seed=0)
    single = auroc_ci(y, s)
    assert cluster.method == "cluster-bootstrap"
    assert naive.se < 0.6 * single.se
    assert cluster.se == pytest.approx(single.se, rel=0.2)


def test_paired_bootstrap_agrees_with_delong():
    y, s, rng = _data(500, seed=3)
    s2 = s + rng.normal(size=s.size)
    b = bootstrap_paired(y, s, s2, n_boot=2000, seed=1)
    d = delong_paired(y, s, s2)
    assert b.diff == pytest.approx(d.diff)
    assert b.se == pytest.approx(d.se, rel=0.2)
    assert (b.p_value < 0.05) == (d.p_value < 0.05)


def test_roc_band_contains_curve():
    y, s, _ = _data(200, seed=4)
    grid = np.linspace(0, 1, 21)
    lo, hi = bootstrap_roc_band(y, s, grid, n_boot=300, seed=0)
    assert (lo <= hi).all() and hi[-1] == 1.0
    assert (hi - lo)[5:15].mean() > 0.05


def test_auto_method():
    y, s, _ = _data(100)
    assert choose_method(None) == "delong"
    assert choose_method(np.arange(100)) == "delong"
    g = np.arange(100) // 2
    assert has_repeated_groups(g) and choose_method(g) == "bootstrap"
    assert interval(y, s, g, n_boot=200).method == "cluster-bootstrap"
    assert compare_paired(y, s, -s).method == "delong"
    with pytest.raises(StatsError, match="unknown method"):
        choose_method(None, "magic")


def test_bootstrap_bad_input():
    with pytest.raises(StatsError, match="one class"):
        bootstrap_auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(StatsError, match="missing"):
        bootstrap_auroc([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], groups=np.array([1.0, np.nan, 2.0, 2.0]))
    with pytest.raises(StatsError, match="one value per case"):
        bootstrap_auroc([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], groups=[1, 2])


def test_below_chance_bootstrap_not_flipped():
    y, s, _ = _data(200, seed=5)
    r = bootstrap_auroc(y, -s, n_boot=300)
    assert r.auroc == pytest.approx(1 - auroc(y, s)) and r.upper < 0.5
