"""The checks a study's plan runs on its data and surroundings (:func:`thyro.train.plan.make_plan` calls them and
reports every problem at once): the run directory, the development manifest and its images' headers, the
splits and training subsets, inner selection splits, external sets, the tracking store and disk space."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np

from thyro.config import HARDWARE_FIELDS, StudyConfig
from thyro.data.cache import default_cache_dir
from thyro.data.dedup import cross_duplicates
from thyro.data.manifest import Manifest, read_manifest
from thyro.data.splits import Splits, inner_split, make_splits, nested_subsets
from thyro.data.validate import validate_manifest
from thyro.errors import ConfigError, DataError
from thyro.fileio import sha256_json
from thyro.metrics import review_study
from thyro.run import JobKey, RunDir


def resolve_path(p: str, base: Path) -> Path:
    """A path from a configuration file: relative to the file's folder (``base``) unless absolute."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def study_identity(cfg: StudyConfig) -> str:
    """What must match for a run directory to be continued: everything but hardware and report settings."""
    d = cfg.model_dump(mode="json")
    d.pop("report", None)  # read by the report alone
    for key in HARDWARE_FIELDS:
        d["train"].pop(key, None)
    return sha256_json(d)


def check_run_dir(cfg: StudyConfig, rundir: RunDir) -> None:
    existing = rundir.read_record()
    if existing is not None and study_identity(existing.config) != study_identity(cfg):
        raise ConfigError(
            f"{rundir.root} holds a different study (its {rundir.config_path.name} differs from this configuration "
            "in more than hardware settings); use another run directory (run_dir, --run-dir), or delete that folder to "
            "start over.")


def read_development(path: Path) -> Manifest:
    manifest = read_manifest(path)
    problems = [p for p in validate_manifest(path, decode=False) if p.row is not None and p.file]
    if problems:
        raise DataError(f"{path}: {len(problems)} image problem(s) found before training:\n"
                        + "\n".join(f"- {p}" for p in problems[:20]) + ("\n- ..." if len(problems) > 20 else "")
                        + "\n(`thyro data validate` lists them all.)")
    if manifest.labelled().df.empty:
        raise DataError(f"{path}: no image has a label; a study needs labelled images (1 malignant, 0 benign).")
    return manifest


def make_or_load_splits(cfg: StudyConfig, base_dir: Path, rundir: RunDir, labelled: Manifest):
    """The study's splits (the run directory's, a named file's, or made now), training subsets and origin."""
    if rundir.splits_path.exists():
        splits, origin = rundir.read_splits(labelled), str(rundir.splits_path)
    elif cfg.data.splits:
        path = resolve_path(cfg.data.splits, base_dir)
        splits, origin = Splits.load(path, labelled), str(path)
    else:
        splits = make_splits(labelled, test_size=cfg.data.test_size, folds=cfg.data.folds, seed=cfg.data.seed)
        origin = "made from the manifest"
    if len(splits.folds) != cfg.data.folds:
        raise ConfigError(f"the splits have {len(splits.folds)} folds but the configuration asks for "
                          f"{cfg.data.folds}")
    subsets = rundir.read_fractions() or {}
    partial = [f for f in cfg.data.train_fractions if f < 1.0]
    if partial and not all((k, f) in subsets for k in range(len(splits.folds)) for f in partial):
        lab = dict(zip(labelled.df["image"], labelled.df["label"].astype(int)))
        grp = dict(zip(labelled.df["image"], labelled.df["group"]))
        subsets = {}
        for k in range(len(splits.folds)):
            ids = splits.train_ids(k)
            made = nested_subsets(ids, [lab[i] for i in ids], [grp[i] for i in ids], partial,
                                  seed=cfg.data.seed * 1000 + k, where=f"training part of fold {k}")
            subsets.update({(k, f): v for f, v in made.items()})
    return splits, subsets, origin


def check_inner_splits(arms: list, fractions: list[float], labelled: Manifest, splits: Splits,
                       subsets: dict) -> None:
    """Every job's training part must hold an inner split, for the arms (:class:`~thyro.train.plan.ArmPlan`)
    whose selection or tuning needs one."""
    lab = dict(zip(labelled.df["image"], labelled.df["label"].astype(int)))
    grp = dict(zip(labelled.df["image"], labelled.df["group"]))
    for arm in arms:
        train = arm.train
        for f in fractions:
            for k in range(len(splits.folds)):
                ids = subsets.get((k, f)) or splits.train_ids(k)
                inner_split(ids, [lab[i] for i in ids], [grp[i] for i in ids], train.inner_fraction,
                            seed=train.seed * 1000 + k, where=f"training part of {JobKey(arm.name, k, f)}")


def read_external(name: str, path: Path, development: Manifest) -> Manifest:
    """An external set's labelled manifest, checked: labels of both classes, no image of the development data."""
    where = f"external set {name!r} ({path})"
    try:
        manifest = read_manifest(path)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    labelled = manifest.labelled()
    if len(labelled) < len(manifest):
        rows = [int(i) + 2 for i in np.flatnonzero(manifest.df["label"].isna().to_numpy())[:10]]
        if labelled.df.empty:
            raise DataError(f"{where}: no image has a label (an external set is for validation: label it, "
                            f"or drop it from data.external); unlabelled rows: {rows}")
        raise DataError(f"{where}: {len(manifest) - len(labelled)} image(s) without a label, at rows {rows}; "
                        "every image of an external set needs one.")
    classes = set(labelled.df["label"].astype(int))
    if classes != {0, 1}:
        raise DataError(f"{where}: every image is {'malignant (1)' if 1 in classes else 'benign (0)'}; an AUROC "
                        "needs both classes.")
    shared = cross_duplicates(development, labelled, progress=False)
    if shared:
        lines = "; ".join(f"{b} = {a} ({how})" for a, b, how in shared[:10])
        raise DataError(f"{where}: {len(shared)} image(s) are also in the development data, so the set is not "
                        f"external: {lines}{' ...' if len(shared) > 10 else ''}. Remove them from one of the "
                        "manifests.")
    return labelled


def check_tracking(cfg: StudyConfig, rundir: RunDir) -> None:
    if cfg.train.tracking != "mlflow":
        return
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError("train.tracking: mlflow needs the mlflow package: pip install 'thyro[tracking]' "
                          "(or set train.tracking: none).")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        parent = next((p for p in [rundir.root, *rundir.root.parents] if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ConfigError(f"train.tracking: mlflow writes its store to {rundir.mlflow_dir}, and {parent} is not "
                              "a writable folder; choose another run directory (run_dir, --run-dir) or set "
                              "MLFLOW_TRACKING_URI.")


def check_disk(sizes: set[int], labelled: Manifest, external: list[Manifest]) -> None:
    """The image caches (uint8, size x size per image, one cache per arms' size) must fit on the cache's disk."""
    folder = default_cache_dir()
    probe = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if probe is None:
        return
    need = (len(labelled) + sum(len(e) for e in external)) * sum(size ** 2 for size in sizes)
    free = shutil.disk_usage(probe).free
    if need > free:
        raise DataError(f"the image cache needs about {need / 2**20:,.0f} MiB in {folder} and {free / 2**20:,.0f} MiB "
                        "are free; free space there or set THYRO_CACHE_DIR to a larger disk.")




def size_notes(cfg: StudyConfig, labelled: Manifest, splits: Splits, external: dict[str, Manifest]) -> list[str]:
    """Warnings for sets too small for the figures and comparisons the report will show, each with the smallest
    AUROC difference its size could detect (:func:`thyro.metrics.review_study`)."""
    meaning = labelled.label_meaning()
    review = review_study(labelled.df, list(splits.test), [list(f) for f in splits.folds],
                          {name: m.df for name, m in external.items()}, comparisons=_comparisons(cfg),
                          classes=(meaning.positive, meaning.negative))
    return list(review.warnings)


def _comparisons(cfg: StudyConfig) -> int:
    """How many comparisons the report will test: ``report.comparisons``, else its default (every pretrained
    arm against each scratch arm, and every pair of pretrained arms)."""
    if cfg.report.comparisons:
        return len(cfg.report.comparisons)
    scratch = sum(arm.weights == "none" for arm in cfg.arms)
    pretrained = len(cfg.arms) - scratch
    return max(1, pretrained * scratch + pretrained * (pretrained - 1) // 2)
