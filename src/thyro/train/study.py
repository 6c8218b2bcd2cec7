"""The study runner: a study's plan executed, every arm trained on the same folds, predictions kept,
results collected.

A study is first resolved into a typed :class:`~thyro.train.plan.Plan` (:func:`~thyro.train.plan.make_plan`):
every check a run can fail, every problem at once, before anything is trained or written; ``--dry-run`` stops
there.  The run then builds the image caches, records the study in the run directory (:mod:`thyro.run`, which
owns every file named here) and executes the plan's jobs, one per (arm, training fraction, fold).  Each job
trains one model on the other folds (or a nested subset of them, for data-efficiency curves) from its arm's
:class:`~thyro.train.plan.ArmPlan` (settings and weight source resolved once), scores its held-out fold
(out-of-fold), the held-out test set and every external validation set, and is recorded.  Re-running the
same command skips finished jobs and resumes the unfinished one from its last epoch.

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
job merges into the run's predictions and results; whichever process finishes the last job writes
the report.
"""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from thyro import __version__
from thyro.config import StudyConfig, load_study_config
from thyro.console import console, info
from thyro.data.cache import ImageCache
from thyro.errors import TrainingError
from thyro.models import build_model
from thyro.run import (
    OOF,
    TEST,
    ArmResult,
    DataSummary,
    ExternalSummary,
    JobKey,
    JobRecord,
    ModelMetadata,
    ReportFiles,
    Results,
    RunDir,
    describe_holder,
    fraction_text,
    predictions_frame,
)
from thyro.train.fit import ArraySet, fit
from thyro.train.plan import ArmPlan, Plan, all_study_jobs, make_plan, parse_only, study_identity
from thyro.train.probe import fit_probe
from thyro.train.tracking import NoTracker, make_tracker


def _versions() -> dict[str, str]:
    import sklearn
    import timm
    import torch
    import torchvision

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


@dataclass
class ImageSet:
    """Labelled images of one source (the development data or an external set) and their cache."""

    manifest: object  # thyro.data.manifest.Manifest (labelled rows)
    cache: object  # thyro.data.cache.ImageCache
    label_meaning: object  # thyro.data.manifest.LabelMeaning

    def arrays(self, ids: list[str] | None = None) -> ArraySet:
        df = self.manifest.df
        ids = list(df["image"]) if ids is None else list(ids)
        labels = dict(zip(df["image"], df["label"].astype(int)))
        idx = self.cache.index_of(ids)
        images = np.asarray(self.cache.images[np.sort(idx)])[np.argsort(np.argsort(idx))]
        return ArraySet(images, np.array([labels[i] for i in ids]), ids)

    def groups(self, ids: list[str]) -> list[str]:
        g = dict(zip(self.manifest.df["image"], self.manifest.df["group"]))
        return [g[i] for i in ids]


@dataclass
class Prepared:
    """What every job of a study reads: the development images and splits, the training subsets of each
    fraction, and the external validation sets."""

    dev: ImageSet
    splits: object  # thyro.data.splits.Splits
    subsets: dict  # (fold, fraction) -> training image ids
    external: dict  # name -> ImageSet

    @property
    def labelled(self):
        return self.dev.manifest

    @property
    def label_meaning(self):
        return self.dev.label_meaning

    def train_ids(self, job: JobKey) -> list[str]:
        return self.subsets.get((job.fold, job.fraction)) or self.splits.train_ids(job.fold)

    def label_sources(self) -> dict[str, str]:
        out = {OOF: self.dev.label_meaning.source, TEST: self.dev.label_meaning.source}
        out.update({name: s.label_meaning.source for name, s in self.external.items()})
        return out


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
    def from_file(cls, config_path: str | Path, run_dir: str | Path | None = None,
                  overrides: dict | None = None) -> Study:
        cfg, base = load_study_config(config_path, overrides)
        return cls(cfg, base, run_dir or Path("runs") / cfg.name)

    def plan(self, *, only: list[str] | None = None, skip_missing: bool = False, estimate: bool = False) -> Plan:
        """Resolve and check the whole study (:func:`thyro.train.plan.make_plan`); nothing is trained or written."""
        return make_plan(self.cfg, self.base_dir, self.run_dir, only=only, skip_missing=skip_missing,
                         estimate=estimate)

    def prepare(self, plan: Plan) -> Prepared:
        """Build the image caches of the development data and the external sets, and record the study (its
        configuration, splits, training subsets and the plan's digest) in the run directory.

        Decoding every image happens here: an image that fails to decode stops the study before anything is
        written, so a failed start leaves nothing that would stop the next attempt.
        """
        labelled = plan.labelled
        cache = ImageCache.build(labelled, self.cfg.preprocess)
        external = {e.name: ImageSet(e.manifest, ImageCache.build(e.manifest, self.cfg.preprocess), e.labels)
                    for e in plan.external}
        partial = [f for f in self.cfg.data.train_fractions if f < 1.0]
        with self.rundir.locked():
            if not self.rundir.splits_path.exists():
                self.rundir.write_splits(plan.splits)
            if partial and self.rundir.read_fractions() is None:
                self.rundir.write_fractions(plan.subsets, self.cfg.data.seed)
            record = self.rundir.read_record()
            if record is None or record.config.report != self.cfg.report:  # the report's block may change
                self.rundir.write_record(self.cfg, self.base_dir)
            self.rundir.write_plan_digest(plan.digest, plan.weight_digests)
        prep = Prepared(ImageSet(labelled, cache, plan.labels), plan.splits, plan.subsets, external)
        self.rundir.write_data(self.data_summary(plan, prep))
        return prep

    def data_summary(self, plan: Plan, prep: Prepared) -> DataSummary:
        """The run's data summary: counts by class for images, patients and groups (the same function as
        ``thyro data import`` and ``inspect``), splits, label provenance, external sets and preprocessing."""
        from thyro.data.inspection import class_balance

        def balance(df):
            b = class_balance(df)
            return {unit: {k: int(v) for k, v in b[unit].items()} for unit in b.columns}

        manifest, df = plan.manifest, prep.labelled.df
        summary = DataSummary(
            manifest=str(plan.manifest_path),
            labels=plan.labels,
            images_total=int(len(manifest)),
            images_labelled=int(len(df)),
            images_unlabelled=int(len(manifest) - len(df)),
            class_balance=balance(manifest.df),
            groups_merging_patients=int((df.groupby("group")["patient_id"].nunique() > 1).sum()),
            test_images=len(prep.splits.test),
            fold_sizes=[len(f) for f in prep.splits.folds],
            preprocess=self.cfg.preprocess.model_dump(mode="json"),
        )
        if len(self.cfg.data.train_fractions) > 1:
            summary.train_fractions = {fraction_text(f): [len(prep.train_ids(JobKey("", k, f)))
                                                          for k in range(len(prep.splits.folds))]
                                       for f in self.cfg.data.train_fractions}
        if plan.external:
            summary.external = {e.name: ExternalSummary(
                manifest=str(e.path), labels=e.labels, images=len(e.manifest), class_balance=balance(e.manifest.df))
                for e in plan.external}
        return summary

    # -- jobs -----------------------------------------------------------------------------------
    def run_job(self, job: JobKey, prep: Prepared, arm_plan: ArmPlan, *, device: str | None = None,
                resume: bool = True, tracker=None) -> JobRecord:
        """Train, predict and record one job (resumes from its ``last.pt``).

        The model is chosen as ``train.selection`` says, after ``train.tune`` (if any) picked this arm's
        settings on the inner split; it then scores its held-out fold, the test set and every external set.
        """
        from thyro.data.splits import inner_split
        from thyro.models.inference import predict_proba
        from thyro.stats.roc import auroc_or_none

        arm = arm_plan.config
        files = self.rundir.job_files(job)
        train_cfg = arm_plan.train
        if device is not None:
            train_cfg = train_cfg.model_copy(update={"device": device})
        if arm.train_backbone == "cached":  # no epochs to select or tune: the probe chooses its own L2 strength
            train_cfg = train_cfg.model_copy(update={"selection": "last", "tune": train_cfg.tune.model_copy(
                update={"lr": [], "epochs": [], "weight_decay": []})})
        splits = prep.splits
        train_ids = prep.train_ids(job)
        val = prep.dev.arrays(splits.val_ids(job.fold))
        selection, tuned = train_cfg.selection, {}
        if selection == "inner" or train_cfg.tune.grid:
            labels = prep.dev.arrays(train_ids).labels
            fit_ids, select_ids = inner_split(train_ids, labels, prep.dev.groups(train_ids), train_cfg.inner_fraction,
                                              seed=train_cfg.seed * 1000 + job.fold,
                                              where=f"training part of {job}")
            fit_part, select_part = prep.dev.arrays(fit_ids), prep.dev.arrays(select_ids)
        if train_cfg.tune.grid:
            train_cfg, tuned = self._tune(job, arm_plan, train_cfg, fit_part, select_part)
        if selection == "inner":
            train, chooser, select_best = fit_part, select_part, True
            how = f"early stopping on an inner split of the training part ({len(select_ids)} images held out)"
        elif selection == "last":
            train, chooser, select_best = prep.dev.arrays(train_ids), val, False
            how = "no selection: the weights after the last epoch"
        else:
            train, chooser, select_best = prep.dev.arrays(train_ids), val, True
            how = "early stopping on the held-out fold (its out-of-fold AUROC is selection-biased)"
        model, report = self._build(arm_plan, train_cfg, job)
        tracker = tracker or NoTracker()
        tracker.job_started(job, {"arm": arm.model_dump(mode="json"), "train": train_cfg.model_dump(mode="json"),
                                  "selection": how, "train_images": len(train.ids), "tuned": tuned.get("chosen")})
        label = f"{job.arm}{'' if job.fraction == 1 else f' at {fraction_text(job.fraction)}'} fold {job.fold}"
        if arm.train_backbone == "cached":  # features once, then logistic regression: no epochs, no selection
            result = fit_probe(model, train, prep.dev.groups(train.ids), chooser, train_cfg, files.folder,
                               description=label)
            how = "no selection: a linear probe on cached features (L2 strength chosen on inner folds)"
        else:
            result = fit(model, train, chooser, train_cfg, files.folder, resume=resume, select_best=select_best,
                         pretrained=arm_plan.pretrained, train_backbone=arm.train_backbone,
                         on_epoch_end=lambda epoch, row: tracker.epoch(job, epoch, row), description=label)
        dev = next(model.parameters()).device
        rows = []
        scored = [(OOF, val), (TEST, prep.dev.arrays(list(splits.test)))]
        scored += [(name, ext.arrays()) for name, ext in prep.external.items()]
        for split, part in scored:
            if not len(part.ids):
                continue
            probs = predict_proba(model, part.images, tta_flip=train_cfg.tta_flip, device=dev,
                                  batch_size=train_cfg.eval_batch_size, amp=train_cfg.amp)
            rows += [{"image": image, "arm": job.arm, "train_fraction": job.fraction, "split": split,
                      "fold": job.fold, "ensemble": False, "probability": float(p)} for image, p in zip(part.ids, probs)]
        frame = pd.DataFrame(rows)
        oof = frame[frame["split"] == OOF]
        model.to("cpu")
        record = JobRecord(
            arm=job.arm, fold=job.fold, fraction=job.fraction, best_epoch=result.best_epoch,
            val_auroc=auroc_or_none(val.labels, oof["probability"].to_numpy()),
            epochs_run=result.epochs_run, stopped_early=result.stopped_early, seconds=round(result.seconds, 2),
            train_images_per_second=round(result.images_per_second, 1), selection=how,
            selection_auroc=result.best_auroc if select_best else None, train_images=len(train.ids),
            weights_report=str(report), host=describe_holder(), finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
            extra={"tuned": tuned})
        metadata = ModelMetadata(backbone=arm.backbone, weights=arm_plan.source.describe(),
                                 preprocess=self.cfg.preprocess.model_dump(mode="json"), study=self.cfg.name,
                                 tta_flip=train_cfg.tta_flip)
        self.rundir.finish_job(job, record, frame, model, metadata)
        tracker.job_finished(job, {"oof_auroc": record.val_auroc, "best_epoch": record.best_epoch,
                                   "selection_auroc": record.selection_auroc, "seconds": record.seconds})
        return record

    def _build(self, arm: ArmPlan, train_cfg, job: JobKey):
        cfg = arm.config
        return build_model(cfg.backbone, arm.source, in_chans_mode=cfg.in_chans_mode, dropout=cfg.dropout,
                           seed=train_cfg.seed * 1000 + job.fold, allow_partial=cfg.partial_weights,
                           image_size=self.cfg.preprocess.size)

    def _tune(self, job: JobKey, arm: ArmPlan, train_cfg, fit_part: ArraySet, select_part: ArraySet):
        """Try every setting of ``train.tune`` on the inner split (never the held-out fold or the test set);
        returns the configuration with the best inner AUROC and what was tried."""
        trials = []
        for i, params in enumerate(train_cfg.tune.grid):
            cfg = train_cfg.model_copy(update=params)
            model, _ = self._build(arm, cfg, job)
            folder = self.rundir.job_files(job).trial(i)
            res = fit(model, fit_part, select_part, cfg, folder, select_best=cfg.selection != "last",
                      pretrained=arm.pretrained, train_backbone=arm.config.train_backbone,
                      description=f"{job} tuning {i + 1}/{len(train_cfg.tune.grid)}")
            trials.append({"params": params, "inner_auroc": res.best_auroc})
        best = max(trials, key=lambda t: t["inner_auroc"])
        info(f"  tuned on the inner split: {best['params']} (inner AUROC {best['inner_auroc']:.3f})")
        return train_cfg.model_copy(update=best["params"]), {"chosen": best["params"], "trials": trials,
                                                             "on": f"inner split of the training part of {job}"}

    def run(self, *, only=None, skip_missing: bool = False, device: str | None = None, report: bool = True,
            dry_run: bool = False, restart: bool = False, workers: int = 1,
            devices: list[str] | None = None) -> Results | dict:
        """Run the selected (default: all) unfinished jobs, merge, and write the report when complete.

        Returns the run's :class:`~thyro.run.Results`.  With ``dry_run`` nothing is trained or written: the
        returned plan (a dict) holds the resolved configuration, the split sizes, the jobs and each arm's
        weight check.  ``restart`` forgets the selected jobs' progress (checkpoint and record) and trains
        them from the start.  ``workers`` processes train jobs at once (each claims its jobs; on one GPU, or
        spread over ``devices``).
        """
        plan = self.plan(only=only, skip_missing=skip_missing, estimate=dry_run)
        if dry_run:
            return plan.to_dict()
        for arm, reason in plan.skipped.items():
            console.print(f"[yellow]skipping arm {arm}[/]:\n  " + reason.replace("\n", "\n  "), soft_wrap=True)
        prep = self.prepare(plan)
        tracker = make_tracker(self.cfg.train.tracking, self.rundir, self.cfg.name)
        jobs = list(plan.jobs)
        selected = plan.selected
        skipped = plan.skipped
        if restart:
            for job in jobs:
                with self.rundir.claim(job) as mine:
                    if not mine:
                        holder = self.rundir.claim_holder(job) or "another process"
                        raise TrainingError(f"{job} is being trained by {holder}; it cannot be restarted now.")
                    self.rundir.job_files(job).restart()
        todo = [j for j in jobs if not self.rundir.is_done(j)]
        for job in jobs:
            if job not in todo and selected is not None:
                info(f"{job} is already done ({self.rundir.job_files(job).done}); --restart trains it again.")
        tta = " with flip test-time augmentation" if self.cfg.train.tta_flip else ""
        info(f"[bold]{self.cfg.name}[/]: {len(prep.labelled)} labelled images, {len(self.cfg.arms)} arm(s) x "
             f"{self.cfg.data.folds} folds; {len(jobs) - len(todo)} job(s) already done, {len(todo)} to run "
             f"-> {self.run_dir}" + (f" with {workers} worker processes" if workers > 1 and todo else ""))
        failed: dict[str, str] = {}
        elsewhere: dict[str, str] = {}
        if workers > 1 and todo:
            failed.update(self._run_workers(workers, devices or [device] if device or devices else [None], only))
            todo = []
        for n, job in enumerate(todo, 1):
            with self.rundir.claim(job) as mine:
                if not mine:
                    elsewhere[job.name] = self.rundir.claim_holder(job) or "another process"
                    info(f"[dim]job {n}/{len(todo)} {job} is being trained by {elsewhere[job.name]}; skipped here[/]")
                    continue
                if self.rundir.is_done(job):  # finished by another process while this one worked
                    continue
                info(f"[cyan]job {n}/{len(todo)}[/] {job}")
                try:
                    rec = self.run_job(job, prep, plan.arm(job.arm), device=device, tracker=tracker)
                except TrainingError as exc:
                    failed[job.name] = str(exc)
                    console.print(f"[red]job {job} failed[/]: {exc}")
                    continue
                info(f"  out-of-fold AUROC{tta} {_fmt(rec.val_auroc)} (model of epoch {rec.best_epoch}; "
                     f"{rec.seconds:.0f} s, {rec.train_images_per_second:.0f} img/s)")
            self.merge(plan, prep, skipped, failed)
        results = self.merge(plan, prep, skipped, failed)
        if elsewhere:
            results.elsewhere = elsewhere
            info(f"{len(elsewhere)} job(s) are being trained by other processes; the last one to finish merges "
                 "the results and writes the report.")
        if report and results.complete:
            from thyro.report import build_report

            html, md = build_report(self.run_dir)
            results.report = ReportFiles(html=str(html), markdown=str(md))
            tracker.study_finished(self.rundir)
        elif report and not elsewhere:
            left = [name for name, a in results.arms.items() if not a.finished]
            why = "--only ran part of the study; " if selected is not None else ""
            info(f"no report yet: arm(s) {', '.join(left)} still have jobs to run ({why}the process that finishes the "
                 f"study's last job writes it; `thyro report {self.run_dir}` reports the jobs done so far).")
        if failed:
            raise TrainingError(f"{len(failed)} job(s) failed: {', '.join(failed)}; finished jobs are kept in "
                                f"{self.run_dir}. Fix the cause and run the same command again to retry them.")
        return results

    def _run_workers(self, n: int, devices: list[str | None], only) -> dict[str, str]:
        """Train the jobs in ``n`` worker processes at once (each one claims jobs, as separate ``thyro study``
        processes would); returns ``{worker: error}`` for workers that ended badly."""
        import multiprocessing as mp
        import os

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = self.cfg.train.threads or max(1, cpus // n)
        ctx = mp.get_context("spawn")  # safe with torch's threads and CUDA in the parent
        procs = []
        from thyro.console import is_quiet

        for i in range(n):
            dev = devices[i % len(devices)]
            args = (self.cfg.model_dump(mode="json"), str(self.base_dir), str(self.run_dir), only, dev, threads,
                    is_quiet())
            proc = ctx.Process(target=_worker, args=args, name=f"thyro-worker-{i}")
            proc.start()
            procs.append(proc)
        try:
            for proc in procs:
                proc.join()
        except KeyboardInterrupt:
            for proc in procs:
                proc.terminate()
            raise
        return {p.name: f"exited with code {p.exitcode}" for p in procs if p.exitcode != 0}

    # -- collection -----------------------------------------------------------------------------
    def merge(self, plan: Plan, prep: Prepared, skipped: dict[str, str] | None = None,
              failed: dict[str, str] | None = None) -> Results:
        """Collect every finished job into the run's predictions (with ensemble rows) and results.

        Holds the run directory's lock, so jobs finishing in parallel processes merge one at a time.
        """
        with self.rundir.locked():
            return self._merge(plan, prep, skipped or {}, failed or {})

    def _merge(self, plan: Plan, prep: Prepared, skipped: dict[str, str], failed: dict[str, str]) -> Results:
        from thyro import metrics

        previous = self.rundir.read_results() or Results()
        skipped = {**previous.skipped, **skipped}
        failed = {**previous.failed, **failed}
        frames, arms, jobs = [], {}, {}
        all_jobs = all_study_jobs(self.cfg)
        for arm_plan in plan.arms:
            arm = arm_plan.config
            mine = [j for j in all_jobs if j.arm == arm.name]
            done = [j for j in mine if self.rundir.is_done(j)]
            for job in done:
                failed.pop(job.name, None)
                frames.append(self.rundir.job_rows(job))
                jobs[job.name] = self.rundir.read_job(job)
            if arm.name in skipped and done:
                skipped.pop(arm.name)  # its weights were found since
            status = ("skipped" if arm.name in skipped else "done" if len(done) == len(mine)
                      else "failed" if any(k in failed for k in (j.name for j in mine)) else "incomplete")
            source = arm_plan.source
            arms[arm.name] = ArmResult(status=status, backbone=arm.backbone, weights=source.describe(),
                                       weights_kind=source.kind, role=source.role, train_backbone=arm.train_backbone,
                                       folds_done=[j.fold for j in done if j.fraction == 1.0],
                                       jobs_done=len(done), jobs=len(mine), reason=skipped.get(arm.name))
        pred = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["image", "arm", "train_fraction", "split", "fold", "ensemble", "probability"])
        ensembles = []
        for name, entry in arms.items():
            scored = pred[(pred["arm"] == name) & (pred["split"] != OOF)]
            for fraction, sub in scored.groupby("train_fraction"):
                if sub["fold"].nunique() < self.cfg.data.folds:
                    continue  # the fold mean needs every fold model of this fraction
                # the fold mean: the probability the model package gives (thyro.models.inference.Ensemble)
                mean = sub.groupby(["split", "image"], sort=False)["probability"].mean().reset_index()
                mean["arm"], mean["train_fraction"], mean["fold"], mean["ensemble"] = name, fraction, pd.NA, True
                ensembles.append(mean)
        if ensembles:
            pred = pd.concat([pred] + ensembles, ignore_index=True)
        meta = {"*": prep.labelled.df.set_index("image")}
        meta.update({name: ext.manifest.df.set_index("image") for name, ext in prep.external.items()})
        self.rundir.write_predictions(predictions_frame(pred.to_dict("records"), meta, prep.label_sources()))
        preds = self.rundir.read_predictions()
        for name, entry in arms.items():
            entry.oof_auroc = metrics.auroc(preds.rows(arm=name, split=OOF))
            entry.test_auroc = metrics.auroc(preds.rows(arm=name, split=TEST, ensemble=True))
            entry.external_auroc = {e.name: metrics.auroc(preds.rows(arm=name, split=e.name, ensemble=True))
                                    for e in self.cfg.data.external}
        results = Results(study=self.cfg.name, config=self.cfg.model_dump(mode="json"), versions=_versions(),
                          git_commit=_git_commit(), labels=prep.label_meaning,
                          external_labels={name: ext.label_meaning for name, ext in prep.external.items()},
                          selection=self.cfg.train.selection, arms=arms, skipped=skipped, failed=failed, jobs=jobs,
                          updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.rundir.write_results(results)
        return results


def _worker(cfg: dict, base_dir: str, run_dir: str, only, device: str | None, threads: int, quiet: bool) -> None:
    """One worker process of ``thyro study --jobs N``: trains the jobs it can claim, merges, no report."""
    import sys

    from thyro.console import err_console, set_quiet
    from thyro.errors import ThyroError

    set_quiet(quiet)
    study = Study(StudyConfig.parse(cfg), Path(base_dir), run_dir)
    study.cfg.train.threads = threads
    try:
        study.run(only=only, device=device, report=False, skip_missing=True)
    except ThyroError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        sys.exit(2)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def run_study(config_path: str | Path, *, run_dir: str | Path | None = None, only: list[str] | None = None,
              skip_missing: bool = False, device: str | None = None, overrides: dict | None = None,
              report: bool = True, dry_run: bool = False, restart: bool = False, workers: int = 1,
              devices: list[str] | None = None) -> Results | dict:
    """Run (or continue) a study from its configuration file; returns its :class:`~thyro.run.Results` (or, with
    ``dry_run``, the plan as a dict)."""
    study = Study.from_file(config_path, run_dir, overrides)
    return study.run(only=only, skip_missing=skip_missing, device=device, report=report, dry_run=dry_run,
                     restart=restart, workers=workers, devices=devices)


def results_table(results: Results) -> tuple[list[str], list[tuple[str, ...]]]:
    """Column names and rows (arm, status, OOF AUROC, test AUROC, one column per external set) for printing."""
    sets = sorted({s for a in results.arms.values() for s in a.external_auroc})
    cols = ["arm", "status", "out-of-fold AUROC", "test AUROC (fold mean)"] + [f"{s} AUROC (fold mean)" for s in sets]
    rows = [(name, a.status, _fmt(a.oof_auroc), _fmt(a.test_auroc), *(_fmt(a.external_auroc.get(s)) for s in sets))
            for name, a in results.arms.items()]
    return cols, rows


__all__ = ["Prepared", "Study", "parse_only", "results_table", "run_study", "study_identity"]
