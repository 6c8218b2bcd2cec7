"""The predictions table of a run (``predictions.csv``), and any predictions CSV read with the same rules.

Columns: ``image, patient, group, label, label_source, arm, train_fraction, split, fold, ensemble, probability``

* ``split``: ``val`` (out-of-fold: the fold's held-out cases, scored by the model trained without
  them), ``test`` (the held-out test set) or the name of an external validation set;
* ``fold``: the fold model (0..K-1); empty on ensemble rows;
* ``ensemble``: true for the arm's fold-mean prediction (the model a user gets from ``thyro bundle``);
* ``train_fraction``: share of each training fold used (1 = all of it);
* ``label_source``: how the labels were obtained (``pathology``, ``cytology``, ``tirads``,
  ``synthetic`` or ``unknown``), so every output can say what a probability means.

A bare CSV from elsewhere (another tool, ``thyro predict``) is read with the same rules: only
``image``, ``label`` and ``probability`` (or ``score``) are required.  Images that share a patient
or a leakage group form one cluster (column ``cluster``), computed once here and used by every
statistic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from thyro.data.manifest import LABEL_SOURCES, LabelMeaning
from thyro.errors import StatsError
from thyro.fileio import read_csv, write_csv
from thyro.run.label_columns import label_definitions, model_label_meaning

PREDICTIONS = "predictions.csv"
PRED_COLUMNS = ("image", "patient", "group", "label", "label_source", "arm", "train_fraction", "split", "fold",
                "ensemble", "probability")
OOF = "val"
TEST = "test"
RESERVED_SPLITS = (OOF, TEST)


@dataclass
class Predictions:
    """A checked predictions table (see the module docstring), with its clusters.

    Attributes
    ----------
    df : DataFrame
        Columns :data:`PRED_COLUMNS` plus ``cluster`` (integer, NA when the table names no patient
        or group).  ``fold`` is a nullable integer, ``ensemble`` a bool.
    path : Path or None
    clustered_by : str or None
        ``"patient and group"``, ``"patient"``, ``"group"`` or None: what the clusters join.
    notes : list of str
        What was assumed or left out while reading.
    definitions : dict
        Split -> what label 1 means there (a ``label_definition`` column, as in a manifest), when given.
    model_labels : LabelMeaning or None
        What the probabilities are of, when the table says (``thyro predict``'s ``probability_of``,
        ``model_label_source`` and ``model_label_definition`` columns): the labels the model was
        trained on, which may differ from the labels in the table.
    split_given : bool
        Whether the table names each row's split (a ``split`` column); without one every row counts as
        ``test``, though nothing says the rows were held out.
    """

    df: pd.DataFrame
    path: Path | None = None
    clustered_by: str | None = None
    notes: list[str] = field(default_factory=list)
    definitions: dict[str, str] = field(default_factory=dict)
    model_labels: LabelMeaning | None = None
    split_given: bool = True

    @property
    def arms(self) -> list[str]:
        return list(pd.unique(self.df["arm"]))

    @property
    def splits(self) -> list[str]:
        return list(pd.unique(self.df["split"]))

    @property
    def external_sets(self) -> list[str]:
        return [s for s in self.splits if s not in RESERVED_SPLITS]

    @property
    def fractions(self) -> list[float]:
        return sorted(set(self.df["train_fraction"].tolist()))

    @property
    def has_clusters(self) -> bool:
        return self.clustered_by is not None

    def rows(self, *, arm: str | None = None, split: str | None = None, fold: int | None = None,
             ensemble: bool | None = None, fraction: float | None = 1.0) -> pd.DataFrame:
        """The rows matching every given field, sorted by image (the order every statistic uses)."""
        df = self.df
        mask = pd.Series(True, index=df.index)
        if arm is not None:
            mask &= df["arm"] == arm
        if split is not None:
            mask &= df["split"] == split
        if ensemble is not None:
            mask &= df["ensemble"] == bool(ensemble)
        if fold is not None:
            mask &= df["fold"] == int(fold)
        if fraction is not None:
            mask &= np.isclose(df["train_fraction"].to_numpy(dtype=float), float(fraction))
        return df[mask].sort_values("image", kind="mergesort").reset_index(drop=True)

    def label_sources(self, split: str | None = None) -> list[str]:
        sub = self.df if split is None else self.df[self.df["split"] == split]
        return sorted(set(sub["label_source"]))

    def label_meaning(self, split: str | None = None) -> LabelMeaning:
        """What the labels of ``split`` (all rows when None) mean, from the table's own columns
        (``unknown`` when they are missing or mixed)."""
        sources = [s for s in self.label_sources(split) if s != "unknown"]
        if len(sources) != 1:
            return LabelMeaning()
        definition = self.definitions.get(split, "") if split is not None else (
            next(iter(set(self.definitions.values()))) if len(set(self.definitions.values())) == 1 else "")
        return LabelMeaning(sources[0], definition)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the table (without the derived ``cluster`` column), atomically."""
        out = self.df[list(PRED_COLUMNS)].copy()
        out["fold"] = out["fold"].astype("Int64")
        out["ensemble"] = out["ensemble"].map({True: "true", False: "false"})
        write_csv(path, out)
        return Path(path)


def _norm_fold(value) -> tuple[int | None, bool | None]:
    """A ``fold`` cell: ``(fold, ensemble)``; ``mean`` (format 1 files) and blanks are the ensemble."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None, None
    s = str(value).strip().lower()
    if s in ("", "nan", "<na>"):
        return None, None
    if s in ("mean", "ensemble", "all"):
        return None, True
    try:
        f = float(s)
    except ValueError:
        raise ValueError(s) from None
    if not f.is_integer() or f < 0:
        raise ValueError(s)
    return int(f), False


def _bool_cell(value) -> bool | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    s = str(value).strip().lower()
    if s in ("true", "1", "yes", "y", "t"):
        return True
    if s in ("false", "0", "no", "n", "f", ""):
        return False
    raise ValueError(s)


def _components(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Cluster ids joining rows that share a value of ``a`` or of ``b`` (connected components)."""
    from scipy.sparse import coo_matrix  # lazy: SciPy, kept off `thyro --help` (the CLI imports thyro.run)
    from scipy.sparse.csgraph import connected_components  # lazy: as above

    ia, ua = pd.factorize(a)
    ib, ub = pd.factorize(b)
    g = coo_matrix((np.ones(ia.size), (ia, ib + len(ua))), shape=(len(ua) + len(ub),) * 2)
    _, labels = connected_components(g, directed=False)
    return labels[ia]


def _filled(df: pd.DataFrame, col: str) -> bool:
    return col in df.columns and df[col].notna().all() and (df[col].astype(str).str.strip().str.len() > 0).all()


def check_predictions(df: pd.DataFrame, where: str, *, default_arm: str = "model") -> Predictions:
    """Validate and type a predictions table (any accepted layout); raises :class:`StatsError`.

    Parameters
    ----------
    df : DataFrame
        As read from a CSV, every column as text or numbers.
    where : str
        The file (or what the table is) for messages.
    default_arm : str
        Arm name when the table has no ``arm`` column.
    """
    notes: list[str] = []
    split_given = "split" in [str(c).strip().lower() for c in df.columns]
    df = _columns(df, where, default_arm, notes)
    df = _folds(df, where)
    df = _fractions_and_labels(df, where, notes)
    definitions = label_definitions(df, where)
    model_labels = model_label_meaning(df, where)
    _check_unique(df, where)
    df, clustered_by = _clusters(df, notes)
    return Predictions(df=df, path=None, clustered_by=clustered_by, notes=notes, definitions=definitions,
                       model_labels=model_labels, split_given=split_given)


def _columns(df: pd.DataFrame, where: str, default_arm: str, notes: list[str]) -> pd.DataFrame:
    """The table with its columns named as thyro names them, rows of failed images left out, and the image,
    arm and split columns filled in."""
    df = df.copy()
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "probability" not in df.columns and "score" in df.columns:
        df = df.rename(columns={"score": "probability"})
    if "patient" not in df.columns and "patient_id" in df.columns:  # a manifest's name for it (thyro predict)
        df = df.rename(columns={"patient_id": "patient"})
    if "error" in df.columns:  # thyro predict's rows for files that could not be scored
        failed = df["error"].notna() & (df["error"].astype(str).str.strip() != "")
        if failed.any():
            notes.append(f"{int(failed.sum())} row(s) of images that could not be scored were left out "
                         f"(e.g. {df.loc[failed, 'image'].iloc[0] if 'image' in df.columns else '?'})")
            df = df.loc[~failed]
    missing = [c for c in ("image", "label", "probability") if c not in df.columns]
    if missing:
        raise StatsError(f"{where}: missing column(s) {', '.join(missing)}; a predictions file needs at least "
                         "image, label, probability (optional: arm, split, fold, ensemble, patient, group, "
                         "label_source, train_fraction)")
    df["image"] = df["image"].astype(str).str.strip()
    df["arm"] = df["arm"].fillna("").astype(str).str.strip() if "arm" in df.columns else default_arm
    if "split" not in df.columns:
        df["split"] = TEST
        notes.append("no split column: every row is read as one set of images (split = test)")
    df["split"] = df["split"].fillna(TEST).astype(str).str.strip()
    lower = df["split"].str.lower()
    df.loc[lower.isin(RESERVED_SPLITS), "split"] = lower[lower.isin(RESERVED_SPLITS)]
    bad = df["split"] == ""
    if bad.any():
        raise StatsError(f"{where}: empty split at line(s) {(np.flatnonzero(bad.to_numpy())[:5] + 2).tolist()}; "
                         "use 'val' (out-of-fold), 'test' or an external set's name")
    return df


def _folds(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """The ``fold`` (nullable integer) and ``ensemble`` (bool) columns, checked against each other."""
    folds: list[int | None] = []
    ens: list[bool | None] = []
    for i, v in enumerate(df["fold"] if "fold" in df.columns else [None] * len(df)):
        try:
            f, e = _norm_fold(v)
        except ValueError:
            raise StatsError(f"{where}: line {i + 2}: fold {v!r} is not a fold number (0, 1, ...), 'mean' or "
                             "empty") from None
        folds.append(f)
        ens.append(e)
    if "ensemble" in df.columns:
        for i, v in enumerate(df["ensemble"]):
            try:
                flag = _bool_cell(v)
            except ValueError:
                raise StatsError(f"{where}: line {i + 2}: ensemble {v!r} is not true or false") from None
            if flag is not None:
                ens[i] = flag
    # A row without a fold is the final model (an ensemble, or the only model of a bare file); an
    # out-of-fold row never is: each is scored by the one model that did not see it.
    oof = (df["split"] == OOF).to_numpy()
    df["fold"] = pd.array(folds, dtype="Int64")
    df["ensemble"] = [False if o else (bool(e) if e is not None else f is None) for f, e, o in zip(folds, ens, oof)]
    both = df["ensemble"] & df["fold"].notna()
    bad_oof = np.array([o and e is True for e, o in zip(ens, oof)])
    if both.any() or bad_oof.any():
        lines = (np.flatnonzero(both.to_numpy() | bad_oof)[:5] + 2).tolist()
        raise StatsError(f"{where}: line(s) {lines}: an ensemble row has an empty fold and is never out-of-fold "
                         "('val')")
    return df


def _fractions_and_labels(df: pd.DataFrame, where: str, notes: list[str]) -> pd.DataFrame:
    """The training fraction, label (0/1; unlabelled rows left out with a note), probability and label source."""
    if "train_fraction" in df.columns:
        frac = pd.to_numeric(df["train_fraction"], errors="coerce").fillna(1.0)
        if ((frac <= 0) | (frac > 1)).any():
            raise StatsError(f"{where}: train_fraction must lie in (0, 1]")
        df["train_fraction"] = frac.astype(float)
    else:
        df["train_fraction"] = 1.0
    # labels: 0/1, blanks left out with a note, anything else is an error
    lab = pd.to_numeric(df["label"], errors="coerce")
    unlabelled = df["label"].isna() | (df["label"].astype(str).str.strip() == "")
    if unlabelled.any():
        notes.append(f"{int(unlabelled.sum())} row(s) without a label were left out")
    bad = ~unlabelled & ~lab.isin([0, 1])
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy())[:5] + 2).tolist()
        vals = df.loc[bad, "label"].astype(str).unique()[:5].tolist()
        raise StatsError(f"{where}: labels must be 0 (benign) or 1 (malignant); found {vals} at line(s) {rows}")
    df = df.loc[~unlabelled].copy()
    df["label"] = lab[~unlabelled].astype(int)
    df["probability"] = pd.to_numeric(df["probability"], errors="coerce").astype(float)
    if "label_source" in df.columns:
        src = df["label_source"].fillna("unknown").astype(str).str.strip().str.lower().replace("", "unknown")
        odd = sorted(set(src) - set(LABEL_SOURCES))
        if odd:
            raise StatsError(f"{where}: label_source {odd[:3]} is not one of {', '.join(LABEL_SOURCES)}")
        df["label_source"] = src
    else:
        df["label_source"] = "unknown"
    return df


def _check_unique(df: pd.DataFrame, where: str) -> None:
    """Each prediction once; each image with one label within its set."""
    key = ["image", "arm", "train_fraction", "split", "fold", "ensemble"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        ex = df.loc[dup, ["image", "arm", "split", "fold"]].iloc[0].tolist()
        raise StatsError(f"{where}: {int(dup.sum())} rows repeat the same (image, arm, split, fold), e.g. {ex}; "
                         "each prediction must appear once")
    # an image id names one image within a set (an external set may reuse another site's file names)
    conflict = df.groupby([df["split"].where(~df["split"].isin(RESERVED_SPLITS), "development"), "image"])["label"]
    conflict = conflict.nunique()
    if (conflict > 1).any():
        ex = [i for _, i in conflict.index[conflict > 1][:3]]
        raise StatsError(f"{where}: images with different labels in different rows: {ex}; fix the labels")


def _clusters(df: pd.DataFrame, notes: list[str]) -> tuple[pd.DataFrame, str | None]:
    """The table in :data:`PRED_COLUMNS` order with its ``cluster`` column, and what the clusters join."""
    usable = [c for c in ("patient", "group") if _filled(df, c)]
    for c in ("patient", "group"):
        if c in df.columns and c not in usable and df[c].notna().any():
            notes.append(f"column '{c}' has blanks and is not used for clustering")
        if c not in df.columns:
            df[c] = pd.NA
    if usable:
        # Images that share a patient or a leakage group belong to one cluster.  Clusters are formed
        # within the development data (out-of-fold and test) and within each external set: another
        # site's patient "P001" is not this site's.
        scope = df["split"].where(~df["split"].isin(RESERVED_SPLITS), "")
        a = scope + "\x1f" + df[usable[0]].astype(str)
        b = scope + "\x1f" + df[usable[-1]].astype(str)
        df["cluster"] = pd.array(_components(a, b), dtype="Int64")
        clustered_by = "patient and group" if len(usable) == 2 else usable[0]
    else:
        df["cluster"] = pd.array([pd.NA] * len(df), dtype="Int64")
        clustered_by = None
    return df[list(PRED_COLUMNS) + ["cluster"]].reset_index(drop=True), clustered_by


def read_predictions(path: str | os.PathLike) -> Predictions:
    """Read and check a predictions CSV (a run's, or any file with image, label, probability)."""
    path = Path(path)
    if not path.is_file():
        raise StatsError(f"{path}: predictions file not found")
    try:
        df = read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise StatsError(f"{path}: not a readable CSV ({exc})") from None
    preds = check_predictions(df, str(path), default_arm=path.stem)
    preds.path = path
    return preds


def predictions_frame(rows: list[dict], meta: pd.DataFrame | dict[str, pd.DataFrame],
                      label_source: str | dict[str, str] = "unknown") -> pd.DataFrame:
    """Rows ``{image, arm, train_fraction, split, fold, ensemble, probability}`` joined with the images'
    ``patient_id, group, label`` into the table's column order.

    ``meta`` is indexed by image: one table for every split, or ``{split: table}`` with the key ``"*"``
    for the development data's splits (an external set's image ids may repeat the development data's).
    ``label_source`` is one value, or one per split (an external set may have another provenance).
    """
    df = pd.DataFrame(rows, columns=["image", "arm", "train_fraction", "split", "fold", "ensemble", "probability"])
    tables = meta if isinstance(meta, dict) else {"*": meta}
    parts = []
    for split, sub in df.groupby("split", sort=False):
        table = tables.get(split, tables.get("*"))
        parts.append(sub.join(table[["patient_id", "group", "label"]], on="image"))
    df = pd.concat(parts) if parts else df.assign(patient_id=[], group=[], label=[])
    df = df.rename(columns={"patient_id": "patient"})
    df["label"] = df["label"].astype("Int64")
    df["fold"] = df["fold"].astype("Int64")
    df["ensemble"] = df["ensemble"].astype(bool)
    if isinstance(label_source, dict):
        df["label_source"] = df["split"].map(lambda s: label_source.get(s, "unknown"))
    else:
        df["label_source"] = label_source
    return df[list(PRED_COLUMNS)].reset_index(drop=True)
