"""The run directory: where each file of a run lies, the lock and claims that keep processes apart, and
reading the whole run at once (:meth:`RunDir.load`)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pandas as pd

from thyro.errors import StatsError, ThyroError
from thyro.fileio import Sweep, claim_file, claim_holder, file_lock, release_stale_claims, sweep_orphans
from thyro.run import jobs as _jobs
from thyro.run import plan_digest as _plan
from thyro.run import record as _record
from thyro.run import results as _results
from thyro.run import splits as _splits
from thyro.run import summary as _summary
from thyro.run.jobs import JobFiles, JobKey, JobRecord, ModelMetadata
from thyro.run.loaded import Run
from thyro.run.plan_digest import PLAN
from thyro.run.predictions import PREDICTIONS, Predictions, check_predictions, read_predictions
from thyro.run.record import CONFIG, StudyRecord
from thyro.run.results import RESULTS, Results
from thyro.run.splits import FRACTIONS, SPLITS
from thyro.run.summary import DATA, DataSummary

log = logging.getLogger(__name__)

REPORT = "report.html"
MLRUNS = "mlruns"


class RunDir:
    """A study's run directory (see :mod:`thyro.run`).

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
    def fractions_path(self) -> Path:
        return self.root / FRACTIONS

    @property
    def plan_path(self) -> Path:
        return self.root / PLAN

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
        return _jobs.job_folder(self.root, job)

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
        jobs = self.root / _jobs.JOBS
        if jobs.is_dir():
            folders += sorted(Path(d) for d, _, _ in os.walk(jobs))
        for folder in folders:
            done += sweep_orphans(folder, announce=False)
            done += release_stale_claims(folder)
        if done and announce:
            log.warning(done.summary(self.root))
        return done

    def claim(self, job: JobKey, *, lifetime: float | None = None):
        """Claim ``job`` for this process (context manager yielding True, or False when another live
        process holds it).  See :func:`thyro.fileio.claim_file`."""
        files = self.job_files(job)
        files.folder.mkdir(parents=True, exist_ok=True)
        return claim_file(files.claim, lifetime=lifetime)

    def claim_holder(self, job: JobKey) -> str | None:
        """Who holds ``job``'s claim (``host pid N``), or None."""
        return claim_holder(self.job_files(job).claim)

    # -- the study record, splits, plan digest -----------------------------------------------------
    def read_record(self) -> StudyRecord | None:
        """The study this directory holds (None before a study has started here)."""
        return _record.read_record(self.config_path, self.root)

    def write_record(self, config, base_dir: Path) -> None:
        _record.write_record(self.config_path, config, base_dir)

    def config_text(self) -> str | None:
        return _record.record_text(self.config_path)

    def read_splits(self, manifest=None):
        return _splits.read_splits(self.splits_path, manifest)

    def write_splits(self, splits) -> None:
        _splits.write_splits(self.splits_path, splits)

    def read_fractions(self) -> dict[tuple[int, float], list[str]] | None:
        """The saved training subsets: ``{(fold, fraction): image ids}`` (None before they are made)."""
        return _splits.read_fractions(self.fractions_path)

    def write_fractions(self, subsets: dict[tuple[int, float], list[str]], seed: int) -> None:
        _splits.write_fractions(self.fractions_path, subsets, seed)

    def read_plan_digest(self) -> tuple[str, dict[str, str]] | None:
        """The digest of the plan the study started with and of each arm's weight file
        (:attr:`thyro.train.plan.Plan.digest`), or None before a study has started here."""
        return _plan.read_plan_digest(self.plan_path)

    def write_plan_digest(self, digest: str, weights: dict[str, str]) -> None:
        """Record the plan's digest; weight digests of arms already recorded are kept (call under the lock)."""
        _plan.write_plan_digest(self.plan_path, digest, weights)

    # -- data summary, results, predictions ------------------------------------------------------
    def read_data(self, notes: list[str] | None = None) -> DataSummary | None:
        """The data summary (None before the study has started); with ``notes``, an unreadable file is a note."""
        return _summary.read_data_summary(self.data_path, notes)

    def write_data(self, summary: DataSummary) -> None:
        _summary.write_data_summary(self.data_path, summary)

    def read_results(self, notes: list[str] | None = None) -> Results | None:
        """The results (None before a job has finished); with ``notes``, an unreadable file is a note."""
        return _results.read_results(self.results_path, notes)

    def write_results(self, results: Results) -> None:
        _results.write_results(self.results_path, results)

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
        return _jobs.read_job(self.job_files(job))

    def finish_job(self, job: JobKey, record: JobRecord, rows: pd.DataFrame, model,
                   metadata: ModelMetadata | None = None) -> None:
        """Write a finished job: its predictions, its model (with ``metadata``), then its record last."""
        _jobs.write_job(job, self.job_files(job), record, rows, model, metadata)

    def job_rows(self, job: JobKey) -> pd.DataFrame:
        return _jobs.job_rows(self.job_files(job))

    def model_file(self, job: JobKey) -> Path:
        return self.job_files(job).model

    def model_metadata(self, job: JobKey) -> ModelMetadata:
        """What the job's model file says of itself (:class:`ModelMetadata`)."""
        return _jobs.read_model_metadata(self.job_files(job))

    def logs(self) -> dict[str, dict[str, pd.DataFrame]]:
        """Training logs of the whole-fold jobs: ``{arm: {"foldK": log}}`` (unreadable logs are skipped)."""
        return _jobs.read_logs(self.root)

    def artefacts(self) -> list[Path]:
        """The files that show a finished run (the report, its Markdown, the results, the predictions)."""
        paths = (self.report_path, self.report_path.with_suffix(".md"), self.results_path, self.predictions_path)
        return [p for p in paths if p.is_file()]

    # -- the whole run ----------------------------------------------------------------------------
    def load(self, *, strict: bool = False) -> Run:
        """The run as one typed value: predictions, study record, results, data summary and training logs.

        Parameters
        ----------
        strict : bool
            Raise on a study record, results or data summary that cannot be read; by default each becomes
            a note in :attr:`Run.notes` and is left out (a report is still worth having).

        Raises
        ------
        StatsError
            When the directory has no readable predictions table.
        """
        preds = self.read_predictions()
        run = Run(root=self.root, predictions=preds, notes=list(preds.notes), from_dir=True)
        notes = None if strict else run.notes
        try:
            run.record = self.read_record()
        except ThyroError as exc:
            if strict:
                raise
            run.notes.append(f"the study record could not be read ({exc})")
        run.results = self.read_results(notes)
        run.data = self.read_data(notes)
        run.config_text = self.config_text()
        run.logs = self.logs()
        return run


def load_run(path: str | os.PathLike) -> Run:
    """A run directory (:meth:`RunDir.load`) or a predictions CSV on its own, read as a :class:`Run`."""
    path = Path(path)
    if path.is_file():
        preds = read_predictions(path)
        return Run(root=path.parent, predictions=preds, notes=list(preds.notes))
    if not path.is_dir():
        raise StatsError(f"{path}: no such run directory or predictions file")
    return RunDir(path).load()


def describe_holder() -> str:
    """``host pid N`` of this process (what a claim records)."""
    return f"{socket.gethostname()} pid {os.getpid()}"
