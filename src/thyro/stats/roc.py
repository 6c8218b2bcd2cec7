"""AUROC and DeLong's method, matched to R's pROC.

The DeLong variance is computed with the fast algorithm of Sun and Xu (2014, IEEE Signal Processing
Letters 21:1389), which needs midranks only (``O(n log n)``) instead of the ``O(m n)`` matrix of
placement comparisons.  The covariance estimators use ``m - 1`` and ``n - 1`` denominators exactly as
pROC does (``ci.auc(method="delong")``, ``roc.test(method="delong")``), so results agree with pROC to
floating-point precision (see ``tests/stats/proc_reference.R``).

Scikit-learn's ``roc_auc_score`` has no variance; no maintained Python package implements the
DeLong test with pROC's conventions, hence this module.

Direction: higher scores mean "malignant" (pROC's ``direction = "<"``, controls < cases).  A model
that ranks worse than chance gets an AUROC below 0.5; nothing is ever flipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _st

from thyro.errors import StatsError
from thyro.stats._validate import check_binary, check_labels, check_level, check_scores, require_both_classes

__all__ = [
    "AurocResult",
    "Comparison",
    "auroc",
    "auroc_ci",
    "delong_cov",
    "delong_paired",
    "delong_unpaired",
    "roc_curve",
]


@dataclass(frozen=True)
class AurocResult:
    """One AUROC with its confidence interval.

    ``method`` is ``"delong"`` or ``"cluster-bootstrap"``; ``se`` is the standard error.
    """

    auroc: float
    lower: float
    upper: float
    se: float
    level: float
    n_pos: int
    n_neg: int
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """A comparison of two AUROCs (``diff = auroc_a - auroc_b``) with CI and two-sided p-value.

    ``statistic`` is Z (paired DeLong, bootstrap) or Welch's D (unpaired DeLong, with ``df``).
    """

    auroc_a: float
    auroc_b: float
    diff: float
    se: float
    lower: float
    upper: float
    level: float
    statistic: float
    p_value: float
    n: int
    method: str
    paired: bool
    df: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _midrank_placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sun & Xu placements for ``k`` score vectors (``scores`` has shape ``(k, N)``).

    Returns ``(auc (k,), v10 (k, m), v01 (k, n))`` where ``v10`` are the structural components of the
    positives (pROC's ``X``) and ``v01`` those of the negatives (pROC's ``Y``), in case order.

    Sun & Xu write ``v10_i = (Tz_i - Tx_i) / n`` with midranks ``Tz`` (all cases) and ``Tx``
    (positives); that midrank difference is the number of negatives scored below ``x_i`` plus half
    the negatives tied with it.  One sort of all scores gives these counts for every distinct score
    value (cumulative sums), so the cost is one O(N log N) sort and O(N) arithmetic per model.
    """
    pos = y == 1
    m = int(pos.sum())
    n = int(y.shape[0] - m)
    k = scores.shape[0]
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    for r in range(k):
        s = scores[r]
        order = np.argsort(s)
        ss = s[order]
        start = np.empty(ss.size, dtype=bool)
        start[0] = True
        np.not_equal(ss[1:], ss[:-1], out=start[1:])
        gid_sorted = np.cumsum(start) - 1
        gid = np.empty_like(gid_sorted)
        gid[order] = gid_sorted
        n_groups = int(gid_sorted[-1]) + 1
        npos = np.bincount(gid[pos], minlength=n_groups).astype(float)
        nneg = np.bincount(gid[~pos], minlength=n_groups).astype(float)
        neg_below = np.cumsum(nneg) - nneg
        pos_below = np.cumsum(npos) - npos
        v10[r] = (neg_below + 0.5 * nneg)[gid[pos]] / n
        v01[r] = 1.0 - (pos_below + 0.5 * npos)[gid[~pos]] / m
    auc = v10.mean(axis=1)
    return auc, v10, v01


def delong_cov(y, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of ``k`` models scored on the same cases and their DeLong covariance matrix.

    Parameters
    ----------
    y : array of shape (N,)
        Labels, 1 = malignant, 0 = benign.
    scores : array of shape (N,) or (k, N)
        Scores; higher means more likely malignant.

    Returns
    -------
    aucs : ndarray of shape (k,)
    cov : ndarray of shape (k, k)
    """
    y = check_labels(y)
    require_both_classes(y)
    s = np.asarray(scores, dtype=float)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2:
        raise StatsError(f"scores must have shape (N,) or (k, N), got {s.shape}")
    for i, row in enumerate(s):
        check_scores(row, n=y.shape[0], name=f"scores of model {i + 1}" if s.shape[0] > 1 else "scores")
    m = int(y.sum())
    n = int(y.shape[0] - m)
    auc, v10, v01 = _midrank_placements(y, s)
    if m < 2 or n < 2:
        raise StatsError(
            f"DeLong's variance needs at least 2 malignant and 2 benign cases (got {m} and {n})"
        )
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return auc, s10 / m + s01 / n


def auroc(y, scores) -> float:
    """Area under the ROC curve (ties count one half); below 0.5 for a below-chance model."""
    y, s = check_binary(y, scores)
    auc, _, _ = _midrank_placements(y, s[None, :])
    return float(auc[0])


def auroc_or_none(y, scores) -> float | None:
    """:func:`auroc`, or None when the labels hold one class only (the AUROC is undefined)."""
    y = check_labels(y)
    return auroc(y, scores) if 0 < int(y.sum()) < y.shape[0] else None


def auroc_ci(y, scores, level: float = 0.95) -> AurocResult:
    """AUROC with DeLong's confidence interval (as pROC's ``ci.auc(method="delong")``).

    The interval is the normal interval ``auc ± z * se`` clipped to [0, 1], as pROC does.
    """
    level = check_level(level)
    y, s = check_binary(y, scores)
    auc, cov = delong_cov(y, s)
    se = float(np.sqrt(max(cov[0, 0], 0.0)))
    z = _st.norm.ppf(0.5 + level / 2)
    a = float(auc[0])
    return AurocResult(
        auroc=a,
        lower=float(min(max(a - z * se, 0.0), 1.0)),
        upper=float(min(max(a + z * se, 0.0), 1.0)),
        se=se,
        level=level,
        n_pos=int(y.sum()),
        n_neg=int(y.size - y.sum()),
        method="delong",
    )


def delong_paired(y, scores_a, scores_b, level: float = 0.95) -> Comparison:
    """DeLong's test for two models scored on the same cases (pROC ``roc.test(paired=TRUE)``).

    Returns the difference ``auroc_a - auroc_b``, its normal CI, ``Z`` and the two-sided p-value.
    """
    level = check_level(level)
    y = check_labels(y)
    require_both_classes(y)
    a = check_scores(scores_a, n=y.shape[0], name="scores of model A")
    b = check_scores(scores_b, n=y.shape[0], name="scores of model B")
    aucs, cov = delong_cov(y, np.vstack([a, b]))
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    d = float(aucs[0] - aucs[1])
    if se == 0.0:
        # pROC: identical curves give Z = 0 (p = 1); a nonzero difference with zero variance cannot occur
        zstat = 0.0 if d == 0.0 else float(np.sign(d) * np.inf)
    else:
        zstat = d / se
    p = float(2 * _st.norm.sf(abs(zstat)))
    crit = _st.norm.ppf(0.5 + level / 2)
    return Comparison(
        auroc_a=float(aucs[0]),
        auroc_b=float(aucs[1]),
        diff=d,
        se=se,
        lower=float(d - crit * se),
        upper=float(d + crit * se),
        level=level,
        statistic=float(zstat),
        p_value=p,
        n=int(y.size),
        method="delong",
        paired=True,
    )


def delong_unpaired(y_a, scores_a, y_b, scores_b, level: float = 0.95) -> Comparison:
    """DeLong's test for two AUROCs measured on different cases (pROC ``roc.test(paired=FALSE)``).

    As pROC, the statistic ``D`` is referred to a t distribution with Welch-Satterthwaite degrees of
    freedom.  The CI of the difference uses the same t quantile.
    """
    level = check_level(level)
    ya, sa = check_binary(y_a, scores_a, name="scores of model A")
    yb, sb = check_binary(y_b, scores_b, name="scores of model B")
    auc_a, cov_a = delong_cov(ya, sa)
    auc_b, cov_b = delong_cov(yb, sb)
    va, vb = float(cov_a[0, 0]), float(cov_b[0, 0])
    se = float(np.sqrt(va + vb))
    d = float(auc_a[0] - auc_b[0])
    if se == 0.0:
        raise StatsError("both AUROCs have zero DeLong variance (perfect separation); the unpaired test is undefined")
    dstat = d / se
    df = (va + vb) ** 2 / (va**2 / (ya.size - 1) + vb**2 / (yb.size - 1))
    p = float(2 * _st.t.sf(abs(dstat), df))
    crit = _st.t.ppf(0.5 + level / 2, df)
    return Comparison(
        auroc_a=float(auc_a[0]),
        auroc_b=float(auc_b[0]),
        diff=d,
        se=se,
        lower=float(d - crit * se),
        upper=float(d + crit * se),
        level=level,
        statistic=float(dstat),
        p_value=p,
        n=int(ya.size + yb.size),
        method="delong-unpaired",
        paired=False,
        df=float(df),
    )


def roc_curve(y, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC curve: ``(fpr, tpr, thresholds)`` from (0, 0) to (1, 1).

    A case is called positive when ``score >= threshold``; the first threshold is ``+inf``.
    """
    y, s = check_binary(y, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), y_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (y.size - y.sum())]
    thr = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thr
