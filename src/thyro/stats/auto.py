"""Choose DeLong or the cluster bootstrap from the data: the one rule the report and CLI share.

DeLong assumes independent cases.  When any patient (or leakage group) has more than one image,
the cluster bootstrap is used instead and the result says so in ``method``.
"""

from __future__ import annotations

from thyro.errors import StatsError
from thyro.stats.bootstrap import bootstrap_auroc, bootstrap_paired, has_repeated_groups
from thyro.stats.roc import AurocResult, Comparison, auroc_ci, delong_paired

__all__ = ["METHODS", "choose_method", "compare_paired", "interval"]

METHODS = ("auto", "delong", "bootstrap")


def choose_method(groups=None, method: str = "auto") -> str:
    """``"delong"`` or ``"bootstrap"``: ``auto`` picks the bootstrap when any group repeats."""
    if method not in METHODS:
        raise StatsError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if method == "auto":
        return "bootstrap" if has_repeated_groups(groups) else "delong"
    return method


def interval(y, scores, groups=None, method: str = "auto", level: float = 0.95, n_boot: int = 2000,
             seed: int = 0) -> AurocResult:
    """AUROC with a CI by DeLong (independent cases) or cluster bootstrap (repeated patients)."""
    if choose_method(groups, method) == "delong":
        return auroc_ci(y, scores, level)
    return bootstrap_auroc(y, scores, groups, n_boot=n_boot, level=level, seed=seed)


def compare_paired(y, scores_a, scores_b, groups=None, method: str = "auto", level: float = 0.95,
                   n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Paired comparison of two models on the same cases (DeLong or cluster bootstrap, see :func:`interval`)."""
    if choose_method(groups, method) == "delong":
        return delong_paired(y, scores_a, scores_b, level)
    return bootstrap_paired(y, scores_a, scores_b, groups, n_boot=n_boot, level=level, seed=seed)
