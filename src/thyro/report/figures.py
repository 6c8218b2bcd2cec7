"""Report figures (matplotlib, Agg backend), returned as base64 PNG strings for embedding."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from thyro.metrics import arrays  # noqa: E402
from thyro.stats import bootstrap_roc_band, roc_curve  # noqa: E402

DPI = 90
COLORS = plt.get_cmap("tab10").colors


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def roc_figure(rows: dict[str, pd.DataFrame], results: dict, n_boot: int = 500, seed: int = 0, level: float = 0.95,
               title: str = "Test set ROC") -> str:
    """ROC curves of all arms on one plot, each with a pointwise bootstrap band (clustered when needed)."""
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    grid = np.linspace(0, 1, 101)
    for i, (arm, sub) in enumerate(rows.items()):
        c = COLORS[i % len(COLORS)]
        y, p, g = arrays(sub)
        fpr, tpr, _ = roc_curve(y, p)
        lo, hi = bootstrap_roc_band(y, p, grid, groups=g, n_boot=n_boot, seed=seed, level=level)
        ax.fill_between(grid, lo, hi, step="post", color=c, alpha=0.15, linewidth=0)
        r = results[arm]
        ax.step(fpr, tpr, where="post", color=c, lw=1.8,
                label=f"{arm}: {r['auroc']:.3f} [{r['lower']:.3f}, {r['upper']:.3f}]")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set(xlabel="1 − specificity (false-positive rate)", ylabel="Sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title=f"{title} (bands: pointwise bootstrap)")
    ax.legend(loc="lower right", fontsize=8, title="AUROC [CI]", title_fontsize=8)
    ax.set_aspect("equal")
    return _png(fig)


def folds_figure(fold_rows: list[dict], arms: list[str], oof: dict, test: dict) -> str:
    """Per-fold AUROCs (out-of-fold and fold-model test) with pooled OOF and ensemble test AUROC."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    width = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        c = COLORS[i % len(COLORS)]
        rows = [r for r in fold_rows if r["arm"] == arm]
        x0 = i * width - 0.4 + width / 2
        for r in rows:
            if r.get("val") is not None:
                ax.plot(r["fold"] + x0, r["val"], "o", color=c, ms=5)
            else:
                ax.plot(r["fold"] + x0, 0.5, "x", color="red", ms=7)
            if r.get("test") is not None:
                ax.plot(r["fold"] + x0, r["test"], "s", mfc="none", color=c, ms=5)
        o, t = oof.get(arm, {}), test.get(arm, {})
        if o.get("auroc") is not None:
            ax.axhline(o["auroc"], color=c, ls="--", lw=1, alpha=0.7)
        if t.get("auroc") is not None:
            ax.axhline(t["auroc"], color=c, ls="-", lw=1, alpha=0.7)
        ax.plot([], [], color=c, lw=6, label=arm)
    ax.plot([], [], "o", color="k", label="out-of-fold (val)")
    ax.plot([], [], "s", mfc="none", color="k", label="fold model on test")
    ax.plot([], [], "x", color="red", label="missing or not estimable")
    ax.set(xlabel="Fold", ylabel="AUROC", title="Per-fold AUROC (dashed: pooled OOF; solid: ensemble test)")
    k = max((r["fold"] for r in fold_rows), default=0) + 1
    ax.set_xticks(range(k))
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return _png(fig)


def oof_vs_test_figure(arms: list[str], oof: dict, test: dict) -> str:
    """Pooled out-of-fold AUROC against ensemble test AUROC, with CIs."""
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    for i, arm in enumerate(arms):
        c = COLORS[i % len(COLORS)]
        for j, (d, name) in enumerate(((oof.get(arm, {}), "out-of-fold"), (test.get(arm, {}), "test"))):
            if d.get("auroc") is None:
                continue
            y = i + (0.15 if j else -0.15)
            # a percentile bootstrap CI on a few patients may lie wholly on one side of the estimate
            ax.errorbar(d["auroc"], y, xerr=[[max(0.0, d["auroc"] - d["lower"])], [max(0.0, d["upper"] - d["auroc"])]],
                        fmt="o" if j == 0 else "s", color=c, mfc=c if j == 0 else "white", capsize=3)
    ax.set_yticks(range(len(arms)), arms)
    ax.invert_yaxis()
    ax.plot([], [], "o", color="k", label="out-of-fold")
    ax.plot([], [], "s", color="k", mfc="white", label="test (ensemble)")
    ax.legend(fontsize=7)
    ax.set(xlabel="AUROC [CI]", title="Out-of-fold vs test")
    return _png(fig)


def calibration_figure(calibration: dict, title: str = "Reliability (test set)",
                       observed: str = "Observed malignant fraction") -> str:
    """Reliability diagram of every arm on one set."""
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for i, (arm, cal) in enumerate(calibration.items()):
        if cal.get("missing"):
            continue
        rel = cal["reliability"]
        cnt = np.asarray(rel["count"])
        mp = np.asarray(rel["mean_predicted"], dtype=float)[cnt > 0]
        fp = np.asarray(rel["fraction_positive"], dtype=float)[cnt > 0]
        slope = "slope not estimable" if cal.get("slope") is None else f"slope {cal['slope']:.2f}"
        ax.plot(mp, fp, "o-", color=COLORS[i % len(COLORS)], ms=4, label=f"{arm} (ECE {cal['ece']:.3f}, {slope})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="Mean predicted probability", ylabel=observed, xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def decision_figure(decision: dict, title: str = "Decision curves (test set)") -> str:
    """Net benefit against biopsy threshold for each arm, biopsy-all and biopsy-none."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    shown = None
    for i, (arm, d) in enumerate(decision.items()):
        if d.get("missing"):
            continue
        ax.plot(d["thresholds"], d["model"], color=COLORS[i % len(COLORS)], lw=1.6, label=arm)
        shown = d
    if shown:
        ax.plot(shown["thresholds"], shown["treat_all"], color="k", lw=1, ls="--", label="biopsy all")
        ax.plot(shown["thresholds"], shown["treat_none"], color="grey", lw=1, ls=":", label="biopsy none")
        ax.set_ylim(min(-0.05, -0.1 * shown["prevalence"]), shown["prevalence"] * 1.1 + 0.01)
    ax.set(xlabel="Threshold probability for biopsy", ylabel="Net benefit", title=title)
    ax.legend(fontsize=7)
    return _png(fig)


def training_figure(logs: dict[str, dict[str, pd.DataFrame]], hidden: dict[str, set[str]] | None = None) -> str | None:
    """Training curves: validation AUROC and losses per epoch, one panel per arm, one line per fold.

    ``hidden`` names, per arm, the folds (``"fold2"``) whose validation AUROC is not drawn: their held-out
    part is too small to estimate one (:mod:`thyro.stats.support`)."""
    hidden = hidden or {}
    arms = [a for a in logs if logs[a]]
    if not arms:
        return None
    fig, axes = plt.subplots(2, len(arms), figsize=(3.2 * len(arms), 5.0), squeeze=False, sharex="col")
    for j, arm in enumerate(arms):
        for k, (fold, log) in enumerate(sorted(logs[arm].items())):
            c = COLORS[k % len(COLORS)]
            x = log["epoch"] if "epoch" in log else np.arange(1, len(log) + 1)
            if "val_auroc" in log and fold not in hidden.get(arm, ()):
                axes[0, j].plot(x, log["val_auroc"], color=c, lw=1.2, label=fold)
            if "train_loss" in log:
                axes[1, j].plot(x, log["train_loss"], color=c, lw=1.2)
            if "val_loss" in log:
                axes[1, j].plot(x, log["val_loss"], color=c, lw=1.2, ls="--")
        axes[0, j].set_title(arm, fontsize=9)
        if hidden.get(arm):
            axes[0, j].text(0.5, 0.5, "val AUROC not estimable:\n" + ", ".join(sorted(hidden[arm])),
                            transform=axes[0, j].transAxes, ha="center", va="center", fontsize=7, color="#a33")
        axes[1, j].set_xlabel("epoch")
        axes[1, j].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_ylabel("val AUROC")
    axes[1, 0].set_ylabel("loss (— train, -- val)")
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


def efficiency_figure(curves: dict[str, dict[str, list[dict]]], titles: dict[str, str]) -> str | None:
    """AUROC (with CIs) against training images per fold, one line per arm, one panel per set."""
    panels = [s for s in curves if any(p["auroc"] is not None for c in curves[s].values() for p in c)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=True)
    arms = sorted({a for s in panels for a in curves[s]}, key=lambda a: list(curves[panels[0]]).index(a)
                  if a in curves[panels[0]] else 99)
    for ax, split in zip(axes[0], panels):
        for i, arm in enumerate(arms):
            pts = [p for p in curves[split].get(arm, []) if p["auroc"] is not None]
            if not pts:
                continue
            x = [p["n_train"] if p["n_train"] is not None else p["fraction"] for p in pts]
            y = np.array([p["auroc"] for p in pts])
            err = np.array([[p["auroc"] - p["lower"] for p in pts], [p["upper"] - p["auroc"] for p in pts]])
            ax.errorbar(x, y, yerr=err, fmt="o-", color=COLORS[i % len(COLORS)], capsize=3, ms=4, label=arm)
        ax.set(title=titles.get(split, split), xlabel="training images per fold" if all(
            p["n_train"] is not None for c in curves[split].values() for p in c) else "share of the training fold")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("AUROC [CI]")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)
