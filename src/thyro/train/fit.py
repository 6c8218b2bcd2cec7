"""Training of one arm x fold.

Each step slices uint8 images already preprocessed in the cache, moves the batch to the training device,
augments it there (:mod:`thyro.train.augment`) and optimises a one-logit model with AdamW (or SGD),
linear warm-up and cosine decay.  Early stopping follows the validation AUROC.

Files in the job folder
-----------------------
``last.pt``          the state after the last finished epoch (model, optimiser, schedule, counters),
                     written atomically every epoch; ``resume=True`` continues from it.
``best.safetensors`` a copy of the best weights so far (copied tensors, not a live reference).
``log.csv``          one row per epoch: epoch, train_loss, val_loss, val_auroc, lr, seconds; the
                     validation scores use the same inference as every later prediction
                     (:mod:`thyro.models.inference`, flip test-time augmentation when ``tta_flip``).

The epoch loop itself (seeds, schedule, precision, checkpoints and resume, progress, the log) is
:mod:`thyro.train.engine`'s, shared with pretraining; this module adds the binary loss, the batches from
the in-memory images, validation and the choice of weights, the average of the weights (``ema_decay``)
and the fine-tuning recipe (:mod:`thyro.train.recipe`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from thyro.config import TrainConfig
from thyro.device import resolve_device, use_channels_last
from thyro.errors import TrainingError
from thyro.machine import check_threads
from thyro.optional import missing_message
from thyro.models.inference import predict_proba
from thyro.run import JobFiles
from thyro.stats.roc import auroc_or_none
from thyro.stats.support import estimable_auroc
from thyro.train.augment import BatchAugment
from thyro.train.checkpoints import RESTART, Write, copy_state, to_cpu
from thyro.train.engine import LoopSettings, Task, TrainingLoop, device_batch, lr_factor, place
from thyro.train.recipe import freeze_norm_statistics, make_optimizer, set_trainable, stages, trainable_stages

# lr_factor and predict_proba are part of this module's interface too (the schedule and the validation's inference)
__all__ = ["ArraySet", "FitResult", "LOG_FIELDS", "fit", "lr_factor", "predict_proba"]

log = logging.getLogger(__name__)

LOG_FIELDS = ("epoch", "train_loss", "val_loss", "val_auroc", "lr", "seconds")


@dataclass
class ArraySet:
    """Images (N, S, S) uint8 and labels (N,) in {0, 1} for one split of one job; ``groups`` (patients and
    duplicate groups, when known) count the cases a validation AUROC rests on."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str] = field(default_factory=list)
    groups: list[str] | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise TrainingError(f"images must be (N, S, S) uint8, got {self.images.shape} {self.images.dtype}")
        if len(self.images) != len(self.labels):
            raise TrainingError(f"{len(self.images)} images but {len(self.labels)} labels")


@dataclass
class FitResult:
    best_epoch: int
    best_auroc: float
    epochs_run: int
    stopped_early: bool
    history: list[dict]
    seconds: float
    images_per_second: float


def _to_batch(images: torch.Tensor, idx: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Slice uint8 images, move them to ``device`` and scale to float in [0, 1], shape (B, 1, S, S)."""
    return device_batch(images.index_select(0, idx.to(images.device)), device, channels_last)


def _on_device(array: np.ndarray, device: torch.device, cfg: TrainConfig) -> torch.Tensor:
    """uint8 images as a tensor: on the GPU when they fit (no loader at all), else pinned host memory."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    on_device = device.type == "cuda" and (
        cfg.data_on_device == "yes" or (cfg.data_on_device == "auto" and tensor.numel() < 2 * 1024**3))
    if on_device:
        return tensor.to(device)
    return tensor.pin_memory() if device.type == "cuda" else tensor


class _Supervised(Task):
    """One-logit training on in-memory images: weighted or balanced binary cross-entropy, validation
    AUROC each epoch, selection of the best epoch with early stopping, an average of the weights, and
    the recipe's trainable stages and frozen BatchNorm layers."""

    state_keys = ("best_auroc", "best_epoch", "bad_epochs")

    def __init__(self, model: torch.nn.Module, train: ArraySet, val: ArraySet, cfg: TrainConfig, files: JobFiles, *,
                 device: torch.device, channels_last: bool, select_best: bool, pretrained: bool, train_backbone: str,
                 description: str):
        self.model, self.val, self.cfg, self.files = model, val, cfg, files
        self.device, self.channels_last, self.select_best = device, channels_last, select_best
        self.description = description
        n_stages, freeze_norms = len(stages(model)), freeze_norm_statistics(cfg, pretrained)

        def trainable(epoch: int) -> list[torch.nn.Module]:
            return set_trainable(model, train_backbone, freeze_stages=cfg.freeze_stages, freeze_norms=freeze_norms,
                                 open_stages=trainable_stages(epoch, n_stages, cfg.unfreeze_epochs))

        self.trainable, self.frozen_norms = trainable, trainable(0)
        place(model, device, channels_last)
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
                    if cfg.ema_decay > 0 else None)
        self.evaluated = self.ema.module if self.ema is not None else model  # what validation sees, fit returns
        self.n = n = len(train.labels)
        pos = float(train.labels.sum())
        self.pos_weight = (torch.tensor((n - pos) / max(pos, 1.0), device=device)
                           if cfg.imbalance == "weighted_loss" else None)
        self.sample_weights = None
        if cfg.imbalance == "balanced_sampler":
            self.sample_weights = torch.tensor(np.where(train.labels > 0.5, 0.5 / pos, 0.5 / (n - pos)),
                                               dtype=torch.double)
        self.images = _on_device(train.images, device, cfg)
        labels = torch.from_numpy(train.labels).to(device)
        if cfg.label_smoothing > 0:  # targets pulled towards 1/2
            labels = labels * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
        self.labels, self.augment = labels, BatchAugment(cfg.augment)
        self.steps_per_epoch = max(1, n // cfg.batch_size)  # drop the last partial batch (BatchNorm needs > 1)
        self.best_auroc, self.best_epoch, self.bad_epochs = -math.inf, -1, 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_unsaved = False

    def begin_epoch(self, epoch, first_step, cpu_gen):
        if self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights, self.n, replacement=True, generator=cpu_gen)
        else:
            order = torch.randperm(self.n, generator=cpu_gen)
        if self.cfg.unfreeze_epochs:
            self.frozen_norms = self.trainable(epoch)
        for m in self.frozen_norms:  # a linear probe, frozen stages and frozen statistics keep the backbone's
            m.eval()
        bs = self.cfg.batch_size
        return (order[step * bs:(step + 1) * bs] for step in range(first_step, self.steps_per_epoch))

    def inputs(self, idx, gen):
        xb = self.augment(_to_batch(self.images, idx, self.device, self.channels_last), gen)
        return xb, self.labels.index_select(0, idx.to(self.labels.device)), len(idx)

    def loss(self, output, target):
        return F.binary_cross_entropy_with_logits(output.reshape(-1), target, pos_weight=self.pos_weight)

    def after_step(self):
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def val_probabilities(self) -> np.ndarray:
        """The validation images' probabilities under the weights validation sees."""
        cfg = self.cfg
        return predict_proba(self.evaluated, self.val.images, tta_flip=cfg.tta_flip, device=self.device,
                             batch_size=cfg.eval_batch_size, amp=cfg.amp, channels_last=self.channels_last)

    def end_epoch(self, end):
        cfg, val, epoch = self.cfg, self.val, end.epoch
        train_loss = float(end.loss_sum) / end.steps
        probs = self.val_probabilities()
        val_auroc = auroc_or_none(val.labels, probs)  # both classes are checked by fit; chooses the epoch
        shown = estimable_auroc(val.labels, probs, val.groups)  # what the log shows: None on a set too small for an AUROC
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        val_loss = float(-np.mean(val.labels * np.log(p) + (1 - val.labels) * np.log(1 - p)))
        if not self.select_best:
            self.best_auroc, self.best_epoch = val_auroc, epoch
        elif val_auroc > self.best_auroc:
            self.best_auroc, self.best_epoch, self.bad_epochs = val_auroc, epoch, 0
            self.best_state, self.best_unsaved = copy_state(self.evaluated), True
        elif epoch + 1 > cfg.warmup_epochs:  # patience counts epochs after the warm-up
            self.bad_epochs += 1
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
               "val_auroc": round(shown, 6) if shown is not None else "", "lr": f"{end.lrs[-1]:.3e}",
               "seconds": round(time.perf_counter() - end.started, 3)}
        return row, self.stop_requested()

    def stop_requested(self):
        return self.select_best and self.bad_epochs >= self.cfg.patience

    def status(self, row):
        auroc = row["val_auroc"]
        shown = f"val AUROC {auroc:.3f}" if auroc != "" else "val AUROC not estimable (too few cases of a class)"
        return f"loss {row['train_loss']:.3f}  {shown}" + (f" (best {self.best_auroc:.3f})" if self.select_best else "")

    def line(self, row):
        return f"{self.description} epoch {row['epoch']}/{self.cfg.epochs}: {self.status(row)}, {row['seconds']:.1f} s"

    def state(self):
        return {"ema": to_cpu(self.ema.state_dict()) if self.ema is not None else None, "best_auroc": self.best_auroc,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state(self, state):
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.best_auroc = float(state["best_auroc"])
        self.best_epoch, self.bad_epochs = int(state["best_epoch"]), int(state["bad_epochs"])

    def load_best(self) -> None:
        """The best weights so far, from the job folder (a resumed job)."""
        path = self.files.best
        if self.best_epoch < 0 or not path.exists():
            return
        try:
            self.best_state = load_file(path)
        except Exception as exc:  # safetensors raises its own error types on a damaged file
            raise TrainingError(f"{path} is unreadable ({' '.join(str(exc).split())[:160]}): delete it and "
                                f"{self.files.last}, or run with --restart (from Python: {RESTART}).") from None

    def extra_writes(self) -> list[Write]:
        if not self.best_unsaved:
            return []
        self.best_unsaved = False
        return [("safetensors", self.best_state, self.files.best)]

    def finish(self) -> None:
        """Leave the chosen weights in the model: the best epoch's, or the last; the average when kept."""
        if self.select_best and self.best_state is not None:
            self.evaluated.load_state_dict({k: v.to(self.device) for k, v in self.best_state.items()})
        if self.evaluated is not self.model:
            self.model.load_state_dict(self.evaluated.state_dict())


def start_job(out_dir: str | Path, train: ArraySet, val: ArraySet, cfg: TrainConfig,
              description: str) -> tuple[JobFiles, torch.device]:
    """What every training job does first: its folder, both classes in its training and validation sets, the
    threads it may use; returns its files and device."""
    files = JobFiles(Path(out_dir))
    files.folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("training", train), ("validation", val)):
        classes = np.unique(part.labels)
        if len(classes) < 2:
            raise TrainingError(
                f"{description}: the {name} set has only class {classes.tolist()} ({len(part.labels)} images); "
                "each fold needs benign and malignant cases: use fewer folds or more data.")
    if check_threads(cfg.threads):
        torch.set_num_threads(cfg.threads)
    return files, resolve_device(cfg.device)


def fit(
    model: torch.nn.Module,
    train: ArraySet,
    val: ArraySet,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    description: str = "train",
    select_best: bool = True,
    pretrained: bool = False,
    train_backbone: str = "all",
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``train``; with ``select_best`` keep the weights of the best ``val`` AUROC
    (early stopping), else train all epochs and keep the last weights (``val`` is then only logged).

    Parameters
    ----------
    model : a one-logit network taking float (B, 1, S, S) in [0, 1].
    train, val : uint8 images and 0/1 labels.
    cfg : :class:`TrainConfig`.
    out_dir : job folder (``last.pt``, ``best.safetensors``, ``log.csv``).
    resume : continue from ``out_dir/last.pt`` when it exists.
    select_best : choose the epoch on ``val`` (early stopping with ``cfg.patience`` epochs counted after
        the warm-up), or keep the last epoch's weights.
    pretrained : the backbone starts from pretrained weights (``cfg.backbone_lr_mult``, ``cfg.layer_decay`` and
        ``cfg.batchnorm`` apply).
    train_backbone : ``all``, ``none`` (linear probe) or ``bn``; with ``cfg.freeze_stages`` and
        ``cfg.unfreeze_epochs`` (see :mod:`thyro.train.recipe`).
    on_epoch_end : called with ``(epoch, log_row)`` after each epoch's state is saved.

    Returns
    -------
    FitResult; on return ``model`` holds the chosen weights (the exponential moving average of the
    weights when ``cfg.ema_decay`` is set).
    """
    files, device = start_job(out_dir, train, val, cfg, description)
    task = _Supervised(model, train, val, cfg, files, device=device, select_best=select_best, pretrained=pretrained,
                       channels_last=use_channels_last(device, train.images.shape[-1], cfg.channels_last),
                       train_backbone=train_backbone, description=description)
    return run_task(model, task, cfg, files, pretrained=pretrained, resume=resume, description=description,
                    on_epoch_end=on_epoch_end)


def run_task(model: torch.nn.Module, task: _Supervised, cfg: TrainConfig, files: JobFiles, *, pretrained: bool,
             resume: bool, description: str, on_epoch_end: Callable[[int, dict], None] | None = None,
             forward: torch.nn.Module | None = None) -> FitResult:
    """The training loop of a supervised ``task`` over ``model`` (``forward``: what runs a batch, default the
    model); on return the model holds the chosen weights."""
    device = task.device
    optimizer = make_optimizer(model, cfg, backbone_lr_mult=cfg.backbone_lr_mult if pretrained else 1.0,
                               layer_decay=cfg.layer_decay if pretrained else 1.0)
    settings = LoopSettings(epochs=cfg.epochs, steps_per_epoch=task.steps_per_epoch, seed=cfg.seed, device=device,
                            images_per_step=cfg.batch_size, amp=cfg.amp, warmup_epochs=cfg.warmup_epochs, min_lr_ratio=cfg.min_lr_ratio,
                            description=description, save_interval_s=cfg.checkpoint_interval_s,
                            diverged_advice="Lower the learning rate (train.lr) or check the images.")
    forward = forward if forward is not None else model
    loop = TrainingLoop(model, optimizer, task, settings, files.last, files.log, LOG_FIELDS,
                        forward=torch.compile(forward) if cfg.compile else forward,
                        callbacks=[c for c in (_tensorboard(files, cfg), on_epoch_end) if c is not None])
    if resume:
        loop.resume()
        task.load_best()
    outcome = loop.run()
    task.finish()
    seconds = outcome.seconds
    return FitResult(best_epoch=task.best_epoch + 1, best_auroc=task.best_auroc, epochs_run=len(outcome.history),
                     stopped_early=task.stop_requested(), history=outcome.history, seconds=seconds,
                     images_per_second=outcome.images / seconds if seconds > 0 else float("nan"))


_tb_writers: dict[str, object] = {}


def _tensorboard(files: JobFiles, cfg: TrainConfig) -> Callable[[int, dict], None] | None:
    """A callback mirroring each log row to TensorBoard when the package is installed and ``cfg.tensorboard`` is
    not false (None: only then; true: a missing package is said once per process)."""
    if cfg.tensorboard is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # lazy: the optional tensorboard package
    except Exception:  # tensorboard not installed: the CSV log is the record; said once when asked for
        if cfg.tensorboard and not _tb_writers.get("_missing_said"):
            _tb_writers["_missing_said"] = True
            log.warning(missing_message("TensorBoard logs (train.tensorboard; log.csv has every epoch)",
                                        ["tensorboard"]))
        return None
    key = str(files.folder)
    if key not in _tb_writers:
        _tb_writers[key] = SummaryWriter(log_dir=str(files.tensorboard))
    writer = _tb_writers[key]

    def mirror(epoch: int, row: dict) -> None:
        for name in ("train_loss", "val_loss", "val_auroc"):
            if row[name] != "":  # an AUROC a fold too small cannot support is left out
                writer.add_scalar(name, float(row[name]), int(row["epoch"]))  # type: ignore[attr-defined]
        writer.flush()  # type: ignore[attr-defined]
    return mirror
