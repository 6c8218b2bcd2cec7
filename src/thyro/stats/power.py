"""Design of a paired AUROC comparison: power, sample size and the minimal detectable difference.

Method: Obuchowski & McClish (1997, Stat Med 16:1529-1542), as R's pROC implements it in
``power.roc.test`` for two paired ROC curves given by their parameters (a ``parslist``).  Each test
has a binormal ROC curve with parameters ``A`` and ``B`` (``AUROC = Phi(A / sqrt(1 + B^2))``; ``B = 1``,
equal spread of cases and controls, unless given); ``r_controls`` and ``r_cases`` are the
correlations of the two tests' (latent, normal) scores among the controls and among the cases.
With ``kappa`` = controls / cases, the variance of an AUROC estimate times the number of cases is

    V = f^2 (1 + B^2 / kappa + A^2 / 2) + g^2 B^2 (1 + kappa) / (2 kappa),
    f = exp(-A^2 / (2 (1 + B^2))) / sqrt(2 pi (1 + B^2)),   g = -f A B / (1 + B^2),

and the covariance of the two estimates follows Obuchowski & McClish's equation 5.  For a paired,
two-sided z-test of ``auroc_alt - auroc_ref = delta`` at level ``alpha`` with power ``1 - beta``:

    cases = (z_{1-alpha/2} sqrt(V0) + z_{1-beta} sqrt(VA))^2 / delta^2,

``VA = V1 + V2 - 2 C12`` (the difference's variance) and ``V0 = 2 V1 - 2 C12`` (under the null
hypothesis both curves are the reference's).  These are normal-approximation design formulas (no
simulation); they treat every image as an independent case.  ``tests/stats/test_power.py`` pins pROC
1.18.0's values.

Only numpy and scipy are used (hand-written because no maintained Python package implements
Obuchowski-McClish's two-curve design).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize
from scipy import stats as _st

from thyro.errors import StatsError

__all__ = [
    "METHOD", "PairedDesign", "SampleSize", "auroc_covariance", "auroc_variance", "binormal_a",
    "binormal_correlations", "minimal_detectable_difference", "paired_power", "plan_comparisons", "sample_size",
]

METHOD = ("Obuchowski & McClish 1997: binormal variance and covariance, paired two-sided z-test, as R pROC's "
          "power.roc.test")


def binormal_a(auroc: float, b: float = 1.0) -> float:
    """Binormal ``A`` of an ROC curve with this AUROC and slope ``b``: ``Phi^-1(auroc) sqrt(1 + b^2)``."""
    if not 0.0 < auroc < 1.0:
        raise StatsError(f"an expected AUROC must lie strictly between 0 and 1, got {auroc}")
    if b <= 0:
        raise StatsError(f"the binormal slope B must be positive, got {b}")
    return float(_st.norm.ppf(auroc) * math.sqrt(1.0 + b * b))


def _f(a: float, b: float) -> float:
    return math.exp(-a * a / (2 * (1 + b * b))) / math.sqrt(2 * math.pi * (1 + b * b))


def _g(a: float, b: float) -> float:
    return -math.exp(-a * a / (2 * (1 + b * b))) * a * b / math.sqrt(2 * math.pi * (1 + b * b) ** 3)


def auroc_variance(a: float, b: float, kappa: float) -> float:
    """Variance of an AUROC estimate times the number of cases (Obuchowski & McClish, table 1)."""
    f, g = _f(a, b), _g(a, b)
    return f * f * (1 + b * b / kappa + a * a / 2) + g * g * b * b * (1 + kappa) / (2 * kappa)


def auroc_covariance(a1: float, b1: float, a2: float, b2: float, r_controls: float, r_cases: float,
                     kappa: float) -> float:
    """Covariance of two paired AUROC estimates times the number of cases (Obuchowski & McClish, eq. 5)."""
    f1, f2, g1, g2 = _f(a1, b1), _f(a2, b2), _g(a1, b1), _g(a2, b2)
    rn, ra = r_controls, r_cases
    return (f1 * f2 * (ra + rn * b1 * b2 / kappa + ra * ra * a1 * a2 / 2)
            + g1 * g2 * (b1 * b2 * (rn * rn + kappa * ra * ra) / (2 * kappa))
            + f1 * g2 * (ra * ra * a1 * b2 / 2) + f2 * g1 * (ra * ra * a2 * b1 / 2))


def _check_r(r: float, name: str) -> float:
    if not np.isfinite(r) or not -1.0 < r < 1.0:
        raise StatsError(f"{name} must lie strictly between -1 and 1, got {r}")
    return float(r)


def _check_level(value: float, name: str) -> float:
    if not 0.0 < value < 1.0:
        raise StatsError(f"{name} must lie strictly between 0 and 1, got {value}")
    return float(value)


@dataclass(frozen=True)
class PairedDesign:
    """Two tests read on the same cases: the reference's AUROC (the null hypothesis), the other's,
    and the correlations of their scores among controls and among cases.

    ``b_ref``/``b_alt`` are the binormal slopes (1: cases and controls spread alike).
    """

    auroc_ref: float
    auroc_alt: float
    r_controls: float = 0.5
    r_cases: float = 0.5
    b_ref: float = 1.0
    b_alt: float = 1.0

    def __post_init__(self):
        binormal_a(self.auroc_ref, self.b_ref)
        binormal_a(self.auroc_alt, self.b_alt)
        _check_r(self.r_controls, "the correlation among controls")
        _check_r(self.r_cases, "the correlation among cases")

    @property
    def delta(self) -> float:
        return self.auroc_alt - self.auroc_ref

    def variances(self, kappa: float) -> tuple[float, float]:
        """``(V0, VA)``: the difference's variance times the number of cases under the null and the alternative."""
        if not kappa > 0:
            raise StatsError(f"the ratio of controls to cases must be positive, got {kappa}")
        a1, a2 = binormal_a(self.auroc_ref, self.b_ref), binormal_a(self.auroc_alt, self.b_alt)
        v1 = auroc_variance(a1, self.b_ref, kappa)
        v2 = auroc_variance(a2, self.b_alt, kappa)
        c12 = auroc_covariance(a1, self.b_ref, a2, self.b_alt, self.r_controls, self.r_cases, kappa)
        return 2 * v1 - 2 * c12, v1 + v2 - 2 * c12

    def power(self, n_cases: float, n_controls: float, alpha: float = 0.05) -> float:
        """Power of the paired two-sided test at level ``alpha`` with these numbers of cases and controls."""
        if n_cases <= 0 or n_controls <= 0:
            raise StatsError(f"power needs cases and controls (got {n_cases} and {n_controls})")
        _check_level(alpha, "alpha")
        v0, va = self.variances(n_controls / n_cases)
        za = _st.norm.ppf(1 - alpha / 2)
        return float(_st.norm.cdf((math.sqrt(n_cases) * abs(self.delta) - za * math.sqrt(v0)) / math.sqrt(va)))

    def cases_needed(self, kappa: float, power: float = 0.8, alpha: float = 0.05) -> float:
        """Cases (unrounded, as pROC gives them) for ``power`` at level ``alpha``; controls = ``kappa`` x cases."""
        _check_level(power, "power")
        _check_level(alpha, "alpha")
        if self.delta == 0:
            raise StatsError("the two expected AUROCs are equal: no number of cases detects a difference of 0")
        v0, va = self.variances(kappa)
        za, zb = _st.norm.ppf(1 - alpha / 2), _st.norm.ppf(power)
        return float((za * math.sqrt(v0) + zb * math.sqrt(va)) ** 2 / self.delta ** 2)


def paired_power(auroc_ref: float, auroc_alt: float, n_cases: float, n_controls: float, *,
                 r_controls: float = 0.5, r_cases: float = 0.5, alpha: float = 0.05) -> float:
    """Power of a paired two-sided test of two AUROCs (see the module docstring)."""
    return PairedDesign(auroc_ref, auroc_alt, r_controls, r_cases).power(n_cases, n_controls, alpha)


@dataclass(frozen=True)
class SampleSize:
    """Cases and controls a paired comparison needs (``cases``/``controls`` unrounded, as pROC gives them)."""

    auroc_ref: float
    auroc_alt: float
    r_controls: float
    r_cases: float
    prevalence: float
    alpha: float
    power: float
    cases: float
    controls: float
    method: str = METHOD

    @property
    def n_cases(self) -> int:
        return math.ceil(self.cases - 1e-9)

    @property
    def n_controls(self) -> int:
        return math.ceil(self.controls - 1e-9)

    @property
    def n_total(self) -> int:
        """Patients to enrol: rounded-up cases plus rounded-up controls."""
        return self.n_cases + self.n_controls

    def as_dict(self) -> dict:
        return {**asdict(self), "n_cases": self.n_cases, "n_controls": self.n_controls, "n_total": self.n_total}


def sample_size(auroc_ref: float, auroc_alt: float, *, prevalence: float, r_controls: float = 0.5,
                r_cases: float = 0.5, power: float = 0.8, alpha: float = 0.05) -> SampleSize:
    """Cases and controls needed to detect ``auroc_alt - auroc_ref`` with a paired two-sided test.

    ``prevalence`` is the share of cases (label 1) among the patients enrolled; the controls per case
    are ``(1 - prevalence) / prevalence``.
    """
    _check_level(prevalence, "the prevalence")
    kappa = (1 - prevalence) / prevalence
    design = PairedDesign(auroc_ref, auroc_alt, r_controls, r_cases)
    cases = design.cases_needed(kappa, power, alpha)
    return SampleSize(float(auroc_ref), float(auroc_alt), design.r_controls, design.r_cases, float(prevalence),
                      float(alpha), float(power), cases, kappa * cases)


def minimal_detectable_difference(auroc_ref: float, n_cases: int, n_controls: int, *, r_controls: float = 0.5,
                                  r_cases: float = 0.5, power: float = 0.8, alpha: float = 0.05) -> float | None:
    """The smallest AUROC gain over ``auroc_ref`` that a paired two-sided test detects with ``power``.

    A design quantity: it depends on the sizes, the reference AUROC and the correlations, not on the
    difference observed (so, unlike "observed power", it says something a p-value does not).  None
    when not even an AUROC of (nearly) 1 would be detected with that power.
    """
    _check_level(power, "power")
    _check_level(alpha, "alpha")
    if n_cases < 1 or n_controls < 1:
        raise StatsError(f"the minimal detectable difference needs cases and controls (got {n_cases} and {n_controls})")
    top = 1.0 - auroc_ref - 1e-6
    if top <= 1e-6:
        return None

    def gap(delta: float) -> float:
        return PairedDesign(auroc_ref, auroc_ref + delta, r_controls, r_cases).power(n_cases, n_controls, alpha) - power

    grid = np.linspace(1e-6, top, 200)
    values = np.array([gap(d) for d in grid])
    above = np.flatnonzero(values >= 0)
    if above.size == 0:
        return None
    k = int(above[0])
    if k == 0:
        return float(grid[0])
    return float(optimize.brentq(gap, grid[k - 1], grid[k], xtol=1e-7))


def plan_comparisons(aurocs: dict[str, float], *, prevalence: float, correlation: float = 0.5,
                     powers=(0.8, 0.9), alpha: float = 0.05, adjust: bool = True) -> dict:
    """Patients needed for every pair of arms (``thyro power``), as JSON-able data.

    ``aurocs`` maps arm names to expected AUROCs, in order: in each pair the earlier arm is the
    reference (its AUROC is the null hypothesis).  ``correlation`` is used among cases and among
    controls alike.  With several pairs and ``adjust``, each is planned at ``alpha / pairs``
    (Bonferroni: Holm's correction, which the report applies, never needs more).
    """
    names = list(aurocs)
    if len(names) < 2:
        raise StatsError("a comparison needs the expected AUROCs of at least two arms")
    pairs = list(itertools.combinations(names, 2))
    each = alpha / len(pairs) if adjust and len(pairs) > 1 else alpha
    rows = []
    for ref, alt in pairs:
        try:
            sizes = [sample_size(aurocs[ref], aurocs[alt], prevalence=prevalence, r_controls=correlation,
                                 r_cases=correlation, power=p, alpha=each).as_dict() for p in powers]
        except StatsError as exc:
            raise StatsError(f"{alt} vs {ref}: {exc}") from None
        rows.append({"ref": ref, "alt": alt, "auroc_ref": float(aurocs[ref]), "auroc_alt": float(aurocs[alt]),
                     "sizes": sizes})
    notes = [f"Each patient counts once: with several images per patient, enrol these numbers of patients "
             f"(and analyse with the cluster bootstrap). Method: {METHOD}."]
    if len(pairs) > 1:
        notes.insert(0, f"{len(pairs)} comparisons: " + (
            f"each planned at alpha {alpha:g} / {len(pairs)} = {each:.4g} (Bonferroni, the safe bound of Holm's "
            "correction); --no-adjust plans each at alpha." if adjust and len(pairs) > 1 else
            f"each planned at alpha {alpha:g}, without correction for the {len(pairs)} comparisons."))
    return {"alpha": float(alpha), "alpha_each": float(each), "prevalence": float(prevalence),
            "correlation": float(correlation), "powers": [float(p) for p in powers], "method": METHOD,
            "comparisons": rows, "notes": notes}


def binormal_correlations(y, scores_a, scores_b) -> tuple[float, float]:
    """``(r_controls, r_cases)``: the correlation of two tests' scores among controls and among cases.

    Estimated from ranks (Spearman's rho, mapped to the binormal model's normal-scale correlation by
    ``2 sin(pi rho / 6)``), so any monotone transform of the scores gives the same value, as it gives
    the same AUROC.  A class with fewer than 3 images, or constant scores, gives 0.
    """
    y = np.asarray(y).astype(int).ravel()
    a, b = np.asarray(scores_a, float).ravel(), np.asarray(scores_b, float).ravel()
    out = []
    for cls in (0, 1):
        m = y == cls
        if m.sum() < 3 or np.ptp(a[m]) == 0 or np.ptp(b[m]) == 0:
            out.append(0.0)
            continue
        rho = _st.spearmanr(a[m], b[m]).statistic
        out.append(float(np.clip(2 * np.sin(np.pi * rho / 6), -0.99, 0.99)) if np.isfinite(rho) else 0.0)
    return out[0], out[1]
