"""All numbers of a study report, computed once from a :class:`~thyro.report.load.Run`.

Anything that cannot be computed honestly (an arm without test predictions, a fold that is missing,
non-finite probabilities, two arms scored on different test cases) is recorded as missing with a
reason; no number is filled in for it.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np
import pandas as pd

from thyro.errors import StatsError
from thyro.report.load import Run
from thyro.stats import (
    auroc,
    brier,
    choose_method,
    compare_paired,
    decision_curve,
    delong_cov,
    fit_temperature,
    has_repeated_groups,
    holm,
    interval,
    operating_points,
    paired_auc_power,
    reliability,
)
from thyro.stats.power import METHOD as POWER_METHOD

ECE_BINS = 10


def _role_from_weights(weights: Any) -> str | None:
    """Role from a weight source ``kind[:PATH]`` (results.json): only the kind counts, never the path."""
    if weights is None:
        return None
    if isinstance(weights, dict):
        weights = next(iter(weights), "")
    kind = str(weights).strip().lower().split(":", 1)[0]
    if kind in {"none", "null", "random", "scratch", ""}:
        return "scratch"
    if kind == "imagenet":
        return "imagenet"
    return None


def _role_from_name(name: str) -> str | None:
    n = name.lower()
    if re.search(r"scratch|(^|[^a-z])none([^a-z]|$)|random", n):
        return "scratch"
    if "imagenet" in n and "radimagenet" not in n:
        return "imagenet"
    return None


def arm_table(run: Run) -> tuple[list[str], dict[str, dict]]:
    """Arms in order (results.json first, then predictions) with status, weights and role."""
    arms_json = (run.results or {}).get("arms") or {}
    if not isinstance(arms_json, dict):
        arms_json = {}
    order = list(arms_json) + [a for a in pd.unique(run.predictions["arm"]) if a not in arms_json]
    info: dict[str, dict] = {}
    for arm in order:
        meta = arms_json.get(arm) or {}
        status = meta.get("status") or ("done" if arm in set(run.predictions["arm"]) else "unknown")
        info[arm] = {
            "status": status,
            "reason": meta.get("reason"),
            "weights": meta.get("weights"),
            "backbone": meta.get("backbone"),
            "role": None,
        }
    # roles: from weights in results.json when given, else from the arm names; one arm per role
    for role in ("scratch", "imagenet"):
        by_w = [a for a in order if _role_from_weights(info[a]["weights"]) == role]
        by_n = [a for a in order if info[a]["weights"] is None and _role_from_name(a) == role]
        cands = by_w or by_n
        if len(cands) == 1:
            info[cands[0]]["role"] = role
    return order, info


def _expected_folds(run: Run) -> tuple[int, str]:
    """Number of folds: from the configuration (``data.folds`` or ``cv.folds``), else the predictions."""
    cfg = run.config or ((run.results or {}).get("config") if isinstance((run.results or {}).get("config"), dict) else {})
    for block in ("data", "cv"):
        sub = cfg.get(block) if isinstance(cfg, dict) else None
        if isinstance(sub, dict) and isinstance(sub.get("folds"), int) and sub["folds"] > 1:
            return int(sub["folds"]), f"the configuration ({block}.folds)"
    if isinstance(cfg, dict) and isinstance(cfg.get("folds"), int) and cfg["folds"] > 1:
        return int(cfg["folds"]), "the configuration (folds)"
    folds = [int(f) for f in run.predictions["fold"] if str(f).isdigit()]
    return (max(folds) + 1 if folds else 0), "the predictions"


def _subset(df: pd.DataFrame, arm: str, split: str, fold: str) -> pd.DataFrame:
    return df[(df["arm"] == arm) & (df["split"] == split) & (df["fold"] == fold)]


def _check_finite(sub: pd.DataFrame, what: str) -> str | None:
    bad = ~np.isfinite(sub["probability"].to_numpy(dtype=float))
    if bad.any():
        return f"{what}: {int(bad.sum())} NaN or infinite probabilit{'y' if bad.sum() == 1 else 'ies'}; left out"
    return None


def _one_class(sub: pd.DataFrame) -> bool:
    return sub["label"].nunique() < 2


def _fmt_ci(r: dict | None, digits: int = 3) -> str:
    if not r or r.get("auroc") is None:
        return "—"
    return f"{r['auroc']:.{digits}f} [{r['lower']:.{digits}f}, {r['upper']:.{digits}f}]"


def fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return "—"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}"


def analyse(run: Run, method: str = "auto", n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Every number the report shows, as plain Python data (JSON-serialisable)."""
    df = run.predictions
    order, info = arm_table(run)
    missing: list[str] = []
    groups_col = run.cluster_column

    # ---- test set (ensemble rows), per arm ----
    test_rows: dict[str, pd.DataFrame] = {}
    test: dict[str, dict] = {}
    for arm in order:
        st = info[arm]["status"]
        sub = _subset(df, arm, "test", "mean")
        if sub.empty:
            if st in ("skipped", "failed"):
                # the first line only: a table cell; the whole message stays in results.json
                reason = f"{st}" + (f": {info[arm]['reason'].splitlines()[0]}" if info[arm]["reason"] else "")
            elif (df["arm"] == arm).any() and ((df["arm"] == arm) & (df["split"] == "test")).any():
                reason = "no ensemble test predictions (fold = mean); per-fold test rows only"
            else:
                reason = "no test predictions"
            test[arm] = {"missing": reason}
            missing.append(f"{arm}: {reason}")
            continue
        bad = _check_finite(sub, f"{arm} test predictions")
        if bad:
            test[arm] = {"missing": bad}
            missing.append(bad)
            continue
        if _one_class(sub):
            test[arm] = {"missing": "test cases hold one class only; AUROC undefined"}
            missing.append(f"{arm}: test cases hold one class only")
            continue
        test_rows[arm] = sub.sort_values("image").reset_index(drop=True)

    all_test = pd.concat(test_rows.values()) if test_rows else df.iloc[:0]
    all_test_unique = all_test.drop_duplicates("image")
    groups_all = all_test_unique[groups_col].to_numpy() if groups_col else None
    used = choose_method(groups_all, method)
    clustered = has_repeated_groups(groups_all)
    if used == "delong" and groups_col is None:
        method_text = ("DeLong; the predictions name no patient or group, so every image is treated as an "
                       "independent case (add a patient column if patients have several images)")
    elif used == "delong":
        method_text = ("DeLong (independent cases: no patient or group has more than one test image)" if not clustered
                       else "DeLong (chosen by the user although some patients have several test images; "
                            "intervals may be too narrow)")
    else:
        unit = "patients and leakage groups" if groups_col == "cluster" else f"{groups_col}s"
        method_text = (f"stratified cluster bootstrap over {unit} ({n_boot} resamples, seed {seed}), "
                       "because some patients have several test images" if clustered else
                       f"stratified bootstrap ({n_boot} resamples, seed {seed})")

    def grp(sub):
        return sub[groups_col].to_numpy() if groups_col else None

    for arm, sub in test_rows.items():
        r = interval(sub["label"].to_numpy(), sub["probability"].to_numpy(), grp(sub), method=used,
                     level=level, n_boot=n_boot, seed=seed)
        test[arm] = {**r.as_dict(), "n": int(len(sub)), "missing": None}

    # ---- comparisons ----
    roles = {info[a]["role"]: a for a in order if info[a]["role"]}
    refs = [roles[r] for r in ("scratch", "imagenet") if r in roles]
    if refs:
        pairs = []
        for ref in refs:
            for arm in order:
                if arm != ref and frozenset((arm, ref)) not in {frozenset(p) for p in pairs}:
                    pairs.append((arm, ref))
        family = "each arm against the scratch and ImageNet arms"
    else:
        pairs = list(itertools.combinations(order, 2))
        family = "all pairs of arms"
    comps = []
    for a, b in pairs:
        c = {"a": a, "b": b, "missing": None}
        if a not in test_rows or b not in test_rows:
            c["missing"] = "no valid test predictions for " + " and ".join(x for x in (a, b) if x not in test_rows)
        else:
            ta, tb = test_rows[a], test_rows[b]
            if set(ta["image"]) != set(tb["image"]):
                common = len(set(ta["image"]) & set(tb["image"]))
                c["missing"] = f"different test cases ({len(ta)} vs {len(tb)}, {common} in common); not compared"
            else:
                r = compare_paired(ta["label"].to_numpy(), ta["probability"].to_numpy(), tb["probability"].to_numpy(),
                                   grp(ta), method=used, level=level, n_boot=n_boot, seed=seed)
                c.update(r.as_dict())
                _, cov = delong_cov(ta["label"].to_numpy(), np.vstack([ta["probability"], tb["probability"]]))
                c["correlation"] = float(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])) if cov[0, 0] * cov[1, 1] > 0 else 0.0
        comps.append(c)
        if c["missing"]:
            missing.append(f"{a} vs {b}: {c['missing']}")
    adj = holm([c.get("p_value", np.nan) if not c["missing"] else np.nan for c in comps])
    for c, p in zip(comps, adj):
        c["p_holm"] = None if np.isnan(p) else float(p)

    def lookup(a, b):
        for c in comps:
            if {c["a"], c["b"]} == {a, b}:
                return c
        return None

    headline = []
    for arm in order:
        row = {"arm": arm, "status": info[arm]["status"], "weights": info[arm]["weights"], "role": info[arm]["role"],
               "auroc": test[arm].get("auroc"), "auroc_text": _fmt_ci(test[arm]), "n": test[arm].get("n"),
               "missing": test[arm].get("missing")}
        for role in ("scratch", "imagenet"):
            ref = roles.get(role)
            c = lookup(arm, ref) if ref and ref != arm else None
            row[f"p_vs_{role}"] = fmt_p(c.get("p_value")) if c and not c["missing"] else "—"
            row[f"holm_vs_{role}"] = fmt_p(c.get("p_holm")) if c and not c["missing"] else "—"
        headline.append(row)

    # ---- power ----
    power = []
    for c in comps:
        if c["missing"] or c["auroc_a"] in (0.0, 1.0) or c["auroc_b"] in (0.0, 1.0):
            continue
        sub = test_rows[c["a"]]
        n_pos = int(sub["label"].sum())
        pw = paired_auc_power(c["auroc_a"], c["auroc_b"], n_pos, int(len(sub) - n_pos), c.get("correlation", 0.0))
        d = pw.as_dict()
        d.update(a=c["a"], b=c["b"])
        power.append(d)
    n_test = int(len(all_test_unique))
    n_test_pos = int(all_test_unique["label"].sum()) if n_test else 0
    power_text, power_lines = _power_sentence(power, n_test, n_test_pos, clustered)

    # ---- folds: out-of-fold and per-fold test ----
    k, k_from = _expected_folds(run)
    fold_rows, oof = [], {}
    for arm in order:
        if info[arm]["status"] in ("skipped", "failed") and not (df["arm"] == arm).any():
            continue
        present = []
        for f in range(k):
            v = _subset(df, arm, "val", str(f))
            t = _subset(df, arm, "test", str(f))
            cell = {"arm": arm, "fold": f}
            for name, sub in (("val", v), ("test", t)):
                if sub.empty:
                    cell[name] = None
                    cell[f"{name}_missing"] = "missing"
                    missing.append(f"{arm} fold {f}: no {'out-of-fold' if name == 'val' else 'test'} predictions")
                elif _check_finite(sub, "") or _one_class(sub):
                    nonfinite = _check_finite(sub, "") is not None
                    cell[name] = None
                    cell[f"{name}_missing"] = "invalid" if nonfinite else "one class"
                    missing.append(f"{arm} fold {f} {name}: {'non-finite probabilities' if nonfinite else 'one class only'}")
                else:
                    cell[name] = auroc(sub["label"].to_numpy(), sub["probability"].to_numpy())
                    cell[f"{name}_n"] = int(len(sub))
                    cell[f"{name}_missing"] = None
                    if name == "val":
                        present.append(f)
            fold_rows.append(cell)
        val = df[(df["arm"] == arm) & (df["split"] == "val") & df["fold"].isin([str(f) for f in present])]
        if present and not _one_class(val):
            r = interval(val["label"].to_numpy(), val["probability"].to_numpy(), grp(val), method=used,
                         level=level, n_boot=n_boot, seed=seed)
            oof[arm] = {**r.as_dict(), "n": int(len(val)), "folds": present, "complete": len(present) == k,
                        "missing": None}
        else:
            oof[arm] = {"missing": "no usable out-of-fold predictions"}

    # ---- operating points, calibration, decision curves ----
    operating, calibration, decision = {}, {}, {}
    for arm in order:
        if arm not in test_rows:
            continue
        t = test_rows[arm]
        yt, pt = t["label"].to_numpy(), t["probability"].to_numpy()
        val = None
        if oof.get(arm, {}).get("missing") is None and arm in oof:
            val = df[(df["arm"] == arm) & (df["split"] == "val") & df["fold"].isin([str(f) for f in oof[arm]["folds"]])]
        if val is not None:
            pts = operating_points(val["label"].to_numpy(), val["probability"].to_numpy(), yt, pt, level=level)
            operating[arm] = {"rows": [{"val": a.as_dict(), "test": b.as_dict()} for a, b in pts], "missing": None,
                              "folds": oof[arm]["folds"], "complete": oof[arm]["complete"]}
        else:
            operating[arm] = {"missing": "no out-of-fold predictions to choose thresholds on"}
        try:
            rel = reliability(yt, pt, ECE_BINS)
            cal = {"brier": brier(yt, pt), "ece": rel.ece, "binning": rel.binning, "reliability": rel.as_dict(),
                   "missing": None}
            if val is not None:
                temp = fit_temperature(val["label"].to_numpy(), val["probability"].to_numpy())
                pc = temp(pt)
                cal.update(temperature=temp.temperature, brier_scaled=brier(yt, pc), ece_scaled=reliability(yt, pc, ECE_BINS).ece)
            calibration[arm] = cal
            decision[arm] = decision_curve(yt, pt).as_dict()
        except StatsError as exc:  # e.g. scores that are not probabilities
            calibration[arm] = {"missing": str(exc)}
            decision[arm] = {"missing": str(exc)}

    return {
        "arms": order,
        "arm_info": info,
        "roles": roles,
        "method": used if used == "delong" else ("cluster-bootstrap" if clustered else "bootstrap"),
        "method_text": method_text,
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
        "cluster_column": groups_col,
        "clustered": clustered,
        "n_test": n_test,
        "n_test_pos": n_test_pos,
        "n_test_clusters": int(pd.Series(groups_all).nunique()) if groups_col and n_test else None,
        "test": test,
        "family": family,
        "comparisons": comps,
        "headline": headline,
        "power": power,
        "power_method": POWER_METHOD,
        "power_text": power_text,
        "power_lines": power_lines,
        "folds": {"k": k, "source": k_from, "rows": fold_rows},
        "oof": oof,
        "operating": operating,
        "calibration": calibration,
        "ece_bins": ECE_BINS,
        "decision": decision,
        "missing": missing,
        "notes": list(run.notes),
        "_test_rows": test_rows,  # frames for the figures; dropped before writing JSON
    }


def _power_sentence(power: list[dict], n: int, n_pos: int, clustered: bool) -> tuple[str, list[str]]:
    if not power:
        return "Power could not be estimated (fewer than two arms with valid test predictions).", []
    parts = []
    for p in power:
        need = "" if p["n_total_needed"] < 0 else f"; about {p['n_total_needed']} cases (same class balance) would give 80% power"
        parts.append(f"{p['power'] * 100:.0f}% power to detect the observed difference of {abs(p['diff']):.3f} "
                     f"between {p['a']} and {p['b']}{need}")
    tail = ("Two-sided α = 0.05; Obuchowski–McClish binormal variance function with the correlation of the "
            "two AUROCs taken from the DeLong covariance (a formula, not a simulation).")
    if clustered:
        tail += " It treats images as independent, so it is optimistic when patients have several images."
    text = f"With {n} test cases ({n_pos} malignant), the test set had " + "; ".join(parts) + ". " + tail
    lines = [f"{x[0].upper()}{x[1:]}." for x in parts]
    return text, [f"With {n} test cases ({n_pos} malignant):"] + lines + [tail]
