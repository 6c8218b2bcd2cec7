"""Input checks shared by every statistic: one clear :class:`StatsError`, never a wrong number."""

from __future__ import annotations

import numpy as np

from thyro.errors import StatsError


def check_labels(y, name: str = "labels") -> np.ndarray:
    """Return ``y`` as a 1-D int8 array of 0/1, or raise :class:`StatsError`."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise StatsError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise StatsError(f"{name} are empty: there are no cases to compute a statistic on")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    try:
        num = arr.astype(float)
    except (TypeError, ValueError) as exc:
        raise StatsError(f"{name} must be 0 (benign) or 1 (malignant); found non-numeric values") from exc
    bad = ~np.isin(num, (0.0, 1.0))
    if bad.any():
        examples = ", ".join(repr(v) for v in np.unique(arr[bad])[:5])
        raise StatsError(
            f"{name} must be 0 (benign) or 1 (malignant); found {int(bad.sum())} other value(s): {examples}. "
            "Drop unlabelled rows before computing statistics."
        )
    return num.astype(np.int8)


def check_scores(s, n: int | None = None, name: str = "scores") -> np.ndarray:
    """Return ``s`` as a 1-D float64 array of finite values, or raise :class:`StatsError`."""
    try:
        arr = np.asarray(s, dtype=float)
    except (TypeError, ValueError) as exc:
        raise StatsError(f"{name} must be numbers") from exc
    if arr.ndim != 1:
        raise StatsError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise StatsError(f"{name} have {arr.shape[0]} values but there are {n} labels; give one score per case")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.flatnonzero(bad)[:5].tolist()
        raise StatsError(
            f"{name} contain {int(bad.sum())} NaN or infinite value(s) (first at positions {idx}); "
            "a model that produced them has failed and its statistics would be wrong"
        )
    return arr


def check_binary(y, s, name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and scores together and require both classes."""
    y = check_labels(y)
    s = check_scores(s, n=y.shape[0], name=name)
    require_both_classes(y)
    return y, s


def require_both_classes(y: np.ndarray, what: str = "the cases") -> None:
    n_pos = int(y.sum())
    n_neg = int(y.shape[0] - n_pos)
    if n_pos == 0 or n_neg == 0:
        only = "benign (0)" if n_pos == 0 else "malignant (1)"
        raise StatsError(
            f"{what} hold only one class ({y.shape[0]} case(s), all {only}); "
            "AUROC and related statistics need both benign and malignant cases"
        )


def check_groups(groups, n: int, name: str = "groups") -> np.ndarray:
    """Return integer cluster codes 0..G-1 for ``groups`` (``None`` means one cluster per case)."""
    if groups is None:
        return np.arange(n)
    arr = np.asarray(groups)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise StatsError(f"{name} must give one value per case ({n}), got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise StatsError(f"{name} contain missing values; give every case a patient or group id")
    if arr.dtype == object and any(v is None or (isinstance(v, float) and np.isnan(v)) for v in arr):
        raise StatsError(f"{name} contain missing values; give every case a patient or group id")
    _, codes = np.unique(arr.astype(str) if arr.dtype == object else arr, return_inverse=True)
    return codes.reshape(-1)


def check_level(level: float) -> float:
    if not (0.0 < float(level) < 1.0):
        raise StatsError(f"confidence level must be between 0 and 1 (e.g. 0.95), got {level}")
    return float(level)
