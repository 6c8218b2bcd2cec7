"""One statistic per question, computed from a predictions table.

The report, the model package and its card, ``thyro compare``, the web app's model information and
the study summary all ask the same few questions of the same predictions: "what is this arm's AUROC
on this set, with what interval?", "is arm A better than arm B here?", "which threshold, and how does
it do?".  Each question is answered here, once:

* rows are taken in one order (by image), with the clusters :mod:`thyro.run` computed once;
* the interval method follows one rule (:func:`thyro.stats.auto.choose_method`): DeLong when every
  patient/group has one image in the rows, else the stratified cluster bootstrap;
* the bootstrap's resamples, seed and level have one set of defaults (:data:`DEFAULT`);
* every figure first asks :func:`thyro.stats.support.check` whether the rows can support it: below
  the minimum per class it is ``{"missing": "not estimable: 1 malignant, 2 benign (...)",
  "not_estimable": {...}}``, never a number with a degenerate interval.

So the same predictions give the same numbers, to the last bit, wherever they are shown, and no
output shows a number the rows cannot support.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from thyro.errors import StatsError
from thyro.stats import (
    brier,
    choose_method,
    compare_paired,
    decision_curve,
    delong_cov,
    fit_temperature,
    has_repeated_groups,
    interval,
    reliability,
)
from thyro.stats.calibration import calibration_line
from thyro.stats.operating import choose_threshold, evaluate_threshold
from thyro.stats.power import binormal_correlations
from thyro.stats.roc import auroc_or_none
from thyro.stats.support import (
    CLASSES,
    MIN_CASES,  # noqa: F401 (the minimums the report states, read as metrics.MIN_CASES)
    MIN_EVENTS,  # noqa: F401
    NotEstimable,
    SizeReview,
    check,
    class_counts,
    review_sizes,
    slope_problem,
)

#: Operating points chosen on out-of-fold predictions: name -> rule of :mod:`thyro.stats.operating`.
OPERATING_RULES: dict[str, str] = {"youden": "youden", "sens90": "sens@0.90", "sens95": "sens@0.95",
                                   "spec90": "spec@0.90"}
RULE_TEXT = {"youden": "Youden's J (max sensitivity + specificity - 1)",
             "sens@0.90": "highest threshold with sensitivity >= 90%",
             "sens@0.95": "highest threshold with sensitivity >= 95%",
             "spec@0.90": "lowest threshold with specificity >= 90%"}
ECE_BINS = 10


@dataclass(frozen=True)
class Settings:
    """How intervals are computed: ``method`` auto | delong | bootstrap, resamples, seed and level."""

    method: str = "auto"
    n_boot: int = 2000
    seed: int = 0
    level: float = 0.95


DEFAULT = Settings()


def arrays(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(labels, probabilities, clusters or None)`` of prediction rows, in image order."""
    rows = rows.sort_values("image", kind="mergesort")
    y = rows["label"].to_numpy(dtype=int)
    p = rows["probability"].to_numpy(dtype=float)
    groups = None
    if "cluster" in rows.columns and rows["cluster"].notna().all() and len(rows):
        groups = rows["cluster"].to_numpy(dtype=np.int64)
    return y, p, groups


def problem(rows: pd.DataFrame) -> str | None:
    """Why an AUROC cannot be computed on ``rows`` (None when it can)."""
    if rows.empty:
        return "no predictions"
    bad = ~np.isfinite(rows["probability"].to_numpy(dtype=float))
    if bad.any():
        n = int(bad.sum())
        return f"{n} NaN or infinite probabilit{'y' if n == 1 else 'ies'}"
    if rows["label"].nunique() < 2:
        return "the cases hold one class only; AUROC undefined"
    return None


def support(rows: pd.DataFrame, figure: str = "auroc") -> NotEstimable | None:
    """Whether ``rows`` can support ``figure`` (:func:`thyro.stats.support.check`; None when they can)."""
    y, _, groups = arrays(rows)
    return check(figure, y, groups)


def not_estimable(why: NotEstimable, classes: tuple[str, str] = CLASSES) -> dict:
    """A figure the rows cannot support, as every output carries it: ``{"missing": text, "not_estimable":
    counts}`` (``classes``: what the set's labels call class 1 and class 0)."""
    return {"missing": why.describe(*classes), "not_estimable": why.as_dict()}


def unsupported(rows: pd.DataFrame, figure: str, classes: tuple[str, str] = CLASSES) -> dict | None:
    """Why ``rows`` give no ``figure``, as every output carries it: ``{"missing": reason}`` when it is undefined
    on them (:func:`problem`), :func:`not_estimable` when they are too few (:func:`support`); None when they
    give one."""
    why = problem(rows)
    if why:
        return {"missing": why}
    short = support(rows, figure)
    return not_estimable(short, classes) if short else None


def method_for(rows: pd.DataFrame, settings: Settings = DEFAULT) -> str:
    """``"delong"`` or ``"bootstrap"`` for these rows (see the module docstring)."""
    return choose_method(arrays(rows)[2], settings.method)


def auroc(rows: pd.DataFrame) -> float | None:
    """The AUROC point estimate of prediction rows (None without both classes, or when the rows cannot
    support one: :func:`support`)."""
    if problem(rows) or support(rows, "auroc"):
        return None
    y, p, _ = arrays(rows)
    return auroc_or_none(y, p)


def auroc_summary(rows: pd.DataFrame, settings: Settings = DEFAULT, classes: tuple[str, str] = CLASSES) -> dict:
    """AUROC with its interval, as every output shows it.

    Returns a dict with ``auroc, lower, upper, level, se, method, n, n_pos, n_clusters`` (or
    ``{"missing": reason}`` when the rows cannot give one, with ``not_estimable`` when they are too few).
    """
    refused = unsupported(rows, "auroc", classes)
    if refused:
        return refused
    y, p, groups = arrays(rows)
    r = interval(y, p, groups, method=settings.method, level=settings.level, n_boot=settings.n_boot,
                 seed=settings.seed)
    out = {k: v for k, v in asdict(r).items()}
    out.update(n=int(y.size), n_pos=int(y.sum()), n_clusters=None if groups is None else int(np.unique(groups).size),
               n_boot=settings.n_boot if r.method != "delong" else None, missing=None)
    return out


def compare(rows_a: pd.DataFrame, rows_b: pd.DataFrame, settings: Settings = DEFAULT,
            classes: tuple[str, str] = CLASSES) -> dict:
    """Paired comparison ``A - B`` on the images both score (the same cases in both).

    Returns the comparison (``diff, lower, upper, p_value, method, ...``), the DeLong correlation of
    the two AUROCs, the correlations of the two scores among controls and among cases
    (``r_controls``, ``r_cases``: what a design calculation needs, :mod:`thyro.stats.power`), or
    ``{"missing": reason}`` (with ``not_estimable`` when the common cases are too few).
    """
    for name, rows in (("A", rows_a), ("B", rows_b)):
        why = problem(rows)
        if why:
            return {"missing": f"{name}: {why}"}
    a = rows_a.sort_values("image", kind="mergesort")
    b = rows_b.sort_values("image", kind="mergesort")
    if a["image"].tolist() != b["image"].tolist():
        common = len(set(a["image"]) & set(b["image"]))
        return {"missing": f"different cases ({len(a)} vs {len(b)}, {common} in common); not compared"}
    if (a["label"].to_numpy() != b["label"].to_numpy()).any():
        return {"missing": "the two sets of rows disagree on labels"}
    short = support(a, "difference")
    if short:
        return not_estimable(short, classes)
    y, pa, groups = arrays(a)
    pb = b["probability"].to_numpy(dtype=float)
    c = compare_paired(y, pa, pb, groups, method=settings.method, level=settings.level, n_boot=settings.n_boot,
                       seed=settings.seed)
    out = dict(c.as_dict())
    _, cov = delong_cov(y, np.vstack([pa, pb]))
    out["correlation"] = float(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])) if cov[0, 0] * cov[1, 1] > 0 else 0.0
    out["r_controls"], out["r_cases"] = binormal_correlations(y, pa, pb)
    out["n_pos"], out["n_neg"] = int(y.sum()), int(y.size - y.sum())
    out["missing"] = None
    return out


def clustered(rows: pd.DataFrame) -> bool:
    """Whether some patient/group has several images among ``rows``."""
    return has_repeated_groups(arrays(rows)[2])


def method_text(rows: pd.DataFrame, clustered_by: str | None, settings: Settings = DEFAULT) -> str:
    """One sentence naming the interval method used for ``rows`` and why."""
    used = method_for(rows, settings)
    repeats = clustered(rows)
    if used == "delong" and clustered_by is None:
        return ("DeLong; the predictions name no patient or group, so every image is treated as an independent "
                "case (add a patient column if patients have several images)")
    if used == "delong":
        return ("DeLong (independent cases: no patient or group has more than one image here)" if not repeats
                else "DeLong (chosen by the user although some patients have several images; intervals may be "
                     "too narrow)")
    unit = "patients and leakage groups" if clustered_by == "patient and group" else f"{clustered_by}s"
    if repeats:
        return (f"stratified cluster bootstrap over {unit} ({settings.n_boot} resamples, seed {settings.seed}), "
                "because some patients have several images")
    return f"stratified bootstrap ({settings.n_boot} resamples, seed {settings.seed})"


# ----------------------------------------------------------------------------------------------
# operating points and calibration
# ----------------------------------------------------------------------------------------------

def _prop(p) -> dict:
    def f(v):
        return None if v is None or not np.isfinite(v) else float(v)
    return {"value": f(p.value), "lower": f(p.lower), "upper": f(p.upper), "k": int(p.k), "n": int(p.n)}


def choose_thresholds(oof_rows: pd.DataFrame, rules: dict[str, str] | None = None,
                      classes: tuple[str, str] = CLASSES) -> dict[str, dict]:
    """Thresholds chosen on out-of-fold rows: ``{name: {threshold, rule, sensitivity, specificity}}``.

    A case is called positive when ``probability >= threshold``.  Raises :class:`StatsError` when the
    rows cannot support a rule (one class, non-finite probabilities).  When they are too few to support
    sensitivity and specificity (:func:`support`), the threshold is still chosen (a model package needs
    one) but each point's out-of-fold sensitivity and specificity are ``not_estimable``.
    """
    why = problem(oof_rows)
    if why:
        raise StatsError(f"cannot choose operating points on the out-of-fold predictions: {why}")
    y, p, _ = arrays(oof_rows)
    short = support(oof_rows, "operating")
    out = {}
    for name, rule in (rules or OPERATING_RULES).items():
        t = choose_threshold(y, p, rule)
        ev = evaluate_threshold(y, p, t, rule)
        out[name] = {"threshold": float(t), "rule": rule, "rule_text": RULE_TEXT.get(rule, rule),
                     "sensitivity": _prop(ev.sensitivity), "specificity": _prop(ev.specificity)}
        if short:
            out[name].update(not_estimable(short, classes), sensitivity=None, specificity=None)
    return out


def at_thresholds(rows: pd.DataFrame, points: dict[str, dict], level: float = 0.95,
                  classes: tuple[str, str] = CLASSES) -> dict[str, dict]:
    """Sensitivity, specificity, PPV, NPV, accuracy (Wilson intervals) and counts at each point's threshold:
    ``{name: {...}}``, or ``{"missing": reason, "not_estimable": ...}`` when the rows are too few."""
    short = support(rows, "operating")
    if short:
        return not_estimable(short, classes)
    y, p, _ = arrays(rows)
    out = {}
    for name, op in points.items():
        ev = evaluate_threshold(y, p, op["threshold"], op.get("rule", name), level)
        out[name] = {k: _prop(getattr(ev, k)) for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy")}
        out[name]["confusion"] = {k: int(v) for k, v in asdict(ev.confusion).items()}
        out[name]["threshold"] = float(op["threshold"])
    return out


def calibration(rows: pd.DataFrame, oof_rows: pd.DataFrame | None = None, classes: tuple[str, str] = CLASSES) -> dict:
    """Brier score, ECE and reliability, calibration intercept and slope, and (with out-of-fold rows)
    the temperature fitted there and the scores after it; ``{"missing": reason}`` when the scores are
    not probabilities or too few (``not_estimable``).  Where the probabilities separate the classes
    completely the slope has no finite estimate: ``slope`` and its interval are None, ``slope_missing``
    says why."""
    refused = unsupported(rows, "calibration", classes)
    if refused:
        return refused
    y, p, _ = arrays(rows)
    try:
        rel = reliability(y, p, ECE_BINS)
        line = calibration_line(y, p).as_dict()
        out = {"brier": brier(y, p), "ece": rel.ece, "reliability": rel.as_dict(), "intercept": line["intercept"],
               "slope": line["slope"], "line": line, "missing": None, "slope_missing": slope_problem(y, p)}
        if out["slope_missing"]:
            out["slope"] = line["slope"] = line["slope_lower"] = line["slope_upper"] = None
        if oof_rows is not None and not problem(oof_rows):
            short = support(oof_rows, "calibration")
            if short:
                out["temperature_missing"] = "out of fold " + short.describe(*classes)
            else:
                yo, po, _ = arrays(oof_rows)
                temp = fit_temperature(yo, po)
                pc = temp(p)
                out.update(temperature=temp.temperature, brier_scaled=brier(y, pc),
                           ece_scaled=reliability(y, pc, ECE_BINS).ece)
    except StatsError as exc:  # e.g. scores that are not probabilities
        return {"missing": str(exc)}
    return out


def decision(rows: pd.DataFrame, classes: tuple[str, str] = CLASSES) -> dict:
    """Decision curves (net benefit of the model, of treating all and none) of prediction rows, or
    ``{"missing": reason}`` (``not_estimable`` when the rows are too few)."""
    refused = unsupported(rows, "decision", classes)
    if refused:
        return refused
    y, p, _ = arrays(rows)
    try:
        return decision_curve(y, p).as_dict()
    except StatsError as exc:
        return {"missing": str(exc)}


# ----------------------------------------------------------------------------------------------
# before a study: what its sets will support
# ----------------------------------------------------------------------------------------------

def _cases(rows: pd.DataFrame) -> tuple[int, int]:
    """Independent cases of each class among manifest rows (patients/groups where some have several images)."""
    rows = rows[rows["label"].notna()]
    ids = next((rows[c].astype(str).to_numpy() for c in ("group", "patient_id", "patient") if c in rows.columns
                and rows[c].notna().all()), None)
    return class_counts(rows["label"].to_numpy(dtype=int), ids)[2:4]


def review_study(manifest: pd.DataFrame, test: list[str], folds: list[list[str]],
                 external: dict[str, pd.DataFrame] | None = None, *, comparisons: int = 1,
                 classes: tuple[str, str] = CLASSES) -> SizeReview:
    """What a study's sets will support, before it trains (:func:`thyro.stats.support.review_sizes`).

    Parameters
    ----------
    manifest : DataFrame
        The development data's manifest (``image``, ``label``, and ``group`` / ``patient_id`` when known).
    test, folds : list
        The held-out test set's image ids, and each fold's held-out image ids (a :class:`thyro.data.splits.Splits`'
        ``test`` and ``folds``).
    external : dict, optional
        ``{name: manifest}`` of each external set.
    comparisons : int
        The comparisons of interest the report will test (``report.comparisons``, or its default: with a
        scratch arm among ``k`` arms, ``(k - 1) + (k - 1)(k - 2) / 2``; without, ``k (k - 1) / 2``).
    classes : (str, str)
        What the labels call class 1 and class 0 (the warnings' words).

    Returns
    -------
    SizeReview
        ``warnings`` (plain sentences, empty when every set is large enough) and, per set and fold, the
        figures supported and the smallest AUROC difference detectable.
    """
    dev = manifest.drop_duplicates("image").set_index("image", drop=False)
    sets: dict[str, tuple[int, int]] = {}
    for name, df in (external or {}).items():
        sets[name] = _cases(df)
    if test:
        sets["test"] = _cases(dev.loc[list(test)])
    pooled = [i for fold in folds for i in fold]
    if pooled:
        sets["val"] = _cases(dev.loc[pooled])
    return review_sizes(sets, folds=[_cases(dev.loc[list(f)]) for f in folds], comparisons=comparisons,
                        positive=classes[0], negative=classes[1])
