"""thyro.stats: ROC statistics matched to R's pROC, cluster bootstrap, operating points, calibration,
decision curves, power and sample size.  Depends on numpy and scipy only (no torch)."""

from thyro.stats.auto import choose_method, compare_paired, interval
from thyro.stats.bootstrap import (
    bootstrap_auroc,
    bootstrap_paired,
    bootstrap_roc_band,
    bootstrap_weights,
    has_repeated_groups,
    weighted_auroc,
)
from thyro.stats.calibration import (
    CalibrationLine,
    Calibrator,
    brier,
    calibration_line,
    ece,
    fit_platt,
    fit_temperature,
    reliability,
)
from thyro.stats.decision import decision_curve, net_benefit
from thyro.stats.multiple import holm
from thyro.stats.operating import (
    confusion,
    evaluate_threshold,
    operating_points,
    threshold_for_sensitivity,
    threshold_for_specificity,
    threshold_youden,
    wilson_ci,
)
from thyro.stats.format import format_p
from thyro.stats.power import PairedDesign, minimal_detectable_difference, paired_power, sample_size
from thyro.stats.roc import AurocResult, Comparison, auroc, auroc_ci, delong_cov, delong_paired, delong_unpaired, roc_curve

__all__ = [
    "auroc", "auroc_ci", "AurocResult", "bootstrap_auroc", "bootstrap_paired", "bootstrap_roc_band",
    "bootstrap_weights", "brier", "calibration_line", "CalibrationLine", "Calibrator", "choose_method",
    "compare_paired", "Comparison", "confusion", "decision_curve", "delong_cov", "delong_paired", "delong_unpaired",
    "ece", "evaluate_threshold", "fit_platt", "fit_temperature", "format_p", "has_repeated_groups", "holm",
    "interval", "minimal_detectable_difference", "net_benefit", "operating_points", "paired_power", "PairedDesign",
    "reliability", "roc_curve", "sample_size", "threshold_for_sensitivity", "threshold_for_specificity",
    "threshold_youden", "weighted_auroc", "wilson_ci",
]
