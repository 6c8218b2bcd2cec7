"""Every finished job of a run merged into the run's predictions table (with each arm's fold means added as
ensemble rows) and its results (each arm's status, jobs and AUROC point estimates).

The study runner calls :func:`merge_jobs` each time a job finishes, and once at the end; it holds the run
directory's lock, so jobs finishing in parallel processes merge one at a time.  The AUROCs are
:func:`thyro.metrics.auroc` of the predictions table as written, so they are the numbers every other output
shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from thyro import metrics
from thyro.run.directory import RunDir
from thyro.run.jobs import JobKey
from thyro.run.predictions import OOF, TEST, predictions_frame
from thyro.run.results import ArmResult, Results

#: The columns of one job's prediction rows.
ROW_COLUMNS = ["image", "arm", "train_fraction", "split", "fold", "ensemble", "probability"]


@dataclass(frozen=True)
class ArmJobs:
    """One arm of the study: what results.json says of it (status, jobs and AUROCs are filled in by the merge)
    and every job it has."""

    entry: ArmResult
    jobs: tuple[JobKey, ...]


@dataclass(frozen=True)
class RunImages:
    """What the prediction rows are joined with: each image's patient, group and label, and what the labels
    mean, for the development data (``"*"``) and each external set (by its name)."""

    tables: dict[str, pd.DataFrame]
    label_sources: dict[str, str] = field(default_factory=dict)

    @property
    def external_sets(self) -> list[str]:
        return [name for name in self.tables if name != "*"]


def merge_jobs(rundir: RunDir, study: Results, arms: dict[str, ArmJobs], images: RunImages, *, folds: int) -> Results:
    """Collect every finished job of ``rundir`` into its predictions and results; returns the results written.

    Parameters
    ----------
    study : Results
        The run's description (study, configuration, versions, labels, selection) with the arms skipped and
        the jobs failed in this process; earlier ones are read from the run directory and kept.
    arms : the study's arms, in order.
    images : the images the rows are joined with (:class:`RunImages`).
    folds : the cross-validation folds; an arm's fold mean needs every fold model of a training fraction.
    """
    with rundir.locked():
        return _merge(rundir, study, arms, images, folds)


def _arm_entries(rundir: RunDir, arms: dict[str, ArmJobs], skipped: dict[str, str], failed: dict[str, str]):
    """Each arm's entry (status and jobs done), the finished jobs' rows and records."""
    frames, entries, records = [], {}, {}
    for name, arm in arms.items():
        done = [j for j in arm.jobs if rundir.is_done(j)]
        for job in done:
            failed.pop(job.name, None)
            frames.append(rundir.job_rows(job))
            records[job.name] = rundir.read_job(job)
        if name in skipped and done:
            skipped.pop(name)  # its weights were found since
        status = ("skipped" if name in skipped else "done" if len(done) == len(arm.jobs)
                  else "failed" if any(j.name in failed for j in arm.jobs) else "incomplete")
        entries[name] = arm.entry.model_copy(update={
            "status": status, "folds_done": [j.fold for j in done if j.fraction == 1.0], "jobs_done": len(done),
            "jobs": len(arm.jobs), "reason": skipped.get(name)})
    return frames, entries, records


def with_fold_means(pred: pd.DataFrame, arms: list[str], folds: int) -> pd.DataFrame:
    """``pred`` with each arm's fold mean on every set but the out-of-fold one (ensemble rows), for each
    training fraction whose every fold model has finished."""
    ensembles = []
    for name in arms:
        scored = pred[(pred["arm"] == name) & (pred["split"] != OOF)]
        for fraction, sub in scored.groupby("train_fraction"):
            if sub["fold"].nunique() < folds:
                continue  # the fold mean needs every fold model of this fraction
            # the fold mean: the probability the model package gives (thyro.models.inference.Ensemble)
            mean = sub.groupby(["split", "image"], sort=False)["probability"].mean().reset_index()
            mean["arm"], mean["train_fraction"], mean["fold"], mean["ensemble"] = name, fraction, pd.NA, True
            ensembles.append(mean)
    return pd.concat([pred] + ensembles, ignore_index=True) if ensembles else pred


def _merge(rundir: RunDir, study: Results, arms: dict[str, ArmJobs], images: RunImages, folds: int) -> Results:
    previous = rundir.read_results() or Results()
    skipped = {**previous.skipped, **study.skipped}
    failed = {**previous.failed, **study.failed}
    frames, entries, records = _arm_entries(rundir, arms, skipped, failed)
    pred = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ROW_COLUMNS)
    pred = with_fold_means(pred, list(entries), folds)
    rundir.write_predictions(predictions_frame(pred.to_dict("records"), images.tables, images.label_sources))
    preds = rundir.read_predictions()
    for name, entry in entries.items():
        before = previous.arms.get(name)
        if entry.provenance is None and before is not None and before.weights == entry.weights:
            # an arm this process did not load (another's selection) keeps what its loading recorded
            entry.provenance, entry.weights_status = before.provenance, before.weights_status
        entry.oof_auroc = metrics.auroc(preds.rows(arm=name, split=OOF))
        entry.test_auroc = metrics.auroc(preds.rows(arm=name, split=TEST, ensemble=True))
        entry.external_auroc = {s: metrics.auroc(preds.rows(arm=name, split=s, ensemble=True))
                                for s in images.external_sets}
    results = study.model_copy(update={"arms": entries, "skipped": skipped, "failed": failed, "jobs": records,
                                       "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
    rundir.write_results(results)
    return results


__all__ = ["ArmJobs", "RunImages", "merge_jobs", "with_fold_means"]
