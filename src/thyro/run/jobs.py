"""The files of one training job: its folder, its record (``done.json``), its predictions, log and model.

Layout of a job folder (``RUN/jobs/ARM/foldK``, or ``RUN/jobs/ARM/fracF/foldK`` below the whole training fold)::

    model.safetensors   the chosen weights, with :class:`ModelMetadata` in the file's metadata
    predictions.csv     the job's rows of the run's predictions table (no patient, group or label columns)
    log.csv             one row per epoch (written by the training loop)
    done.json           :class:`JobRecord`, written last: the job is finished when it exists
    last.pt, best.safetensors, claim, tb/, tune/trialN/   while the job trains
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field, model_validator

from thyro.fileio import read_csv, write_csv
from thyro.run._files import RunFile, read_file, write_file
from thyro.run.predictions import PREDICTIONS

JOBS = "jobs"
DONE = "done.json"
LOG = "log.csv"


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
        return self.folder / LOG

    @property
    def predictions(self) -> Path:
        return self.folder / PREDICTIONS

    @property
    def done(self) -> Path:
        return self.folder / DONE

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


def job_folder(root: Path, job: JobKey) -> JobFiles:
    """The folder of ``job`` in the run directory ``root``."""
    frac = "" if job.fraction == 1.0 else f"frac{fraction_text(job.fraction)}"
    return JobFiles(root.joinpath(JOBS, job.arm, *([frac] if frac else []), f"fold{job.fold}"))


class JobRecord(RunFile):
    """What a finished job left in ``done.json`` (and, per job, in the run's results).

    ``val_auroc`` is the AUROC of the job's out-of-fold predictions as written to the predictions table
    (with the study's test-time augmentation); ``selection`` says how the epoch was chosen.  Keys of
    another thyro version go to ``extra`` (where ``tuned`` holds what ``train.tune`` chose).  A record is
    always written whole, defaults included.
    """

    arm: str
    fold: int
    fraction: float = 1.0
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
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys_to_extra(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = {k: v for k, v in data.items() if k in cls.model_fields}
        unknown = {k: v for k, v in data.items() if k not in cls.model_fields}
        if unknown:
            known["extra"] = {**(known.get("extra") or {}), **unknown}
        return known

    def model_post_init(self, context: Any) -> None:
        self.__pydantic_fields_set__.update(type(self).model_fields)  # written whole

    @property
    def key(self) -> JobKey:
        return JobKey(self.arm, self.fold, self.fraction)


class ModelMetadata(RunFile):
    """What a job's ``model.safetensors`` says of itself (its metadata, beside the architecture and the
    input adapter that :func:`thyro.models.save_model` records): the job, and how the model was made."""

    arm: str | None = None
    fold: int | None = None
    train_fraction: float | None = None
    best_epoch: int | None = None
    val_auroc: float | None = None
    backbone: str | None = None
    weights: str | None = None
    preprocess: dict[str, Any] | None = None
    study: str | None = None
    tta_flip: bool | None = None


def read_job(files: JobFiles) -> JobRecord | None:
    """The job's record, or None while it is not finished."""
    return read_file(JobRecord, files.done)


def write_job(job: JobKey, files: JobFiles, record: JobRecord, rows: pd.DataFrame, model,
              metadata: ModelMetadata | None = None) -> None:
    """Write a finished job: its predictions, its model (with ``metadata`` completed by the job's own fields),
    then ``done.json`` (the marker) last; the checkpoints it no longer needs are removed."""
    from thyro.models import save_model  # lazy: torch, which reading a run never needs

    write_csv(files.predictions, rows)
    meta = (metadata or ModelMetadata()).model_copy(update={
        "arm": job.arm, "fold": job.fold, "train_fraction": job.fraction, "best_epoch": record.best_epoch,
        "val_auroc": record.val_auroc})
    save_model(files.model, model, meta.to_dict())
    write_file(files.done, record)
    for path in (files.last, files.best):  # model.safetensors holds the chosen weights now
        path.unlink(missing_ok=True)


def read_model_metadata(files: JobFiles) -> ModelMetadata:
    """The metadata of the job's model file (:func:`thyro.models.load_metadata`)."""
    from thyro.models import load_metadata  # lazy: torch

    return ModelMetadata.from_dict(load_metadata(files.model), str(files.model))


def job_rows(files: JobFiles) -> pd.DataFrame:
    """The job's own prediction rows."""
    return read_csv(files.predictions, dtype={"image": str})


def read_logs(root: Path) -> dict[str, dict[str, pd.DataFrame]]:
    """Training logs of the whole-fold jobs: ``{arm: {"foldK": log}}`` (unreadable logs are skipped)."""
    out: dict[str, dict[str, pd.DataFrame]] = {}
    jobs = root / JOBS
    if not jobs.is_dir():
        return out
    for arm_dir in sorted(p for p in jobs.iterdir() if p.is_dir()):
        for fold_dir in sorted(arm_dir.glob("fold*")):
            files = JobFiles(fold_dir)
            if files.log.is_file():
                with contextlib.suppress(pd.errors.ParserError, pd.errors.EmptyDataError):
                    out.setdefault(arm_dir.name, {})[fold_dir.name] = read_csv(files.log)
    return out
