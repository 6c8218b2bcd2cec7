"""Operating points: thresholds chosen on out-of-fold predictions, applied to the test set.

A case is called malignant when ``score >= threshold``.  Rules: Youden's J (max sensitivity +
specificity - 1), a fixed sensitivity (highest threshold that reaches it, i.e. best specificity), a
fixed specificity (lowest threshold that keeps it, i.e. best sensitivity).  Proportions come with
Wilson score intervals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats as _st

from thyro.errors import StatsError
from thyro.stats._validate import check_binary, check_labels, check_level, check_scores
from thyro.stats.roc import roc_curve

__all__ = [
    "Confusion",
    "OperatingPoint",
    "Proportion",
    "choose_threshold",
    "confusion",
    "evaluate_threshold",
    "operating_points",
    "threshold_for_sensitivity",
    "threshold_for_specificity",
    "threshold_youden",
    "wilson_ci",
]


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (NaN, NaN when ``n == 0``)."""
    level = check_level(level)
    if n < 0 or k < 0 or k > n:
        raise StatsError(f"Wilson interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    z = _st.norm.ppf(0.5 + level / 2)
    p = k / n
    den = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass(frozen=True)
class Proportion:
    """``k / n`` with its Wilson interval; ``value`` is NaN when ``n == 0`` (undefined)."""

    k: int
    n: int
    value: float
    lower: float
    upper: float

    @classmethod
    def of(cls, k: int, n: int, level: float = 0.95) -> Proportion:
        lo, hi = wilson_ci(k, n, level)
        return cls(int(k), int(n), k / n if n else float("nan"), lo, hi)


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    def as_dict(self) -> dict:
        return asdict(self)


def confusion(y, scores, threshold: float) -> Confusion:
    """Confusion matrix when ``score >= threshold`` is called malignant."""
    y = check_labels(y)
    s = check_scores(scores, n=y.shape[0])
    call = s >= threshold
    pos = y == 1
    return Confusion(
        tp=int((call & pos).sum()), fp=int((call & ~pos).sum()), tn=int((~call & ~pos).sum()), fn=int((~call & pos).sum())
    )


def threshold_youden(y, scores) -> float:
    """Threshold maximising Youden's J; the highest such threshold on ties."""
    fpr, tpr, thr = roc_curve(y, scores)
    j = tpr - fpr
    j[0] = -np.inf  # the +inf threshold calls nobody malignant
    return float(thr[int(np.argmax(j))])


def threshold_for_sensitivity(y, scores, target: float) -> float:
    """Highest threshold whose sensitivity is at least ``target`` (best specificity at that sensitivity)."""
    if not 0 < target <= 1:
        raise StatsError(f"target sensitivity must lie in (0, 1], got {target}")
    fpr, tpr, thr = roc_curve(y, scores)
    ok = np.flatnonzero(tpr >= target - 1e-12)
    return float(thr[ok[0]])


def threshold_for_specificity(y, scores, target: float) -> float:
    """Lowest threshold whose specificity is at least ``target`` (best sensitivity at that specificity)."""
    if not 0 < target <= 1:
        raise StatsError(f"target specificity must lie in (0, 1], got {target}")
    fpr, tpr, thr = roc_curve(y, scores)
    ok = np.flatnonzero(1 - fpr >= target - 1e-12)
    return float(thr[ok[-1]])


def choose_threshold(y, scores, rule: str) -> float:
    """Threshold for a rule name: ``"youden"``, ``"sens@0.90"``, ``"spec@0.90"``."""
    if rule == "youden":
        return threshold_youden(y, scores)
    kind, _, value = rule.partition("@")
    try:
        target = float(value)
    except ValueError:
        raise StatsError(f"unknown operating-point rule {rule!r}; use 'youden', 'sens@0.9' or 'spec@0.9'") from None
    if kind == "sens":
        return threshold_for_sensitivity(y, scores, target)
    if kind == "spec":
        return threshold_for_specificity(y, scores, target)
    raise StatsError(f"unknown operating-point rule {rule!r}; use 'youden', 'sens@0.9' or 'spec@0.9'")


@dataclass(frozen=True)
class OperatingPoint:
    """Metrics of one threshold on one set of cases."""

    rule: str
    threshold: float
    confusion: Confusion
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion
    accuracy: Proportion
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate_threshold(y, scores, threshold: float, rule: str = "", level: float = 0.95) -> OperatingPoint:
    """Sensitivity, specificity, PPV, NPV and accuracy (Wilson CIs) at ``threshold``."""
    c = confusion(y, scores, threshold)
    return OperatingPoint(
        rule=rule,
        threshold=float(threshold),
        confusion=c,
        sensitivity=Proportion.of(c.tp, c.tp + c.fn, level),
        specificity=Proportion.of(c.tn, c.tn + c.fp, level),
        ppv=Proportion.of(c.tp, c.tp + c.fp, level),
        npv=Proportion.of(c.tn, c.tn + c.fn, level),
        accuracy=Proportion.of(c.tp + c.tn, c.tp + c.fp + c.tn + c.fn, level),
    )


DEFAULT_RULES = ("youden", "sens@0.90", "sens@0.95", "spec@0.90")


def operating_points(y_val, s_val, y_test, s_test, rules=DEFAULT_RULES,
                     level: float = 0.95) -> list[tuple[OperatingPoint, OperatingPoint]]:
    """For each rule: choose the threshold on the out-of-fold (validation) cases, apply it to the test cases.

    Returns ``[(on_validation, on_test), ...]`` in the order of ``rules``.
    """
    yv, sv = check_binary(y_val, s_val, name="validation scores")
    yt = check_labels(y_test, name="test labels")
    st = check_scores(s_test, n=yt.shape[0], name="test scores")
    out = []
    for rule in rules:
        t = choose_threshold(yv, sv, rule)
        out.append((evaluate_threshold(yv, sv, t, rule, level), evaluate_threshold(yt, st, t, rule, level)))
    return out
