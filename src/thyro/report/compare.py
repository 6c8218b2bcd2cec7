"""Paired comparison of two prediction files on their common cases (``thyro compare``).

The AUROCs, intervals and the paired test come from :mod:`thyro.metrics`, as in the report and the
model card, so a run's predictions compared here show the report's numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from thyro import metrics
from thyro.errors import StatsError
from thyro.run import OOF, TEST, Predictions, load_run


#: How ``--split`` may be given: the out-of-fold predictions, the held-out test set, the one external set.
SPLIT_ALIASES = {"val": OOF, "oof": OOF, "out-of-fold": OOF, "test": TEST}


def resolve_split(split: str, preds: Predictions, path: Path) -> str:
    """The split a ``--split`` value names in ``preds``: ``val``/``oof`` (pooled out-of-fold), ``test``,
    ``external`` (the file's one external set) or an external set's name."""
    key = str(split).strip()
    if key.lower() in SPLIT_ALIASES:
        return SPLIT_ALIASES[key.lower()]
    external = preds.external_sets
    if key.lower() == "external":
        if len(external) == 1:
            return external[0]
        raise StatsError(f"{path}: --split external needs one external set; this file has "
                         f"{', '.join(external) if external else 'none'} (name one with --split NAME)")
    if key in external:
        return key
    raise StatsError(f"{path}: no split {key!r}; choose val (pooled out-of-fold), test"
                     + (f", external or one of {', '.join(external)}" if external else ""))


def _select(path: Path, preds: Predictions, arm: str | None, split: str, fold: str) -> tuple[pd.DataFrame, str]:
    arms = preds.arms
    if arm is None:
        if len(arms) > 1:
            raise StatsError(f"{path}: holds several arms ({', '.join(arms)}); pick one with --arm-a/--arm-b")
        arm = arms[0]
    elif arm not in arms:
        raise StatsError(f"{path}: no arm {arm!r}; it holds {', '.join(arms)}")
    fold = str(fold).strip().lower()
    if fold in ("mean", "ensemble"):
        # out of fold, each image has one model (the fold that did not train on it): pooled over the folds
        sub = preds.rows(arm=arm, split=split) if split == OOF else preds.rows(arm=arm, split=split, ensemble=True)
    elif fold.isdigit():
        sub = preds.rows(arm=arm, split=split, fold=int(fold))
    else:
        raise StatsError(f"--fold {fold!r}: give a fold number or 'mean' (the ensemble; pooled out of fold)")
    if sub.empty:
        df = preds.df[preds.df["arm"] == arm]
        have = sorted({f"{s}/{'mean' if e else int(f)}" for s, f, e in zip(df["split"], df["fold"], df["ensemble"])})
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

    Each of ``path_a`` and ``path_b`` is a predictions CSV or a run directory (its predictions are read).

    ``split`` is ``test``, ``val`` (or ``oof``: the out-of-fold predictions, pooled over the folds unless
    ``fold`` names one), ``external`` (the files' one external set) or an external set's name.

    Returns a dict with both AUROCs (with CIs), the paired difference, its CI and p-value, the method
    used, and how many images were common / only in one file.  When the common images are too few for
    an AUROC or a difference (:mod:`thyro.stats.support`), those entries hold ``missing`` and
    ``not_estimable`` instead of numbers, and ``not_estimable`` says why.  Patients and groups (the clusters) are
    taken from file A when it names them, else from file B.
    """
    path_a, path_b = Path(path_a), Path(path_b)
    pa, pb = load_run(path_a).predictions, load_run(path_b).predictions
    split_a, split_b = resolve_split(split, pa, path_a), resolve_split(split, pb, path_b)
    if split_a != split_b:
        raise StatsError(f"--split {split}: {path_a.name} names {split_a!r} and {path_b.name} {split_b!r}; "
                         "name the set with --split NAME")
    split = split_a
    sa, arm_a = _select(path_a, pa, arm_a, split, str(fold))
    sb, arm_b = _select(path_b, pb, arm_b, split, str(fold))
    common = sorted(set(sa["image"]) & set(sb["image"]))
    if not common:
        raise StatsError(f"{path_a.name} and {path_b.name} share no image ids "
                         f"({len(sa)} and {len(sb)} images); they must score the same cases, named the same way")
    a = sa[sa["image"].isin(common)].reset_index(drop=True)
    b = sb[sb["image"].isin(common)].reset_index(drop=True)
    disagree = a["label"].to_numpy() != b["label"].to_numpy()
    if disagree.any():
        ex = a.loc[disagree, "image"].head(5).tolist()
        raise StatsError(f"{path_a.name} and {path_b.name} disagree on the label of {int(disagree.sum())} common "
                         f"image(s), e.g. {ex}; they must use the same reference standard")
    source = pa if pa.has_clusters else pb
    clusters = (a if pa.has_clusters else b)["cluster"]
    a, b = a.assign(cluster=clusters.to_numpy()), b.assign(cluster=clusters.to_numpy())
    settings = metrics.Settings(method=method, n_boot=n_boot, seed=seed, level=level)
    meaning = pa.label_meaning(split)
    classes = (meaning.positive, meaning.negative)
    ra, rb = metrics.auroc_summary(a, settings, classes), metrics.auroc_summary(b, settings, classes)
    for name, r in (("A", ra), ("B", rb)):
        if r.get("missing") and not r.get("not_estimable"):
            raise StatsError(f"model {name} on the common images: {r['missing']}")
    c = metrics.compare(a, b, settings, classes)
    if c.get("missing") and not c.get("not_estimable"):
        raise StatsError(f"{path_a.name} vs {path_b.name}: {c['missing']}")
    return {
        "a": {"file": str(path_a), "arm": arm_a, **ra},
        "b": {"file": str(path_b), "arm": arm_b, **rb},
        "comparison": c,
        "n_common": int(len(a)),
        "n_pos": int(a["label"].sum()),
        "only_a": int(len(sa) - len(a)),
        "only_b": int(len(sb) - len(b)),
        "split": split,
        "fold": str(fold) if not (split == OOF and str(fold).lower() in ("mean", "ensemble")) else "pooled",
        "cluster_column": source.clustered_by,
        "clustered": metrics.clustered(a),
        "method_text": metrics.method_text(a, source.clustered_by, settings),
        "labels": sorted(set(pa.label_sources(split)) | set(pb.label_sources(split))),
        "positive": meaning.positive,
        "not_estimable": c["missing"] if c.get("not_estimable") else None,
    }
