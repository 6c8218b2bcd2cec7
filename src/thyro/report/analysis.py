"""All numbers of a study report, computed once from a :class:`~thyro.run.Run`.

Every AUROC, interval and comparison comes from :mod:`thyro.metrics`, the functions the model package,
``thyro compare`` and the web app use too.  Anything that cannot be computed honestly (an arm without
predictions on a set, a missing fold, non-finite probabilities, two arms scored on different cases) is
recorded as missing with a reason; a figure the set is too small for (:mod:`thyro.stats.support`) is
recorded as ``not estimable`` with the counts that fall short.  No number is filled in for either.

The report leads with the answer (:func:`thyro.report.headline.headline`): the best arm on the most
telling set (an external set when there is one, else the held-out test set, else the pooled
out-of-fold predictions) where an AUROC can be estimated, its AUROC and interval, and its difference
to every other arm with an interval and a Holm-adjusted p-value; sets too small are named there with
the reason.  Each evaluation set then gets the same analysis (:func:`thyro.report.sets.analyse_set`):
AUROC with intervals; the comparisons of interest (``report.comparisons``, by default every pretrained
arm against scratch and every pair of pretrained arms), Holm-corrected together, each with the smallest
difference the set could detect (a design quantity,
:func:`thyro.stats.power.minimal_detectable_difference`, never the "observed power" of the difference
seen); and, on the test and external sets, operating points chosen on the out-of-fold predictions,
calibration and decision curves.
"""

from __future__ import annotations

import logging

from thyro import metrics
from thyro.report.efficiency import efficiency
from thyro.report.headline import headline, headline_sentences
from thyro.report.sets import (
    MDD_ALPHA,
    MDD_POWER,
    STATUS_TEXT,
    analyse_set,
    classes_of,
    comparison_family,
    not_run,
    oof_rows,
)
from thyro.report.text import short_reason
from thyro.run import OOF, TEST, Run
from thyro.run.loaded import DOUBTFUL
from thyro.stats.power import METHOD as POWER_METHOD

log = logging.getLogger(__name__)

SELECTION_TEXT = {
    "inner": ("each fold's model was chosen (early stopping) on an inner split of its training part, so the "
              "out-of-fold predictions are untouched by model selection"),
    "last": "no model selection: each fold's model is the one after the last training epoch",
    "oof": ("each fold's model was chosen (early stopping) on the very fold it then scored: the out-of-fold "
            "AUROC is selection-biased (optimistic); the held-out test set is unaffected"),
}


def _fold_cell(run: Run, arm: str, f: int, classes: tuple[str, str], missing: list[str],
               small: list[str]) -> tuple[dict, bool]:
    """One arm's AUROCs of fold ``f`` (its held-out part, and its model on the test set), and whether the
    fold's out-of-fold rows can be pooled (present and finite)."""
    preds = run.predictions
    cell: dict = {"arm": arm, "fold": f}
    pooled = False
    for name, split in (("val", OOF), ("test", TEST)):
        sub = preds.rows(arm=arm, split=split, fold=f)
        why = metrics.problem(sub)
        cell[name] = None
        if sub.empty:
            cell[f"{name}_missing"] = "missing"
            if split == OOF or TEST in preds.splits:
                missing.append(f"{arm} fold {f}: no {'out-of-fold' if name == 'val' else 'test'} predictions")
            continue
        if why:
            cell[f"{name}_missing"] = "invalid" if "NaN" in why else "one class"
            missing.append(f"{arm} fold {f} {name}: {why}")
            pooled = pooled or (name == "val" and "NaN" not in why)
            continue
        pooled = pooled or name == "val"
        short = metrics.support(sub, "auroc")
        if short:
            cell[f"{name}_missing"] = f"not estimable ({short.n_pos} {classes[0]}, {short.n_neg} {classes[1]})"
            cell[f"{name}_why"] = short.describe(*classes)
            small.append(f"{arm} fold {f} {name}")
            continue
        cell[name], cell[f"{name}_n"], cell[f"{name}_missing"] = metrics.auroc(sub), int(len(sub)), None
    return cell, pooled


def _folds(run: Run, order: list[str], settings: metrics.Settings, missing: list[str]) -> tuple[dict, dict]:
    """Per-fold AUROCs (out of fold and on the test set) and each arm's pooled out-of-fold AUROC."""
    preds = run.predictions
    k, k_from = run.expected_folds()
    classes = classes_of(run.label_meaning(OOF).to_dict())
    rows, oof, small = [], {}, []
    for arm in order:
        if not_run(arm, run) or (preds.rows(arm=arm, split=OOF).empty and k == 0):
            continue
        present = []
        for f in range(k):
            cell, pooled = _fold_cell(run, arm, f, classes, missing, small)
            rows.append(cell)
            if pooled:
                present.append(f)
        val = oof_rows(run, arm, present)
        if present and not metrics.problem(val):
            oof[arm] = {**metrics.auroc_summary(val, settings, classes), "folds": present,
                        "complete": len(present) == k}
        else:
            oof[arm] = {"missing": "no usable out-of-fold predictions"}
    if small:
        missing.append(f"per-fold AUROCs not estimable (fewer than {metrics.MIN_CASES} {classes[0]} or "
                       f"{classes[1]} cases): {', '.join(small)}")
    return {"k": k, "source": k_from, "rows": rows}, oof


def analyse(run: Run, settings: metrics.Settings = metrics.DEFAULT, comparisons: list | None = None,
            reference: str | None = None) -> dict:
    """Every number the report shows, as plain Python data (JSON-serialisable but for ``_rows``).

    ``comparisons`` and ``reference`` override the study's ``report:`` settings
    (:class:`thyro.config.ReportConfig`).
    """
    preds = run.predictions
    order, info = run.arm_table()
    options = run.report_settings()
    requested = comparisons if comparisons is not None else options.comparisons
    named_by = "the report's options" if comparisons is not None else "the study's report.comparisons"
    pairs, family = comparison_family(order, info, requested, named_by)
    missing: list[str] = []
    folds, oof = _folds(run, order, settings, missing)
    # the sets, in the order the report shows them: external sets, the test set, out of fold
    names = preds.external_sets + ([TEST] if TEST in preds.splits else [])
    if OOF in preds.splits:
        names.append(OOF)
    if not names:
        names = [TEST]
    per_set = {name: analyse_set(run, name, order, info, pairs, family, oof, settings) for name in names}
    for s in per_set.values():
        if s["not_estimable"]:
            log.warning("%s", s["missing"][0])
        if s["kind"] != "oof":  # out-of-fold gaps are listed per fold above
            missing += [f"{s['name']}: {m}" if s["kind"] == "external" else m for m in s["missing"]]
        elif s["not_estimable"]:
            missing.append(s["missing"][0])
    model = run.model_meaning()
    skipped = [{"arm": a, "status": info[a]["status"],
                "short": short_reason(info[a]["reason"]) or STATUS_TEXT.get(info[a]["status"], ""),
                "reason": info[a]["reason"] or STATUS_TEXT.get(info[a]["status"], "")}
               for a in order if not_run(a, run)]
    weights = [{"arm": a, "status": info[a]["weights_status"], "line": info[a]["provenance"]}
               for a in order if info[a]["provenance"]]
    missing += [f"{w['arm']}: started from {w['status']} weights ({w['line']})" for w in weights
                if w["status"] in DOUBTFUL]
    lead = headline(per_set, order, model.to_dict())
    if lead is not None:
        lead["text"] = headline_sentences(lead, f"{settings.level * 100:g}")
    return {
        "arms": order, "arm_info": info, "label": model.to_dict(), "headline": lead, "skipped": skipped,
        "reference": options.reference if reference is None else reference,
        "settings": {"method": settings.method, "n_boot": settings.n_boot, "seed": settings.seed,
                     "level": settings.level},
        "clustered_by": preds.clustered_by, "pairs": [list(p) for p in pairs], "family": family,
        "sets": per_set, "set_order": names, "folds": folds, "oof": oof,
        "selection": _selection(run), "tuning": _tuning(run), "efficiency": efficiency(run, order, info, settings),
        "power_method": POWER_METHOD, "mdd": {"power": MDD_POWER, "alpha": MDD_ALPHA}, "ece_bins": metrics.ECE_BINS,
        "minimums": {"cases": metrics.MIN_CASES, "events": metrics.MIN_EVENTS},
        "missing": missing, "notes": list(run.notes), "weights": weights,
    }


def _selection(run: Run) -> dict:
    """How the epoch of each fold model was chosen (from the study record), and whether that biases the
    out-of-fold figures."""
    mode = run.record.config.train.selection if run.record is not None else (
        run.results.selection if run.results is not None else None)
    if mode is None:
        return {"mode": None, "text": "not recorded", "biased": False}
    text = SELECTION_TEXT[mode]
    probes = [a.name for a in run.record.config.arms if a.train_backbone == "cached"] if run.record is not None else []
    if probes:  # a probe has no epochs to choose from: say what was chosen for it, and where
        text += (f"; the linear probe{'s' if len(probes) > 1 else ''} ({', '.join(probes)}) "
                 f"{'train' if len(probes) > 1 else 'trains'} no epochs: "
                 "each fold's L2 strength is chosen on inner folds of its training part")
    return {"mode": mode, "text": text, "biased": mode == "oof"}


def _tuning(run: Run) -> dict | None:
    """What ``train.tune`` searched and what each job chose (None when nothing was tuned)."""
    if run.record is None or not run.record.config.train.tune.grid:
        return None
    chosen = run.tuned()
    grid = run.record.config.train.tune.model_dump()
    return {"grid": {k: v for k, v in grid.items() if v}, "chosen": chosen,
            "on": "an inner, group-respecting split of each training fold (never the held-out fold or the test set)"}
