"""Domain-specific pretraining of a backbone (RadImageNet-style), on one process or many.

Two modes:

``supervised``
    multi-class cross-entropy with a linear head over the corpus's classes (RadImageNet's recipe).
``simclr``
    self-supervised contrastive learning (SimCLR: two augmented views per image, NT-Xent over the
    global batch, an MLP projection head) for unlabelled archives.

The corpus is a folder tree (RadImageNet's ``modality/region/class/*.png`` or plain ``class/*.png``:
an image's class is its folder path below the root) or a CSV with an image column and a class column
(:mod:`thyro.train.corpus`).  Images are preprocessed once into the data layer's image cache; training
then only slices that cache.  Unreadable files are listed, counted and skipped; the run goes on.  The
epoch loop is :mod:`thyro.train.engine`'s, shared with supervised fitting.

The result is a backbone checkpoint (safetensors, the head left out) carrying its
:class:`~thyro.models.adapter.InputSpec` and preprocessing settings as metadata, which a study names
as ``weights: {file: PATH}``.

Distributed
-----------
Under ``torchrun --nproc_per_node N -m thyro pretrain ...`` every process trains a replica
(DistributedDataParallel); each takes a disjoint shard of the epoch's permutation
(``DistributedSampler``), so the ``batch_size`` images of one step are the same whatever the number of
processes (each holds ``batch_size / N``).  With ``sync_bn`` the BatchNorm statistics are taken over the
global batch too, so one step equals a single process's step up to rounding.  Only rank 0 logs and
writes files.  ``last.pt`` is written atomically at the end of every epoch (and every
``checkpoint_every`` steps); the same command resumes from it after a crash or a kill.

Files in the work folder (default ``OUT`` without suffix + ``.pretrain/``)
-------------------------------------------------------------------------
``last.pt``      resume state (model, optimiser, schedule, epoch, step, history)
``log.csv``      epoch, train_loss, train_acc, lr, seconds, images_per_second
``skipped.csv``  unreadable images (image, reason)
``config.yaml``  the resolved settings
``cache/``       the preprocessed uint8 images (unless ``cache_dir`` is given)
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from thyro.config import PretrainConfig
from thyro.device import resolve_device
from thyro.errors import ConfigError, DataError, ImageFailure, ThyroError, TrainingError
from thyro.fileio import write_csv, write_text
from thyro.machine import check_threads
from thyro.models import build_model
from thyro.models.adapter import InputAdapter, InputSpec
from thyro.models.backbones import create_backbone
from thyro.models.checkpoint import save_backbone
from thyro.models.weights.sources import parse_weight_source
from thyro.train import distributed as ddp
from thyro.train.augment import BatchAugment
from thyro.train.corpus import BatchSource, EpochBatches, TrainingSet, load_corpus, prepare, scan_folder
from thyro.train.engine import EpochEnd, LoopSettings, Task, TrainingLoop, device_batch, place
from thyro.train.recipe import make_optimizer
from thyro.train.ssl import ProjectionHead, nt_xent

log = logging.getLogger(__name__)

__all__ = ["LOG_FIELDS", "PretrainConfig", "PretrainNet", "PretrainResult", "default_work_dir", "load_corpus",
           "prepare", "pretrain", "scan_folder"]

LOG_FIELDS = ("epoch", "train_loss", "train_acc", "lr", "seconds", "images_per_second")
#: Files of the pretraining work folder (this module owns that folder's format).
WORK_LAST, WORK_LOG, WORK_SKIPPED, WORK_CONFIG = "last.pt", "log.csv", "skipped.csv", "config.yaml"

# --------------------------------------------------------------------------------------------------
# the network


class PretrainNet(nn.Module):
    """Input adapter + backbone (head removed) + a pretraining head (linear classifier or projection MLP)."""

    def __init__(self, arch: str, spec, mode: str, n_classes: int, proj_dim: int = 128, seed: int = 0,
                 weights="none", image_size: int | None = None):
        super().__init__()
        self.load_summary = ""  # what loading the starting weights gave
        if parse_weight_source(weights).kind == "none":
            start, self.layout = create_backbone(arch, in_chans=spec.channels, seed=seed, image_size=image_size), "timm"
        else:  # continue from pretrained weights: their preprocessing and layout go on
            model, report = build_model(arch, weights, seed=seed, image_size=image_size)
            self.load_summary = report.summary()
            start, spec, self.layout = model.backbone, model.input_spec, model.layout
        self.spec = spec
        self.adapter = InputAdapter(spec)
        self.backbone = start
        self.backbone.reset_classifier(0)  # timm: the head becomes Identity; features come out pooled
        features = int(self.backbone.num_features)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            if mode == "supervised":
                self.head = nn.Linear(features, n_classes)
            else:
                self.head = ProjectionHead(features, features, proj_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.adapter(x)))


# --------------------------------------------------------------------------------------------------
# the steps


class _Pretraining(Task):
    """Steps on this process's share of each global batch of the cached corpus: cross-entropy over the
    corpus's classes (``supervised``), or NT-Xent over two augmented views of every image (``simclr``)."""

    def __init__(self, tset: TrainingSet, cfg: PretrainConfig, device: torch.device, dist_info: ddp.DistInfo,
                 fingerprint: str, last_path: Path):
        self.tset, self.cfg, self.device, self.dist_info = tset, cfg, device, dist_info
        self.fingerprint, self.last_path = fingerprint, last_path
        self.local_batch = cfg.batch_size // dist_info.world_size
        self.steps_per_epoch = len(tset.rows) // cfg.batch_size
        self.supervised = cfg.mode == "supervised"
        self.channels_last = cfg.channels_last and device.type == "cuda"
        self.augment = BatchAugment(cfg.resolved_augment())
        self.batches = EpochBatches()
        # One loader for the whole run: its worker processes stay up from epoch to epoch.
        self.loader = torch.utils.data.DataLoader(
            BatchSource(tset), sampler=self.batches, batch_size=None, num_workers=cfg.workers,
            pin_memory=device.type == "cuda", prefetch_factor=4 if cfg.workers else None,
            persistent_workers=cfg.workers > 0)
        self.correct = torch.zeros((), device=device)

    def begin_epoch(self, epoch, first_step, cpu_gen):
        sampler = torch.utils.data.DistributedSampler(
            range(len(self.tset.rows)), num_replicas=self.dist_info.world_size, rank=self.dist_info.rank,
            shuffle=True, seed=self.cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
        b = self.local_batch
        local = list(sampler)[:self.steps_per_epoch * b]
        self.batches.set([local[i:i + b] for i in range(first_step * b, len(local) - b + 1, b)])
        self.correct = torch.zeros((), device=self.device)
        return self.loader

    def inputs(self, batch, gen):
        images, targets = batch
        x = device_batch(images, self.device, self.channels_last)
        n = len(images) * self.dist_info.world_size
        if self.supervised:
            return self.augment(x, gen), targets.to(self.device, non_blocking=True), n
        return torch.cat([self.augment(x, gen), self.augment(x, gen)]), len(x), n

    def loss(self, output, target):
        if not self.supervised:  # target: the number of images; the views follow each other
            return nt_xent(output[:target], output[target:], self.cfg.temperature)
        loss = F.cross_entropy(output, target, label_smoothing=self.cfg.label_smoothing)
        self.correct += (output.detach().argmax(1) == target).sum()
        return loss

    def end_epoch(self, end: EpochEnd):
        seconds = time.perf_counter() - end.started
        stats = torch.stack([end.loss_sum / max(end.steps, 1), self.correct / max(end.steps * self.local_batch, 1)])
        loss, accuracy = ddp.all_reduce_mean(stats, self.dist_info).tolist()
        return {"epoch": end.epoch + 1, "train_loss": round(loss, 6),
                "train_acc": round(accuracy, 6) if self.supervised else "", "lr": f"{end.lrs[0]:.3e}",
                "seconds": round(seconds, 3),
                "images_per_second": round(end.images / seconds, 2) if seconds > 0 else ""}, False

    def status(self, row):
        return f"epoch {row['epoch']}: loss {row['train_loss']:.4f}" + (
            f" acc {row['train_acc']:.3f}" if self.supervised else "")

    def line(self, row):
        return (f"epoch {row['epoch']}/{self.cfg.epochs}: loss {row['train_loss']:.4f}"
                + (f", accuracy {row['train_acc']:.3f}" if self.supervised else "")
                + f", {row['images_per_second']} images/s")

    def check_resume(self, state):
        if state.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"{self.last_path} belongs to a run with other settings or data; run with --restart "
                              f"(resume=False) to start afresh (the old state is overwritten), or use another work "
                              f"folder (work_dir, --work-dir).")

    def state(self):
        return {"fingerprint": self.fingerprint, "classes": self.tset.classes}


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class PretrainResult:
    checkpoint: Path
    work_dir: Path
    classes: list[str]
    n_images: int
    skipped: int
    epochs_run: int
    history: list[dict]
    images_per_second: float
    resumed_from: tuple[int, int] | None = None   # (epoch, step) the run continued from


def default_work_dir(out: Path) -> Path:
    return out.with_name(out.name.split(".")[0] + ".pretrain")


def _write_skipped(path: Path, failures: list[ImageFailure]) -> None:
    write_csv(path, [{"image": f.image, "reason": f.reason} for f in failures], ["image", "reason"])


def _join(cfg: PretrainConfig, dist_info: ddp.DistInfo, device: torch.device) -> torch.device:
    """This process's device and threads, and the checks on the batch it takes."""
    if device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank if dist_info.distributed else torch.cuda.current_device())
    if check_threads(cfg.threads, "threads"):
        torch.set_num_threads(cfg.threads)
    if cfg.batch_size % dist_info.world_size:
        raise ConfigError(f"batch_size {cfg.batch_size} (the global batch) must be divisible by the number of "
                          f"processes ({dist_info.world_size}).")
    local_batch = cfg.batch_size // dist_info.world_size
    if local_batch < 2 and not (cfg.sync_bn and dist_info.distributed):
        raise ConfigError(f"{local_batch} image(s) per process is too few for BatchNorm; raise batch_size (--batch-size).")
    return device


def _training_set(source, cfg: PretrainConfig, work_dir: Path, cache_dir: Path, dist_info: ddp.DistInfo,
                  image_column: str, class_column: str) -> TrainingSet:
    """Rank 0 builds the cache (the other ranks wait, then open it), lists what it skipped and
    saves the settings; every rank gets the same training set, or the same error."""
    tset: TrainingSet | None = None
    error: str | None = None
    if dist_info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        try:
            tset = prepare(source, cfg, cache_dir=cache_dir, image_column=image_column, class_column=class_column)
        except ThyroError as exc:
            error = f"{type(exc).__name__}\x00{exc}"
    error = ddp.broadcast_object(error, dist_info)
    if error is not None:
        kind, message = error.split("\x00", 1)
        raise {"ConfigError": ConfigError, "TrainingError": TrainingError}.get(kind, DataError)(message)
    tset = ddp.broadcast_object(tset, dist_info)
    assert tset is not None
    if dist_info.is_main:
        _write_skipped(work_dir / WORK_SKIPPED, tset.failures)
        write_text(work_dir / WORK_CONFIG, cfg.to_yaml())
        for note in tset.notes:
            (log.warning if note.startswith("warning") else log.info)(note)
        for failure in tset.failures[:20]:
            log.info(f"  skipped {failure.image}: {failure.reason}")
    if len(tset.rows) < cfg.batch_size:
        raise DataError(f"{len(tset.rows)} usable images is fewer than one batch ({cfg.batch_size}); lower "
                        "batch_size (--batch-size).")
    return tset


def _network(cfg: PretrainConfig, tset: TrainingSet, device: torch.device,
             dist_info: ddp.DistInfo) -> tuple[PretrainNet, nn.Module]:
    """The network on its device, and what runs a batch (a DistributedDataParallel replica when distributed)."""
    spec = InputSpec(channels=3, mean=(tset.pixel_mean,) * 3, std=(tset.pixel_std,) * 3,
                     input_size=cfg.preprocess.size)
    net = PretrainNet(cfg.arch, spec, cfg.mode, max(len(tset.classes), 1), cfg.proj_dim, cfg.seed,
                      weights=cfg.weights, image_size=cfg.preprocess.size)
    if net.load_summary and dist_info.is_main:
        log.info(net.load_summary)
    if dist_info.distributed and cfg.sync_bn:
        net = ddp.convert_sync_batchnorm(net, device.type)  # type: ignore[assignment]  (the same network)
    place(net, device, cfg.channels_last and device.type == "cuda")
    if dist_info.distributed:
        return net, nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    return net, net


def _write_backbone(out: Path, net: PretrainNet, cfg: PretrainConfig, tset: TrainingSet, dist_info: ddp.DistInfo,
                    history: list[dict]) -> None:
    meta = {"preprocess": cfg.preprocess.model_dump(mode="json"),
            "pretraining": {"mode": cfg.mode, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                            "images": len(tset.rows), "skipped": len(tset.failures), "classes": tset.classes,
                            "world_size": dist_info.world_size,
                            "final_loss": history[-1]["train_loss"] if history else None,
                            "started_from": str(cfg.weights)}}
    save_backbone(out, net.backbone, arch=cfg.arch, input_spec=net.spec, metadata=meta, layout=net.layout)
    log.info(f"backbone written to {out} (use it in a study as weights: {{file: {out}}})")


def pretrain(source: str | os.PathLike, out: str | os.PathLike, cfg: PretrainConfig | None = None, *,
             work_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             resume: bool = True, image_column: str = "image", class_column: str = "class",
             max_steps: int | None = None) -> PretrainResult | None:
    """Pretrain ``cfg.arch`` on ``source`` and write the backbone checkpoint ``out``.

    Runs as one process, or as one rank of a ``torchrun`` job (see the module docstring).

    Parameters
    ----------
    source : folder tree or CSV (see :func:`~thyro.train.corpus.load_corpus`).
    out : the backbone checkpoint to write (``.safetensors``).
    cfg : :class:`PretrainConfig` (defaults when None).
    work_dir : ``last.pt``, ``log.csv``, ``skipped.csv`` (default: beside ``out``).
    cache_dir : where the image cache lives (default ``work_dir/cache``); must be the same path on
        every node of a multi-node job (shared storage), or prepared on each node beforehand.
    resume : continue from ``work_dir/last.pt`` when it exists and matches; False starts afresh.
    max_steps : stop (after saving ``last.pt``) once this many optimisation steps of the whole run are
        done, without writing ``out`` (for checks and benchmarks).

    Returns
    -------
    PretrainResult on every rank (None only when ``max_steps`` cut the run short).
    """
    cfg, out = cfg or PretrainConfig(), Path(out)
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir(out)
    cache_dir = Path(cache_dir) if cache_dir is not None else work_dir / "cache"
    device = resolve_device(cfg.device)
    dist_info = ddp.setup(device.type)
    try:
        device = _join(cfg, dist_info, device)
        tset = _training_set(source, cfg, work_dir, cache_dir, dist_info, image_column, class_column)
        net, model = _network(cfg, tset, device, dist_info)
        task = _Pretraining(tset, cfg, device, dist_info, cfg.fingerprint(tset.cache_key), work_dir / WORK_LAST)
        settings = LoopSettings(
            epochs=cfg.epochs, steps_per_epoch=task.steps_per_epoch, seed=cfg.seed, device=device, amp=cfg.amp,
            warmup_epochs=cfg.warmup_epochs, min_lr_ratio=cfg.min_lr_ratio, description="pretrain",
            save_every_steps=cfg.checkpoint_every, max_steps=max_steps, within_epochs=True, rank=dist_info.rank,
            main=dist_info.is_main, images_per_step=cfg.batch_size,
            diverged_advice="Lower the learning rate (lr, --lr) or check the images, then run again with --restart "
                            "(resume=False).")
        optimizer = make_optimizer(net, cfg)  # type: ignore[arg-type]  (reads lr, weight_decay, optimizer, momentum)
        loop = TrainingLoop(net, optimizer, task, settings, work_dir / WORK_LAST, work_dir / WORK_LOG, LOG_FIELDS,
                            forward=model)
        resumed = loop.resume() if resume else None
        say = log.info if dist_info.is_main else log.debug  # rank 0 speaks for the job
        if resumed is not None:
            say(f"resuming from {loop.last_path}: epoch {resumed[0] + 1}, step {resumed[1]}")
        say(f"pretraining {cfg.arch} ({cfg.mode}) on {len(tset.rows)} images"
             + (f", {len(tset.classes)} classes" if tset.classes else "")
             + f"; {dist_info.world_size} process(es) x {task.local_batch} = batch {cfg.batch_size}, "
               f"{task.steps_per_epoch} steps/epoch, {cfg.epochs} epochs, device {device.type}")
        outcome = loop.run()
        if not outcome.finished:
            return None
        if dist_info.is_main:
            _write_backbone(out, net, cfg, tset, dist_info, outcome.history)
        ddp.barrier(dist_info)
        rate = outcome.images / outcome.seconds if outcome.seconds > 0 and outcome.images else math.nan
        return PretrainResult(checkpoint=out, work_dir=work_dir, classes=tset.classes, n_images=len(tset.rows),
                              skipped=len(tset.failures), epochs_run=len(outcome.history), history=outcome.history,
                              images_per_second=rate, resumed_from=resumed)
    finally:
        ddp.teardown(dist_info)
