"""Paired comparison of two prediction files on their common cases (``thyro compare``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from thyro.errors import StatsError
from thyro.report.load import read_predictions
from thyro.stats import choose_method, compare_paired, has_repeated_groups, interval


def _select(path: Path, df: pd.DataFrame, arm: str | None, split: str, fold: str) -> tuple[pd.DataFrame, str]:
    arms = list(pd.unique(df["arm"]))
    if arm is None:
        if len(arms) > 1:
            raise StatsError(f"{path}: holds several arms ({', '.join(arms)}); pick one with --arm-a/--arm-b")
        arm = arms[0]
    elif arm not in arms:
        raise StatsError(f"{path}: no arm {arm!r}; it holds {', '.join(arms)}")
    sub = df[(df["arm"] == arm) & (df["split"] == split) & (df["fold"] == fold)]
    if sub.empty:
        have = sorted({f"{s}/{f}" for s, f in zip(df.loc[df['arm'] == arm, 'split'], df.loc[df['arm'] == arm, 'fold'])})
        raise StatsError(f"{path}: arm {arm!r} has no rows with split={split!r} and fold={fold!r}; "
                         f"it has split/fold {', '.join(have[:10])} (choose with --split/--fold)")
    bad = ~np.isfinite(sub["probability"].to_numpy(dtype=float))
    if bad.any():
        ex = sub.loc[bad, "image"].head(3).tolist()
        raise StatsError(f"{path}: {int(bad.sum())} NaN or infinite probabilities (e.g. {ex}); fix or drop these rows")
    return sub, arm


def compare_files(path_a, path_b, *, arm_a: str | None = None, arm_b: str | None = None, split: str = "test",
                  fold: str = "mean", method: str = "auto", n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict:
    """Compare model A and model B on the images both files score (matched by ``image``).

    Returns a dict with both AUROCs (with CIs), the paired difference, its CI and p-value, the method
    used, and how many images were common / only in one file.
    """
    path_a, path_b = Path(path_a), Path(path_b)
    da, cluster_a, _ = read_predictions(path_a)
    db, cluster_b, _ = read_predictions(path_b)
    sa, arm_a = _select(path_a, da, arm_a, split, str(fold))
    sb, arm_b = _select(path_b, db, arm_b, split, str(fold))
    keep_a = ["image", "label", "probability"] + ([cluster_a] if cluster_a else [])
    keep_b = ["image", "label", "probability"] + ([cluster_b] if cluster_b else [])
    m = sa[keep_a].rename(columns={cluster_a: "cluster"} if cluster_a else {}).merge(
        sb[keep_b].rename(columns={cluster_b: "cluster"} if cluster_b else {}), on="image", suffixes=("_a", "_b"))
    if m.empty:
        raise StatsError(f"{path_a.name} and {path_b.name} share no image ids "
                         f"({len(sa)} and {len(sb)} images); they must score the same cases, named the same way")
    disagree = m["label_a"] != m["label_b"]
    if disagree.any():
        ex = m.loc[disagree, "image"].head(5).tolist()
        raise StatsError(f"{path_a.name} and {path_b.name} disagree on the label of {int(disagree.sum())} common "
                         f"image(s), e.g. {ex}; they must use the same reference standard")
    y = m["label_a"].to_numpy()
    pa, pb = m["probability_a"].to_numpy(), m["probability_b"].to_numpy()
    # patients/groups from file A, else from file B
    cluster_name = cluster_a or cluster_b
    if cluster_name == "cluster":
        cluster_name = "patient/group cluster"
    col = next((c for c in ("cluster_a", "cluster_b", "cluster") if c in m), None)
    if cluster_a and cluster_b:
        col = "cluster_a"
    groups = m[col].to_numpy() if col else None
    used = choose_method(groups, method)
    ra = interval(y, pa, groups, method=used, level=level, n_boot=n_boot, seed=seed)
    rb = interval(y, pb, groups, method=used, level=level, n_boot=n_boot, seed=seed)
    c = compare_paired(y, pa, pb, groups, method=used, level=level, n_boot=n_boot, seed=seed)
    return {
        "a": {"file": str(path_a), "arm": arm_a, **ra.as_dict()},
        "b": {"file": str(path_b), "arm": arm_b, **rb.as_dict()},
        "comparison": c.as_dict(),
        "n_common": int(len(m)),
        "n_pos": int(y.sum()),
        "only_a": int(len(sa) - len(m)),
        "only_b": int(len(sb) - len(m)),
        "split": split,
        "fold": str(fold),
        "cluster_column": cluster_name,
        "clustered": has_repeated_groups(groups),
    }
