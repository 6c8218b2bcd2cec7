"""The study runner: every arm trained on the same folds, predictions kept, results collected.

A study is a set of jobs, one per (arm, fold).  Each job trains one model on the other folds, scores
its held-out fold (out-of-fold) and the held-out test set, and is recorded in the run directory
(:mod:`thyro.run`, which owns every file named here).  Re-running the same command skips finished jobs
and resumes the unfinished one from its last epoch.

Jobs for schedulers
-------------------
``only=["ARM:FOLD"]`` (``thyro study --only``, ``thyro train``) runs single jobs so a scheduler can
spread them; only the selected arms' weights are checked.  A job is *claimed* before it is trained
(:meth:`thyro.run.RunDir.claim`: a hard-link lock that holds across nodes on a shared filesystem), so
two processes, or two array tasks, never train the same job: the second moves on to the next free job.
A claim left by a dead process is taken over.  Every finished job merges into ``predictions.csv`` and
``results.json``; whichever process finishes the last job writes the report.
"""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from thyro import __version__
from thyro.config import HARDWARE_FIELDS, ArmConfig, StudyConfig, load_study_config
from thyro.console import console, info
from thyro.errors import ConfigError, TrainingError, WeightsError
from thyro.fileio import sha256_json
from thyro.run import OOF, TEST, JobKey, JobRecord, RunDir, describe_holder, predictions_frame
from thyro.train.fit import ArraySet, fit


def parse_only(only: list[str] | None, cfg: StudyConfig) -> list[JobKey] | None:
    """Parse ``ARM:FOLD`` (or ``ARM`` / ``ARM:*`` for all its folds) selectors into jobs."""
    if not only:
        return None
    out: list[JobKey] = []
    for item in only:
        arm, _, fold = str(item).partition(":")
        cfg.arm(arm)
        if fold in ("", "*"):
            out += [JobKey(arm, k) for k in range(cfg.data.folds)]
            continue
        if not fold.isdigit() or not 0 <= int(fold) < cfg.data.folds:
            raise ConfigError(f"--only {item!r}: the fold must be 0..{cfg.data.folds - 1}")
        out.append(JobKey(arm, int(fold)))
    return out


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


def study_identity(cfg: StudyConfig) -> str:
    """What must match for a run directory to be continued: everything but hardware settings."""
    d = cfg.model_dump(mode="json")
    for key in HARDWARE_FIELDS:
        d["train"].pop(key, None)
    return sha256_json(d)


@dataclass
class Prepared:
    """What every job of a study reads: the labelled images, the splits, the cache and the labels' meaning."""

    labelled: object  # thyro.data.manifest.Manifest
    splits: object  # thyro.data.splits.Splits
    cache: object  # thyro.data.cache.ImageCache
    label_meaning: object  # thyro.data.manifest.LabelMeaning

    @property
    def labels(self) -> dict[str, int]:
        df = self.labelled.df
        return dict(zip(df["image"], df["label"].astype(int)))

    def arrays(self, ids: list[str]) -> ArraySet:
        idx = self.cache.index_of(ids)
        images = np.asarray(self.cache.images[np.sort(idx)])[np.argsort(np.argsort(idx))]
        labels = self.labels
        return ArraySet(images, np.array([labels[i] for i in ids]), list(ids))


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

    def resolve_path(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    def jobs(self, selected: list[JobKey] | None = None, skipped: dict | None = None) -> list[JobKey]:
        """The study's jobs (arm x fold), or the selected ones, less those of skipped arms."""
        out = []
        for arm in self.cfg.arms:
            if skipped and arm.name in skipped:
                continue
            for k in range(self.cfg.data.folds):
                job = JobKey(arm.name, k)
                if selected is None or job in selected:
                    out.append(job)
        return out

    def check_weights(self, arms: list[ArmConfig] | None = None, skip_missing: bool = False) -> dict[str, str]:
        """Resolve the weight source of each arm in ``arms`` (default: all) before any training.

        Returns ``{arm: reason}`` of the arms skipped with ``skip_missing``; without it the first
        missing file stops the study, naming every place looked.
        """
        skipped: dict[str, str] = {}
        for arm in arms if arms is not None else self.cfg.arms:
            try:
                arm.weight_source(self.base_dir).resolve(arm.backbone)
            except WeightsError as exc:
                if not skip_missing:
                    raise WeightsError(f"arm '{arm.name}': {exc}\n(no training has started; --skip-missing runs "
                                       "the other arms and records this one as skipped)") from None
                skipped[arm.name] = str(exc)
        return skipped

    def prepare(self) -> Prepared:
        """Read the manifest, make or load the splits, build the cache, and record the study.

        The study record (``config.yaml``) is written only once the data and splits are sound, so a
        start that fails on bad data leaves nothing that would stop the next attempt.
        """
        from thyro.data.cache import ImageCache
        from thyro.data.manifest import read_manifest
        from thyro.data.splits import Splits, make_splits

        identity = study_identity(self.cfg)
        existing = self.rundir.read_record()
        if existing is not None and study_identity(existing.config) != identity:
            raise ConfigError(
                f"{self.run_dir} holds a different study (its {self.rundir.config_path.name} differs from this "
                "configuration in more than hardware settings); use another --run-dir, or delete that folder to "
                "start over.")
        manifest = read_manifest(self.resolve_path(self.cfg.data.manifest))
        meaning = manifest.label_meaning()
        labelled = manifest.labelled()
        with self.rundir.locked():
            if self.rundir.splits_path.exists():
                splits = self.rundir.read_splits(labelled)
            elif self.cfg.data.splits:
                splits = Splits.load(self.resolve_path(self.cfg.data.splits), labelled)
                self.rundir.write_splits(splits)
            else:
                splits = make_splits(labelled, test_size=self.cfg.data.test_size, folds=self.cfg.data.folds,
                                     seed=self.cfg.data.seed)
                self.rundir.write_splits(splits)
            if len(splits.folds) != self.cfg.data.folds:
                raise ConfigError(f"{self.rundir.splits_path} has {len(splits.folds)} folds but the configuration "
                                  f"asks for {self.cfg.data.folds}")
            if self.rundir.read_record() is None:
                self.rundir.write_record(self.cfg, self.base_dir)
        cache = ImageCache.build(labelled, self.cfg.preprocess)
        self.rundir.write_data(self.data_summary(labelled, manifest, splits, meaning))
        return Prepared(labelled, splits, cache, meaning)

    def data_summary(self, labelled, manifest, splits, meaning) -> dict:
        """``data.json``: counts by class for images, patients and groups (the same function as
        ``thyro data import`` and ``inspect``), splits, label provenance and preprocessing."""
        from thyro.data.inspection import class_balance

        balance = class_balance(manifest.df)
        df = labelled.df
        return {
            "manifest": str(self.resolve_path(self.cfg.data.manifest)),
            "labels": meaning.to_dict(),
            "images_total": int(len(manifest)),
            "images_labelled": int(len(df)),
            "images_unlabelled": int(len(manifest) - len(df)),
            "class_balance": {unit: {k: int(v) for k, v in balance[unit].items()} for unit in balance.columns},
            "groups_merging_patients": int((df.groupby("group")["patient_id"].nunique() > 1).sum()),
            "test_images": len(splits.test),
            "fold_sizes": [len(f) for f in splits.folds],
            "preprocess": self.cfg.preprocess.model_dump(mode="json"),
        }

    # -- jobs -----------------------------------------------------------------------------------
    def run_job(self, job: JobKey, prep: Prepared, *, device: str | None = None, resume: bool = True) -> JobRecord:
        """Train, predict and record one job (resumes from its ``last.pt``)."""
        from thyro.models import build_model
        from thyro.models.inference import predict_proba

        arm = self.cfg.arm(job.arm)
        files = self.rundir.job_files(job)
        train_cfg = self.cfg.train
        updates = {}
        if arm.lr is not None:
            updates["lr"] = arm.lr
        if device is not None:
            updates["device"] = device
        if updates:
            train_cfg = train_cfg.model_copy(update=updates)
        splits = prep.splits
        train, val = prep.arrays(splits.train_ids(job.fold)), prep.arrays(splits.val_ids(job.fold))
        test = prep.arrays(list(splits.test))
        model, report = build_model(arm.backbone, arm.weight_source(self.base_dir), in_chans_mode=arm.in_chans_mode,
                                    dropout=arm.dropout, seed=train_cfg.seed * 1000 + job.fold)
        result = fit(model, train, val, train_cfg, files.folder, resume=resume, description=f"{job.arm} fold {job.fold}")
        dev = next(model.parameters()).device
        rows = []
        for split, part in ((OOF, val), (TEST, test)):
            if not len(part.ids):
                continue
            probs = predict_proba(model, part.images, tta_flip=train_cfg.tta_flip, device=dev,
                                  batch_size=train_cfg.eval_batch_size, amp=train_cfg.amp)
            rows += [{"image": image, "arm": job.arm, "train_fraction": job.fraction, "split": split, "fold": job.fold,
                      "ensemble": False, "probability": float(p)} for image, p in zip(part.ids, probs)]
        frame = pd.DataFrame(rows)
        from thyro.stats.roc import auroc_or_none

        oof = frame[frame["split"] == OOF]
        model.to("cpu")
        record = JobRecord(
            arm=job.arm, fold=job.fold, fraction=job.fraction, best_epoch=result.best_epoch,
            val_auroc=auroc_or_none(val.labels, oof["probability"].to_numpy()),
            epochs_run=result.epochs_run, stopped_early=result.stopped_early, seconds=round(result.seconds, 2),
            train_images_per_second=round(result.images_per_second, 1),
            selection="best out-of-fold AUROC (early stopping on the held-out fold)",
            selection_auroc=result.best_auroc, train_images=len(train.ids), weights_report=str(report),
            host=describe_holder(), finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
            extra={"model_metadata": {"backbone": arm.backbone, "weights": arm.weight_spec(self.base_dir),
                                      "preprocess": self.cfg.preprocess.model_dump(mode="json"),
                                      "study": self.cfg.name, "tta_flip": train_cfg.tta_flip}})
        self.rundir.finish_job(job, record, frame, model)
        return record

    def run(self, *, only=None, skip_missing: bool = False, device: str | None = None, report: bool = True,
            dry_run: bool = False, restart: bool = False) -> dict:
        """Run the selected (default: all) unfinished jobs, merge, and write the report when complete.

        With ``dry_run`` nothing is trained or written: the returned plan holds the resolved
        configuration, the split sizes, the jobs and each arm's weight check.  ``restart`` forgets the
        selected jobs' progress (checkpoint and record) and trains them from the start.
        """
        selected = parse_only(only, self.cfg)
        arms = [a for a in self.cfg.arms if selected is None or any(j.arm == a.name for j in selected)]
        if dry_run:
            return self.plan(selected, arms)
        skipped = self.check_weights(arms, skip_missing)
        for arm, reason in skipped.items():
            console.print(f"[yellow]skipping arm {arm}[/]:\n  " + reason.replace("\n", "\n  "), soft_wrap=True)
        prep = self.prepare()
        jobs = self.jobs(selected, skipped)
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
             f"-> {self.run_dir}")
        failed: dict[str, str] = {}
        elsewhere: dict[str, str] = {}
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
                    rec = self.run_job(job, prep, device=device)
                except TrainingError as exc:
                    failed[job.name] = str(exc)
                    console.print(f"[red]job {job} failed[/]: {exc}")
                    continue
                info(f"  out-of-fold AUROC{tta} {_fmt(rec.val_auroc)} (model of epoch {rec.best_epoch}; "
                     f"{rec.seconds:.0f} s, {rec.train_images_per_second:.0f} img/s)")
            self.merge(prep, skipped, failed)
        results = self.merge(prep, skipped, failed)
        if elsewhere:
            results["elsewhere"] = elsewhere
            info(f"{len(elsewhere)} job(s) are being trained by other processes; the last one to finish merges "
                 "the results and writes the report.")
        complete = all(a["status"] in ("done", "skipped") for a in results["arms"].values())
        if report and complete:
            from thyro.report import build_report

            html, md = build_report(self.run_dir)
            results["report"] = {"html": str(html), "markdown": str(md)}
        if failed:
            raise TrainingError(f"{len(failed)} job(s) failed: {', '.join(failed)}; finished jobs are kept in "
                                f"{self.run_dir}. Fix the cause and run the same command again to retry them.")
        return results

    def plan(self, selected: list[JobKey] | None, arms: list[ArmConfig]) -> dict:
        """What :meth:`run` would do, without training or writing anything (``--dry-run``)."""
        from thyro.data.manifest import read_manifest
        from thyro.data.splits import Splits, make_splits

        manifest = read_manifest(self.resolve_path(self.cfg.data.manifest))
        labelled = manifest.labelled()
        if self.rundir.splits_path.exists():
            splits, origin = self.rundir.read_splits(labelled), str(self.rundir.splits_path)
        elif self.cfg.data.splits:
            splits, origin = Splits.load(self.resolve_path(self.cfg.data.splits), labelled), self.cfg.data.splits
        else:
            splits, origin = make_splits(labelled, test_size=self.cfg.data.test_size, folds=self.cfg.data.folds,
                                         seed=self.cfg.data.seed), "made from the manifest (not written)"
        weights = {}
        for arm in arms:
            try:
                path = arm.weight_source(self.base_dir).resolve(arm.backbone)
                weights[arm.name] = {"ok": True, "file": str(path) if path else None}
            except WeightsError as exc:
                weights[arm.name] = {"ok": False, "reason": str(exc)}
        jobs = self.jobs(selected)
        return {"study": self.cfg.name, "run_dir": str(self.run_dir), "config": self.cfg.model_dump(mode="json"),
                "labels": manifest.label_meaning().to_dict(), "splits": {
                    "source": origin, "test": len(splits.test), "folds": [len(f) for f in splits.folds],
                    "train_per_fold": [len(splits.train_ids(k)) for k in range(len(splits.folds))]},
                "jobs": [{"job": j.name, "done": self.rundir.is_done(j)} for j in jobs], "weights": weights}

    # -- collection -----------------------------------------------------------------------------
    def merge(self, prep: Prepared, skipped: dict[str, str] | None = None,
              failed: dict[str, str] | None = None) -> dict:
        """Collect every finished job into predictions.csv (with ensemble rows) and results.json.

        Holds the run directory's lock, so jobs finishing in parallel processes merge one at a time.
        """
        with self.rundir.locked():
            return self._merge(prep, skipped or {}, failed or {})

    def _merge(self, prep: Prepared, skipped: dict[str, str], failed: dict[str, str]) -> dict:
        from thyro import metrics

        previous = self.rundir.read_results() or {}
        skipped = {**previous.get("skipped", {}), **skipped}
        failed = {**previous.get("failed", {}), **failed}
        frames, arms, jobs = [], {}, {}
        for arm in self.cfg.arms:
            done = [j for j in self.jobs() if j.arm == arm.name and self.rundir.is_done(j)]
            for job in done:
                failed.pop(job.name, None)
                frames.append(self.rundir.job_rows(job))
                jobs[job.name] = asdict(self.rundir.read_job(job))
            if arm.name in skipped and done:
                skipped.pop(arm.name)  # its weights were found since
            status = ("skipped" if arm.name in skipped else "done" if len(done) == self.cfg.data.folds
                      else "failed" if any(k.split(":")[0] == arm.name for k in failed) else "incomplete")
            source = arm.weight_source(self.base_dir)
            arms[arm.name] = {"status": status, "backbone": arm.backbone, "weights": source.describe(),
                              "weights_kind": source.kind, "folds_done": [j.fold for j in done],
                              "reason": skipped.get(arm.name)}
        pred = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["image", "arm", "train_fraction", "split", "fold", "ensemble", "probability"])
        ensembles = []
        for name, entry in arms.items():
            if entry["status"] != "done":
                continue
            scored = pred[(pred["arm"] == name) & (pred["split"] != OOF)]
            # the fold mean: the probability the model package gives (thyro.models.inference.Ensemble)
            mean = scored.groupby(["split", "image"], sort=False)["probability"].mean().reset_index()
            mean["arm"], mean["train_fraction"], mean["fold"], mean["ensemble"] = name, 1.0, pd.NA, True
            ensembles.append(mean)
        if ensembles:
            pred = pd.concat([pred] + ensembles, ignore_index=True)
        meta = prep.labelled.df.set_index("image")
        table = predictions_frame(pred.to_dict("records"), meta, prep.label_meaning.source)
        self.rundir.write_predictions(table)
        preds = self.rundir.read_predictions()
        for name, entry in arms.items():
            entry["oof_auroc"] = metrics.auroc(preds.rows(arm=name, split=OOF))
            entry["test_auroc"] = metrics.auroc(preds.rows(arm=name, split=TEST, ensemble=True))
        results = {"study": self.cfg.name, "config": self.cfg.model_dump(mode="json"), "versions": _versions(),
                   "git_commit": _git_commit(), "labels": prep.label_meaning.to_dict(), "arms": arms,
                   "skipped": skipped, "failed": failed, "jobs": jobs, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.rundir.write_results(results)
        return results


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def run_study(config_path: str | Path, *, run_dir: str | Path | None = None, only: list[str] | None = None,
              skip_missing: bool = False, device: str | None = None, overrides: dict | None = None,
              report: bool = True, dry_run: bool = False, restart: bool = False) -> dict:
    """Run (or continue) a study from its configuration file; returns results.json's content (or the plan)."""
    study = Study.from_file(config_path, run_dir, overrides)
    return study.run(only=only, skip_missing=skip_missing, device=device, report=report, dry_run=dry_run,
                     restart=restart)


def results_table(results: dict) -> list[tuple[str, str, str, str]]:
    """Rows (arm, status, OOF AUROC, test AUROC) for printing."""
    return [(name, a["status"], _fmt(a.get("oof_auroc")), _fmt(a.get("test_auroc"))) for name, a in results["arms"].items()]


__all__ = ["Prepared", "Study", "parse_only", "results_table", "run_study", "study_identity"]
