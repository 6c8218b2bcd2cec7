"""Calibration intercept and slope agree with R's ``glm`` (values pinned; re-run live when R is present).

Calibration-in-the-large is ``glm(y ~ 1 + offset(qlogis(p)), family = binomial)``, the slope
``glm(y ~ qlogis(p), family = binomial)``; the intervals are Wald intervals (``confint.default``).
The probabilities are the scenarios of ``tests/stats/data/proc_scenarios.csv`` that lie in (0, 1).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from thyro.stats.calibration import calibration_line

HERE = Path(__file__).parent
SCENARIOS = HERE / "data" / "proc_scenarios.csv"

#: (intercept, its 95% lower, upper, slope, its 95% lower, upper) from R 4.x glm, 17 significant digits.
R_GLM = {
    ("unbalanced_n200", "s1"): (-3.2476484620715658, -3.8581226146627676, -2.6371743094803639,
                                1.8881836118441493, 1.0034363481176969, 2.7729308755706015),
    ("unbalanced_n200", "s2"): (-3.1769975365752106, -3.7819662847249362, -2.5720287884254849,
                                0.7926267347884185, 0.17902925875331654, 1.4062242108235203),
    ("rounded_n500", "s1"): (-1.3489538755250101, -1.5617384002345238, -1.1361693508154964,
                             0.98465093046612495, 0.75462588324228819, 1.2146759776899618),
    ("rounded_n500", "s2"): (-1.4533248777259686, -1.6708233266334545, -1.2358264288184828,
                             0.67554941806113056, 0.49035966006253551, 0.86073917605972561),
}
#: Coefficients agree to 1e-6.  Interval ends to 1e-4 only: R computes the standard errors from the
#: weights of its last IRLS iteration, one step before the final coefficients (glm stops when the
#: deviance changes by under 1e-8), while thyro takes them at the final coefficients; the two differ
#: by about 1e-5 on these data.
TOL = (1e-6, 1e-4, 1e-4, 1e-6, 1e-4, 1e-4)

R_SCRIPT = """
d <- read.csv(commandArgs(trailingOnly = TRUE)[1])
for (sc in c("unbalanced_n200", "rounded_n500")) for (col in c("s1", "s2")) {
  x <- d[d$scenario == sc, ]; lp <- qlogis(x[[col]]); y <- x$label
  m1 <- glm(y ~ 1 + offset(lp), family = binomial); m2 <- glm(y ~ lp, family = binomial)
  a <- confint.default(m1); b <- confint.default(m2)
  cat(sc, col, sprintf("%.17g", c(coef(m1)[1], a[1, ], coef(m2)[2], b[2, ])), "\\n")
}
"""


def _scenario(name: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    with SCENARIOS.open() as f:
        rows = [r for r in csv.DictReader(f) if r["scenario"] == name]
    return np.array([int(float(r["label"])) for r in rows]), np.array([float(r[column]) for r in rows])


def _ours(name: str, column: str) -> tuple[float, ...]:
    y, p = _scenario(name, column)
    c = calibration_line(y, p)
    return (c.intercept, c.intercept_lower, c.intercept_upper, c.slope, c.slope_lower, c.slope_upper)


def _close(ours, reference) -> None:
    diff = np.abs(np.asarray(ours) - np.asarray(reference))
    assert (diff <= np.asarray(TOL)).all(), f"differences {diff} exceed {TOL}"


@pytest.mark.parametrize("key", sorted(R_GLM))
def test_calibration_line_matches_pinned_glm(key):
    _close(_ours(*key), R_GLM[key])


def test_calibration_line_matches_glm_live(tmp_path):
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript not installed (apt install r-base-core); the pinned values are checked above")
    script = tmp_path / "glm.R"
    script.write_text(R_SCRIPT)
    out = subprocess.run(["Rscript", str(script), str(SCENARIOS)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    live = {}
    for line in out.stdout.strip().splitlines():
        name, column, *values = line.split()
        live[(name, column)] = tuple(float(v) for v in values)
    assert set(live) == set(R_GLM)
    for key, values in live.items():
        _close(_ours(*key), values)
