"""Power of a test set to detect a difference between two paired AUROCs (Obuchowski's method).

Method: Obuchowski & McClish (1997, Stat Med 16:1529) and Obuchowski (1998): the variance of an
AUROC per malignant case follows the binormal variance function

    V(theta) = 0.0099 exp(-A^2 / 2) [(5 A^2 + 8) + (A^2 + 8) / kappa],  A = sqrt(2) Phi^-1(theta),

with ``kappa`` = benign / malignant ratio.  The variance of a paired difference is
``V(t1) + V(t2) - 2 r sqrt(V(t1) V(t2))``, where ``r`` is the correlation of the two AUROC
estimates (taken from the observed DeLong covariance).  Under the null hypothesis both AUROCs equal
their mean.  This is a normal-approximation design formula, not a simulation; it treats images as
independent cases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _st

from thyro.errors import StatsError

__all__ = ["PowerResult", "binormal_auc_variance", "paired_auc_power"]

METHOD = "Obuchowski-McClish binormal variance function, two-sided z-test"


@dataclass(frozen=True)
class PowerResult:
    """Power now and cases needed for the target power (same class balance)."""

    auroc_a: float
    auroc_b: float
    diff: float
    correlation: float
    n_pos: int
    n_neg: int
    alpha: float
    power: float
    target_power: float
    n_pos_needed: int
    n_total_needed: int
    method: str = METHOD

    def as_dict(self) -> dict:
        return asdict(self)


def binormal_auc_variance(theta: float, kappa: float) -> float:
    """Obuchowski's variance of an AUROC estimate times the number of malignant cases."""
    if not 0.0 < theta < 1.0:
        raise StatsError(f"AUROC must lie strictly between 0 and 1 for the binormal variance, got {theta}")
    a = np.sqrt(2.0) * _st.norm.ppf(theta)
    return float(0.0099 * np.exp(-(a**2) / 2) * ((5 * a**2 + 8) + (a**2 + 8) / kappa))


def paired_auc_power(auroc_a: float, auroc_b: float, n_pos: int, n_neg: int, correlation: float = 0.0,
                     alpha: float = 0.05, target_power: float = 0.8) -> PowerResult:
    """Power of a paired two-sided test of ``auroc_a - auroc_b`` with ``n_pos`` + ``n_neg`` cases,
    and the number of cases (same balance) needed for ``target_power``.

    A zero difference has no power to detect; ``n_pos_needed`` is then reported as -1.
    """
    if n_pos < 1 or n_neg < 1:
        raise StatsError(f"power needs malignant and benign cases (got {n_pos} and {n_neg})")
    if not 0 < alpha < 1 or not 0 < target_power < 1:
        raise StatsError("alpha and target power must lie between 0 and 1")
    r = float(np.clip(correlation, -0.99, 0.99))
    kappa = n_neg / n_pos
    va = binormal_auc_variance(auroc_a, kappa)
    vb = binormal_auc_variance(auroc_b, kappa)
    v_alt = va + vb - 2 * r * np.sqrt(va * vb)
    v0 = 2 * binormal_auc_variance((auroc_a + auroc_b) / 2, kappa) * (1 - r)
    delta = abs(auroc_a - auroc_b)
    za = _st.norm.ppf(1 - alpha / 2)
    zb = _st.norm.ppf(target_power)
    power = float(_st.norm.cdf((delta * np.sqrt(n_pos) - za * np.sqrt(v0)) / np.sqrt(v_alt)))
    if delta == 0:
        need_pos, need_total = -1, -1
    else:
        need_pos = int(np.ceil((za * np.sqrt(v0) + zb * np.sqrt(v_alt)) ** 2 / delta**2))
        need_total = int(np.ceil(need_pos * (1 + kappa)))
    return PowerResult(
        auroc_a=float(auroc_a), auroc_b=float(auroc_b), diff=float(auroc_a - auroc_b), correlation=r,
        n_pos=int(n_pos), n_neg=int(n_neg), alpha=float(alpha), power=power, target_power=float(target_power),
        n_pos_needed=need_pos, n_total_needed=need_total,
    )
