"""Read a run directory (or a bare predictions CSV) into one checked table plus the optional files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from thyro.errors import StatsError

REQUIRED = ("image", "label", "probability")
OPTIONAL = ("arm", "split", "fold", "patient", "group")


@dataclass
class Run:
    """What a report is built from; every file but the predictions is optional."""

    root: Path
    predictions_path: Path
    predictions: pd.DataFrame
    cluster_column: str | None
    results: dict | None = None
    data: dict | None = None
    config_text: str | None = None
    config: dict | None = None
    logs: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _norm_fold(v) -> str:
    if pd.isna(v):
        return "mean"
    s = str(v).strip()
    try:
        f = float(s)
    except ValueError:
        return s.lower()
    return str(int(f)) if f.is_integer() else s


def read_predictions(path: str | Path) -> tuple[pd.DataFrame, str | None, list[str]]:
    """Read and check a predictions CSV.

    Accepts the full run format (image, patient, group, label, arm, fold, split, probability) or a
    minimal one (image, label, probability [, arm, split, fold, patient]).  Missing ``arm`` means one
    arm named after the file; missing ``split`` means test; missing ``fold`` means the final model
    (``"mean"``).  Returns ``(table, cluster column or None, notes)``.  With both ``patient`` and
    ``group``, images sharing either one form one cluster (column ``cluster``).
    """
    path = Path(path)
    if not path.is_file():
        raise StatsError(f"{path}: predictions file not found")
    try:
        df = pd.read_csv(path, dtype={"image": str, "arm": str, "split": str, "fold": str, "patient": str, "group": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise StatsError(f"{path}: not a readable CSV ({exc})") from exc
    df.columns = [c.strip().lower() for c in df.columns]
    if "probability" not in df.columns and "score" in df.columns:
        df = df.rename(columns={"score": "probability"})
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise StatsError(
            f"{path}: missing column(s) {', '.join(missing)}; a predictions file needs at least "
            "image, label, probability (optional: arm, split, fold, patient, group)"
        )
    notes: list[str] = []
    if "arm" not in df.columns:
        df["arm"] = path.stem
    if "split" not in df.columns:
        df["split"] = "test"
        notes.append("no split column: every row is treated as a test prediction")
    if "fold" not in df.columns:
        df["fold"] = "mean"
    df["arm"] = df["arm"].fillna("").astype(str)
    df["split"] = df["split"].fillna("test").astype(str).str.strip().str.lower()
    df["fold"] = df["fold"].map(_norm_fold)
    bad_split = sorted(set(df["split"]) - {"val", "test"})
    if bad_split:
        raise StatsError(f"{path}: column 'split' must be 'val' or 'test'; found {bad_split[:5]}")
    # labels: 0/1, blanks dropped with a note, anything else is an error
    lab = pd.to_numeric(df["label"], errors="coerce")
    unlabelled = df["label"].isna()
    if unlabelled.any():
        notes.append(f"{int(unlabelled.sum())} row(s) without a label were left out")
    bad = ~unlabelled & ~lab.isin([0, 1])
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy())[:5] + 2).tolist()
        vals = df.loc[bad, "label"].astype(str).unique()[:5].tolist()
        raise StatsError(f"{path}: labels must be 0 (benign) or 1 (malignant); found {vals} at line(s) {rows}")
    df = df.loc[~unlabelled].copy()
    df["label"] = lab[~unlabelled].astype(int)
    df["probability"] = pd.to_numeric(df["probability"], errors="coerce").astype(float)
    key = ["image", "arm", "split", "fold"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        ex = df.loc[dup, key].iloc[0].tolist()
        raise StatsError(f"{path}: {int(dup.sum())} rows repeat the same (image, arm, split, fold), e.g. {ex}; "
                         "each prediction must appear once")
    conflict = df.groupby("image")["label"].nunique()
    if (conflict > 1).any():
        ex = conflict.index[conflict > 1][:3].tolist()
        raise StatsError(f"{path}: images with different labels in different rows: {ex}; fix the labels")
    usable = []
    for col in ("patient", "group"):
        if col in df.columns and df[col].notna().all() and (df[col].astype(str).str.len() > 0).all():
            usable.append(col)
        elif col in df.columns and df[col].notna().any():
            notes.append(f"column '{col}' has blanks and is not used for clustering")
    cluster = None
    if len(usable) == 2:
        # images that share a patient or a leakage group belong to one cluster (connected components)
        df["cluster"] = _components(df["patient"].astype(str), df["group"].astype(str))
        cluster = "cluster"
    elif usable:
        cluster = usable[0]
    return df.reset_index(drop=True), cluster, notes


def _components(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Cluster ids joining rows that share a value of ``a`` or of ``b``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ia, ua = pd.factorize(a)
    ib, ub = pd.factorize(b)
    g = coo_matrix((np.ones(ia.size), (ia, ib + len(ua))), shape=(len(ua) + len(ub),) * 2)
    _, labels = connected_components(g, directed=False)
    return labels[ia]


def _read_json(path: Path, notes: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        notes.append(f"{path.name} is not valid JSON and was ignored ({exc})")
        return None


def read_run(path: str | Path) -> Run:
    """Read a run directory, or a predictions CSV on its own."""
    path = Path(path)
    if path.is_file():
        root, pred = path.parent, path
    elif path.is_dir():
        root, pred = path, path / "predictions.csv"
        if not pred.is_file():
            raise StatsError(f"{path}: no predictions.csv in this run directory; has the study produced predictions yet?")
    else:
        raise StatsError(f"{path}: no such run directory or predictions file")
    df, cluster, notes = read_predictions(pred)
    run = Run(root=root, predictions_path=pred, predictions=df, cluster_column=cluster, notes=notes)
    if path.is_dir():
        run.results = _read_json(root / "results.json", run.notes)
        run.data = _read_json(root / "data.json", run.notes)
        cfg = root / "config.yaml"
        if cfg.is_file():
            run.config_text = cfg.read_text(encoding="utf-8", errors="replace")
            try:
                import yaml

                loaded = yaml.safe_load(run.config_text)
                run.config = loaded if isinstance(loaded, dict) else None
            except Exception as exc:  # a broken config must not stop the report
                run.notes.append(f"config.yaml could not be parsed ({exc})")
        jobs = root / "jobs"
        if jobs.is_dir():
            for log in sorted(jobs.glob("*/fold*/log.csv")):
                try:
                    run.logs.setdefault(log.parent.parent.name, {})[log.parent.name] = pd.read_csv(log)
                except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                    run.notes.append(f"{log.relative_to(root)} could not be read ({exc})")
    return run
