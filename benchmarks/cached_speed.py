"""Cached arms on real images (DDTI, UD-TN sample as the external set, 224 px, EfficientNet-Lite0 ImageNet):

* ``probe``: a 5-fold probe study (``train_backbone: cached``) against one feature pass of its images (every
  development and external image and its mirror), and its out-of-fold predictions against the per-fold
  computation (features computed again in each fold, the held-out fold scored by the network);
* ``fit``: the probe's logistic regression alone, per fold, on the study's cached features, with one BLAS thread
  (what ``fit_probe`` does) against the library's default threads, alternating, and the heads both write;
* ``trunk``: one training epoch of the full fine-tune against one of the cached-trunk fine-tune (the first five
  of nine stages frozen and cached, as ``imagenet-partial`` / ``imagenet-trunk`` in transfer_real.py), on the
  training part of fold 0, alternating, medians.

    python benchmarks/cached_speed.py probe --out .bench/cached
    python benchmarks/cached_speed.py fit --out .bench/cached --repeats 3
    python benchmarks/cached_speed.py trunk --out .bench/cached --repeats 2

Prints one JSON object per measurement (also written to OUT/NAME.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer_real import FT, LITE0, prepare, study_config


def _study(out: Path, name: str, arms: list[dict], size: int):
    from thyro.train.study import Study

    ddti, udtn = prepare(out)
    return Study.from_file(study_config(out, name, ddti, udtn, size, arms), out / f"run-{name}")


def _emit(out: Path, name: str, result: dict) -> None:
    result["machine"] = f"{os.cpu_count()} CPU(s), torch {torch.__version__}, {torch.get_num_threads()} threads"
    result["load_after"] = round(os.getloadavg()[0], 1)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps(result, default=float))


def probe(out: Path, size: int) -> None:
    from thyro.models import build_model
    from thyro.models.inference import predict_proba
    from thyro.stats.roc import auroc
    from thyro.train.probe import fit_probe, pooled_features

    study = _study(out, "probe", [{"name": "imagenet-probe", "backbone": LITE0, "weights": "imagenet",
                                   "train_backbone": "cached"}], size)
    plan = study.plan()
    prep = study.prepare(plan)  # the image caches, built before anything is timed
    cfg = plan.arm("imagenet-probe").train
    model, _ = build_model(LITE0, "imagenet")
    images = [prep.dev.cache.images] + [e.cache.images for e in prep.external.values()]
    t0 = time.perf_counter()
    for block in images:
        pooled_features(model, np.asarray(block), device=torch.device("cpu"), batch_size=cfg.eval_batch_size)
    one_pass = time.perf_counter() - t0
    shutil.rmtree(Path(os.environ["THYRO_CACHE_DIR"]) / "features", ignore_errors=True)
    shutil.rmtree(study.run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    study.run(report=False)
    whole = time.perf_counter() - t0
    preds = study.rundir.read_predictions().rows(arm="imagenet-probe", split="val")
    cached = dict(zip(preds["image"], preds["probability"]))
    per_fold: dict[str, float] = {}
    t0 = time.perf_counter()
    for k in range(len(prep.splits.folds)):  # the per-fold computation: features again in each fold
        train_ids, val_ids = prep.train_ids(study_job(k)), prep.splits.val_ids(k)
        fold_model, _ = build_model(LITE0, "imagenet", seed=cfg.seed * 1000 + k)
        train, val = prep.dev.arrays(train_ids), prep.dev.arrays(val_ids)
        fit_probe(fold_model, train, prep.dev.groups(train_ids), val, cfg, out / "per-fold" / str(k))
        per_fold.update(zip(val_ids, predict_proba(fold_model, val.images, tta_flip=cfg.tta_flip,
                                                   batch_size=cfg.eval_batch_size)))
    per_fold_seconds = time.perf_counter() - t0
    ids = sorted(cached)
    labels = prep.dev.labels(ids)
    a = np.array([cached[i] for i in ids])
    b = np.array([per_fold[i] for i in ids])
    _emit(out, "probe", {"images": int(sum(len(x) for x in images)), "one_feature_pass_s": one_pass,
                         "probe_study_s": whole, "ratio": whole / one_pass, "per_fold_computation_s": per_fold_seconds,
                         "oof_auroc_cached": auroc(labels, a), "oof_auroc_per_fold": auroc(labels, b),
                         "max_abs_probability_difference": float(np.abs(a - b).max())})


def fit(out: Path, size: int, repeats: int) -> None:
    import contextlib

    from thyro.models import build_model
    from thyro.stats.roc import auroc
    from thyro.train import probe as probe_module
    from thyro.train.arms import CachedProbe

    study = _study(out, "probe", [{"name": "imagenet-probe", "backbone": LITE0, "weights": "imagenet",
                                   "train_backbone": "cached"}], size)
    plan = study.plan()
    prep = study.prepare(plan)
    cfg = plan.arm("imagenet-probe").train
    model, _ = build_model(LITE0, "imagenet")
    stored = CachedProbe.features(model, prep.dev, cfg)  # from the feature cache when the probe study ran
    limited = probe_module.threadpool_limits
    seconds: dict[str, list[float]] = {"one BLAS thread": [], "default threads": []}
    differences, aurocs = [], {}
    for k in range(len(prep.splits.folds)):
        train_ids, val_ids = prep.train_ids(study_job(k)), prep.splits.val_ids(k)
        train, val = prep.dev.arrays(train_ids), prep.dev.arrays(val_ids)
        feats = (stored.rows(train_ids), stored.rows(val_ids))
        heads = {}
        for r in range(repeats):
            for name, limits in (("one BLAS thread", limited), ("default threads", None)):
                probe_module.threadpool_limits = limits or (lambda **_: contextlib.nullcontext())
                res = probe_module.fit_probe(model, train, prep.dev.groups(train_ids), val, cfg,
                                             out / "fit" / name / str(k), features=feats)
                seconds[name].append(res.seconds)
                heads[name] = model.head.weight.detach().clone()
                aurocs.setdefault(name, {})[k] = auroc(val.labels, probe_module.head_probabilities(
                    model, feats[1], tta_flip=cfg.tta_flip))
        differences.append(float((heads["one BLAS thread"] - heads["default threads"]).abs().max()))
    probe_module.threadpool_limits = limited
    one, default = statistics.median(seconds["one BLAS thread"]), statistics.median(seconds["default threads"])
    _emit(out, "fit", {"folds": len(prep.splits.folds), "repeats": repeats, "fit_s": seconds,
                       "median_one_thread_s": one, "median_default_threads_s": default, "speedup": default / one,
                       "max_abs_head_weight_difference": max(differences), "val_auroc": aurocs})


def study_job(fold: int):
    from thyro.run import JobKey

    return JobKey("imagenet-probe", fold, 1.0)


def trunk(out: Path, size: int, repeats: int, freeze: int) -> None:
    from thyro.train.arms import CachedTrunk, FineTune, FitRequest, LastEpoch
    from thyro.train.job import JobContext, build

    arm = {"name": "imagenet-trunk", "backbone": LITE0, "weights": "imagenet", "train_backbone": "cached_trunk",
           "train": {**FT, "freeze_stages": freeze, "epochs": 1}}
    study = _study(out, "trunk", [arm], size)
    plan = study.plan()
    prep = study.prepare(plan)
    arm_plan = plan.arm("imagenet-trunk")
    cfg = arm_plan.train
    job = study_job(0)
    parts = LastEpoch().parts(prep.dev, prep.train_ids(job), prep.splits.val_ids(0), cfg, job)
    groups = prep.dev.groups(parts.train.ids)
    ctx = JobContext(study.cfg, study.rundir)
    seconds: dict[str, list[float]] = {"full fine-tune": [], "cached trunk": []}
    t0 = time.perf_counter()
    CachedTrunk("cached_trunk").fit(build(ctx, arm_plan, cfg, job)[0], parts, groups, cfg, FitRequest(
        out / "warm", "warm-up", True, resume=False, images=prep.dev), select_best=False)
    first = time.perf_counter() - t0  # the trunk's pass over every image and mirror, plus one epoch
    for r in range(repeats):
        for name, fitter, c in (("full fine-tune", FineTune("all"), cfg.model_copy(update={"freeze_stages": 0})),
                                ("cached trunk", CachedTrunk("cached_trunk"), cfg)):
            model, _ = build(ctx, arm_plan, c, job)
            res = fitter.fit(model, parts, groups, c, FitRequest(out / f"{name}-{r}", name, True, resume=False,
                                                                 images=prep.dev), select_best=False)
            seconds[name].append(float(res.history[-1]["seconds"]))
    full, cached = statistics.median(seconds["full fine-tune"]), statistics.median(seconds["cached trunk"])
    _emit(out, "trunk", {"train_images": len(parts.train.ids), "freeze_stages": freeze, "epoch_s": seconds,
                         "median_full_epoch_s": full, "median_trunk_epoch_s": cached, "speedup": full / cached,
                         "first_run_with_trunk_pass_s": first})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["probe", "fit", "trunk"])
    ap.add_argument("--out", type=Path, default=Path(".bench/cached"))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--freeze-stages", type=int, default=5)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("THYRO_CACHE_DIR", str(args.out.resolve() / "cache"))
    if args.what == "probe":
        probe(args.out, args.size)
    elif args.what == "fit":
        fit(args.out, args.size, args.repeats)
    else:
        trunk(args.out, args.size, args.repeats, args.freeze_stages)


if __name__ == "__main__":
    main()
