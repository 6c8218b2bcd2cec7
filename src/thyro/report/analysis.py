"""All numbers of a study report, computed once from a :class:`~thyro.run.Run`.

Every AUROC, interval and comparison comes from :mod:`thyro.metrics`, the functions the model package,
``thyro compare`` and the web app use too.  Anything that cannot be computed honestly (an arm without
predictions on a set, a missing fold, non-finite probabilities, two arms scored on different cases) is
recorded as missing with a reason; no number is filled in for it.

The report leads with the answer (:func:`headline`): the best arm on the most telling set (an external
set when there is one, else the held-out test set, else the pooled out-of-fold predictions), its AUROC
and interval, and its difference to every other arm with an interval and a Holm-adjusted p-value.  Each
evaluation set then gets the same analysis (:func:`analyse_set`): AUROC with intervals; the comparisons of
interest (``report.comparisons``, by default every pretrained arm against scratch and every pair of
pretrained arms), Holm-corrected together, each with the smallest difference the set could detect
(a design quantity, :func:`thyro.stats.power.minimal_detectable_difference`, never the "observed power"
of the difference seen); and, on the test and external sets, operating points chosen on the
out-of-fold predictions, calibration and decision curves.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd

from thyro import metrics
from thyro.errors import StatsError
from thyro.run import OOF, TEST, Run
from thyro.stats import decision_curve, holm
from thyro.stats.format import format_p
from thyro.stats.power import METHOD as POWER_METHOD
from thyro.stats.power import minimal_detectable_difference

#: Power and level at which the smallest detectable difference is stated.
MDD_POWER = 0.8
MDD_ALPHA = 0.05
#: Longest skip or failure reason shown on the arms' one-line summary (the whole text is folded below it).
SHORT_REASON = 90


def fmt_p(p: float | None) -> str:
    """A p-value for a table cell under a "p" header (:func:`thyro.stats.format.format_p`)."""
    return format_p(p, name=None)


def _fmt_ci(r: dict | None, digits: int = 3) -> str:
    if not r or r.get("auroc") is None:
        return "—"
    return f"{r['auroc']:.{digits}f} [{r['lower']:.{digits}f}, {r['upper']:.{digits}f}]"


def one_line(text: str | None) -> str:
    """A multi-line message (a weight file's "Looked in:" list) on one line, nothing cut."""
    return "; ".join(part.strip(" -") for part in str(text or "").splitlines() if part.strip())


def short_reason(text: str | None, limit: int = SHORT_REASON) -> str:
    """The first sentence of a skip or failure reason, at most ``limit`` characters."""
    first = one_line(text)
    first = re.split(r"(?<=[.;])\s", first, maxsplit=1)[0].rstrip(".;")
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def set_title(name: str) -> str:
    """How a set is named in sentences: ``the held-out test set``, ``the external set site-b``."""
    if name == TEST:
        return "the held-out test set"
    if name == OOF:
        return "the pooled out-of-fold predictions"
    return f"the external set {name}"


# ----------------------------------------------------------------------------------------------
# which comparisons
# ----------------------------------------------------------------------------------------------

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


def _oof_rows(run: Run, arm: str, folds: list[int] | None = None) -> pd.DataFrame:
    rows = run.predictions.rows(arm=arm, split=OOF)
    return rows if folds is None else rows[rows["fold"].isin(folds)].reset_index(drop=True)


#: Why an arm has no predictions, when its record gives no reason.
STATUS_TEXT = {"incomplete": "no fold finished", "not run": "not in the predictions"}


def not_run(arm: str, run: Run) -> bool:
    """An arm that left no predictions at all (skipped, failed, not run yet, or run elsewhere)."""
    return arm not in run.predictions.arms


# ----------------------------------------------------------------------------------------------
# one evaluation set
# ----------------------------------------------------------------------------------------------

def analyse_set(run: Run, name: str, order: list[str], info: dict, pairs: list[tuple[str, str]], family: str,
                oof: dict, settings: metrics.Settings) -> dict:
    """The analysis of one evaluation set: ``val`` (pooled out-of-fold), ``test`` or an external set's name."""
    preds = run.predictions
    kind = "oof" if name == OOF else "test" if name == TEST else "external"
    missing: list[str] = []
    rows: dict[str, pd.DataFrame] = {}
    auroc: dict[str, dict] = {}
    shown = [a for a in order if not not_run(a, run)]
    for arm in shown:
        if kind == "oof":
            o = oof.get(arm) or {"missing": "no out-of-fold predictions"}
            if o.get("missing"):
                auroc[arm] = {"missing": o["missing"]}
                missing.append(f"{arm}: {o['missing']}")
                continue
            rows[arm] = _oof_rows(run, arm, o["folds"])
            auroc[arm] = o
            continue
        sub = preds.rows(arm=arm, split=name, ensemble=True)
        st = info[arm]["status"]
        if sub.empty:
            if st in ("skipped", "failed"):
                reason = st + (f": {short_reason(info[arm]['reason'])}" if info[arm]["reason"] else "")
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
    comps = _comparisons(rows, pairs, settings, missing, {a for a in order if not_run(a, run)})
    table = [{"arm": arm, "weights": info[arm]["weights"], "role": info[arm]["role"], "auroc": auroc[arm].get("auroc"),
              "auroc_text": _fmt_ci(auroc[arm]), "n": auroc[arm].get("n"), "missing": auroc[arm].get("missing")}
             for arm in shown]
    out = {
        "name": name, "kind": kind, "title": set_title(name),
        "n": int(len(union)), "n_pos": int(union["label"].sum()) if len(union) else 0,
        "n_clusters": int(union["cluster"].nunique()) if len(union) and preds.has_clusters else None,
        "labels": run.label_meaning(name).to_dict(), "label_warning": None,
        "method": used if used == "delong" else ("cluster-bootstrap" if repeats else "bootstrap"),
        "method_text": metrics.method_text(union, preds.clustered_by, settings) if len(union) else "—",
        "clustered": repeats, "auroc": auroc, "table": table, "comparisons": comps, "family": family,
        "n_family": sum(1 for c in comps if not c["missing"]), "missing": missing, "_rows": rows,
    }
    model = run.model_meaning()
    if kind == "external" or (not run.from_dir and run.predictions.model_labels is not None):
        out["label_warning"] = model.mismatch(run.label_meaning(name), set_title(name))
    if kind != "oof":
        out.update(_clinical(run, rows, oof, settings))
    return out


def _comparisons(rows: dict, pairs: list[tuple[str, str]], settings: metrics.Settings, missing: list[str],
                 not_run_arms: set[str]) -> list[dict]:
    """The comparisons of interest on one set, Holm-corrected over those that could be made, each with the
    smallest difference the set could detect."""
    comps = []
    for a, b in pairs:
        if a not in rows or b not in rows:
            absent = [x for x in (a, b) if x not in rows]
            c = {"a": a, "b": b, "missing": "no valid predictions for " + " and ".join(absent),
                 "not_run": all(x in not_run_arms for x in absent)}
        else:
            c = {"a": a, "b": b, **metrics.compare(rows[a], rows[b], settings), "not_run": False}
        if not c["missing"]:
            c["mdd"] = _mdd(c)
        comps.append(c)
        if c["missing"] and not c["not_run"]:
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


def _clinical(run: Run, rows: dict, oof: dict, settings: metrics.Settings) -> dict:
    """Operating points chosen on out-of-fold predictions, calibration and decision curves of one set."""
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
    return {"operating": operating, "calibration": calibration, "decision": decision}


# ----------------------------------------------------------------------------------------------
# the headline
# ----------------------------------------------------------------------------------------------

def headline(sets: dict, order: list[str], model_labels: dict) -> dict | None:
    """The answer the report leads with, on the first set (in report order) where an arm has an AUROC.

    Returns the set, the best arm (highest AUROC) with its interval, and for every other arm the
    difference best - other with its interval and Holm-adjusted p (when the pair is a comparison of
    interest) and the smallest difference the set could detect; plus the best arm on the other sets.
    """
    chosen = next((s for s in sets.values() if any(r["auroc"] is not None for r in s["table"])), None)
    if chosen is None:
        return None
    valid = [r for r in chosen["table"] if r["auroc"] is not None]
    best = max(valid, key=lambda r: r["auroc"])  # ties: the first listed
    b = chosen["auroc"][best["arm"]]
    versus = []
    for r in sorted(valid, key=lambda r: -r["auroc"]):  # the closest competitor first
        if r["arm"] == best["arm"]:
            continue
        c = next((c for c in chosen["comparisons"] if {c["a"], c["b"]} == {best["arm"], r["arm"]}
                  and not c["missing"]), None)
        item = {"arm": r["arm"], "auroc": r["auroc"], "in_family": c is not None}
        if c is not None:
            sign = 1.0 if c["a"] == best["arm"] else -1.0
            lo, hi = sorted((sign * c["lower"], sign * c["upper"]))
            item.update(diff=sign * c["diff"], lower=lo, upper=hi, p_holm=c["p_holm"], mdd=c.get("mdd"),
                        shown=c["p_holm"] is not None and c["p_holm"] < MDD_ALPHA and lo > 0)
        else:
            item.update(diff=best["auroc"] - r["auroc"])
        versus.append(item)
    elsewhere = []
    for s in sets.values():
        if s is chosen:
            continue
        ok = [r for r in s["table"] if r["auroc"] is not None]
        if ok:
            top = max(ok, key=lambda r: r["auroc"])
            elsewhere.append({"set": s["name"], "title": s["title"], "arm": top["arm"], **{
                k: s["auroc"][top["arm"]][k] for k in ("auroc", "lower", "upper")}})
    return {"set": chosen["name"], "title": chosen["title"], "kind": chosen["kind"], "n": chosen["n"],
            "n_pos": chosen["n_pos"], "n_clusters": chosen["n_clusters"], "labels": chosen["labels"],
            "label_warning": chosen["label_warning"], "model_labels": model_labels,
            "best": {"arm": best["arm"], **{k: b[k] for k in ("auroc", "lower", "upper", "level")}},
            "versus": versus, "elsewhere": elsewhere, "n_family": chosen["n_family"],
            "text": None}


def headline_sentences(h: dict, level_pct: str) -> list[str]:
    """The headline in plain words, one sentence per item (the report and the console say the same)."""
    def ci(lo, hi, signed=False):
        f = (lambda v: f"{round(v, 3) + 0.0:+.3f}") if signed else (lambda v: f"{v:.3f}")
        return f"{level_pct}% CI {f(lo)} to {f(hi)}"

    best = h["best"]
    clusters = h["n_clusters"]
    who = f"{h['n']} images" + (f" of {clusters} patients" if clusters and clusters < h["n"] else "")
    out = [f"On {h['title']} ({who}, {h['n_pos']} labelled {h['labels']['positive']}), {best['arm']} has the highest "
           f"AUROC: {best['auroc']:.3f} ({ci(best['lower'], best['upper'])})."]
    for v in h["versus"]:
        lead = f"{best['arm']} − {v['arm']} ({v['auroc']:.3f}):"
        if not v["in_family"]:
            out.append(f"{lead} {round(v['diff'], 3) + 0.0:+.3f}, not among the comparisons of interest, so not "
                       "tested.")
            continue
        diff = (f"{round(v['diff'], 3) + 0.0:+.3f} ({ci(v['lower'], v['upper'], signed=True)}, "
                f"{format_p(v['p_holm'], name='Holm-adjusted p')})")
        if v["shown"]:
            out.append(f"{lead} {diff}; {best['arm']} is better.")
        else:
            can = (f"; this set detects differences of {v['mdd']:.3f} or more with 80% power" if v.get("mdd")
                   else "; this set is too small to detect any difference with 80% power"
                   if "mdd" in v and v["mdd"] is None else "")
            out.append(f"{lead} {diff}; no difference shown{can}.")
    if h["elsewhere"]:
        out.append("Best elsewhere: " + "; ".join(
            f"{e['title'].removeprefix('the ')}: {e['arm']} {e['auroc']:.3f} ({ci(e['lower'], e['upper'])})"
            for e in h["elsewhere"]) + ".")
    if h["label_warning"]:
        out.append(h["label_warning"])
    return out


# ----------------------------------------------------------------------------------------------
# the whole study
# ----------------------------------------------------------------------------------------------

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
    # folds: out-of-fold and per-fold test
    k, k_from = run.expected_folds()
    fold_rows, oof, missing = [], {}, []
    for arm in order:
        if not_run(arm, run):
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
                    if split == OOF or TEST in preds.splits:
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
    # the sets, in the order the report shows them: external sets, the test set, out of fold
    names = preds.external_sets + ([TEST] if TEST in preds.splits else [])
    if OOF in preds.splits:
        names.append(OOF)
    if not names:
        names = [TEST]
    per_set = {name: analyse_set(run, name, order, info, pairs, family, oof, settings) for name in names}
    for s in per_set.values():
        if s["kind"] != "oof":  # out-of-fold gaps are listed per fold above
            missing += [f"{s['name']}: {m}" if s["kind"] == "external" else m for m in s["missing"]]
    model = run.model_meaning()
    skipped = [{"arm": a, "status": info[a]["status"],
                "short": short_reason(info[a]["reason"]) or STATUS_TEXT.get(info[a]["status"], ""),
                "reason": info[a]["reason"] or STATUS_TEXT.get(info[a]["status"], "")}
               for a in order if not_run(a, run)]
    lead = headline(per_set, order, model.to_dict())
    level_pct = f"{settings.level * 100:g}"
    if lead is not None:
        lead["text"] = headline_sentences(lead, level_pct)
    return {
        "arms": order, "arm_info": info, "label": model.to_dict(), "headline": lead, "skipped": skipped,
        "reference": options.reference if reference is None else reference,
        "settings": {"method": settings.method, "n_boot": settings.n_boot, "seed": settings.seed,
                     "level": settings.level},
        "clustered_by": preds.clustered_by, "pairs": [list(p) for p in pairs], "family": family,
        "sets": per_set, "set_order": names,
        "folds": {"k": k, "source": k_from, "rows": fold_rows}, "oof": oof,
        "selection": _selection(run), "tuning": _tuning(run), "efficiency": efficiency,
        "power_method": POWER_METHOD, "mdd": {"power": MDD_POWER, "alpha": MDD_ALPHA}, "ece_bins": metrics.ECE_BINS,
        "missing": missing, "notes": list(run.notes),
    }


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
    mode = run.record.config.train.selection if run.record is not None else (
        run.results.selection if run.results is not None else None)
    if mode is None:
        return {"mode": None, "text": "not recorded", "biased": False}
    return {"mode": mode, "text": SELECTION_TEXT[mode], "biased": mode == "oof"}


def _tuning(run: Run) -> dict | None:
    """What ``train.tune`` searched and what each job chose (None when nothing was tuned)."""
    if run.record is None or not run.record.config.train.tune.grid:
        return None
    chosen = run.tuned()
    grid = run.record.config.train.tune.model_dump()
    return {"grid": {k: v for k, v in grid.items() if v}, "chosen": chosen,
            "on": "an inner, group-respecting split of each training fold (never the held-out fold or the test set)"}


def _efficiency(run: Run, order: list[str], info: dict, settings: metrics.Settings) -> dict | None:
    """Data-efficiency curves: AUROC against training images per arm, out of fold and on every scored set."""
    preds = run.predictions
    fractions = preds.fractions
    if len(fractions) < 2:
        return None
    sizes = run.train_sizes()
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
