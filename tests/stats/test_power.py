"""thyro.stats.power (``thyro power``) agrees with R's pROC ``power.roc.test`` (values pinned; re-run live
when R is present), and its minimal detectable difference is the inverse of its power."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import special

from thyro.errors import StatsError
from thyro.stats.power import (
    PairedDesign,
    binormal_correlations,
    minimal_detectable_difference,
    paired_power,
    sample_size,
)

R_SCRIPT = Path(__file__).parent / "power_reference.R"
TOL = 0.01  # required: 1%; observed differences are about 1e-15

#: ``Rscript tests/stats/power_reference.R`` with pROC 1.18.0.
PROC_1_18_0 = {
    ("jacr_80", "ncases"): 61.128760227618876,
    ("jacr_80", "ncontrols"): 113.52484042272079,
    ("small_90", "ncases"): 504.34759959829177,
    ("small_90", "ncontrols"): 1176.8110657293475,
    ("test101", "power"): 0.08871363726713058,
}


def _ours() -> dict[tuple[str, str], float]:
    jacr = sample_size(0.69, 0.83, prevalence=0.35, r_controls=0.5, r_cases=0.5, power=0.8)
    small = sample_size(0.75, 0.80, prevalence=0.30, r_controls=0.6, r_cases=0.6, power=0.9)
    return {
        ("jacr_80", "ncases"): jacr.cases, ("jacr_80", "ncontrols"): jacr.controls,
        ("small_90", "ncases"): small.cases, ("small_90", "ncontrols"): small.controls,
        ("test101", "power"): paired_power(0.79, 0.83, 35, 66, r_controls=0.7, r_cases=0.6),
    }


def _compare(ours, ref):
    assert set(ours) == set(ref)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=TOL), key


def test_matches_pinned_proc_values():
    _compare(_ours(), PROC_1_18_0)
    # and far closer than the 1% asked for: the same formulas
    for key, value in PROC_1_18_0.items():
        assert _ours()[key] == pytest.approx(value, rel=1e-9), key


@pytest.mark.r
def test_live_proc():
    if shutil.which("Rscript") is None or subprocess.run(["Rscript", "-e", "library(pROC)"],
                                                         capture_output=True).returncode != 0:
        pytest.skip("Rscript with pROC not installed")
    out = subprocess.run(["Rscript", str(R_SCRIPT)], check=True, capture_output=True, text=True, timeout=120).stdout
    ref = {(case, q): float(v) for case, q, v in (line.split() for line in out.splitlines() if line.strip())}
    _compare(_ours(), ref)


def test_rounding_and_totals():
    s = sample_size(0.69, 0.83, prevalence=0.35, r_controls=0.5, r_cases=0.5)
    assert (s.n_cases, s.n_controls) == (62, 114) and s.n_total == 176
    assert s.as_dict()["n_total"] == 176
    # more power, more patients; a stronger correlation between the arms, fewer
    assert sample_size(0.69, 0.83, prevalence=0.35, power=0.9).n_total > s.n_total
    assert sample_size(0.69, 0.83, prevalence=0.35, r_controls=0.8, r_cases=0.8).n_total < s.n_total


def test_power_at_the_sample_size_is_the_target():
    s = sample_size(0.75, 0.80, prevalence=0.3, r_controls=0.6, r_cases=0.6, power=0.9)
    assert paired_power(0.75, 0.80, s.cases, s.controls, r_controls=0.6, r_cases=0.6) == pytest.approx(0.9, abs=1e-9)


def test_minimal_detectable_difference_inverts_power():
    mdd = minimal_detectable_difference(0.72, 150, 350, r_controls=0.5, r_cases=0.4)
    assert 0.02 < mdd < 0.2
    assert paired_power(0.72, 0.72 + mdd, 150, 350, r_controls=0.5, r_cases=0.4) == pytest.approx(0.8, abs=1e-5)
    # more cases detect less
    assert minimal_detectable_difference(0.72, 600, 1400, r_controls=0.5, r_cases=0.4) < mdd
    # too few cases: nothing up to an AUROC of 1 is detected with 80% power
    assert minimal_detectable_difference(0.9, 3, 3) is None


def test_power_against_simulation():
    """Binormal data: the design formula is conservative for the (nonparametric) DeLong test.

    Obuchowski-McClish's variance is that of the binormal estimate of the AUROC, a little larger than the
    empirical AUROC's: here it gives about 53% power where DeLong's test rejects in about 70% of samples.
    """
    from thyro.stats import delong_paired

    rng = np.random.default_rng(0)
    n_pos, n_neg, rejections, rho = 40, 60, 0, 0.5
    d1, d2 = 1.1, 0.55
    for _ in range(300):
        y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
        z = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=y.size)
        rejections += delong_paired(y, z[:, 0] + d1 * y, z[:, 1] + d2 * y).p_value < 0.05
    a, b = special.ndtr(d1 / np.sqrt(2)), special.ndtr(d2 / np.sqrt(2))
    formula = paired_power(b, a, n_pos, n_neg, r_controls=rho, r_cases=rho)
    assert rejections / 300 - 0.25 < formula <= rejections / 300 + 0.05


def test_correlations_from_ranks_recover_the_latent_correlation():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(3000), np.zeros(3000)].astype(int)
    z = np.where(y[:, None] == 1, rng.multivariate_normal([0, 0], [[1, 0.3], [0.3, 1]], size=y.size),
                 rng.multivariate_normal([0, 0], [[1, 0.7], [0.7, 1]], size=y.size))
    rn, ra = binormal_correlations(y, special.expit(z[:, 0] + y), np.exp(z[:, 1]))  # monotone transforms
    assert rn == pytest.approx(0.7, abs=0.03) and ra == pytest.approx(0.3, abs=0.04)
    assert binormal_correlations([0, 0, 1, 1], [1, 2, 3, 4], [1, 2, 3, 4]) == (0.0, 0.0)  # too few per class


@pytest.mark.parametrize("kw, match", [
    ({"auroc_ref": 1.0}, "strictly between 0 and 1"),
    ({"r_cases": 1.0}, "correlation among cases"),
    ({"auroc_alt": 0.7}, "equal"),
])
def test_bad_designs_are_refused(kw, match):
    args = {"auroc_ref": 0.7, "auroc_alt": 0.8, "r_controls": 0.5, "r_cases": 0.5, **kw}
    with pytest.raises(StatsError, match=match):
        PairedDesign(**args).cases_needed(kappa=2.0)
    with pytest.raises(StatsError, match="prevalence"):
        sample_size(0.7, 0.8, prevalence=1.2)


def test_thyro_power_command(capsys):
    import json

    from thyro.cli import main

    assert main(["power", "scratch=0.69", "radimagenet=0.83", "--prevalence", "0.35", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    (row,) = plan["comparisons"]
    assert (row["ref"], row["alt"]) == ("scratch", "radimagenet") and plan["alpha_each"] == 0.05
    assert [s["power"] for s in row["sizes"]] == [0.8, 0.9]
    assert row["sizes"][0]["cases"] == pytest.approx(PROC_1_18_0[("jacr_80", "ncases")], rel=1e-9)
    assert row["sizes"][0]["n_total"] == 176
    # three arms: three pairs, each planned at alpha / 3 (Bonferroni bound of Holm); --no-adjust plans at alpha
    assert main(["power", "0.69", "0.79", "0.83", "--prevalence", "0.35"]) == 0
    out = capsys.readouterr().out
    assert "alpha 0.05 / 3 = 0.01667" in out and "arm C" in out and "176 = 62 + 114" not in out
    assert main(["power", "0.69", "0.83", "--prevalence", "0.35", "--no-adjust"]) == 0
    assert "176 = 62 + 114" in capsys.readouterr().out
    for args, message in ((["0.7"], "at least two arms"), (["a=0.7", "b=0.7"], "b vs a: the two expected AUROCs are "
                                                                             "equal"), (["a=x", "b=0.7"], "NAME=0.80")):
        assert main(["power", *args, "--prevalence", "0.3"]) == 2
        assert message in capsys.readouterr().err


def test_p_values_are_written_one_way():
    from thyro.stats.format import format_p

    assert format_p(0.0004) == "p < 0.001" and format_p(0.01234) == "p = 0.012" and format_p(1.0) == "p = 1.000"
    assert format_p(0.0004, name=None) == "< 0.001" and format_p(0.5, name="Holm p") == "Holm p = 0.500"
    assert format_p(None) == "—" and format_p(float("nan")) == "—"


def test_no_output_writes_p_equals_a_formatted_p():
    """Nowhere does a template or message put "p = " before an already formatted p-value ("p = < 0.001")."""
    import re

    src = Path(__file__).resolve().parents[2] / "src" / "thyro"
    pattern = re.compile(r"p = \{\{?\s*(fmt_p|format_p)|p = \{c\[.p_value.\]")
    offenders = [str(p.relative_to(src)) for p in src.rglob("*") if p.suffix in (".py", ".j2", ".js", ".html")
                 and pattern.search(p.read_text(encoding="utf-8"))]
    assert not offenders
