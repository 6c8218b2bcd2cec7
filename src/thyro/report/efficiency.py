"""Data-efficiency curves: AUROC against the training images per fold, and how many images the best
pretrained arm needs to match scratch."""

from __future__ import annotations

import numpy as np

from thyro import metrics
from thyro.run import OOF, Run


def efficiency(run: Run, order: list[str], info: dict, settings: metrics.Settings) -> dict | None:
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
    statement = images_to_match(curves.get(OOF, {}), order, info)
    return {"fractions": fractions, "curves": curves, "statement": statement}


def images_to_match(oof_curves: dict, order: list[str], info: dict) -> str | None:
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
