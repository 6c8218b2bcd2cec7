"""The study runner: every arm trained on the same folds, predictions kept, results collected.

A study is a set of (arm, fold) jobs.  Each job trains one model on the other folds, predicts its
validation fold (out-of-fold) and the held-out test set, and leaves ``done.json`` in its folder.
Re-running the same command skips finished jobs and resumes the unfinished one from its last epoch;
``only=["ARM:FOLD"]`` runs single jobs so a scheduler can spread them over machines; every run merges
what is finished into ``predictions.csv`` and ``results.json``.

Run directory::

    config.yaml  splits.json  data.json  predictions.csv  results.json
    jobs/ARM/foldK/  model.safetensors  log.csv  predictions.csv  done.json  (last.pt while running)
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from thyro import __version__
from thyro.config import ArmConfig, StudyConfig, load_study_config
from thyro.console import console, info
from thyro.errors import ConfigError, ThyroError, TrainingError, WeightsError
from thyro.fileio import atomic_path, file_lock, sha256_json, write_json, write_text
from thyro.stats.roc import auroc_or_none
from thyro.train.fit import ArraySet, fit, predict_proba

PRED_COLUMNS = ("image", "patient", "group", "label", "arm", "fold", "split", "probability")


@dataclass
class Job:
    arm: ArmConfig
    fold: int

    @property
    def key(self) -> str:
        return f"{self.arm.name}:{self.fold}"


def parse_only(only: list[str] | None, cfg: StudyConfig) -> list[tuple[str, int]] | None:
    """Parse ``ARM:FOLD`` (or ``ARM`` for all its folds) selectors."""
    if not only:
        return None
    out = []
    for item in only:
        arm, _, fold = item.partition(":")
        cfg.arm(arm)
        if fold in ("", "*"):
            out += [(arm, k) for k in range(cfg.data.folds)]
            continue
        if not fold.isdigit() or not 0 <= int(fold) < cfg.data.folds:
            raise ConfigError(f"--only {item!r}: the fold must be 0..{cfg.data.folds - 1}")
        out.append((arm, int(fold)))
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


def _locked(run_dir: Path):
    """The run directory's lock (jobs may run in parallel processes)."""
    return file_lock(run_dir / ".lock")


def _auroc_of(rows: pd.DataFrame) -> float | None:
    """AUROC of prediction rows (None without rows or with one class)."""
    if rows.empty:
        return None
    return auroc_or_none(rows["label"].to_numpy(dtype=float), rows["probability"].to_numpy(dtype=float))


def _study_identity(cfg: StudyConfig) -> dict:
    """What must match for a run directory to be continued: everything but hardware settings."""
    d = cfg.model_dump(mode="json")
    for key in ("device", "threads", "amp", "data_on_device", "tensorboard", "eval_batch_size"):
        d["train"].pop(key, None)
    return d


class Study:
    """A study bound to its run directory."""

    def __init__(self, cfg: StudyConfig, base_dir: Path, run_dir: str | Path):
        self.cfg, self.base_dir, self.run_dir = cfg, Path(base_dir), Path(run_dir)

    # -- set-up ---------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, config_path: str | Path, run_dir: str | Path | None = None,
                  overrides: dict | None = None) -> Study:
        cfg, base = load_study_config(config_path, overrides)
        return cls(cfg, base, run_dir or Path("runs") / cfg.name)

    def resolve_path(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    def check_weights(self, skip_missing: bool) -> dict[str, str]:
        """Resolve every arm's weight source before training; returns {arm: reason} of skipped arms."""
        skipped: dict[str, str] = {}
        for arm in self.cfg.arms:
            try:
                arm.weight_source(self.base_dir).resolve(arm.backbone)
            except WeightsError as exc:
                if not skip_missing:
                    raise WeightsError(f"arm '{arm.name}': {exc}\n(no training has started; "
                                       "--skip-missing runs the other arms and records this one as skipped)") from None
                skipped[arm.name] = str(exc)
        return skipped

    def prepare(self):
        """Write/verify config.yaml, make or load splits, build the cache.  Returns (manifest, splits, cache)."""
        from thyro.data.cache import ImageCache
        from thyro.data.manifest import read_manifest
        from thyro.data.splits import Splits, make_splits

        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.run_dir / "config.yaml"
        identity = _study_identity(self.cfg)
        with _locked(self.run_dir):
            if cfg_path.exists():
                old = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
                old_cfg = StudyConfig.parse(old.get("study", old), source=str(cfg_path))
                if sha256_json(_study_identity(old_cfg)) != sha256_json(identity):
                    raise ConfigError(
                        f"{self.run_dir} holds a different study (its config.yaml differs from this configuration "
                        "in more than hardware settings); use another --run-dir, or delete that folder to start over.")
            else:
                write_text(cfg_path, yaml.safe_dump({"study": self.cfg.model_dump(mode="json"),
                                                     "base_dir": str(self.base_dir)}, sort_keys=False))
        manifest = read_manifest(self.resolve_path(self.cfg.data.manifest))
        labelled = manifest.labelled()
        splits_path = self.run_dir / "splits.json"
        with _locked(self.run_dir):
            if splits_path.exists():
                splits = Splits.load(splits_path, labelled)
            elif self.cfg.data.splits:
                splits = Splits.load(self.resolve_path(self.cfg.data.splits), labelled)
                splits.save(splits_path)
            else:
                splits = make_splits(labelled, test_size=self.cfg.data.test_size, folds=self.cfg.data.folds,
                                     seed=self.cfg.data.seed)
                splits.save(splits_path)
        if len(splits.folds) != self.cfg.data.folds:
            raise ConfigError(f"{splits_path} has {len(splits.folds)} folds but the configuration asks for "
                              f"{self.cfg.data.folds}")
        cache = ImageCache.build(labelled, self.cfg.preprocess)
        self._write_data_summary(labelled, manifest, splits)
        return labelled, splits, cache

    def _write_data_summary(self, labelled, manifest, splits) -> None:
        df = labelled.df
        patients_per_group = df.groupby("group")["patient_id"].nunique()
        summary = {
            "manifest": str(self.resolve_path(self.cfg.data.manifest)),
            "images_total": int(len(manifest)),
            "images_labelled": int(len(df)),
            "images_unlabelled": int(len(manifest) - len(df)),
            "patients": int(df["patient_id"].nunique()),
            "groups": int(df["group"].nunique()),
            "groups_merging_patients": int((patients_per_group > 1).sum()),
            "class_balance": {
                "images": {"benign": int((df["label"] == 0).sum()), "malignant": int((df["label"] == 1).sum())},
                "patients": {"benign": int(df[df["label"] == 0]["patient_id"].nunique()),
                             "malignant": int(df[df["label"] == 1]["patient_id"].nunique())},
            },
            "test_images": len(splits.test),
            "fold_sizes": [len(f) for f in splits.folds],
            "preprocess": self.cfg.preprocess.model_dump(mode="json"),
        }
        for col in ("label_source", "label_definition"):
            if col in df.columns:
                summary[col] = str(df[col].iloc[0])
        write_json(self.run_dir / "data.json", summary)

    # -- jobs -----------------------------------------------------------------------------------
    def jobs(self, only: list[tuple[str, int]] | None = None, skipped: dict | None = None) -> list[Job]:
        out = []
        for arm in self.cfg.arms:
            if skipped and arm.name in skipped:
                continue
            for k in range(self.cfg.data.folds):
                if only is None or (arm.name, k) in only:
                    out.append(Job(arm, k))
        return out

    def job_dir(self, job: Job) -> Path:
        return self.run_dir / "jobs" / job.arm.name / f"fold{job.fold}"

    def is_done(self, job: Job) -> bool:
        return (self.job_dir(job) / "done.json").exists()

    def run_job(self, job: Job, labelled, splits, cache, *, device: str | None = None) -> dict:
        """Train, predict and record one (arm, fold) job; resumes from ``last.pt``."""
        from thyro.models import build_model, save_model

        out = self.job_dir(job)
        train_cfg = self.cfg.train
        updates = {}
        if job.arm.lr is not None:
            updates["lr"] = job.arm.lr
        if device is not None:
            updates["device"] = device
        if updates:
            train_cfg = train_cfg.model_copy(update=updates)
        labels = dict(zip(labelled.df["image"], labelled.df["label"].astype(int)))

        def arrays(ids: list[str]) -> ArraySet:
            idx = cache.index_of(ids)
            return ArraySet(np.asarray(cache.images[np.sort(idx)])[np.argsort(np.argsort(idx))],
                            np.array([labels[i] for i in ids]), list(ids))

        train_ids, val_ids = splits.train_ids(job.fold), splits.val_ids(job.fold)
        train, val, test = arrays(train_ids), arrays(val_ids), arrays(list(splits.test))
        model, report = build_model(job.arm.backbone, job.arm.weight_source(self.base_dir),
                                    in_chans_mode=job.arm.in_chans_mode, dropout=job.arm.dropout,
                                    seed=train_cfg.seed * 1000 + job.fold)
        result = fit(model, train, val, train_cfg, out, description=f"{job.arm.name} fold {job.fold}")
        dev = next(model.parameters()).device
        rows = []
        for split, part in (("val", val), ("test", test)):
            probs = predict_proba(model, part.images, device=dev, batch_size=train_cfg.eval_batch_size,
                                  tta_flip=train_cfg.tta_flip, amp=train_cfg.amp)
            for image, p in zip(part.ids, probs):
                rows.append({"image": image, "arm": job.arm.name, "fold": str(job.fold), "split": split,
                             "probability": float(p)})
        with atomic_path(out / "predictions.csv", suffix=".tmp") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        model.to("cpu")
        save_model(out / "model.safetensors", model, {
            "arm": job.arm.name, "fold": job.fold, "backbone": job.arm.backbone,
            "weights": job.arm.weight_spec(self.base_dir), "best_epoch": result.best_epoch,
            "val_auroc": result.best_auroc, "preprocess": self.cfg.preprocess.model_dump(mode="json"),
            "study": self.cfg.name})
        done = {"arm": job.arm.name, "fold": job.fold, "best_epoch": result.best_epoch,
                "val_auroc": result.best_auroc, "epochs_run": result.epochs_run,
                "stopped_early": result.stopped_early, "seconds": round(result.seconds, 2),
                "train_images_per_second": round(result.images_per_second, 1),
                "weights_report": str(report), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(out / "done.json", done)
        for name in ("last.pt", "best.safetensors"):  # model.safetensors holds the best weights now
            (out / name).unlink(missing_ok=True)
        return done

    def run(self, *, only=None, skip_missing=False, device=None, report=True) -> dict:
        """Run the selected (default: all) unfinished jobs, merge, and write the report when complete."""
        selected = parse_only(only, self.cfg)
        skipped = self.check_weights(skip_missing)
        for arm, reason in skipped.items():
            console.print(f"[yellow]skipping arm {arm}[/]: {reason.splitlines()[0]}")
        labelled, splits, cache = self.prepare()
        jobs = self.jobs(selected, skipped)
        todo = [j for j in jobs if not self.is_done(j)]
        info(f"[bold]{self.cfg.name}[/]: {len(labelled)} labelled images, {len(self.cfg.arms)} arm(s) x "
             f"{self.cfg.data.folds} folds; {len(jobs) - len(todo)} job(s) already done, {len(todo)} to run "
             f"-> {self.run_dir}")
        failed: dict[str, str] = {}
        for n, job in enumerate(todo, 1):
            info(f"[cyan]job {n}/{len(todo)}[/] {job.key}")
            try:
                done = self.run_job(job, labelled, splits, cache, device=device)
                info(f"  best val AUROC {done['val_auroc']:.3f} at epoch {done['best_epoch']} "
                     f"({done['seconds']:.0f} s, {done['train_images_per_second']:.0f} img/s)")
            except TrainingError as exc:
                failed[job.key] = str(exc)
                console.print(f"[red]job {job.key} failed[/]: {exc}")
        results = self.merge(labelled, skipped, failed)
        if report and all(a["status"] in ("done", "skipped") for a in results["arms"].values()):
            try:
                from thyro.report import build_report
            except ImportError:  # the report module is optional at this layer
                build_report = None
            if build_report is not None:
                html, md = build_report(self.run_dir)
                results["report"] = {"html": str(html), "markdown": str(md)}
        if failed:
            raise TrainingError(f"{len(failed)} job(s) failed: {', '.join(failed)}; finished jobs are kept in "
                                f"{self.run_dir}. Fix the cause and run the same command again to retry them.")
        return results

    # -- collection -----------------------------------------------------------------------------
    def merge(self, labelled, skipped: dict[str, str] | None = None, failed: dict[str, str] | None = None) -> dict:
        """Collect every finished job into predictions.csv (with ensemble rows) and results.json.

        Holds the run directory's lock, so jobs finishing in parallel processes merge one at a time.
        """
        with _locked(self.run_dir):
            return self._merge(labelled, skipped, failed)

    def _merge(self, labelled, skipped, failed) -> dict:
        meta = labelled.df.set_index("image")[["patient_id", "group", "label"]]
        frames, arms = [], {}
        results_path = self.run_dir / "results.json"
        previous = json.loads(results_path.read_text()) if results_path.exists() else {}
        skipped = {**previous.get("skipped", {}), **(skipped or {})}
        failed = {**previous.get("failed", {}), **(failed or {})}
        for arm in self.cfg.arms:
            done_folds = [k for k in range(self.cfg.data.folds) if self.is_done(Job(arm, k))]
            for k in done_folds:
                failed.pop(f"{arm.name}:{k}", None)
                frames.append(pd.read_csv(self.job_dir(Job(arm, k)) / "predictions.csv", dtype={"fold": str}))
            status = ("skipped" if arm.name in skipped else "done" if len(done_folds) == self.cfg.data.folds
                      else "failed" if any(key.startswith(f"{arm.name}:") for key in failed) else "incomplete")
            arms[arm.name] = {"status": status, "backbone": arm.backbone, "weights": arm.weight_spec(self.base_dir),
                              "folds_done": done_folds, "reason": skipped.get(arm.name)}
        pred = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["image", "arm", "fold", "split", "probability"])
        ens = []
        for name, info_ in arms.items():
            if info_["status"] != "done":
                continue
            test = pred[(pred["arm"] == name) & (pred["split"] == "test")]
            mean = test.groupby("image", sort=False)["probability"].mean().reset_index()
            mean["arm"], mean["fold"], mean["split"] = name, "mean", "test"
            ens.append(mean)
        if ens:
            pred = pd.concat([pred] + ens, ignore_index=True)
        pred = pred.join(meta, on="image").rename(columns={"patient_id": "patient"})
        pred["label"] = pred["label"].astype("Int64")
        pred = pred[list(PRED_COLUMNS)]
        with atomic_path(self.run_dir / "predictions.csv", suffix=".tmp") as tmp:
            pred.to_csv(tmp, index=False)
        summary = {}
        for name, info_ in arms.items():
            sub = pred[pred["arm"] == name]
            oof = sub[sub["split"] == "val"]
            test = sub[(sub["split"] == "test") & (sub["fold"] == "mean")]
            summary[name] = {
                "oof_auroc": _auroc_of(oof), "test_auroc": _auroc_of(test),
            }
            info_.update(summary[name])
        jobs = {}
        for arm in self.cfg.arms:
            for k in range(self.cfg.data.folds):
                p = self.job_dir(Job(arm, k)) / "done.json"
                if p.exists():
                    jobs[f"{arm.name}:{k}"] = json.loads(p.read_text())
        results = {"study": self.cfg.name, "config": self.cfg.model_dump(mode="json"), "versions": _versions(),
                   "git_commit": _git_commit(), "arms": arms, "skipped": skipped, "failed": failed, "jobs": jobs,
                   "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(results_path, results)
        return results


def run_study(config_path: str | Path, *, run_dir: str | Path | None = None, only: list[str] | None = None,
              skip_missing: bool = False, device: str | None = None, overrides: dict | None = None,
              report: bool = True) -> dict:
    """Run (or continue) a study from its configuration file; returns results.json's content."""
    study = Study.from_file(config_path, run_dir, overrides)
    return study.run(only=only, skip_missing=skip_missing, device=device, report=report)



def results_table(results: dict) -> list[tuple[str, str, str, str]]:
    """Rows (arm, status, OOF AUROC, test AUROC) for printing."""
    def fmt(v):
        return "-" if v is None else f"{v:.3f}"
    return [(name, a["status"], fmt(a.get("oof_auroc")), fmt(a.get("test_auroc"))) for name, a in results["arms"].items()]


__all__ = ["Study", "run_study", "parse_only", "results_table", "PRED_COLUMNS", "ThyroError"]
