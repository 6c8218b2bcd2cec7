"""AUROC and DeLong: agreement with brute force and scikit-learn, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from thyro.errors import StatsError
from thyro.stats import auroc, auroc_ci, delong_cov, delong_paired, delong_unpaired, roc_curve


def _brute_delong(y, s):
    """Textbook O(m n) placements (DeLong 1988)."""
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / x.size + v01.var(ddof=1) / z.size


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_fast_delong_equals_brute_force(decimals):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 150)
    s = rng.normal(size=150) + y
    if decimals is not None:
        s = np.round(s, decimals)
    auc, var = _brute_delong(y, s)
    aucs, cov = delong_cov(y, s)
    assert aucs[0] == pytest.approx(auc, abs=1e-12)
    assert cov[0, 0] == pytest.approx(var, rel=1e-10)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_curve_matches_sklearn():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 90)
    s = np.round(rng.normal(size=90) + y, 1)
    fpr, tpr, thr = roc_curve(y, s)
    f2, t2, _ = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(y, s))


def test_below_chance_not_flipped_and_ci_below_half():
    y = np.array([0] * 30 + [1] * 30)
    s = np.r_[np.linspace(1, 2, 30), np.linspace(0, 1.2, 30)]
    r = auroc_ci(y, s)
    assert r.auroc < 0.5 and r.upper < 0.5
    c = delong_paired(y, s, -s)
    assert c.diff < 0 and c.p_value < 0.05


def test_paired_identical_models_p_is_one():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    c = delong_paired(y, s, s)
    assert c.diff == 0 and c.p_value == 1.0


def test_perfect_separation_ci_clipped():
    y = np.array([0] * 10 + [1] * 10)
    s = np.arange(20.0)
    r = auroc_ci(y, s)
    assert r.auroc == 1.0 and r.upper == 1.0 and r.lower == 1.0


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "one class"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "0 \\(benign\\) or 1"),
        ([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], "NaN or infinite"),
        ([0, 1, 0, 1], [0.1, np.inf, 0.3, 0.4], "NaN or infinite"),
        ([0, 1, 0, 1], [0.1, 0.2, 0.3], "one score per case"),
        ([], [], "empty"),
    ],
)
def test_bad_input_raises(y, s, match):
    with pytest.raises(StatsError, match=match):
        auroc_ci(y, s)


def test_bad_input_in_second_model_named():
    y = [0, 1, 0, 1, 0, 1]
    with pytest.raises(StatsError, match="model B"):
        delong_paired(y, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.1, 0.2, np.nan, 0.4, 0.5, 0.6])


def test_unpaired_needs_two_per_class():
    with pytest.raises(StatsError, match="at least 2"):
        delong_unpaired([0, 1, 1], [0.1, 0.5, 0.6], [0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])


def test_delong_ci_coverage_roughly_nominal():
    """Over many independent samples the 95% DeLong interval covers the true AUROC about 95% of the time."""
    rng = np.random.default_rng(0)
    true = 0.7602499389065233  # Phi(1/sqrt(2)) for unit-variance normals shifted by 1
    hits = 0
    for _ in range(300):
        y = rng.integers(0, 2, 120)
        r = auroc_ci(y, rng.normal(size=120) + y)
        hits += r.lower <= true <= r.upper
    assert 0.90 <= hits / 300 <= 0.99


def test_stats_imports_without_torch_or_pandas():
    import subprocess
    import sys

    code = ("import sys, thyro.stats; bad = [m for m in ('torch', 'pandas', 'matplotlib', 'sklearn') if m in sys.modules]; "
            "print(', '.join(bad)); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, f"thyro.stats pulled in: {r.stdout.strip()} {r.stderr.strip()}"


def test_auroc_or_none_is_auroc_or_none_for_one_class():
    from thyro.stats.roc import auroc, auroc_or_none

    y, s = [0, 1, 1, 0, 1], [0.2, 0.9, 0.4, 0.5, 0.8]
    assert auroc_or_none(y, s) == auroc(y, s)
    assert auroc_or_none([1, 1, 1], [0.1, 0.2, 0.3]) is None
    with pytest.raises(Exception):
        auroc_or_none([0, 2, 1], [0.1, 0.2, 0.3])  # bad labels still fail loudly
