"""Calibration: Brier score, expected calibration error, reliability diagrams, calibration intercept and
slope, Platt/temperature scaling.

ECE here is the bin-count-weighted mean of ``|observed malignant fraction - mean predicted
probability|`` over ``n_bins`` bins; the binning (equal-width on [0, 1] by default, or equal-count)
is returned with the value so a report can state it.

Calibration intercept and slope are those of logistic recalibration (Cox 1958; Van Calster et al.,
J Clin Epidemiol 2016): the slope ``b`` of ``logit P(y = 1) = a + b * logit(p)`` and the intercept
("calibration-in-the-large") ``a`` of ``logit P(y = 1) = a + logit(p)`` (slope fixed at 1), fitted by
maximum likelihood exactly as R's ``glm(y ~ lp, binomial)`` and ``glm(y ~ offset(lp), binomial)``,
with Wald intervals.  A well-calibrated model has intercept 0 and slope 1; a slope below 1 means
predictions too extreme (overfitting), an intercept below 0 that it predicts too much malignancy.
"""


from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special
from scipy import stats as _st

from thyro.errors import StatsError
from thyro.stats._validate import check_labels, check_level, check_scores, require_both_classes

__all__ = ["CalibrationLine", "Calibrator", "Reliability", "brier", "calibration_line", "ece", "fit_platt",
           "fit_temperature", "reliability"]

_EPS = 1e-7


def _check_probs(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = check_labels(y)
    p = check_scores(p, n=y.shape[0], name="probabilities")
    if ((p < 0) | (p > 1)).any():
        raise StatsError(
            f"probabilities must lie in [0, 1]; {int(((p < 0) | (p > 1)).sum())} value(s) do not "
            "(calibration needs probabilities, not raw scores or logits)"
        )
    return y, p


def brier(y, p) -> float:
    """Brier score: mean squared difference between probability and label (0 is perfect)."""
    y, p = _check_probs(y, p)
    return float(np.mean((p - y) ** 2))


@dataclass(frozen=True)
class Reliability:
    """Reliability-diagram data; empty bins have ``count == 0`` and NaN means."""

    edges: list[float]
    mean_predicted: list[float]
    fraction_positive: list[float]
    count: list[int]
    strategy: str
    ece: float

    @property
    def binning(self) -> str:
        kind = "equal-width" if self.strategy == "uniform" else "equal-count"
        return f"{len(self.count)} {kind} bins"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["binning"] = self.binning
        return d


def reliability(y, p, n_bins: int = 10, strategy: str = "uniform") -> Reliability:
    """Bin probabilities (``"uniform"``: equal width; ``"quantile"``: equal count) and compare with outcomes."""
    y, p = _check_probs(y, p)
    if n_bins < 1:
        raise StatsError(f"n_bins must be at least 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.quantile(p, np.linspace(0, 1, n_bins + 1))
        edges[0], edges[-1] = 0.0, 1.0
    else:
        raise StatsError(f"unknown binning strategy {strategy!r}; use 'uniform' or 'quantile'")
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = sum_p / count
        frac = sum_y / count
    nz = count > 0
    e = float(np.sum(count[nz] * np.abs(frac[nz] - mean_p[nz])) / y.size)
    return Reliability(edges.tolist(), mean_p.tolist(), frac.tolist(), count.tolist(), strategy, e)


def ece(y, p, n_bins: int = 10, strategy: str = "uniform") -> float:
    """Expected calibration error with ``n_bins`` bins (see :func:`reliability`)."""
    return reliability(y, p, n_bins, strategy).ece


@dataclass(frozen=True)
class Calibrator:
    """``p' = sigmoid(a * logit(p) + b)``; temperature scaling is ``a = 1 / T, b = 0``."""

    method: str
    a: float
    b: float

    def __call__(self, p) -> np.ndarray:
        p = np.clip(check_scores(p, name="probabilities"), _EPS, 1 - _EPS)
        return special.expit(self.a * special.logit(p) + self.b)

    @property
    def temperature(self) -> float:
        return 1.0 / self.a if self.a else float("inf")


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_platt(y, p) -> Calibrator:
    """Platt scaling fitted on (out-of-fold) probabilities by maximum likelihood."""
    y, p = _check_probs(y, p)
    x = special.logit(np.clip(p, _EPS, 1 - _EPS))

    def f(theta):
        z = theta[0] * x + theta[1]
        r = special.expit(z) - y
        return _nll(z, y), np.array([np.mean(r * x), np.mean(r)])

    res = optimize.minimize(f, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return Calibrator("platt", float(res.x[0]), float(res.x[1]))


def fit_temperature(y, p) -> Calibrator:
    """Temperature scaling (one parameter ``T > 0``) fitted on (out-of-fold) probabilities."""
    y, p = _check_probs(y, p)
    x = special.logit(np.clip(p, _EPS, 1 - _EPS))
    res = optimize.minimize_scalar(lambda log_t: _nll(x / np.exp(log_t), y), bounds=(-5, 5), method="bounded")
    return Calibrator("temperature", float(np.exp(-res.x)), 0.0)


@dataclass(frozen=True)
class CalibrationLine:
    """Calibration intercept (slope fixed at 1) and slope with Wald intervals (see the module notes)."""

    intercept: float
    intercept_lower: float
    intercept_upper: float
    slope: float
    slope_lower: float
    slope_upper: float
    level: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def _logistic_irls(x: np.ndarray, y: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and covariance of ``logit P(y) = x @ beta + offset`` (Newton-Raphson / IRLS, as glm)."""
    beta = np.zeros(x.shape[1])
    for _ in range(100):
        eta = x @ beta + offset
        mu = special.expit(eta)
        w = np.clip(mu * (1 - mu), 1e-12, None)
        info = x.T @ (x * w[:, None])
        step = np.linalg.solve(info, x.T @ (y - mu))
        beta = beta + step
        if np.max(np.abs(step)) < 1e-12 * (1 + np.max(np.abs(beta))):
            break
    mu = special.expit(x @ beta + offset)
    info = x.T @ (x * np.clip(mu * (1 - mu), 1e-12, None)[:, None])
    return beta, np.linalg.inv(info)


def calibration_line(y, p, level: float = 0.95) -> CalibrationLine:
    """Calibration intercept and slope of probabilities ``p`` against labels ``y`` (logistic recalibration)."""
    level = check_level(level)
    y, p = _check_probs(y, p)
    require_both_classes(y)
    lp = special.logit(np.clip(p, _EPS, 1 - _EPS))
    z = _st.norm.ppf(0.5 + level / 2)
    ones = np.ones((y.size, 1))
    b_int, cov_int = _logistic_irls(ones, y.astype(float), lp)
    b_sl, cov_sl = _logistic_irls(np.column_stack([ones[:, 0], lp]), y.astype(float), np.zeros(y.size))
    a, se_a = float(b_int[0]), float(np.sqrt(cov_int[0, 0]))
    b, se_b = float(b_sl[1]), float(np.sqrt(cov_sl[1, 1]))
    z = float(z)
    return CalibrationLine(a, a - z * se_a, a + z * se_a, b, b - z * se_b, b + z * se_b, level, int(y.size))
