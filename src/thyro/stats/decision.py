"""Decision-curve analysis (Vickers & Elkin 2006): net benefit of biopsying by the model.

Net benefit at threshold probability ``t``: ``TP/N - FP/N * t / (1 - t)``.  "Biopsy all" has net benefit
``prevalence - (1 - prevalence) * t / (1 - t)``; "biopsy none" has 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from thyro.errors import StatsError
from thyro.stats._validate import check_labels, check_scores

__all__ = ["DecisionCurve", "decision_curve", "net_benefit"]


def _thresholds(thresholds) -> np.ndarray:
    t = np.asarray(thresholds, dtype=float)
    if t.ndim != 1 or ((t <= 0) | (t >= 1)).any():
        raise StatsError("decision thresholds must be probabilities strictly between 0 and 1")
    return t


def net_benefit(y, p, thresholds) -> np.ndarray:
    """Net benefit of calling ``p >= t`` malignant, for each threshold ``t``."""
    y = check_labels(y)
    p = check_scores(p, n=y.shape[0], name="probabilities")
    t = _thresholds(thresholds)
    n = y.size
    call = p[None, :] >= t[:, None]
    tp = (call & (y == 1)[None, :]).sum(axis=1)
    fp = (call & (y == 0)[None, :]).sum(axis=1)
    return tp / n - fp / n * t / (1 - t)


@dataclass(frozen=True)
class DecisionCurve:
    thresholds: list[float]
    model: list[float]
    treat_all: list[float]
    treat_none: list[float]
    prevalence: float

    def as_dict(self) -> dict:
        return asdict(self)


def decision_curve(y, p, thresholds=None) -> DecisionCurve:
    """Net benefit of the model, biopsy-all and biopsy-none over ``thresholds`` (default 0.01..0.60)."""
    t = _thresholds(np.linspace(0.01, 0.60, 60) if thresholds is None else thresholds)
    y = check_labels(y)
    prev = float(y.mean())
    nb = net_benefit(y, p, t)
    return DecisionCurve(t.tolist(), nb.tolist(), (prev - (1 - prev) * t / (1 - t)).tolist(),
                         [0.0] * t.size, prev)
