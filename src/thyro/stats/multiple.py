"""Multiple-comparison adjustment (Holm's step-down method)."""

from __future__ import annotations

import numpy as np

from thyro.errors import StatsError

__all__ = ["holm"]


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (same order as given).

    Controls the family-wise error rate without assuming independence between comparisons.
    NaN entries (comparisons that could not be made) stay NaN and do not count in the family.
    Equivalent to R's ``p.adjust(p, "holm")`` and statsmodels' ``multipletests(method="holm")``
    (not a dependency here, to keep ``thyro.stats`` numpy/scipy only).
    """
    p = np.asarray(p_values, dtype=float).ravel()
    ok = ~np.isnan(p)
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise StatsError(f"p-values must lie in [0, 1], got {p[ok][(p[ok] < 0) | (p[ok] > 1)][:3].tolist()}")
    out = np.full(p.shape, np.nan)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="mergesort")
    adj = np.maximum.accumulate((m - np.arange(m)) * q[order])
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out
