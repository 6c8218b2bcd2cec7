"""All numbers of a study report, computed once from a :class:`~thyro.report.load.Run`.

Every AUROC, interval and comparison comes from :mod:`thyro.metrics`, the functions the model package,
``thyro compare`` and the web app use too.  Anything that cannot be computed honestly (an arm without
predictions on a set, a missing fold, non-finite probabilities, two arms scored on different cases) is
recorded as missing with a reason; no number is filled in for it.

The held-out test set and each external validation set get the same analysis (:func:`analyse_set`):
AUROC with intervals, paired comparisons with Holm's correction, power, operating points chosen on the
out-of-fold predictions, calibration and decision curves.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from thyro import metrics
from thyro.errors import StatsError
from thyro.report.load import Run
from thyro.run import OOF, TEST
from thyro.stats import decision_curve, holm, paired_auc_power
from thyro.stats.power import METHOD as POWER_METHOD

#: Reference arms of the comparisons, in order: every arm is compared with these when present.
REFERENCE_ROLES = ("scratch", "imagenet")


def fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return "—"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}"


def _fmt_ci(r: dict | None, digits: int = 3) -> str:
    if not r or r.get("auroc") is None:
        return "—"
    return f"{r['auroc']:.{digits}f} [{r['lower']:.{digits}f}, {r['upper']:.{digits}f}]"


def one_line(text: str | None) -> str:
    """A multi-line message (a weight file's "Looked in:" list) on one line, nothing cut."""
    return "; ".join(part.strip(" -") for part in str(text or "").splitlines() if part.strip())


def _pairs(order: list[str], roles: dict[str, str]) -> tuple[list[tuple[str, str]], str]:
    refs = [roles[r] for r in REFERENCE_ROLES if r in roles]
    if not refs:
        return list(itertools.combinations(order, 2)), "all pairs of arms"
    pairs: list[tuple[str, str]] = []
    for ref in refs:
        for arm in order:
            if arm != ref and frozenset((arm, ref)) not in {frozenset(p) for p in pairs}:
                pairs.append((arm, ref))
    names = " and ".join(f"{r} ({roles[r]})" for r in REFERENCE_ROLES if r in roles)
    return pairs, f"each arm against the {names} reference{'s' if len(refs) > 1 else ''}"


def _oof_rows(run: Run, arm: str, folds: list[int] | None = None) -> pd.DataFrame:
    rows = run.predictions.rows(arm=arm, split=OOF)
    return rows if folds is None else rows[rows["fold"].isin(folds)].reset_index(drop=True)


def analyse_set(run: Run, name: str, order: list[str], info: dict, roles: dict, oof: dict,
                settings: metrics.Settings) -> dict:
    """The analysis of one evaluation set (``test`` or an external set's name)."""
    preds = run.predictions
    missing: list[str] = []
    rows: dict[str, pd.DataFrame] = {}
    auroc: dict[str, dict] = {}
    for arm in order:
        sub = preds.rows(arm=arm, split=name, ensemble=True)
        st = info[arm]["status"]
        if sub.empty:
            if st in ("skipped", "failed"):
                reason = st + (f": {one_line(info[arm]['reason'])}" if info[arm]["reason"] else "")
            elif not preds.rows(arm=arm, split=name).empty:
                reason = "no ensemble predictions (fold mean); per-fold rows only"
            else:
                reason = "no predictions on this set"
            auroc[arm] = {"missing": reason}
            missing.append(f"{arm}: {reason}")
            continue
        why = metrics.problem(sub)
        if why:
            auroc[arm] = {"missing": why}
            missing.append(f"{arm}: {why}")
            continue
        rows[arm] = sub
        auroc[arm] = metrics.auroc_summary(sub, settings)
    union = pd.concat(rows.values()).drop_duplicates("image") if rows else preds.df.iloc[:0]
    used = metrics.method_for(union, settings) if len(union) else "delong"
    repeats = metrics.clustered(union) if len(union) else False
    # comparisons within the set, Holm-corrected over the set's family
    pairs, family = _pairs(order, roles)
    comps = []
    for a, b in pairs:
        if a not in rows or b not in rows:
            c = {"a": a, "b": b, "missing": "no valid predictions for " + " and ".join(x for x in (a, b) if x not in rows)}
        else:
            c = {"a": a, "b": b, **metrics.compare(rows[a], rows[b], settings)}
        comps.append(c)
        if c["missing"]:
            missing.append(f"{a} vs {b}: {c['missing']}")
    adj = holm([c.get("p_value", np.nan) if not c["missing"] else np.nan for c in comps])
    for c, p in zip(comps, adj):
        c["p_holm"] = None if np.isnan(p) else float(p)

    def lookup(a, b):
        return next((c for c in comps if {c["a"], c["b"]} == {a, b}), None)

    headline = []
    for arm in order:
        r = auroc[arm]
        row = {"arm": arm, "status": info[arm]["status"], "weights": info[arm]["weights"], "role": info[arm]["role"],
               "auroc": r.get("auroc"), "auroc_text": _fmt_ci(r), "n": r.get("n"), "missing": r.get("missing")}
        for role in REFERENCE_ROLES:
            ref = roles.get(role)
            c = lookup(arm, ref) if ref and ref != arm else None
            row[f"p_vs_{role}"] = fmt_p(c.get("p_value")) if c and not c["missing"] else "—"
            row[f"holm_vs_{role}"] = fmt_p(c.get("p_holm")) if c and not c["missing"] else "—"
        headline.append(row)
    # power of the observed differences
    power = []
    for c in comps:
        if c["missing"] or c["auroc_a"] in (0.0, 1.0) or c["auroc_b"] in (0.0, 1.0):
            continue
        sub = rows[c["a"]]
        n_pos = int(sub["label"].sum())
        pw = paired_auc_power(c["auroc_a"], c["auroc_b"], n_pos, int(len(sub) - n_pos), c.get("correlation", 0.0))
        power.append({**pw.as_dict(), "a": c["a"], "b": c["b"]})
    n, n_pos = int(len(union)), int(union["label"].sum()) if len(union) else 0
    power_text, power_lines = _power_sentence(power, n, n_pos, repeats)
    # operating points chosen on out-of-fold predictions, calibration, decision curves
    operating, calibration, decision = {}, {}, {}
    for arm, sub in rows.items():
        o = oof.get(arm) or {}
        oof_rows = _oof_rows(run, arm, o.get("folds")) if o.get("missing") is None and o else None
        if oof_rows is not None:
            try:
                points = metrics.choose_thresholds(oof_rows)
                at = metrics.at_thresholds(sub, points, settings.level)
                operating[arm] = {"points": points, "at": at, "folds": o["folds"], "complete": o["complete"],
                                  "missing": None}
            except StatsError as exc:
                operating[arm] = {"missing": str(exc)}
        else:
            operating[arm] = {"missing": "no out-of-fold predictions to choose thresholds on"}
        calibration[arm] = metrics.calibration(sub, oof_rows)
        try:
            y, p, _ = metrics.arrays(sub)
            decision[arm] = decision_curve(y, p).as_dict()
        except StatsError as exc:
            decision[arm] = {"missing": str(exc)}
    sources = preds.label_sources(name)
    return {
        "name": name, "kind": "test" if name == TEST else "external",
        "n": n, "n_pos": n_pos,
        "n_clusters": int(union["cluster"].nunique()) if len(union) and preds.has_clusters else None,
        "label_source": sources[0] if len(sources) == 1 else ", ".join(sources),
        "method": used if used == "delong" else ("cluster-bootstrap" if repeats else "bootstrap"),
        "method_text": metrics.method_text(union, preds.clustered_by, settings) if len(union) else "—",
        "clustered": repeats, "auroc": auroc, "comparisons": comps, "family": family,
        "n_family": sum(1 for c in comps if not c["missing"]), "headline": headline,
        "power": power, "power_text": power_text, "power_lines": power_lines,
        "operating": operating, "calibration": calibration, "decision": decision, "missing": missing,
        "_rows": rows,
    }


def analyse(run: Run, settings: metrics.Settings = metrics.DEFAULT) -> dict:
    """Every number the report shows, as plain Python data (JSON-serialisable but for ``_rows``)."""
    preds = run.predictions
    order, info = run.arm_table()
    roles: dict[str, str] = {}
    for role in REFERENCE_ROLES:
        cands = [a for a in order if info[a]["role"] == role]
        if len(cands) == 1:
            roles[role] = cands[0]
    # folds: out-of-fold and per-fold test
    k, k_from = run.expected_folds()
    fold_rows, oof, missing = [], {}, []
    for arm in order:
        if info[arm]["status"] in ("skipped", "failed", "not run") and arm not in preds.arms:
            continue
        if preds.rows(arm=arm, split=OOF).empty and k == 0:
            continue
        present = []
        for f in range(k):
            cell = {"arm": arm, "fold": f}
            for name, split in (("val", OOF), ("test", TEST)):
                sub = preds.rows(arm=arm, split=split, fold=f)
                why = metrics.problem(sub)
                if sub.empty:
                    cell[name], cell[f"{name}_missing"] = None, "missing"
                    missing.append(f"{arm} fold {f}: no {'out-of-fold' if name == 'val' else 'test'} predictions")
                elif why:
                    cell[name], cell[f"{name}_missing"] = None, ("invalid" if "NaN" in why else "one class")
                    missing.append(f"{arm} fold {f} {name}: {why}")
                else:
                    cell[name], cell[f"{name}_n"], cell[f"{name}_missing"] = metrics.auroc(sub), int(len(sub)), None
                    if name == "val":
                        present.append(f)
            fold_rows.append(cell)
        val = _oof_rows(run, arm, present)
        if present and not metrics.problem(val):
            oof[arm] = {**metrics.auroc_summary(val, settings), "folds": present, "complete": len(present) == k}
        else:
            oof[arm] = {"missing": "no usable out-of-fold predictions"}
    efficiency = _efficiency(run, order, info, settings)
    sets = ([TEST] if TEST in preds.splits else []) + preds.external_sets
    if not sets:
        sets = [TEST]
    per_set = {name: analyse_set(run, name, order, info, roles, oof, settings) for name in sets}
    for s in per_set.values():
        missing += [f"{s['name']}: {m}" if s["kind"] == "external" else m for m in s["missing"]]
    label = run.label_meaning()
    return {
        "arms": order, "arm_info": info, "roles": roles, "label": label.to_dict(),
        "settings": {"method": settings.method, "n_boot": settings.n_boot, "seed": settings.seed,
                     "level": settings.level},
        "clustered_by": preds.clustered_by,
        "sets": per_set, "set_order": sets,
        "folds": {"k": k, "source": k_from, "rows": fold_rows}, "oof": oof,
        "selection": _selection(run), "tuning": _tuning(run), "efficiency": efficiency,
        "power_method": POWER_METHOD, "ece_bins": metrics.ECE_BINS,
        "missing": missing, "notes": list(run.notes),
    }


def _power_sentence(power: list[dict], n: int, n_pos: int, clustered: bool) -> tuple[str, list[str]]:
    if not power:
        return "Power could not be estimated (fewer than two arms with valid predictions).", []
    parts = []
    for p in power:
        need = "" if p["n_total_needed"] < 0 else f"; about {p['n_total_needed']} cases (same class balance) would give 80% power"
        parts.append(f"{p['power'] * 100:.0f}% power to detect the observed difference of {abs(p['diff']):.3f} "
                     f"between {p['a']} and {p['b']}{need}")
    tail = ("Two-sided α = 0.05; Obuchowski–McClish binormal variance function with the correlation of the "
            "two AUROCs taken from the DeLong covariance (a formula, not a simulation).")
    if clustered:
        tail += " It treats images as independent, so it is optimistic when patients have several images."
    text = f"With {n} cases ({n_pos} positive), the set had " + "; ".join(parts) + ". " + tail
    lines = [f"{x[0].upper()}{x[1:]}." for x in parts]
    return text, [f"With {n} cases ({n_pos} positive):"] + lines + [tail]


SELECTION_TEXT = {
    "inner": ("each fold's model was chosen (early stopping) on an inner split of its training part, so the "
              "out-of-fold predictions are untouched by model selection"),
    "last": "no model selection: each fold's model is the one after the last training epoch",
    "oof": ("each fold's model was chosen (early stopping) on the very fold it then scored: the out-of-fold "
            "AUROC is selection-biased (optimistic); the held-out test set is unaffected"),
}


def _selection(run: Run) -> dict:
    """How the epoch of each fold model was chosen (from the study record), and whether that biases the
    out-of-fold figures."""
    mode = run.record.config.train.selection if run.record is not None else (run.results or {}).get("selection")
    if mode is None:
        return {"mode": None, "text": "not recorded", "biased": False}
    return {"mode": mode, "text": SELECTION_TEXT[mode], "biased": mode == "oof"}


def _tuning(run: Run) -> dict | None:
    """What ``train.tune`` searched and what each job chose (None when nothing was tuned)."""
    if run.record is None or not run.record.config.train.tune.grid:
        return None
    chosen = []
    for name, job in ((run.results or {}).get("jobs") or {}).items():
        tuned = (job.get("extra") or {}).get("tuned") or {}
        if tuned.get("chosen") is not None:
            chosen.append({"job": name, "chosen": tuned["chosen"]})
    grid = run.record.config.train.tune.model_dump()
    return {"grid": {k: v for k, v in grid.items() if v}, "chosen": chosen,
            "on": "an inner, group-respecting split of each training fold (never the held-out fold or the test set)"}


def _efficiency(run: Run, order: list[str], info: dict, settings: metrics.Settings) -> dict | None:
    """Data-efficiency curves: AUROC against training images per arm, out of fold and on every scored set."""
    preds = run.predictions
    fractions = preds.fractions
    if len(fractions) < 2:
        return None
    sizes = (run.data or {}).get("train_fractions") or {}
    curves: dict[str, dict[str, list[dict]]] = {}
    for arm in order:
        for f in fractions:
            key = f"{f:g}"
            n_train = float(np.mean(sizes[key])) if key in sizes else None
            for split in [OOF] + [s for s in preds.splits if s != OOF]:
                rows = preds.rows(arm=arm, split=split, fraction=f, ensemble=None if split == OOF else True)
                if rows.empty:
                    continue
                r = metrics.auroc_summary(rows, settings)
                curves.setdefault(split, {}).setdefault(arm, []).append(
                    {"fraction": f, "n_train": n_train, **{k: r.get(k) for k in ("auroc", "lower", "upper", "missing")}})
    statement = _images_to_match(curves.get(OOF, {}), order, info)
    return {"fractions": fractions, "curves": curves, "statement": statement}


def _images_to_match(oof_curves: dict, order: list[str], info: dict) -> str | None:
    """How many training images the best pretrained arm needs to reach scratch's out-of-fold AUROC at 100%."""
    scratch = next((a for a in order if info[a]["role"] == "scratch" and a in oof_curves), None)
    if scratch is None:
        return None
    full = [p for p in oof_curves[scratch] if p["fraction"] == 1.0 and p["auroc"] is not None]
    others = {a: c for a, c in oof_curves.items() if a != scratch and info.get(a, {}).get("role")}
    best = max(others, default=None, key=lambda a: next((p["auroc"] or 0 for p in others[a] if p["fraction"] == 1.0), 0))
    if not full or best is None:
        return None
    target = full[0]["auroc"]
    pts = sorted((p for p in others[best] if p["auroc"] is not None and p["n_train"] is not None), key=lambda p: p["fraction"])
    if not pts:
        return None
    what = f"scratch's out-of-fold AUROC with all training images ({target:.3f}, {full[0]['n_train']:.0f} images per fold)"
    if pts[0]["auroc"] >= target:
        return (f"{best} reaches {what} already with {pts[0]['n_train']:.0f} images per fold "
                f"({pts[0]['fraction']:g} of the training data, the smallest share tried).")
    for lo, hi in zip(pts, pts[1:]):
        if hi["auroc"] >= target:
            t = (target - lo["auroc"]) / (hi["auroc"] - lo["auroc"])
            n = lo["n_train"] + t * (hi["n_train"] - lo["n_train"])
            return (f"{best} reaches {what} with about {n:.0f} images per fold ({n / full[0]['n_train']:.0%} of the "
                    "training data; linear interpolation between the fractions tried).")
    return f"{best} does not reach {what} with any share of the training data tried."
