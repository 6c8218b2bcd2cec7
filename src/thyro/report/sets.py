"""The analysis of one evaluation set: AUROCs, the comparisons of interest, operating points, calibration
and decision curves, every figure from :mod:`thyro.metrics` (which says when the set cannot support it)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from thyro import metrics
from thyro.errors import StatsError
from thyro.run import OOF, TEST, Run
from thyro.stats import holm
from thyro.stats.power import minimal_detectable_difference
from thyro.report.text import fmt_ci, set_heading, set_title, short_reason

#: Power and level at which the smallest detectable difference is stated.
MDD_POWER = 0.8
MDD_ALPHA = 0.05
#: Why an arm has no predictions, when its record gives no reason.
STATUS_TEXT = {"incomplete": "no fold finished", "not run": "not in the predictions"}


def comparison_family(order: list[str], info: dict, requested: list | None,
                      named_by: str = "the study's report.comparisons") -> tuple[list[tuple[str, str]], str]:
    """The comparisons of interest ``[(a, b), ...]`` (each tests ``a - b``) and how they were chosen.

    ``requested`` (the study's ``report.comparisons`` or ``thyro report --compare``) wins; by default
    every arm is compared with the scratch arm (random initialisation) and every pair of the other
    arms with each other (the later-listed minus the earlier); without a scratch arm, every pair.
    """
    if requested:
        unknown = sorted({n for pair in requested for n in pair} - set(order))
        if unknown:
            raise StatsError(f"comparison of interest names no arm {', '.join(unknown)}; arms: {', '.join(order)}")
        return [(str(a), str(b)) for a, b in requested], f"named in {named_by}"
    scratch = [a for a in order if info[a]["role"] == "scratch"]
    if len(scratch) == 1:
        ref = scratch[0]
        others = [a for a in order if a != ref]
        pairs = [(a, ref) for a in others] + [(b, a) for a, b in itertools.combinations(others, 2)]
        return pairs, f"every arm against {ref} (random initialisation), and every pair of pretrained arms"
    return [(b, a) for a, b in itertools.combinations(order, 2)], "every pair of arms"


def oof_rows(run: Run, arm: str, folds: list[int] | None = None) -> pd.DataFrame:
    """An arm's out-of-fold rows (of ``folds`` only, when given)."""
    rows = run.predictions.rows(arm=arm, split=OOF)
    return rows if folds is None else rows[rows["fold"].isin(folds)].reset_index(drop=True)


def not_run(arm: str, run: Run) -> bool:
    """An arm that left no predictions at all (skipped, failed, not run yet, or run elsewhere)."""
    return arm not in run.predictions.arms


def classes_of(labels: dict) -> tuple[str, str]:
    """What a set's labels call class 1 and class 0 (from its ``labels`` dict)."""
    return labels["positive"], labels["negative"]


def _arm_auroc(run: Run, arm: str, name: str, kind: str, info: dict, oof: dict, settings: metrics.Settings,
               classes: tuple[str, str]) -> tuple[pd.DataFrame | None, dict]:
    """An arm's rows on one set (None when it has none that can be used) and its AUROC summary."""
    if kind == "oof":
        o = oof.get(arm) or {"missing": "no out-of-fold predictions"}
        return (None if o.get("missing") and not o.get("not_estimable") else oof_rows(run, arm, o["folds"])), o
    preds = run.predictions
    sub = preds.rows(arm=arm, split=name, ensemble=True)
    if sub.empty:
        st = info[arm]["status"]
        if st in ("skipped", "failed"):
            reason = st + (f": {short_reason(info[arm]['reason'])}" if info[arm]["reason"] else "")
        elif not preds.rows(arm=arm, split=name).empty:
            reason = "no ensemble predictions (fold mean); per-fold rows only"
        else:
            reason = "no predictions on this set"
        return None, {"missing": reason}
    why = metrics.problem(sub)
    if why:
        return None, {"missing": why}
    return sub, metrics.auroc_summary(sub, settings, classes)


def analyse_set(run: Run, name: str, order: list[str], info: dict, pairs: list[tuple[str, str]], family: str,
                oof: dict, settings: metrics.Settings) -> dict:
    """The analysis of one evaluation set: ``val`` (pooled out-of-fold), ``test`` or an external set's name."""
    preds = run.predictions
    kind = "oof" if name == OOF else "test" if name == TEST else "external"
    labels = run.label_meaning(name).to_dict()
    classes = classes_of(labels)
    missing: list[str] = []
    rows: dict[str, pd.DataFrame] = {}
    auroc: dict[str, dict] = {}
    shown = [a for a in order if not not_run(a, run)]
    for arm in shown:
        sub, auroc[arm] = _arm_auroc(run, arm, name, kind, info, oof, settings, classes)
        if sub is not None:
            rows[arm] = sub
    union = pd.concat(rows.values()).drop_duplicates("image") if rows else preds.df.iloc[:0]
    short = metrics.support(union, "auroc") if len(union) else None
    for arm in shown:  # a set too small for any arm is said once, below
        if auroc[arm].get("missing") and not (short and auroc[arm].get("not_estimable")):
            missing.append(f"{arm}: {auroc[arm]['missing']}")
    used = metrics.method_for(union, settings) if len(union) else "delong"
    repeats = metrics.clustered(union) if len(union) else False
    comps = _comparisons(rows, pairs, settings, missing, {a for a in order if not_run(a, run)}, classes,
                         quiet=short is not None)
    table = [{"arm": arm, "weights": info[arm]["weights"], "role": info[arm]["role"], "auroc": auroc[arm].get("auroc"),
              "auroc_text": fmt_ci(auroc[arm]), "n": auroc[arm].get("n"), "missing": auroc[arm].get("missing"),
              "not_estimable": auroc[arm].get("not_estimable")} for arm in shown]
    out = {
        "name": name, "kind": kind, "title": set_title(name, run),
        "n": int(len(union)), "n_pos": int(union["label"].sum()) if len(union) else 0,
        "n_clusters": int(union["cluster"].nunique()) if len(union) and preds.has_clusters else None,
        "labels": labels, "label_warning": None,
        "not_estimable": short.describe(*classes) if short else None,
        "method": used if used == "delong" else ("cluster-bootstrap" if repeats else "bootstrap"),
        "method_text": metrics.method_text(union, preds.clustered_by, settings) if len(union) else "—",
        "clustered": repeats, "auroc": auroc, "table": table, "comparisons": comps, "family": family,
        "n_family": sum(1 for c in comps if not c["missing"]), "missing": missing, "_rows": rows,
    }
    out["heading"] = set_heading(out)
    if short:
        missing.insert(0, f"{out['title'][0].upper()}{out['title'][1:]} is too small: {out['not_estimable']}")
    model = run.model_meaning()
    if kind == "external" or (not run.from_dir and run.predictions.model_labels is not None):
        out["label_warning"] = model.mismatch(run.label_meaning(name), set_title(name, run))
    if kind != "oof":
        out.update(_clinical(run, rows, oof, settings, classes))
    return out


def _comparisons(rows: dict, pairs: list[tuple[str, str]], settings: metrics.Settings, missing: list[str],
                 not_run_arms: set[str], classes: tuple[str, str], quiet: bool = False) -> list[dict]:
    """The comparisons of interest on one set, Holm-corrected over those that could be made, each with the
    smallest difference the set could detect.  ``quiet``: the set is too small, which is said once
    elsewhere, so comparisons not estimable are not listed as missing one by one."""
    comps = []
    for a, b in pairs:
        if a not in rows or b not in rows:
            absent = [x for x in (a, b) if x not in rows]
            c = {"a": a, "b": b, "missing": "no valid predictions for " + " and ".join(absent),
                 "not_run": all(x in not_run_arms for x in absent)}
        else:
            c = {"a": a, "b": b, **metrics.compare(rows[a], rows[b], settings, classes), "not_run": False}
        if not c["missing"]:
            c["mdd"] = _mdd(c)
        comps.append(c)
        if c["missing"] and not c["not_run"] and not (quiet and c.get("not_estimable")):
            missing.append(f"{a} vs {b}: {c['missing']}")
    adj = holm([c.get("p_value", np.nan) if not c["missing"] else np.nan for c in comps])
    for c, p in zip(comps, adj):
        c["p_holm"] = None if np.isnan(p) else float(p)
    return comps


def _mdd(c: dict) -> float | None:
    """Smallest gain over the reference arm ``b`` a paired test detects with 80% power at alpha 0.05 here."""
    ref = c["auroc_b"]
    if not 0.0 < ref < 1.0 or c["n_pos"] < 1 or c["n_neg"] < 1:
        return None
    return minimal_detectable_difference(ref, c["n_pos"], c["n_neg"], r_controls=c["r_controls"],
                                         r_cases=c["r_cases"], power=MDD_POWER, alpha=MDD_ALPHA)


def _clinical(run: Run, rows: dict, oof: dict, settings: metrics.Settings, classes: tuple[str, str]) -> dict:
    """Operating points chosen on out-of-fold predictions, calibration and decision curves of one set."""
    operating, calibration, decision = {}, {}, {}
    for arm, sub in rows.items():
        o = oof.get(arm) or {}
        valid = o and (o.get("missing") is None or o.get("not_estimable"))
        chosen_on = oof_rows(run, arm, o.get("folds")) if valid else None
        if chosen_on is not None:
            try:
                points = metrics.choose_thresholds(chosen_on, classes=classes)
                at = metrics.at_thresholds(sub, points, settings.level, classes)
                operating[arm] = at if at.get("missing") else {
                    "points": points, "at": at, "folds": o["folds"], "complete": o["complete"], "missing": None}
            except StatsError as exc:
                operating[arm] = {"missing": str(exc)}
        else:
            operating[arm] = {"missing": "no out-of-fold predictions to choose thresholds on"}
        calibration[arm] = metrics.calibration(sub, chosen_on, classes)
        decision[arm] = metrics.decision(sub, classes)
    return {"operating": operating, "calibration": calibration, "decision": decision}
