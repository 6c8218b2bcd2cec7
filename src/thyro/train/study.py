"""The study runner: a study's plan executed, every arm trained on the same folds, predictions kept,
results collected.

A study is first resolved into a typed :class:`~thyro.train.plan.Plan` (:meth:`Study.plan`, which
:func:`~thyro.train.plan.make_plan` makes): every check a run can fail, every problem at once, before anything
is trained or written; a dry run (``thyro study --dry-run``) stops there.  The run then builds the image
caches, records the study in the run directory (:mod:`thyro.run`, which owns every file of it) and executes the
plan's jobs, one per (arm, training fraction, fold) (:mod:`thyro.train.job`).  Each job trains one model on the
other folds (or a nested subset of them, for data-efficiency curves) as its arm's
:class:`~thyro.train.plan.ArmPlan` says (settings and weight source resolved once; how it is fitted and how
its epoch is selected chosen once, :mod:`thyro.train.arms`), scores its held-out fold (out-of-fold), the
held-out test set and every external validation set, and is recorded.  Re-running the same command skips
finished jobs and resumes the unfinished one from its last epoch.

Model selection never looks at the fold that is scored: by default (``train.selection: last``) every
epoch of a fixed schedule is trained and the last weights kept; ``inner`` chooses the epoch on an
inner, group-respecting split of the training part; either way out-of-fold AUROCs are honest
estimates.  ``oof`` (the old way) stops on the held-out fold itself and the report labels its
out-of-fold figures as selection-biased.  ``train.tune`` searches a small grid per arm on an inner
split only.  An arm with ``train_backbone: cached`` is a linear probe on cached features
(:mod:`thyro.train.probe`): no epochs, nothing to select.

Jobs for schedulers
-------------------
``only=["ARM:FOLD"]`` (``thyro study --only``, ``thyro train``) runs single jobs so a scheduler can
spread them; only the selected arms' weights are checked.  A job is *claimed* before it is trained
(:meth:`thyro.run.RunDir.claim`: a hard-link lock that holds across nodes on a shared filesystem), so
two processes, or two array tasks, never train the same job: the second moves on to the next free job.
A claim left by a dead process is taken over.  Every process plans the study itself and checks its plan's
digest against the run directory's, so no process mixes other data or weights into a run.  Every finished
job merges into the run's predictions and results (:func:`thyro.run.merge.merge_jobs`); whichever process
finishes the last job writes the report.
"""

from __future__ import annotations

import functools
import logging
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
import timm
import torch
import torchvision

from thyro import __version__
from thyro.config import StudyConfig, load_study_config
from thyro.device import release_memory
from thyro.errors import TrainingError
from thyro.machine import usable_cpus
from thyro.report import build_report
from thyro.run import ArmResult, JobKey, JobRecord, ReportFiles, Results, RunDir
from thyro.run.merge import ArmJobs, RunImages, merge_jobs
from thyro.train.job import JobContext, run_job
from thyro.train.plan import ArmPlan, Plan, all_study_jobs, make_plan, parse_only, study_identity
from thyro.train.prepared import Prepared, prepare
from thyro.train.tracking import make_tracker
from thyro.train.workers import run_processes

log = logging.getLogger(__name__)


def _versions() -> dict[str, str]:
    return {"thyro": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "scikit-learn": sklearn.__version__,
            "cuda": torch.version.cuda or "none", "platform": platform.platform()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return (out.stdout.strip() or None) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class Study:
    """A study bound to its run directory."""

    def __init__(self, cfg: StudyConfig, base_dir: Path, run_dir: str | Path):
        self.cfg, self.base_dir = cfg, Path(base_dir)
        self.rundir = RunDir(run_dir)

    @property
    def run_dir(self) -> Path:
        return self.rundir.root

    # -- set-up ---------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, config_path: str | Path, run_dir: str | Path | None = None, overrides: dict | None = None,
                  *, source: str = "override") -> Study:
        """The study of a configuration file, with ``overrides`` (dotted keys; ``source`` names them in
        messages) applied; its run directory defaults to ``runs/NAME``."""
        cfg, base = load_study_config(config_path, overrides, source=source)
        return cls(cfg, base, run_dir or Path("runs") / cfg.name)

    def plan(self, *, only: list[str] | None = None, skip_missing: bool = False, estimate: bool = False) -> Plan:
        """Resolve and check the whole study (:func:`thyro.train.plan.make_plan`); nothing is trained or written.

        This is a dry run: the plan holds the resolved configuration, the split sizes, the jobs and each arm's
        weight check (:meth:`~thyro.train.plan.Plan.to_dict` for printing); ``estimate`` times a few training
        steps of every arm for :attr:`~thyro.train.plan.Plan.seconds_estimate`.
        """
        return make_plan(self.cfg, self.base_dir, self.run_dir, only=only, skip_missing=skip_missing,
                         estimate=estimate)

    def prepare(self, plan: Plan) -> Prepared:
        """Build the image caches and record the study in the run directory (:func:`thyro.train.prepared.prepare`)."""
        return prepare(self.cfg, self.base_dir, self.rundir, plan)

    # -- jobs -----------------------------------------------------------------------------------
    def run_job(self, job: JobKey, prep: Prepared, arm_plan: ArmPlan, *, device: str | None = None,
                resume: bool = True, tracker=None) -> JobRecord:
        """Train, predict and record one job (:func:`thyro.train.job.run_job`)."""
        return run_job(JobContext(self.cfg, self.rundir), job, prep, arm_plan, device=device, resume=resume,
                       tracker=tracker)

    def run(self, *, only: list[str] | None = None, skip_missing: bool = False, device: str | None = None,
            report: bool = True, restart: bool = False, workers: int = 1, devices: list[str] | None = None,
            worker_init: Callable[[], None] | None = None) -> Results:
        """Run the selected (default: all) unfinished jobs, merge, and write the report when complete.

        Returns the run's :class:`~thyro.run.Results` (:meth:`plan` is the dry run).  ``restart`` forgets the
        selected jobs' progress (checkpoint and record) and trains them from the start.  ``workers``
        processes train jobs at once (each claims its jobs; on one GPU, or spread over ``devices``); each is
        handed this process's :mod:`thyro.settings` and first calls ``worker_init`` (a picklable callable,
        like :class:`multiprocessing.pool.Pool`'s ``initializer``; the command line sets up its output there).
        """
        plan = self.plan(only=only, skip_missing=skip_missing)
        for arm, reason in plan.skipped.items():
            log.warning(f"skipping arm {arm}:\n  " + reason.replace("\n", "\n  "))
        for note in plan.notes:  # sets too small for what the report will show; settings an arm leaves out
            log.warning(note)
        prep = self.prepare(plan)
        tracker = make_tracker(self.cfg.train.tracking, self.rundir, self.cfg.name)
        if restart:
            self._restart(plan.jobs)
        todo = [j for j in plan.jobs if not self.rundir.is_done(j)]
        for job in plan.jobs:
            if job not in todo and plan.selected is not None:
                log.info(f"{job} is already done ({self.rundir.job_files(job).done}); restarting trains it again.")
        arms = len(self.cfg.arms) - len(plan.skipped)
        skipped = f" ({len(plan.skipped)} skipped: {', '.join(plan.skipped)})" if plan.skipped else ""
        log.info(f"{self.cfg.name}: {len(prep.labelled)} labelled images, {arms} arm(s){skipped} x "
                 f"{self.cfg.data.folds} folds; {len(plan.jobs) - len(todo)} job(s) already done, {len(todo)} to "
                 f"run -> {self.run_dir}" + (f" with {workers} worker processes" if workers > 1 and todo else ""))
        failed: dict[str, str] = {}
        elsewhere: dict[str, str] = {}
        if workers > 1 and todo:
            failed.update(self._run_workers(workers, devices or [device] if device or devices else [None], only,
                                            worker_init))
        else:
            self._train_here(todo, plan, prep, device, tracker, failed, elsewhere)
        results = self.merge(plan, prep, plan.skipped, failed)
        if elsewhere:
            results.elsewhere = elsewhere
            log.info(f"{len(elsewhere)} job(s) are being trained by other processes; the last one to finish merges "
                     "the results and writes the report.")
        self._report(results, report, plan.selected is not None, tracker)
        if failed:
            raise TrainingError(f"{len(failed)} job(s) failed: {', '.join(failed)}; finished jobs are kept in "
                                f"{self.run_dir}. Fix the cause and run the same command again to retry them.")
        return results

    def _restart(self, jobs) -> None:
        """Forget the progress of ``jobs`` (none may be in training elsewhere)."""
        for job in jobs:
            with self.rundir.claim(job) as mine:
                if not mine:
                    holder = self.rundir.claim_holder(job) or "another process"
                    raise TrainingError(f"{job} is being trained by {holder}; it cannot be restarted now.")
                self.rundir.job_files(job).restart()

    def _train_here(self, todo: list[JobKey], plan: Plan, prep: Prepared, device: str | None, tracker,
                    failed: dict[str, str], elsewhere: dict[str, str]) -> None:
        """Train the jobs of ``todo`` that no other process holds, merging after each."""
        tta = " with flip test-time augmentation" if self.cfg.train.tta_flip else ""
        for n, job in enumerate(todo, 1):
            with self.rundir.claim(job) as mine:
                if not mine:
                    elsewhere[job.name] = self.rundir.claim_holder(job) or "another process"
                    log.info(f"job {n}/{len(todo)} {job} is being trained by {elsewhere[job.name]}; skipped here")
                    continue
                if self.rundir.is_done(job):  # finished by another process while this one worked
                    continue
                log.info(f"job {n}/{len(todo)} {job}")
                try:
                    rec = self.run_job(job, prep, plan.arm(job.arm), device=device, tracker=tracker)
                except TrainingError as exc:
                    failed[job.name] = str(exc)
                    log.error(f"job {job} failed: {exc}")
                    continue
                finally:
                    release_memory()  # the next job starts from the memory the study began with
                auroc = _fmt(rec.val_auroc) if rec.val_auroc is not None else "not estimable (too few cases of a class)"
                chosen = plan.arm(job.arm).fitter.chosen(rec.selection, rec.best_epoch)
                log.info(f"  out-of-fold AUROC{tta} {auroc} ({chosen}; "
                         f"{rec.seconds:.0f} s, {rec.train_images_per_second:.0f} img/s)")
            self.merge(plan, prep, plan.skipped, failed)

    def _report(self, results: Results, report: bool, part: bool, tracker) -> None:
        """Write the report when every arm is finished (else say why not)."""
        if report and results.complete:
            html, md = build_report(self.run_dir)
            results.report = ReportFiles(html=str(html), markdown=str(md))
            tracker.study_finished(self.rundir)
        elif report and not results.elsewhere:
            left = [name for name, a in results.arms.items() if not a.finished]
            why = "only part of the study was selected; " if part else ""
            log.info(f"no report yet: arm(s) {', '.join(left)} still have jobs to run ({why}the process that "
                     f"finishes the study's last job writes it; `thyro report {self.run_dir}` reports the jobs "
                     "done so far).")

    def _run_workers(self, n: int, devices: list[str | None], only, worker_init) -> dict[str, str]:
        """Train the jobs in ``n`` worker processes at once (:func:`thyro.train.workers.run_processes`); returns
        ``{worker: error}`` for workers that ended badly."""
        threads = self.cfg.train.threads or max(1, usable_cpus() // n)
        cfg = self.cfg.model_dump(mode="json")
        work = [functools.partial(_work, cfg, str(self.base_dir), str(self.run_dir), only, devices[i % len(devices)],
                                  threads) for i in range(n)]
        return run_processes(work, worker_init=worker_init)

    # -- collection -----------------------------------------------------------------------------
    def merge(self, plan: Plan, prep: Prepared, skipped: dict[str, str] | None = None,
              failed: dict[str, str] | None = None) -> Results:
        """Collect every finished job into the run's predictions (with ensemble rows) and results
        (:func:`thyro.run.merge.merge_jobs`)."""
        every = all_study_jobs(self.cfg)
        arms = {}
        for arm_plan in plan.arms:
            arm, source = arm_plan.config, arm_plan.source
            entry = ArmResult(backbone=arm.backbone, weights=source.describe(), weights_kind=source.kind,
                              weights_status=arm_plan.weights_status, provenance=arm_plan.provenance,
                              role=source.role, train_backbone=arm.train_backbone)
            arms[arm.name] = ArmJobs(entry, tuple(j for j in every if j.arm == arm.name))
        tables = {"*": prep.labelled.df.set_index("image")}
        tables.update({name: ext.manifest.df.set_index("image") for name, ext in prep.external.items()})
        study = Results(study=self.cfg.name, config=self.cfg.model_dump(mode="json"), versions=_versions(),
                        git_commit=_git_commit(), labels=prep.label_meaning,
                        external_labels={name: ext.label_meaning for name, ext in prep.external.items()},
                        selection=self.cfg.train.selection, skipped=skipped or {}, failed=failed or {})
        return merge_jobs(self.rundir, study, arms, RunImages(tables, prep.label_sources()),
                          folds=self.cfg.data.folds)


def _work(cfg: dict, base_dir: str, run_dir: str, only, device: str | None, threads: int) -> None:
    """One worker process of ``Study.run(workers=N)``: trains the jobs it can claim, merges, no report."""
    study = Study(StudyConfig.parse(cfg), Path(base_dir), run_dir)
    study.cfg.train.threads = threads
    study.run(only=only, device=device, report=False, skip_missing=True)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def run_study(config_path: str | Path, *, run_dir: str | Path | None = None, only: list[str] | None = None,
              skip_missing: bool = False, device: str | None = None, overrides: dict | None = None,
              report: bool = True, restart: bool = False, workers: int = 1, devices: list[str] | None = None,
              worker_init: Callable[[], None] | None = None) -> Results:
    """Run (or continue) a study from its configuration file; returns its :class:`~thyro.run.Results`
    (:meth:`Study.run`)."""
    study = Study.from_file(config_path, run_dir, overrides)
    return study.run(only=only, skip_missing=skip_missing, device=device, report=report, restart=restart,
                     workers=workers, devices=devices, worker_init=worker_init)


def plan_study(config_path: str | Path, *, run_dir: str | Path | None = None, only: list[str] | None = None,
               skip_missing: bool = False, overrides: dict | None = None, estimate: bool = True) -> Plan:
    """A dry run of a study from its configuration file: its checked :class:`~thyro.train.plan.Plan`, with the
    training time estimated on this machine (:meth:`Study.plan`); nothing is trained or written."""
    return Study.from_file(config_path, run_dir, overrides).plan(only=only, skip_missing=skip_missing,
                                                                 estimate=estimate)


__all__ = ["Prepared", "Study", "parse_only", "plan_study", "run_study", "study_identity"]
