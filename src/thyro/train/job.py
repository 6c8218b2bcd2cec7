"""One job of a study: an arm trained on one fold (or a share of it), its held-out fold, the test set and every
external set scored, and the job recorded in the run directory.

The arm's :class:`~thyro.train.plan.ArmPlan` says how (:mod:`thyro.train.arms`): its :class:`~thyro.train.arms.Selection`
gives the images that train and those that choose the epoch, its :class:`~thyro.train.arms.Fitter` fits the
model; ``train.tune`` first tries its grid on the inner split of the training part.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pandas as pd

from thyro.config import StudyConfig, TrainConfig
from thyro.models import build_model
from thyro.run import OOF, TEST, JobKey, JobRecord, ModelMetadata, RunDir, describe_holder, fraction_text
from thyro.stats.support import estimable_auroc
from thyro.train.arms import Fitter, FitRequest, Parts, Scored
from thyro.train.plan import ArmPlan
from thyro.train.prepared import Prepared
from thyro.train.tracking import NoTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobContext:
    """What every job of one study shares: its configuration and run directory."""

    cfg: StudyConfig
    rundir: RunDir


def build(ctx: JobContext, arm: ArmPlan, train_cfg: TrainConfig, job: JobKey):
    """The job's model at its starting weights (seeded by the job), and the weight loading's report."""
    cfg = arm.config
    return build_model(cfg.backbone, arm.source, in_chans_mode=cfg.in_chans_mode, dropout=cfg.dropout,
                       seed=train_cfg.seed * 1000 + job.fold, allow_partial=cfg.partial_weights,
                       image_size=arm.size)


def tune(ctx: JobContext, job: JobKey, arm: ArmPlan, train_cfg: TrainConfig, parts: Parts,
         groups: list[str], prep_images=None) -> tuple[TrainConfig, dict]:
    """Try every setting of ``train.tune`` on the inner split (never the held-out fold or the test set);
    returns the configuration with the best inner AUROC and what was tried."""
    fit_part, select_part = parts.inner
    inner = Parts(fit_part, select_part, parts.val)
    trials = []
    for i, params in enumerate(train_cfg.tune.grid):
        cfg = train_cfg.model_copy(update=params)
        model, _ = build(ctx, arm, cfg, job)
        request = FitRequest(ctx.rundir.job_files(job).trial(i), f"{job} tuning {i + 1}/{len(train_cfg.tune.grid)}",
                             arm.pretrained, images=prep_images)
        res = arm.fitter.fit(model, inner, groups, cfg, request, select_best=arm.selection.select_best)
        trials.append({"params": params, "inner_auroc": res.best_auroc})
    best = max(trials, key=lambda t: t["inner_auroc"])
    log.info(f"  tuned on the inner split: {best['params']} (inner AUROC {best['inner_auroc']:.3f})")
    return train_cfg.model_copy(update=best["params"]), {"chosen": best["params"], "trials": trials,
                                                         "on": f"inner split of the training part of {job}"}


def score(model, fitter: Fitter, scored: list[Scored], job: JobKey, train_cfg: TrainConfig) -> pd.DataFrame:
    """The model's probability for every image of ``scored`` (``(split, images, ids)``), as prediction rows
    (the fitter scores them: the whole network, or cached features through the head)."""
    rows = []
    for (split, _, ids), probs in zip(scored, fitter.predict(model, scored, train_cfg)):
        rows += [{"image": image, "arm": job.arm, "train_fraction": job.fraction, "split": split,
                  "fold": job.fold, "ensemble": False, "probability": float(p)} for image, p in zip(ids, probs)]
    return pd.DataFrame(rows)


def run_job(ctx: JobContext, job: JobKey, prep: Prepared, arm_plan: ArmPlan, *, device: str | None = None,
            resume: bool = True, tracker=None) -> JobRecord:
    """Train, predict and record one job (resumes from its last checkpoint); see the module docstring."""
    arm, selection, fitter = arm_plan.config, arm_plan.selection, arm_plan.fitter
    prep = prep.at(arm_plan.size)  # the images at the arm's size
    train_cfg = arm_plan.train if device is None else arm_plan.train.model_copy(update={"device": device})
    parts = selection.parts(prep.dev, prep.train_ids(job), prep.splits.val_ids(job.fold), train_cfg, job,
                            tuning=bool(train_cfg.tune.grid))
    tuned: dict = {}
    if train_cfg.tune.grid:
        train_cfg, tuned = tune(ctx, job, arm_plan, train_cfg, parts, prep.dev.groups(parts.inner[0].ids), prep.dev)
    how = selection.describe(parts)
    model, report = build(ctx, arm_plan, train_cfg, job)
    tracker = tracker or NoTracker()
    tracker.job_started(job, {"arm": arm.model_dump(mode="json"), "train": train_cfg.model_dump(mode="json"),
                              "selection": how, "train_images": len(parts.train.ids), "tuned": tuned.get("chosen")})
    label = f"{job.arm}{'' if job.fraction == 1 else f' at {fraction_text(job.fraction)}'} fold {job.fold}"
    request = FitRequest(ctx.rundir.job_files(job).folder, label, arm_plan.pretrained, resume=resume,
                         on_epoch_end=lambda epoch, row: tracker.epoch(job, epoch, row), images=prep.dev)
    result = fitter.fit(model, parts, prep.dev.groups(parts.train.ids), train_cfg, request,
                        select_best=selection.select_best)
    scored: list[Scored] = [(OOF, prep.dev, list(parts.val.ids)), (TEST, prep.dev, list(prep.splits.test))]
    scored += [(name, ext, list(ext.manifest.df["image"])) for name, ext in prep.external.items()]
    frame = score(model, fitter, scored, job, train_cfg)
    how = fitter.describe(how, result)
    oof = frame[frame["split"] == OOF]
    model.to("cpu")
    record = JobRecord(
        arm=job.arm, fold=job.fold, fraction=job.fraction, best_epoch=result.best_epoch,
        val_auroc=estimable_auroc(parts.val.labels, oof["probability"].to_numpy(), prep.dev.groups(parts.val.ids)),
        epochs_run=result.epochs_run, stopped_early=result.stopped_early, seconds=round(result.seconds, 2),
        train_images_per_second=round(result.images_per_second, 1), selection=how,
        selection_auroc=result.best_auroc if selection.select_best else None, train_images=len(parts.train.ids),
        weights_report=str(report), host=describe_holder(), finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
        extra={"tuned": tuned})
    metadata = ModelMetadata(backbone=arm.backbone, weights=arm_plan.source.describe(),
                             preprocess=ctx.cfg.arm_preprocess(arm).model_dump(mode="json"), study=ctx.cfg.name,
                             tta_flip=train_cfg.tta_flip)
    ctx.rundir.finish_job(job, record, frame, model, metadata)
    tracker.job_finished(job, {"oof_auroc": record.val_auroc, "best_epoch": record.best_epoch,
                               "selection_auroc": record.selection_auroc, "seconds": record.seconds})
    return record
