"""Training of one arm x fold: a plain loop a reader can hold in their head.

The loop reads uint8 images already preprocessed in the cache, moves each batch to the training device,
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

Randomness is derived from ``(seed, epoch)`` at the start of every epoch, so a resumed job repeats an
uninterrupted one exactly on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from thyro.console import console, info, is_quiet, make_progress
from thyro.train.augment import BatchAugment
from thyro.train.recipe import freeze_norm_statistics, make_optimizer, set_trainable, stages, trainable_stages
from thyro.errors import TrainingError
from thyro.fileio import atomic_path, write_csv_rows
from thyro.models.inference import predict_proba, to_input
from thyro.run import JobFiles
from thyro.stats.roc import auroc_or_none
from thyro.config import TrainConfig
from thyro.device import autocast, autocast_dtype, resolve_device, use_channels_last
from thyro.machine import check_threads

LOG_FIELDS = ("epoch", "train_loss", "val_loss", "val_auroc", "lr", "seconds")


@dataclass
class ArraySet:
    """Images (N, S, S) uint8 and labels (N,) in {0, 1} for one split of one job."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str] = field(default_factory=list)

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


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63 - 1)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _to_batch(images: torch.Tensor, idx: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Slice uint8 images, move them to ``device`` and scale to float in [0, 1], shape (B, 1, S, S)."""
    xb = to_input(images.index_select(0, idx.to(images.device)).to(device, non_blocking=True))
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb


class _Images:
    """uint8 images as a tensor: on the GPU when they fit (no loader at all), else pinned host memory."""

    def __init__(self, array: np.ndarray, device: torch.device, cfg: TrainConfig):
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        on_device = device.type == "cuda" and (
            cfg.data_on_device == "yes" or (cfg.data_on_device == "auto" and tensor.numel() < 2 * 1024**3))
        if on_device:
            tensor = tensor.to(device)
        elif device.type == "cuda":
            tensor = tensor.pin_memory()
        self.tensor = tensor


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the weights (not a live reference to the model's tensors)."""
    return {k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


def _to_cpu(obj):
    """Deep copy of a nested state (optimizer state included) with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def load_resume_state(path: Path, keys: tuple[str, ...] = ("model", "optimizer", "scheduler", "epoch")) -> dict:
    """The training state saved in ``path`` (``last.pt``), read as tensors only.

    A truncated, corrupt or hostile file (a pickle that would run code) is a :class:`TrainingError`
    naming it and the way out, without torch's own advice (which suggests ``weights_only=False``,
    i.e. running the file's code).
    """
    import pickle
    import zipfile

    def unreadable(why: str) -> TrainingError:
        return TrainingError(f"{path} is unreadable ({why}): delete it or run with --restart "
                             f"(the job then starts from epoch 1).")

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc).lower():
            raise unreadable("truncated") from None
        raise unreadable("it holds more than tensors; it was refused unread, as loading it would run its "
                         "code") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, AttributeError, KeyError,
            IndexError, TypeError, UnicodeDecodeError, MemoryError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise unreadable(f"truncated or corrupt: {first}") from None
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise unreadable("not a training state written by thyro")
    return state


def _resume_error(path: Path, exc: BaseException) -> TrainingError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return TrainingError(f"{path} is unreadable (its state does not fit this job: {first}): delete it or run with "
                         f"--restart (the job then starts from epoch 1).")


class _CheckpointWriter:
    """Writes checkpoints in a background thread while the next epoch trains.

    The state is copied to the CPU before the write starts, so training cannot change it mid-write;
    at most one write is in flight (the next save, and the end of training, wait for it), and each
    file is written atomically, so a crash or a full disk leaves the previous checkpoint intact.
    A write error is raised at the next save or at :meth:`wait`.
    """

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _write(self, items: list[tuple[str, object, Path]]) -> None:
        from safetensors.torch import save_file

        try:
            for kind, obj, path in items:
                with atomic_path(path, suffix=".tmp") as tmp:
                    if kind == "safetensors":
                        save_file(obj, str(tmp))
                    else:
                        torch.save(obj, tmp)
        except BaseException as exc:  # surfaced in the training thread by wait()
            self._error = exc

    def submit(self, items: list[tuple[str, object, Path]]) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(items,), daemon=False)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err


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
    from safetensors.torch import load_file
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

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
    device = resolve_device(cfg.device)
    amp_dtype = autocast_dtype(device, cfg.amp)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":  # restored when fit returns
        torch.use_deterministic_algorithms(True, warn_only=True)
    n_stages = len(stages(model))
    freeze_norms = freeze_norm_statistics(cfg, pretrained)

    def trainable(epoch: int) -> list[torch.nn.Module]:
        return set_trainable(model, train_backbone, freeze_stages=cfg.freeze_stages, freeze_norms=freeze_norms,
                             open_stages=trainable_stages(epoch, n_stages, cfg.unfreeze_epochs))

    frozen_norms = trainable(0)
    model.to(device)
    channels_last = use_channels_last(device, train.images.shape[-1], cfg.channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
           if cfg.ema_decay > 0 else None)
    step_model = torch.compile(model) if cfg.compile else model

    n = len(train.labels)
    steps_per_epoch = max(1, n // cfg.batch_size)  # drop the last partial batch (BatchNorm needs > 1)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    optimizer = make_optimizer(model, cfg, backbone_lr_mult=cfg.backbone_lr_mult if pretrained else 1.0,
                               layer_decay=cfg.layer_decay if pretrained else 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, cfg.min_lr_ratio))

    pos = float(train.labels.sum())
    pos_weight = None
    if cfg.imbalance == "weighted_loss":
        pos_weight = torch.tensor((n - pos) / max(pos, 1.0), device=device)
    sample_weights = None
    if cfg.imbalance == "balanced_sampler":
        w = np.where(train.labels > 0.5, 0.5 / pos, 0.5 / (n - pos))
        sample_weights = torch.tensor(w, dtype=torch.double)

    images = _Images(train.images, device, cfg).tensor
    labels = torch.from_numpy(train.labels).to(device)
    if cfg.label_smoothing > 0:  # targets pulled towards 1/2
        labels = labels * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
    augment = BatchAugment(cfg.augment)

    start_epoch, history = 0, []
    best_auroc, best_epoch, bad_epochs = -math.inf, -1, 0
    last_path, best_path = files.last, files.best
    if resume and last_path.exists():
        state = load_resume_state(last_path, ("model", "optimizer", "scheduler", "epoch", "history", "best_auroc",
                                              "best_epoch", "bad_epochs"))
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            start_epoch, history = int(state["epoch"]) + 1, list(state["history"])
            best_auroc = float(state["best_auroc"])
            best_epoch, bad_epochs = int(state["best_epoch"]), int(state["bad_epochs"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise _resume_error(last_path, exc) from None
    best_state = None
    if best_epoch >= 0 and best_path.exists():
        try:
            best_state = load_file(best_path)
        except Exception as exc:  # safetensors raises its own error types on a damaged file
            raise TrainingError(f"{best_path} is unreadable ({' '.join(str(exc).split())[:160]}): delete it and "
                                f"{last_path}, or run with --restart.") from None
    evaluated = ema.module if ema is not None else model  # the weights validation sees and fit returns

    stopped_early = select_best and bad_epochs >= cfg.patience
    t_start, seen = time.perf_counter(), 0
    writer = _CheckpointWriter()
    last_save, best_unsaved = time.monotonic(), False
    lines = not console.is_terminal and not is_quiet()  # one line per epoch in logs (no live progress bar)
    progress = make_progress(transient=True, disable=lines)
    with progress, contextlib.ExitStack() as stack:
        stack.callback(writer.wait)
        stack.callback(torch.use_deterministic_algorithms, was_deterministic, warn_only=True)
        task = progress.add_task(description, total=cfg.epochs * steps_per_epoch,
                                 completed=start_epoch * steps_per_epoch, status="")
        for epoch in range(start_epoch, cfg.epochs):
            if stopped_early:
                break
            t0 = time.perf_counter()
            torch.manual_seed(_epoch_seed(cfg.seed, epoch, 0))  # dropout and anything else global
            cpu_gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, 1))
            dev_gen = torch.Generator(device=device).manual_seed(_epoch_seed(cfg.seed, epoch, 2))
            if sample_weights is not None:
                order = torch.multinomial(sample_weights, n, replacement=True, generator=cpu_gen)
            else:
                order = torch.randperm(n, generator=cpu_gen)
            if cfg.unfreeze_epochs:
                frozen_norms = trainable(epoch)
            model.train()
            for m in frozen_norms:  # a linear probe, frozen stages and frozen statistics keep the backbone's
                m.eval()
            losses = torch.zeros((), device=device)
            for step in range(steps_per_epoch):
                idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                xb = augment(_to_batch(images, idx, device, channels_last), dev_gen)
                yb = labels.index_select(0, idx.to(labels.device))
                with autocast(device, amp_dtype):
                    logits = step_model(xb).float().reshape(-1)
                loss = F.binary_cross_entropy_with_logits(logits, yb, pos_weight=pos_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                losses += loss.detach()
                seen += len(idx)
                progress.update(task, advance=1)
            # The loss is read once per epoch (a per-step check would stall the GPU every step); a
            # non-finite epoch is never saved, so the last checkpoint is the last good state.
            train_loss = float(losses) / steps_per_epoch
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"{description}: the loss became {train_loss} in epoch {epoch + 1}; the job stopped and its "
                    f"last good state is kept in {last_path}. Lower the learning rate (train.lr) or check the images.")
            probs = predict_proba(evaluated, val.images, tta_flip=cfg.tta_flip, device=device,
                                  batch_size=cfg.eval_batch_size, amp=cfg.amp, channels_last=channels_last)
            val_auroc = auroc_or_none(val.labels, probs)  # both classes are checked above
            p = np.clip(probs, 1e-7, 1 - 1e-7)
            val_loss = float(-np.mean(val.labels * np.log(p) + (1 - val.labels) * np.log(1 - p)))
            if not select_best:
                best_auroc, best_epoch = val_auroc, epoch
            elif val_auroc > best_auroc:
                best_auroc, best_epoch, bad_epochs = val_auroc, epoch, 0
                best_state, best_unsaved = _copy_state(evaluated), True
            elif epoch + 1 > cfg.warmup_epochs:  # patience counts epochs after the warm-up
                bad_epochs += 1
            row = {"epoch": epoch + 1, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
                   "val_auroc": round(val_auroc, 6), "lr": f"{scheduler.get_last_lr()[-1]:.3e}",
                   "seconds": round(time.perf_counter() - t0, 3)}
            history.append(row)
            stopped_early = select_best and bad_epochs >= cfg.patience
            if (cfg.checkpoint_interval_s <= 0 or time.monotonic() - last_save >= cfg.checkpoint_interval_s
                    or stopped_early or epoch + 1 == cfg.epochs):
                writes: list[tuple[str, object, Path]] = []
                if best_unsaved:
                    writes.append(("safetensors", best_state, best_path))
                    best_unsaved = False
                writes.append(("torch", {"model": _copy_state(model), "optimizer": _to_cpu(optimizer.state_dict()),
                                         "scheduler": scheduler.state_dict(), "epoch": epoch,
                                         "ema": _to_cpu(ema.state_dict()) if ema is not None else None,
                                         "history": list(history), "best_auroc": best_auroc,
                                         "best_epoch": best_epoch, "bad_epochs": bad_epochs}, last_path))
                writer.submit(writes)
                last_save = time.monotonic()
            write_csv_rows(files.log, history, LOG_FIELDS)
            _tensorboard(files, row, cfg)
            status = f"loss {train_loss:.3f}  val AUROC {val_auroc:.3f}" + (
                f" (best {best_auroc:.3f})" if select_best else "")
            progress.update(task, status=status)
            if lines:
                info(f"{description} epoch {epoch + 1}/{cfg.epochs}: {status}, {row['seconds']:.1f} s")
            if on_epoch_end is not None:
                writer.wait()  # callers see the files of this epoch
                on_epoch_end(epoch, row)
    if select_best and best_state is not None:
        evaluated.load_state_dict({k: v.to(device) for k, v in best_state.items()})
    if evaluated is not model:
        model.load_state_dict(evaluated.state_dict())
    elapsed = time.perf_counter() - t_start
    return FitResult(best_epoch=best_epoch + 1, best_auroc=best_auroc, epochs_run=len(history),
                     stopped_early=stopped_early, history=history, seconds=elapsed,
                     images_per_second=seen / elapsed if elapsed > 0 else float("nan"))


_tb_writers: dict[str, object] = {}


def _tensorboard(files: JobFiles, row: dict, cfg: TrainConfig) -> None:
    """Mirror the log row to TensorBoard when the package is installed (optional)."""
    if not cfg.tensorboard:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: the CSV log is the record; say so once per process
        if not _tb_writers.get("_missing_said"):
            _tb_writers["_missing_said"] = True
            info("TensorBoard logs are off: the tensorboard package is not installed (pip install 'thyro[tensorboard]' "
                 "or set train.tensorboard: false); log.csv has every epoch.")
        return
    key = str(files.folder)
    writer = _tb_writers.get(key)
    if writer is None:
        writer = _tb_writers[key] = SummaryWriter(log_dir=str(files.tensorboard))
    for name in ("train_loss", "val_loss", "val_auroc"):
        writer.add_scalar(name, float(row[name]), int(row["epoch"]))  # type: ignore[attr-defined]
    writer.flush()  # type: ignore[attr-defined]
