"""thyro.stats.roc agrees with R's pROC to 1e-6 (values pinned; re-run live when R is present).

The scenarios (tests/stats/data/proc_scenarios.csv) and the values below come from
``Rscript tests/stats/proc_reference.R`` with pROC 1.18.0, ``direction = "<"`` (controls < cases).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from thyro.stats.roc import auroc, auroc_ci, delong_cov, delong_paired, delong_unpaired

HERE = Path(__file__).parent
SCENARIOS = HERE / "data" / "proc_scenarios.csv"
R_SCRIPT = HERE / "proc_reference.R"
TOL = 1e-9  # required: 1e-6; observed differences are about 1e-14

PROC_1_18_0 = {
    'continuous_n60': {
        'auc1': 0.7328843995510662,
        'auc2': 0.6554433221099888,
        'var1': 0.004436899475245903,
        'var2': 0.005494393027127782,
        'cov12': 7.007626021842268e-05,
        'ci1_lower': 0.6023310900345454,
        'ci1_upper': 0.8634377090675872,
        'ci2_90_lower': 0.5335199072596285,
        'ci2_90_upper': 0.777366736960349,
        'paired_z': 0.7826268743099282,
        'paired_p': 0.43384625527883625,
        'paired_ci_lower': -0.11649773004278363,
        'paired_ci_upper': 0.2713798849249387,
    },
    'ties_n101': {
        'auc1': 0.9079268292682927,
        'auc2': 0.7132113821138212,
        'var1': 0.0008979811404407966,
        'var2': 0.0028579303792469505,
        'cov12': 0.0008633405782306065,
        'ci1_lower': 0.8491938949574372,
        'ci1_upper': 0.9666597635791482,
        'ci2_90_lower': 0.6252781413579385,
        'ci2_90_upper': 0.8011446228697036,
        'paired_z': 4.32249729638694,
        'paired_p': 1.542729744372073e-05,
        'paired_ci_lower': 0.10642498969707191,
        'paired_ci_upper': 0.28300590461187136,
    },
    'ratings_n80': {
        'auc1': 0.6799999999999999,
        'auc2': 0.6993750000000001,
        'var1': 0.0033777243589743593,
        'var2': 0.0031319911858974357,
        'cov12': -0.00016620592948717952,
        'ci1_lower': 0.5660904348500291,
        'ci1_upper': 0.7939095651499708,
        'ci2_90_lower': 0.6073220899357912,
        'ci2_90_upper': 0.791427910064209,
        'paired_z': -0.23423194938970932,
        'paired_p': 0.814804912798185,
        'paired_ci_lower': -0.18149764082421627,
        'paired_ci_upper': 0.14274764082421598,
    },
    'below_chance_n70': {
        'auc1': 0.3026315789473684,
        'auc2': 0.6504934210526315,
        'var1': 0.004193527538266754,
        'var2': 0.004607158656162529,
        'cov12': 3.13840928823114e-05,
        'ci1_lower': 0.17570930607259463,
        'ci1_upper': 0.42955385182214223,
        'ci2_90_lower': 0.5388472480588403,
        'ci2_90_upper': 0.7621395940464226,
        'paired_z': -3.721369636665477,
        'paired_p': 0.00019814514958643674,
        'paired_ci_lower': -0.5310730650390313,
        'paired_ci_upper': -0.16465061917149496,
    },
    'unbalanced_n200': {
        'auc1': 0.8905141843971631,
        'auc2': 0.6684397163120568,
        'var1': 0.001599109874206071,
        'var2': 0.0075751355592513425,
        'cov12': -0.0006807382266733052,
        'ci1_lower': 0.8121374357306869,
        'ci1_upper': 0.9688909330636394,
        'ci2_90_lower': 0.5252794619597476,
        'ci2_90_upper': 0.811599970664366,
        'paired_z': 2.1635477348294905,
        'paired_p': 0.030499076445060218,
        'paired_ci_lower': 0.02089658218697027,
        'paired_ci_upper': 0.4232523539832424,
    },
    'rounded_n500': {
        'auc1': 0.7595440442465938,
        'auc2': 0.7009307972480777,
        'var1': 0.0005320421691031212,
        'var2': 0.0007012660866657242,
        'cov12': 0.0002609149642849257,
        'ci1_lower': 0.7143354379477659,
        'ci1_upper': 0.8047526505454216,
        'ci2_90_lower': 0.6573727225620042,
        'ci2_90_upper': 0.7444888719341511,
        'paired_z': 2.197429461996962,
        'paired_p': 0.0279897890662292,
        'paired_ci_lower': 0.0063340475426016465,
        'paired_ci_upper': 0.11089244645443036,
    },
    'continuous_n60|ties_n101': {
        'unpaired_d': -2.3965195734589884,
        'unpaired_df': 83.28587613219669,
        'unpaired_p': 0.018790795882562827,
    },
    'ties_n101|ratings_n80': {
        'unpaired_d': 3.4857124435583597,
        'unpaired_df': 119.89410925034824,
        'unpaired_p': 0.0006865060762352118,
    },
    'ratings_n80|below_chance_n70': {
        'unpaired_d': 4.336922954460386,
        'unpaired_df': 143.5670441648559,
        'unpaired_p': 2.7058446532039142e-05,
    },
    'below_chance_n70|unbalanced_n200': {
        'unpaired_d': -7.7241809256247045,
        'unpaired_df': 125.33727320435003,
        'unpaired_p': 3.1196310913629504e-12,
    },
    'unbalanced_n200|rounded_n500': {
        'unpaired_d': 2.837037490251812,
        'unpaired_df': 338.50434503289523,
        'unpaired_p': 0.0048277361635056795,
    },
    'rounded_n500|continuous_n60': {
        'unpaired_d': 0.37820077015767256,
        'unpaired_df': 73.87251620741819,
        'unpaired_p': 0.7063660862767098,
    },
}


def _scenarios() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rows = defaultdict(list)
    with open(SCENARIOS, newline="") as fh:
        for r in csv.DictReader(fh):
            rows[r["scenario"]].append((int(r["label"]), float(r["s1"]), float(r["s2"])))
    return {k: tuple(np.array(c) for c in zip(*v)) for k, v in rows.items()}


def _python_values(sc) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, (y, s1, s2) in sc.items():
        aucs, cov = delong_cov(y, np.vstack([s1, s2]))
        ci1 = auroc_ci(y, s1)
        ci2 = auroc_ci(y, s2, level=0.9)
        t = delong_paired(y, s1, s2)
        out[name] = {
            "auc1": auroc(y, s1),
            "auc2": float(aucs[1]),
            "var1": ci1.se**2,
            "var2": float(cov[1, 1]),
            "cov12": float(cov[0, 1]),
            "ci1_lower": ci1.lower,
            "ci1_upper": ci1.upper,
            "ci2_90_lower": ci2.lower,
            "ci2_90_upper": ci2.upper,
            "paired_z": t.statistic,
            "paired_p": t.p_value,
            "paired_ci_lower": t.lower,
            "paired_ci_upper": t.upper,
        }
    names = list(sc)
    for i, a in enumerate(names):
        b = names[(i + 1) % len(names)]
        u = delong_unpaired(sc[a][0], sc[a][1], sc[b][0], sc[b][1])
        out[f"{a}|{b}"] = {"unpaired_d": u.statistic, "unpaired_df": u.df, "unpaired_p": u.p_value}
    return out


def _compare(ours, ref):
    assert set(ours) == set(ref)
    for name, quantities in ref.items():
        assert set(ours[name]) == set(quantities), name
        for q, v in quantities.items():
            assert ours[name][q] == pytest.approx(v, abs=TOL, rel=TOL), f"{name}: {q}"


def test_matches_pinned_proc_values():
    _compare(_python_values(_scenarios()), PROC_1_18_0)


def test_below_chance_stays_below_half():
    y, s1, _ = _scenarios()["below_chance_n70"]
    assert auroc(y, s1) < 0.5
    assert auroc(y, -s1) == pytest.approx(1 - auroc(y, s1))


def _have_proc() -> bool:
    if shutil.which("Rscript") is None:
        return False
    r = subprocess.run(["Rscript", "-e", "library(pROC)"], capture_output=True)
    return r.returncode == 0


@pytest.mark.r
def test_live_proc(tmp_path):
    if not _have_proc():
        pytest.skip("Rscript with pROC not installed")
    out = tmp_path / "ref.csv"
    subprocess.run(["Rscript", str(R_SCRIPT), str(SCENARIOS), str(out)], check=True, capture_output=True, timeout=120)
    ref: dict[str, dict[str, float]] = defaultdict(dict)
    with open(out, newline="") as fh:
        for r in csv.DictReader(fh):
            ref[r["scenario"]][r["quantity"]] = float(r["value"])
    _compare(_python_values(_scenarios()), dict(ref))
