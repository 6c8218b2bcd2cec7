"""What a set of cases can support: the one rule every figure shown goes through.

A statistic computed on one or two cases of a class is not a result.  DeLong's variance of an AUROC
on 1 malignant and 2 benign images does not exist, a bootstrap interval on them is ``[1.000, 1.000]``,
and a logistic calibration slope on them runs off to 57,607.  So every figure thyro shows (AUROC and
its interval, a paired difference, calibration, operating points, decision curves) is first put to
:func:`check`: below the minimum it is :class:`NotEstimable` (``"not estimable: 1 malignant, 2
benign ..."``), a value the report, the model card and ``thyro compare`` render in words, never as a
number.

Cases are counted per class as independent units: patients (or leakage groups) when some patient has
several images in the set, since the cluster bootstrap then resamples patients; else images.  A patient
with a benign and a malignant nodule counts in both classes.

The minimums
------------
:data:`MIN_CASES` = 5 of each class, for an AUROC (with or without its interval), a paired
difference, sensitivity and specificity at an operating point, and decision curves.

* DeLong's variance (pROC's default) is the sample variance of each class's placement values
  (``n - 1`` denominators): with 1 case of a class it does not exist (pROC gives ``NA``) and with 2 it
  rests on one degree of freedom.
* The stratified bootstrap (pROC's, and thyro's cluster bootstrap) resamples each class on its own:
  a class of ``n`` has only ``C(2n - 1, n)`` distinct resamples (3, 10, 35 and 126 for n = 2..5), and a
  resample repeats one case ``n`` times with probability ``n^(1 - n)`` (50%, 11%, 1.6%, 0.16%).  Below
  5 a 95% percentile interval's tails are a handful of distinct resamples or degenerate ones; from 5
  on they are neither.
* An AUROC takes ``n1 n0 + 1`` values; with 5 of each, steps of 0.04.
* Sensitivity and specificity are the two axes of the ROC curve: a set that cannot support the curve's
  area cannot support a point on it; decision curves are read off the same ranking.

Five separates what fails (1-2 cases of a class: the 25-patient UD-TN sample's folds and test set)
from what is merely imprecise and must stay reported with its wide interval (the UD-TN sample as an
external set, 13 malignant and 13 benign images; a 44-image DDTI test set).

:data:`MIN_EVENTS` = 10 of each class, for calibration (intercept and slope with Wald intervals, and
the Brier score, ECE and reliability diagram shown beside them): logistic recalibration has one
predictor, and maximum likelihood needs about 10 events per variable (Peduzzi et al., J Clin
Epidemiol 1996;49:1373) for finite, roughly normal estimates.  Whatever the size, a set whose
probabilities separate the classes completely has no finite slope (:func:`slope_problem`).

Depends on numpy (and scipy through :mod:`thyro.stats.roc` and :mod:`thyro.stats.power`) only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from thyro.stats.power import minimal_detectable_difference
from thyro.stats.roc import auroc

__all__ = ["CLASSES", "FIGURES", "MIN_CASES", "MIN_EVENTS", "NotEstimable", "SetSize", "SizeReview", "check",
           "class_counts", "estimable_auroc", "review_sizes", "slope_problem"]

#: Cases of each class an AUROC, a paired difference, an operating point or a decision curve needs.
MIN_CASES = 5
#: Cases of each class (events and non-events) calibration needs.
MIN_EVENTS = 10
#: Default names of class 1 and class 0 in the text.
CLASSES = ("malignant", "benign")

#: Figure -> (its name and verb in a sentence, the minimum per class).
FIGURES: dict[str, tuple[str, int]] = {
    "auroc": ("an AUROC needs", MIN_CASES),
    "difference": ("a paired difference needs", MIN_CASES),
    "operating": ("sensitivity and specificity need", MIN_CASES),
    "decision": ("a decision curve needs", MIN_CASES),
    "calibration": ("calibration needs", MIN_EVENTS),
}


@dataclass(frozen=True)
class NotEstimable:
    """A figure a set cannot support, and the counts that fall short.

    Attributes
    ----------
    figure : str
        A key of :data:`FIGURES` (``"auroc"``, ``"difference"``, ...).
    n_pos, n_neg : int
        Images of class 1 and class 0.
    units_pos, units_neg : int
        Independent cases of each class: patients (or groups) when ``unit`` is ``"patients"``, else the
        images again.
    minimum : int
        The figure's minimum per class (counted in ``unit``).
    unit : str
        ``"images"`` or ``"patients"``.
    """

    figure: str
    n_pos: int
    n_neg: int
    units_pos: int
    units_neg: int
    minimum: int
    unit: str = "images"

    def describe(self, positive: str = CLASSES[0], negative: str = CLASSES[1]) -> str:
        """The reason in words, e.g. ``not estimable: 1 malignant, 2 benign (an AUROC needs at least 5 of
        each)``; class names as the set's labels call them."""
        what = FIGURES.get(self.figure, (self.figure, self.minimum))[0]
        text = f"not estimable: {self.n_pos} {positive}, {self.n_neg} {negative}"
        if self.unit == "patients":
            return (text + f" images from {self.units_pos} and {self.units_neg} patients ({what} at least "
                    f"{self.minimum} patients of each class)")
        return text + f" ({what} at least {self.minimum} of each)"

    @property
    def text(self) -> str:
        return self.describe()

    def __str__(self) -> str:
        return self.text

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NotEstimable:
        return cls(**{k: d[k] for k in ("figure", "n_pos", "n_neg", "units_pos", "units_neg", "minimum", "unit")})


def class_counts(y, groups=None) -> tuple[int, int, int, int, str]:
    """``(n_pos, n_neg, units_pos, units_neg, unit)``: images of each class, and independent cases of each.

    With ``groups`` (a patient or group id per image) in which some id repeats, the independent cases
    are the ids holding an image of that class (``unit = "patients"``); else the images.
    """
    y = np.asarray(y).astype(int).ravel()
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if groups is None or y.size == 0:
        return n_pos, n_neg, n_pos, n_neg, "images"
    g = np.asarray(groups).ravel()
    _, codes = np.unique(g.astype(str) if g.dtype == object else g, return_inverse=True)
    codes = codes.ravel()
    if np.unique(codes).size == y.size:  # every patient one image: images are the cases
        return n_pos, n_neg, n_pos, n_neg, "images"
    return (n_pos, n_neg, int(np.unique(codes[y == 1]).size), int(np.unique(codes[y == 0]).size), "patients")


def check(figure: str, y, groups=None) -> NotEstimable | None:
    """Whether the cases ``y`` (0/1, with optional patient/group ids) support ``figure``: None when they
    do, else the :class:`NotEstimable` that says why."""
    if figure not in FIGURES:
        raise ValueError(f"figure={figure!r}: choose one of {', '.join(FIGURES)}")
    minimum = FIGURES[figure][1]
    n_pos, n_neg, u_pos, u_neg, unit = class_counts(y, groups)
    if min(u_pos, u_neg) >= minimum:
        return None
    return NotEstimable(figure, n_pos, n_neg, u_pos, u_neg, minimum, unit)


def slope_problem(y, p) -> str | None:
    """Why a calibration slope has no finite estimate on these cases (None when it has one).

    When every case of one class scores above every case of the other, the likelihood of
    ``logit P(y = 1) = a + b logit(p)`` keeps growing with ``|b|``: maximum likelihood (R's ``glm``
    too, with a warning) stops at an arbitrary, huge slope with a huge interval.
    """
    y = np.asarray(y).astype(int).ravel()
    p = np.asarray(p, dtype=float).ravel()
    pos, neg = p[y == 1], p[y == 0]
    if pos.size == 0 or neg.size == 0:
        return None
    if pos.min() > neg.max() or pos.max() < neg.min():
        return ("not estimable: the probabilities separate the classes completely, so the calibration slope "
                "has no finite estimate")
    return None


def estimable_auroc(y, scores, groups=None) -> float | None:
    """The AUROC of ``scores`` against ``y`` when the cases support one (:func:`check`), else None.

    For values logged beside the shown ones (training logs, experiment tracking): the same rule as
    every figure shown.  Non-finite scores also give None.
    """
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.size == 0 or s.shape != y.shape or not np.isfinite(s).all() or check("auroc", y, groups) is not None:
        return None
    return float(auroc(y, s))


# ----------------------------------------------------------------------------------------------
# before a study: what its sets will support
# ----------------------------------------------------------------------------------------------

#: What a design check assumes of the arms it cannot know yet: the reference arm's AUROC and the
#: correlation of two arms' scores within each class (``thyro power``'s default; 0.3-0.7 is typical of
#: models fine-tuned on the same images).
DESIGN_AUROC = 0.75
DESIGN_CORRELATION = 0.5
#: A set that cannot detect an AUROC difference of this size is warned about: transfer-learning studies
#: report gains of 0.04-0.14 (the reference study: ImageNet 0.79 and RadImageNet 0.83 over scratch 0.69).
WORTH_DETECTING = 0.10
#: How a set is named in a warning, by its split name; any other name is an external set.
SET_TITLES = {"test": "the held-out test set", "val": "the pooled out-of-fold predictions",
              "oof": "the pooled out-of-fold predictions"}


@dataclass(frozen=True)
class SetSize:
    """One evaluation set before the study: its cases, the figures it supports and the smallest AUROC
    difference a paired test on it detects (None when none up to an AUROC of 1 is, or it supports none)."""

    name: str
    n_pos: int
    n_neg: int
    supports: dict[str, bool]
    detectable: float | None


@dataclass(frozen=True)
class SizeReview:
    """What a study's sets will support (:func:`review_sizes`): per set, per fold, and the warnings."""

    sets: list[SetSize]
    folds: list[SetSize]
    warnings: list[str]
    alpha_each: float
    assumptions: str

    def as_dict(self) -> dict:
        return asdict(self)


def _size(name: str, n_pos: int, n_neg: int, **design) -> SetSize:
    supports = {f: min(n_pos, n_neg) >= m for f, (_, m) in FIGURES.items()}
    detectable = None
    if supports["difference"]:
        detectable = minimal_detectable_difference(design["auroc"], n_pos, n_neg, r_controls=design["r"],
                                                   r_cases=design["r"], power=design["power"],
                                                   alpha=design["alpha"])
    return SetSize(str(name), int(n_pos), int(n_neg), supports, detectable)


def review_sizes(sets: dict[str, tuple[int, int]], *, folds: list[tuple[int, int]] | None = None,
                 comparisons: int = 1, positive: str = CLASSES[0], negative: str = CLASSES[1],
                 reference_auroc: float = DESIGN_AUROC, correlation: float = DESIGN_CORRELATION,
                 power: float = 0.8, alpha: float = 0.05) -> SizeReview:
    """Warn, before any training, of sets too small for the figures and comparisons a study will report.

    Parameters
    ----------
    sets : dict
        ``{name: (cases of class 1, cases of class 0)}`` of every evaluation set: ``"test"`` (the held-out
        test set), ``"val"`` (the pooled out-of-fold predictions: the development cases outside the test
        set) and each external set by its name.  Count patients where patients have several images.
    folds : list of (int, int), optional
        The cases of each class in each fold's held-out part (what each per-fold AUROC is computed on).
    comparisons : int
        The comparisons of interest the report will test on each set (Holm-corrected together; planned
        here at ``alpha / comparisons``, the Bonferroni bound Holm never needs more than).
    positive, negative : str
        What the classes are called in the warnings.
    reference_auroc, correlation, power, alpha
        The design the smallest detectable difference is computed for (:mod:`thyro.stats.power`).

    Returns
    -------
    SizeReview
        Per set and per fold: the figures supported and the smallest detectable difference; warnings in
        plain words (empty when every set supports every figure and detects a difference of
        :data:`WORTH_DETECTING`).
    """
    k = max(int(comparisons), 1)
    design = {"auroc": reference_auroc, "r": correlation, "power": power, "alpha": alpha / k}
    reviewed = [_size(name, p, n, **design) for name, (p, n) in sets.items()]
    per_fold = [_size(f"fold {i}", p, n, **design) for i, (p, n) in enumerate(folds or [])]
    how = (f"{power:.0%} power, two-sided alpha {alpha:g}" + (f" / {k} comparisons" if k > 1 else "")
           + f", a reference AUROC of {reference_auroc:g} and a score correlation of {correlation:g} between arms")
    warnings = []
    small = [f for f in per_fold if not f.supports["auroc"]]
    if small:
        worst = min(small, key=lambda f: min(f.n_pos, f.n_neg))
        warnings.append(
            f"{len(small)} of {len(per_fold)} folds hold fewer than {MIN_CASES} {positive} or {negative} cases "
            f"(as few as {worst.n_pos} {positive} and {worst.n_neg} {negative} in {worst.name}): their per-fold "
            "AUROCs will be reported as not estimable, and the pooled out-of-fold predictions carry the "
            "cross-validation.")
    for s in reviewed:
        title = SET_TITLES.get(s.name, f"the external set {s.name}")
        title = title[0].upper() + title[1:]
        counts = f"{s.n_pos} {positive}, {s.n_neg} {negative}"
        if not s.supports["auroc"]:
            warnings.append(f"{title} ({counts}) is too small for an AUROC: it, its interval and every comparison "
                            f"on it will be reported as not estimable (at least {MIN_CASES} of each needed).")
            continue
        if not s.supports["calibration"]:
            warnings.append(f"{title} ({counts}): calibration will be reported as not estimable (at least "
                            f"{MIN_EVENTS} of each needed).")
        if comparisons > 0 and (s.detectable is None or s.detectable > WORTH_DETECTING):
            can = ("cannot detect any AUROC difference" if s.detectable is None
                   else f"can detect only AUROC differences of {s.detectable:.2f} or more")
            warnings.append(f"{title} ({counts}) {can} ({how}); gains from pretraining are typically 0.04-0.14.")
    return SizeReview(reviewed, per_fold, warnings, alpha / k, how)
