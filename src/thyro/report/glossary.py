"""One-line explanations of the report's terms: shown on hover (``title=``) and in its glossary."""

from __future__ import annotations

from markupsafe import Markup, escape

from thyro.stats.support import MIN_CASES, MIN_EVENTS

#: term -> (how it is written, one-line explanation), in the order the glossary lists them.
GLOSSARY: dict[str, tuple[str, str]] = {
    "auroc": ("AUROC", "Area under the ROC curve: the chance that a randomly chosen positive case gets a higher "
                       "probability than a randomly chosen negative one (0.5 = guessing, 1 = perfect ranking)."),
    "ci": ("CI", "Confidence interval: the range of values compatible with the data at the stated level "
                 "(e.g. 95%)."),
    "oof": ("out-of-fold", "Each development image scored by the one cross-validation model that did not train "
                           "on it; pooled over the folds."),
    "ensemble": ("ensemble", "The mean probability of an arm's fold models: the model `thyro bundle` packages."),
    "delong": ("DeLong", "DeLong's method: a formula for the AUROC's standard error and for comparing two AUROCs "
                         "measured on the same cases (as R's pROC computes it)."),
    "cluster_bootstrap": ("cluster bootstrap", "Resampling whole patients (with all their images) to get "
                                               "intervals and p-values that respect images of one patient being "
                                               "alike."),
    "paired": ("paired test", "A comparison of two models scored on the same cases, using that their errors "
                              "are correlated (more powerful than comparing two separate intervals)."),
    "holm": ("Holm", "Holm's correction: raises each p-value so that, over all the comparisons of interest "
                     "together, the chance of any false positive stays below 5%."),
    "mdd": ("smallest detectable difference", "The smallest AUROC gain over the reference arm that a paired test "
                                              "at this set's size finds with 80% power at α = 0.05 (Obuchowski & "
                                              "McClish); it does not depend on the difference observed."),
    "operating_point": ("operating point", "A probability threshold turning the model's output into a yes/no "
                                           "call; chosen on out-of-fold predictions, then applied unchanged."),
    "youden": ("Youden's J", "The threshold maximising sensitivity + specificity − 1."),
    "wilson": ("Wilson interval", "A confidence interval for a proportion (sensitivity, PPV, ...) that behaves "
                                  "well with few cases."),
    "ppv": ("PPV / NPV", "Positive / negative predictive value: the share of positive calls that are positive, "
                         "of negative calls that are negative (they depend on prevalence)."),
    "brier": ("Brier score", "Mean squared difference between probability and outcome (0 is perfect)."),
    "ece": ("ECE", "Expected calibration error: the average gap between predicted probability and observed "
                   "frequency, over probability bins."),
    "calibration_intercept": ("calibration intercept", "How far predictions are too high (below 0) or too low "
                                                       "(above 0) on average; 0 is ideal."),
    "calibration_slope": ("calibration slope", "Below 1: predictions too extreme (over-confident); above 1: too "
                                               "timid; 1 is ideal."),
    "temperature": ("temperature", "Temperature scaling: one number dividing the model's logit, fitted on the "
                                   "out-of-fold predictions to make its probabilities calibrated; AUROC is "
                                   "unchanged."),
    "decision_curve": ("decision curve", "Net benefit of acting on the model across the threshold probabilities a "
                                         "clinician might choose, against treating everyone or no one."),
    "net_benefit": ("net benefit", "True positives per case minus false positives per case weighted by the odds "
                                   "of the threshold probability (Vickers & Elkin)."),
    "not_estimable": ("not estimable", "A figure the set is too small to support, shown with the counts instead of "
                                       "a number: an AUROC, a difference, an operating point or a decision curve "
                                       f"needs at least {MIN_CASES} cases of each class, calibration {MIN_EVENTS} "
                                       "(patients, where patients have several images)."),
}


def term(key: str, text: str | None = None) -> str:
    """HTML for a term with its explanation on hover: ``<abbr title="...">AUROC</abbr>``."""
    shown, explanation = GLOSSARY[key]
    return Markup(f'<abbr title="{escape(explanation)}">{escape(text or shown)}</abbr>')
