"""The run directory of a study: the one module that knows its files.

Every stage reads and writes a study's run directory through this module: the study runner writes
through :class:`RunDir`; the report, the model package, ``thyro train``, ``thyro compare`` and the
command line read through it.  No other module names these files, so there is one interpretation
of each (the same AUROC cannot get two confidence intervals from two readers).

Layout::

    RUN/config.yaml         the study record: the resolved configuration and the folder its paths start from
    RUN/splits.json         held-out test ids and the cross-validation folds (thyro.data.splits)
    RUN/fractions.json      the nested training subsets of each fold, when data.train_fractions asks for them
    RUN/data.json           what the data held: counts, label provenance, preprocessing
    RUN/predictions.csv     every prediction, one typed table (:class:`Predictions`)
    RUN/results.json        per arm: status, weights, AUROC point estimates; versions; per-job records
    RUN/report.html .md .json
    RUN/mlruns/             the local MLflow file store, when ``train.tracking: mlflow``
    RUN/jobs/ARM/foldK/     one training job (:class:`JobFiles`); ``ARM/fracF/foldK`` for a training
                            fraction below 1 (data-efficiency curves)

The predictions table
---------------------
``image, patient, group, label, label_source, arm, train_fraction, split, fold, ensemble, probability``

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

import contextlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from thyro.data.manifest import LABEL_SOURCES, LabelMeaning
from thyro.errors import ConfigError, StatsError, ThyroError
from thyro.fileio import (Sweep, claim_file, file_lock, read_csv, release_stale_claims, sweep_orphans, write_csv,
                          write_json, write_text)

CONFIG = "config.yaml"
SPLITS = "splits.json"
FRACTIONS = "fractions.json"
PLAN = "plan.json"
DATA = "data.json"
PREDICTIONS = "predictions.csv"
RESULTS = "results.json"
REPORT = "report.html"
MLRUNS = "mlruns"
JOBS = "jobs"

PRED_COLUMNS = ("image", "patient", "group", "label", "label_source", "arm", "train_fraction", "split", "fold",
                "ensemble", "probability")
OOF = "val"
TEST = "test"
RESERVED_SPLITS = (OOF, TEST)


# ----------------------------------------------------------------------------------------------
# jobs
# ----------------------------------------------------------------------------------------------

def fraction_text(fraction: float) -> str:
    """``0.25`` -> ``"0.25"``, ``1.0`` -> ``"1"`` (how a training fraction is written in names)."""
    return f"{float(fraction):g}"


@dataclass(frozen=True, order=True)
class JobKey:
    """One training job: an arm, a fold and the share of the training fold it uses."""

    arm: str
    fold: int
    fraction: float = 1.0

    @property
    def name(self) -> str:
        """``ARM:FOLD``, or ``ARM@FRACTION:FOLD`` below the whole training fold."""
        frac = "" if self.fraction == 1.0 else f"@{fraction_text(self.fraction)}"
        return f"{self.arm}{frac}:{self.fold}"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class JobFiles:
    """The files of one job folder (written by the training loop and the study runner)."""

    folder: Path

    @property
    def model(self) -> Path:
        return self.folder / "model.safetensors"

    @property
    def log(self) -> Path:
        return self.folder / "log.csv"

    @property
    def predictions(self) -> Path:
        return self.folder / "predictions.csv"

    @property
    def done(self) -> Path:
        return self.folder / "done.json"

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.safetensors"

    @property
    def claim(self) -> Path:
        return self.folder / "claim"

    @property
    def tensorboard(self) -> Path:
        return self.folder / "tb"

    def trial(self, i: int) -> Path:
        """Folder of tuning trial ``i`` (``train.tune``), a job folder of its own."""
        return self.folder / "tune" / f"trial{i}"

    def restart(self) -> None:
        """Forget the job's progress (``--restart``): its checkpoint, best weights and record."""
        for path in (self.last, self.best, self.done):
            path.unlink(missing_ok=True)


@dataclass
class JobRecord:
    """What a finished job left in ``done.json``.

    ``val_auroc`` is the AUROC of the job's out-of-fold predictions as written to predictions.csv
    (with the study's test-time augmentation); ``selection`` says how the epoch was chosen.
    """

    arm: str
    fold: int
    fraction: float
    best_epoch: int
    val_auroc: float | None
    epochs_run: int
    stopped_early: bool
    seconds: float
    train_images_per_second: float
    selection: str = ""
    selection_auroc: float | None = None
    train_images: int = 0
    weights_report: str = ""
    host: str = ""
    finished: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> JobKey:
        return JobKey(self.arm, self.fold, self.fraction)

    @classmethod
    def from_dict(cls, d: dict) -> JobRecord:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw.setdefault("fraction", 1.0)
        kw["extra"] = {**d.get("extra", {}), **{k: v for k, v in d.items() if k not in known}}
        return cls(**kw)


# ----------------------------------------------------------------------------------------------
# the predictions table
# ----------------------------------------------------------------------------------------------

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
    """

    df: pd.DataFrame
    path: Path | None = None
    clustered_by: str | None = None
    notes: list[str] = field(default_factory=list)
    definitions: dict[str, str] = field(default_factory=dict)
    model_labels: LabelMeaning | None = None

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
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

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
    df = df.copy()
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "probability" not in df.columns and "score" in df.columns:
        df = df.rename(columns={"score": "probability"})
    if "patient" not in df.columns and "patient_id" in df.columns:  # a manifest's name for it (thyro predict)
        df = df.rename(columns={"patient_id": "patient"})
    notes: list[str] = []
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
        notes.append("no split column: every row is treated as a test prediction")
    df["split"] = df["split"].fillna(TEST).astype(str).str.strip()
    lower = df["split"].str.lower()
    df.loc[lower.isin(RESERVED_SPLITS), "split"] = lower[lower.isin(RESERVED_SPLITS)]
    bad = df["split"] == ""
    if bad.any():
        raise StatsError(f"{where}: empty split at line(s) {(np.flatnonzero(bad.to_numpy())[:5] + 2).tolist()}; "
                         "use 'val' (out-of-fold), 'test' or an external set's name")
    # folds and the ensemble flag
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
    # training fraction
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
    definitions = _definitions(df, where)
    model_labels = _model_labels(df, where)
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
    df = df[list(PRED_COLUMNS) + ["cluster"]].reset_index(drop=True)
    return Predictions(df=df, path=None, clustered_by=clustered_by, notes=notes, definitions=definitions,
                       model_labels=model_labels)


def _one_value(df: pd.DataFrame, col: str, where: str) -> str | None:
    """The one non-empty value of ``col`` (None when the column is absent or empty); several are an error."""
    if col not in df.columns:
        return None
    cells = {str(v).strip() for v in df[col].dropna() if str(v).strip()}
    if len(cells) > 1:
        raise StatsError(f"{where}: column {col} holds several values ({', '.join(sorted(cells)[:4])}); "
                         "one file holds the predictions of models trained on one kind of label")
    return cells.pop() if cells else None


def _definitions(df: pd.DataFrame, where: str) -> dict[str, str]:
    """Split -> label definition, from a ``label_definition`` column (a manifest's, kept by ``thyro predict``)."""
    if "label_definition" not in df.columns:
        return {}
    out = {}
    for split, sub in df.groupby("split", sort=False):
        value = _one_value(sub, "label_definition", f"{where} (split {split})")
        if value:
            out[str(split)] = value
    return out


def _model_labels(df: pd.DataFrame, where: str) -> LabelMeaning | None:
    """What the probabilities are of: ``thyro predict``'s ``model_label_source``/``model_label_definition``,
    else its ``probability_of`` alone (``malignant``, or a TI-RADS definition such as ``TI-RADS ≥ 4c``)."""
    source = _one_value(df, "model_label_source", where)
    definition = _one_value(df, "model_label_definition", where) or ""
    positive = _one_value(df, "probability_of", where)
    if source is None and positive is None:
        return None
    if source is None:
        source = "unknown" if positive.lower() == "malignant" else "tirads"
        definition = definition or ("" if source == "unknown" else positive)
    if source.lower() not in LABEL_SOURCES:
        raise StatsError(f"{where}: model_label_source {source!r} is not one of {', '.join(LABEL_SOURCES)}")
    return LabelMeaning(source.lower(), definition)


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


# ----------------------------------------------------------------------------------------------
# the run directory
# ----------------------------------------------------------------------------------------------

@dataclass
class StudyRecord:
    """The study a run directory holds: its configuration and the folder its relative paths start from."""

    config: Any  # thyro.config.StudyConfig (typed; imported lazily to keep this module light)
    base_dir: Path


class RunDir:
    """A study's run directory (see the module docstring).

    Parameters
    ----------
    root : path
        The folder (created on first write).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._swept = False

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG

    @property
    def splits_path(self) -> Path:
        return self.root / SPLITS

    @property
    def data_path(self) -> Path:
        return self.root / DATA

    @property
    def predictions_path(self) -> Path:
        return self.root / PREDICTIONS

    @property
    def results_path(self) -> Path:
        return self.root / RESULTS

    @property
    def report_path(self) -> Path:
        return self.root / REPORT

    @property
    def mlflow_dir(self) -> Path:
        return self.root / MLRUNS

    def job_files(self, job: JobKey) -> JobFiles:
        frac = "" if job.fraction == 1.0 else f"frac{fraction_text(job.fraction)}"
        parts = [JOBS, job.arm] + ([frac] if frac else []) + [f"fold{job.fold}"]
        return JobFiles(self.root.joinpath(*parts))

    def exists(self) -> bool:
        return self.config_path.is_file() or self.predictions_path.is_file()

    # -- locks and claims ----------------------------------------------------------------------
    def locked(self):
        """The run directory's lock: held while the study record, splits and merged files change.

        Safe across processes on one machine and across nodes on a shared filesystem
        (:func:`thyro.fileio.file_lock`).  The first time a :class:`RunDir` takes it, what interrupted
        runs left is cleaned up first (:meth:`sweep`).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        if not self._swept:
            self._swept = True
            self.sweep()
        return file_lock(self.root / ".lock")

    def sweep(self, *, announce: bool = True) -> Sweep:
        """Clean up what processes that are gone left anywhere in the run directory: their temporaries
        (a half-written ``last.pt``, ``best.safetensors``, predictions...), locks and job claims
        (:func:`thyro.fileio.sweep_orphans`, :func:`thyro.fileio.release_stale_claims`); a live
        process's are never touched.  Says so in one line when anything was cleaned up."""
        done = Sweep([], [], [], set())
        folders = [self.root]
        jobs = self.root / JOBS
        if jobs.is_dir():
            folders += sorted(Path(d) for d, _, _ in os.walk(jobs))
        for folder in folders:
            done += sweep_orphans(folder, announce=False)
            done += release_stale_claims(folder)
        if done and announce:
            from thyro.console import note

            note(done.summary(self.root))
        return done

    def claim(self, job: JobKey, *, lifetime: float | None = None):
        """Claim ``job`` for this process (context manager yielding True, or False when another live
        process holds it).  See :func:`thyro.fileio.claim_file`."""
        files = self.job_files(job)
        files.folder.mkdir(parents=True, exist_ok=True)
        return claim_file(files.claim, lifetime=lifetime)

    def claim_holder(self, job: JobKey) -> str | None:
        """Who holds ``job``'s claim (``host pid N``), or None."""
        from thyro.fileio import claim_holder

        return claim_holder(self.job_files(job).claim)

    # -- the study record -----------------------------------------------------------------------
    def read_record(self) -> StudyRecord | None:
        """The study this directory holds (None before a study has started here)."""
        from thyro.config import StudyConfig

        path = self.config_path
        if not path.is_file():
            return None
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc}); delete the run directory to start over.") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("study"), dict):
            raise ConfigError(f"{path}: not a thyro study record (no 'study:' block); is {self.root} a run "
                              "directory of this thyro version?")
        cfg = StudyConfig.parse(raw["study"], source=str(path))
        return StudyRecord(cfg, Path(raw.get("base_dir") or self.root))

    def write_record(self, config, base_dir: Path) -> None:
        write_text(self.config_path, yaml.safe_dump({"study": config.model_dump(mode="json"),
                                                     "base_dir": str(base_dir)}, sort_keys=False))

    def config_text(self) -> str | None:
        return self.config_path.read_text(encoding="utf-8", errors="replace") if self.config_path.is_file() else None

    # -- splits -----------------------------------------------------------------------------------
    def read_splits(self, manifest=None):
        from thyro.data.splits import Splits

        return Splits.load(self.splits_path, manifest)

    def write_splits(self, splits) -> None:
        splits.save(self.splits_path)

    @property
    def fractions_path(self) -> Path:
        return self.root / FRACTIONS

    def read_fractions(self) -> dict[tuple[int, float], list[str]] | None:
        """The saved training subsets: ``{(fold, fraction): image ids}`` (None before they are made)."""
        data = self._read_json(self.fractions_path)
        if data is None:
            return None
        return {(int(k), float(f)): list(ids) for k, per in data["folds"].items() for f, ids in per.items()}

    def write_fractions(self, subsets: dict[tuple[int, float], list[str]], seed: int) -> None:
        folds: dict[str, dict[str, list[str]]] = {}
        for (k, f), ids in sorted(subsets.items()):
            folds.setdefault(str(k), {})[fraction_text(f)] = list(ids)
        write_json(self.fractions_path, {"seed": seed, "folds": folds})

    # -- data summary, results ----------------------------------------------------------------
    def _read_json(self, path: Path, notes: list[str] | None = None) -> dict | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if notes is None:
                raise ThyroError(f"{path}: not valid JSON ({exc}); delete it and run the study again to rewrite it.") \
                    from None
            notes.append(f"{path.name} is not valid JSON and was ignored ({exc})")
            return None
        return data if isinstance(data, dict) else None

    def read_plan_digest(self) -> tuple[str, dict[str, str]] | None:
        """The digest of the plan the study started with and of each arm's weight file
        (:attr:`thyro.train.plan.Plan.digest`), or None before a study has started here."""
        data = self._read_json(self.root / PLAN)
        if not data or not data.get("digest"):
            return None
        return str(data["digest"]), {str(k): str(v) for k, v in (data.get("weights") or {}).items()}

    def write_plan_digest(self, digest: str, weights: dict[str, str]) -> None:
        """Record the plan's digest; weight digests of arms already recorded are kept (call under the lock)."""
        old = self.read_plan_digest()
        merged = {**(old[1] if old else {}), **weights}
        write_json(self.root / PLAN, {"digest": digest, "weights": merged,
                                      "written": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def read_data(self, notes: list[str] | None = None) -> dict | None:
        return self._read_json(self.data_path, notes)

    def write_data(self, summary: dict) -> None:
        write_json(self.data_path, summary)

    def read_results(self, notes: list[str] | None = None) -> dict | None:
        return self._read_json(self.results_path, notes)

    def write_results(self, results: dict) -> None:
        write_json(self.results_path, results)

    # -- predictions ----------------------------------------------------------------------------
    def read_predictions(self) -> Predictions:
        if not self.predictions_path.is_file():
            raise StatsError(f"{self.root}: no {PREDICTIONS} in this run directory; has the study produced "
                             "predictions yet?")
        return read_predictions(self.predictions_path)

    def write_predictions(self, df: pd.DataFrame) -> None:
        check_predictions(df, str(self.predictions_path)).to_csv(self.predictions_path)

    # -- jobs -------------------------------------------------------------------------------------
    def is_done(self, job: JobKey) -> bool:
        return self.job_files(job).done.is_file()

    def read_job(self, job: JobKey) -> JobRecord | None:
        data = self._read_json(self.job_files(job).done)
        return JobRecord.from_dict(data) if data is not None else None

    def finish_job(self, job: JobKey, record: JobRecord, rows: pd.DataFrame, model) -> None:
        """Write a finished job: its predictions, its model, then ``done.json`` (the marker) last."""
        from thyro.models import save_model

        files = self.job_files(job)
        write_csv(files.predictions, rows)
        save_model(files.model, model, {"arm": job.arm, "fold": job.fold, "train_fraction": job.fraction,
                                        "best_epoch": record.best_epoch, "val_auroc": record.val_auroc,
                                        **record.extra.get("model_metadata", {})})
        rec = asdict(record)
        rec["extra"] = {k: v for k, v in record.extra.items() if k != "model_metadata"}
        write_json(files.done, rec)
        for path in (files.last, files.best):  # model.safetensors holds the chosen weights now
            path.unlink(missing_ok=True)

    def job_rows(self, job: JobKey) -> pd.DataFrame:
        return read_csv(self.job_files(job).predictions, dtype={"image": str})

    def model_file(self, job: JobKey) -> Path:
        return self.job_files(job).model

    def logs(self) -> dict[str, dict[str, pd.DataFrame]]:
        """Training logs of the whole-fold jobs: ``{arm: {"foldK": log}}`` (unreadable logs are skipped)."""
        out: dict[str, dict[str, pd.DataFrame]] = {}
        jobs = self.root / JOBS
        if not jobs.is_dir():
            return out
        for arm_dir in sorted(p for p in jobs.iterdir() if p.is_dir()):
            for fold_dir in sorted(arm_dir.glob("fold*")):
                files = JobFiles(fold_dir)
                if files.log.is_file():
                    with contextlib.suppress(pd.errors.ParserError, pd.errors.EmptyDataError):
                        out.setdefault(arm_dir.name, {})[fold_dir.name] = read_csv(files.log)
        return out


def describe_holder() -> str:
    """``host pid N`` of this process (what a claim records)."""
    return f"{socket.gethostname()} pid {os.getpid()}"


__all__ = [
    "CONFIG", "JobFiles", "JobKey", "JobRecord", "LABEL_SOURCES", "OOF", "PRED_COLUMNS", "PREDICTIONS",
    "Predictions", "RunDir", "StudyRecord", "TEST", "check_predictions", "describe_holder", "fraction_text",
    "predictions_frame", "read_predictions",
]
