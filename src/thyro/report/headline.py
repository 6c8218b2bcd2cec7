"""The answer a report leads with, in numbers (:func:`headline`) and in plain words (:func:`headline_sentences`)."""

from __future__ import annotations

from thyro.report.sets import MDD_ALPHA
from thyro.stats.format import format_p


def _versus(chosen: dict, best: dict, valid: list[dict]) -> list[dict]:
    """Every other arm against the best: the difference, its interval and Holm-adjusted p when the pair is a
    comparison of interest, and the smallest difference the set could detect."""
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
    return versus


def _too_small(s: dict) -> dict:
    return {"set": s["name"], "title": s["title"], "n": s["n"], "n_pos": s["n_pos"], "n_clusters": s["n_clusters"],
            "labels": s["labels"], "why": s["not_estimable"]}


def headline(sets: dict, order: list[str], model_labels: dict) -> dict | None:
    """The answer the report leads with, on the first set (in report order) where an arm has an AUROC.

    Returns the set, the best arm (highest AUROC) with its interval, and for every other arm the
    difference best - other with its interval and Holm-adjusted p (when the pair is a comparison of
    interest) and the smallest difference the set could detect; plus the best arm on the other sets,
    and the sets too small to estimate an AUROC on (``too_small``).  When no set has an AUROC but some
    are too small, ``best`` is None and ``too_small`` says why; None when there are no predictions at all.
    """
    too_small = [_too_small(s) for s in sets.values() if s.get("not_estimable")]
    chosen = next((s for s in sets.values() if any(r["auroc"] is not None for r in s["table"])), None)
    if chosen is None:
        if not too_small:
            return None
        return {"set": None, "best": None, "versus": [], "elsewhere": [], "too_small": too_small,
                "model_labels": model_labels, "label_warning": None, "text": None}
    valid = [r for r in chosen["table"] if r["auroc"] is not None]
    best = max(valid, key=lambda r: r["auroc"])  # ties: the first listed
    b = chosen["auroc"][best["arm"]]
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
            "versus": _versus(chosen, best, valid), "elsewhere": elsewhere, "n_family": chosen["n_family"],
            "too_small": too_small, "text": None}


def _who(h: dict) -> str:
    """``26 images of 25 patients, 13 labelled malignant``."""
    clusters = h["n_clusters"]
    who = f"{h['n']} images" + (f" of {clusters} patients" if clusters and clusters < h["n"] else "")
    return f"{who}, {h['n_pos']} labelled {h['labels']['positive']}"


def headline_sentences(h: dict, level_pct: str) -> list[str]:
    """The headline in plain words, one sentence per item (the report and the console say the same)."""
    def ci(lo, hi, signed=False):
        f = (lambda v: f"{round(v, 3) + 0.0:+.3f}") if signed else (lambda v: f"{v:.3f}")
        return f"{level_pct}% CI {f(lo)} to {f(hi)}"

    small = [f"{t['title'][0].upper()}{t['title'][1:]} ({_who(t)}) is too small for an AUROC: {t['why']}."
             for t in h["too_small"]]
    best = h["best"]
    if best is None:
        return ["No set is large enough to estimate an AUROC on, so no arm's performance can be reported.", *small]
    out = [f"On {h['title']} ({_who(h)}), {best['arm']} has the highest "
           f"AUROC: {best['auroc']:.3f} ({ci(best['lower'], best['upper'])}).", *small]
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
