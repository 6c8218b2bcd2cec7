"""Domain-specific pretraining of a backbone (RadImageNet-style), on one process or many.

Two modes:

``supervised``
    multi-class cross-entropy with a linear head over the corpus's classes (RadImageNet's recipe).
``simclr``
    self-supervised contrastive learning (SimCLR: two augmented views per image, NT-Xent over the
    global batch, an MLP projection head) for unlabelled archives.

The corpus is a folder tree (RadImageNet's ``modality/region/class/*.png`` or plain ``class/*.png``:
an image's class is its folder path below the root) or a CSV with an image column and a class column.
Images go through the data layer's readers and :class:`~thyro.data.preprocess.Preprocessor` once,
into the data layer's :class:`~thyro.data.cache.ImageCache` (uint8, memory-mapped, keyed by the image
list and the preprocessing settings); training then only slices that cache.  Unreadable files are listed, counted and skipped; the run goes on.

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

import csv
import io
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from thyro.config import PretrainConfig
from thyro.console import info, make_progress, set_quiet
from thyro.data.cache import ImageCache
from thyro.data.manifest import Manifest
from thyro.errors import ConfigError, DataError, ImageFailure, ThyroError, TrainingError
from thyro.fileio import atomic_path, write_csv_rows, write_text
from thyro.train import distributed as ddp
from thyro.device import autocast, autocast_dtype, resolve_device
from thyro.machine import check_threads
from thyro.models.backbones import create_backbone
from thyro.models.weights.sources import parse_weight_source
from thyro.train.augment import BatchAugment
from thyro.train.engine import lr_factor, load_resume_state, resume_error as _resume_error
from thyro.train.recipe import make_optimizer
from thyro.train.ssl import ProjectionHead, nt_xent

LOG_FIELDS = ("epoch", "train_loss", "train_acc", "lr", "seconds", "images_per_second")
#: Files of the pretraining work folder (this module owns that folder's format).
WORK_LAST, WORK_LOG, WORK_SKIPPED, WORK_CONFIG = "last.pt", "log.csv", "skipped.csv", "config.yaml"

# --------------------------------------------------------------------------------------------------
# the corpus


@dataclass
class Corpus:
    """Images of a pretraining corpus: a manifest (``image``, ``class`` columns) and what was dropped."""

    manifest: Manifest
    notes: list[str] = field(default_factory=list)


def _image_suffixes() -> tuple[str, ...]:
    from thyro.data.readers import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def scan_folder(root: Path) -> pd.DataFrame:
    """Every image file below ``root`` (hidden entries skipped), with its class = folder path below ``root``.

    RadImageNet's ``CT/lung/nodule/x.png`` gets class ``CT/lung/nodule``; ``benign/x.png`` gets
    ``benign``; a file directly in ``root`` gets an empty class.
    """
    suffixes = _image_suffixes()
    rows: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(suffixes):
                continue
            rows.append((f"{rel_dir}/{name}" if rel_dir else name, rel_dir))
    return pd.DataFrame(rows, columns=["image", "class"])


def read_corpus_csv(path: Path, image_column: str = "image", class_column: str = "class",
                    need_class: bool = True) -> pd.DataFrame:
    """A CSV with an image column (paths relative to the CSV's folder) and a class column."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc}).") from None
    if image_column not in df.columns:
        raise DataError(f"{path}: no '{image_column}' column (columns: {', '.join(df.columns)}); "
                        "name the image column with --image-column.")
    if class_column not in df.columns:
        if need_class:
            raise DataError(f"{path}: no '{class_column}' column (columns: {', '.join(df.columns)}); name the class "
                            "column with --class-column, or use --mode simclr for unlabelled images.")
        df[class_column] = ""
    out = pd.DataFrame({"image": df[image_column].astype(str).str.strip(),
                        "class": df[class_column].astype(str).str.strip()})
    return out[out["image"] != ""].reset_index(drop=True)


def load_corpus(source: str | os.PathLike, *, mode: str = "supervised", image_column: str = "image",
                class_column: str = "class") -> Corpus:
    """Find the images of ``source`` (folder tree or CSV) and their classes.

    Raises
    ------
    DataError
        No images, or (supervised) fewer than two classes.
    """
    source = Path(source)
    supervised = mode == "supervised"
    if source.is_dir():
        df, root = scan_folder(source), source.resolve()
    elif source.is_file():
        df, root = read_corpus_csv(source, image_column, class_column, need_class=supervised), source.parent.resolve()
    else:
        raise DataError(f"{source}: no such folder or CSV file.")
    notes: list[str] = []
    if df.empty:
        raise DataError(f"{source}: no image files found ({', '.join(_image_suffixes())}).")
    if supervised:
        unclassed = df["class"] == ""
        if unclassed.any():
            notes.append(f"{int(unclassed.sum())} image(s) without a class (directly in the root folder or with an "
                         "empty class cell) are not used in supervised mode")
            df = df[~unclassed].reset_index(drop=True)
        if df["class"].nunique() < 2:
            raise DataError(f"{source}: supervised pretraining needs at least two classes, found "
                            f"{df['class'].nunique()} ({', '.join(sorted(df['class'].unique())) or 'none'}); put the "
                            "images in one folder per class, or use --mode simclr for unlabelled images.")
    dup = df["image"].duplicated()
    if dup.any():
        notes.append(f"{int(dup.sum())} duplicate image path(s) listed more than once; kept the first")
        df = df[~dup].reset_index(drop=True)
    mdf = pd.DataFrame({"image": df["image"], "label": pd.array([pd.NA] * len(df), dtype="Int64"),
                        "patient_id": df["image"], "group": df["image"], "class": df["class"]})
    return Corpus(Manifest(df=mdf, root=root, path=source.resolve() if source.is_file() else None), notes)


# --------------------------------------------------------------------------------------------------
# the training set: the readable images of the corpus, in the data layer's ImageCache


@dataclass
class TrainingSet:
    """What the loop trains on (small and picklable: it travels from rank 0 to the other ranks)."""

    cache_path: Path
    cache_key: str
    n_cached: int
    size: int
    rows: np.ndarray          # int64 cache rows used
    targets: np.ndarray       # int64 class index per row (-1 when unlabelled)
    classes: list[str]
    failures: list[ImageFailure]
    notes: list[str]
    pixel_mean: float         # 0-1 units, over a sample of the used images
    pixel_std: float

    @property
    def images_file(self) -> Path:
        return self.cache_path / "images.u8"

    def images(self) -> np.ndarray:
        return np.memmap(self.images_file, dtype=np.uint8, mode="r", shape=(self.n_cached, self.size, self.size))


def _pixel_stats(images: np.ndarray, rows: np.ndarray, sample: int = 4096, seed: int = 0) -> tuple[float, float]:
    pick = np.sort(np.random.default_rng(seed).choice(rows, size=min(sample, len(rows)), replace=False))
    x = images[pick].astype(np.float64) / 255.0
    return float(x.mean()), float(max(x.std(), 1e-3))


def make_training_set(corpus: Corpus, cache, used: Manifest, failures: list[ImageFailure], mode: str,
                      min_per_class: int = 1) -> TrainingSet:
    """Number the classes and drop (supervised) those below ``min_per_class`` readable images."""
    notes = list(corpus.notes)
    if failures:
        notes.append(f"{len(failures)} unreadable image(s) skipped (listed in skipped.csv)")
    classes_col = used.df["class"].to_numpy()
    rows = np.arange(len(used), dtype=np.int64)
    targets = np.full(len(rows), -1, np.int64)
    classes: list[str] = []
    if mode == "supervised":
        counts = Counter(classes_col.tolist())
        small = sorted(c for c, k in counts.items() if k < min_per_class)
        if small:
            notes.append(f"{len(small)} class(es) with fewer than {min_per_class} readable images dropped: "
                         + ", ".join(f"{c} ({counts[c]})" for c in small[:10]) + (" ..." if len(small) > 10 else ""))
            rows = rows[~np.isin(classes_col, small)]
        singles = sorted(c for c, k in counts.items() if k == 1 and c not in small)
        if singles:
            notes.append(f"warning: {len(singles)} class(es) have a single image (kept; --min-per-class 2 drops "
                         "them): " + ", ".join(singles[:10]) + (" ..." if len(singles) > 10 else ""))
        classes = sorted(set(classes_col[rows].tolist()))
        if len(classes) < 2:
            raise DataError(f"after skipping unreadable images and small classes {len(classes)} class(es) remain; "
                            "supervised pretraining needs at least two.")
        index = {c: i for i, c in enumerate(classes)}
        targets = np.array([index[c] for c in classes_col[rows]], dtype=np.int64)
    mean, std = _pixel_stats(cache.images, rows)
    return TrainingSet(cache_path=Path(cache.path), cache_key=cache.key, n_cached=len(cache), size=cache.size,
                       rows=rows, targets=targets, classes=classes, failures=failures, notes=notes,
                       pixel_mean=mean, pixel_std=std)


class _BatchSource(torch.utils.data.Dataset):
    """``dataset[list_of_positions]`` -> (uint8 images (b, S, S), targets (b,)); opens the cache lazily
    (memory maps do not travel to loader workers, paths do)."""

    def __init__(self, tset: TrainingSet):
        self.tset = tset
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tset.rows)

    def __getitem__(self, positions):
        if self._images is None:
            self._images = self.tset.images()
        pos = np.sort(np.asarray(positions, dtype=np.int64))  # ascending rows: sequential reads
        rows = self.tset.rows[pos]
        return torch.from_numpy(np.ascontiguousarray(self._images[rows])), torch.from_numpy(self.tset.targets[pos])


class _EpochBatches(torch.utils.data.Sampler):
    """This rank's batches (lists of positions) of the current epoch; :meth:`set` before each epoch."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def set(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# --------------------------------------------------------------------------------------------------
# the network


class PretrainNet(nn.Module):
    """Input adapter + backbone (head removed) + a pretraining head (linear classifier or projection MLP)."""

    def __init__(self, arch: str, spec, mode: str, n_classes: int, proj_dim: int = 128, seed: int = 0,
                 weights="none", image_size: int | None = None):
        super().__init__()
        from thyro.models import build_model
        from thyro.models.adapter import InputAdapter

        if parse_weight_source(weights).kind == "none":
            start, self.layout = create_backbone(arch, in_chans=spec.channels, seed=seed, image_size=image_size), "timm"
        else:  # continue from pretrained weights: their preprocessing and layout go on
            model, report = build_model(arch, weights, seed=seed, image_size=image_size)
            info(report.summary())
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
# the loop


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


def _step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + step * 104_729 + rank * 15_485_863 + 17) % (2**63 - 1)


def _write_skipped(path: Path, failures: list[ImageFailure]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["image", "reason"])
    writer.writerows((f.image, f.reason) for f in failures)
    write_text(path, buf.getvalue())


def prepare(source: str | os.PathLike, cfg: PretrainConfig, *, cache_dir: str | os.PathLike,
            image_column: str = "image", class_column: str = "class") -> TrainingSet:
    """Load the corpus, build (or reuse) its image cache and make the training set (one process)."""
    corpus = load_corpus(source, mode=cfg.mode, image_column=image_column, class_column=class_column)
    cache, used, failures = ImageCache.build_readable(corpus.manifest, cfg.preprocess, cache_dir,
                                                      workers=cfg.workers if cfg.workers else None)
    return make_training_set(corpus, cache, used, failures, cfg.mode, cfg.min_per_class)


def pretrain(source: str | os.PathLike, out: str | os.PathLike, cfg: PretrainConfig | None = None, *,
             work_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             resume: bool = True, image_column: str = "image", class_column: str = "class",
             max_steps: int | None = None) -> PretrainResult | None:
    """Pretrain ``cfg.arch`` on ``source`` and write the backbone checkpoint ``out``.

    Runs as one process, or as one rank of a ``torchrun`` job (see the module docstring).

    Parameters
    ----------
    source : folder tree or CSV (see :func:`load_corpus`).
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
    cfg = cfg or PretrainConfig()
    from thyro.models.adapter import InputSpec
    out = Path(out)
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir(out)
    cache_dir = Path(cache_dir) if cache_dir is not None else work_dir / "cache"
    device = resolve_device(cfg.device)
    dist_info = ddp.setup(device.type)
    try:
        if dist_info.distributed and not dist_info.is_main:
            set_quiet(True)
        if device.type == "cuda":
            device = torch.device("cuda", dist_info.local_rank if dist_info.distributed else torch.cuda.current_device())
        if check_threads(cfg.threads, "--threads"):
            torch.set_num_threads(cfg.threads)
        if cfg.batch_size % dist_info.world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} (the global batch) must be divisible by the number of "
                              f"processes ({dist_info.world_size}).")
        local_batch = cfg.batch_size // dist_info.world_size
        if local_batch < 2 and not (cfg.sync_bn and dist_info.distributed):
            raise ConfigError(f"{local_batch} image(s) per process is too few for BatchNorm; raise --batch-size.")

        # --- data: rank 0 builds the cache, the others open it ---
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
        n = len(tset.rows)
        if dist_info.is_main:
            _write_skipped(work_dir / WORK_SKIPPED, tset.failures)
            write_text(work_dir / WORK_CONFIG, cfg.to_yaml())
            for note in tset.notes:
                info(f"[yellow]{note}[/]" if note.startswith("warning") else note)
            for failure in tset.failures[:20]:
                info(f"  skipped {failure.image}: {failure.reason}")
        if n < cfg.batch_size:
            raise DataError(f"{n} usable images is fewer than one batch ({cfg.batch_size}); lower --batch-size.")

        spec = InputSpec(channels=3, mean=(tset.pixel_mean,) * 3, std=(tset.pixel_std,) * 3,
                         input_size=cfg.preprocess.size)
        net = PretrainNet(cfg.arch, spec, cfg.mode, max(len(tset.classes), 1), cfg.proj_dim, cfg.seed,
                          weights=cfg.weights, image_size=cfg.preprocess.size)
        spec = net.spec
        if dist_info.distributed and cfg.sync_bn:
            net = ddp.convert_sync_batchnorm(net, device.type)
        net.to(device)
        if cfg.channels_last and device.type == "cuda":
            net.to(memory_format=torch.channels_last)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        model: nn.Module = net
        if dist_info.distributed:
            model = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)

        steps_per_epoch = n // cfg.batch_size
        total_steps = steps_per_epoch * cfg.epochs
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
        optimizer = make_optimizer(net, cfg)  # type: ignore[arg-type]  (reads lr, weight_decay, optimizer, momentum)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, total_steps, warmup, cfg.min_lr_ratio))
        fingerprint = cfg.fingerprint(tset.cache_key)

        # --- resume ---
        last_path = work_dir / WORK_LAST
        start_epoch, start_step, history, resumed = 0, 0, [], None
        if resume and last_path.exists():
            state = load_resume_state(last_path, ("model", "optimizer", "scheduler", "epoch", "step", "history"))
            if state.get("fingerprint") != fingerprint:
                raise ConfigError(f"{last_path} belongs to a run with other settings or data; run with --restart to "
                                  f"start afresh (the old state is overwritten), or use another --work-dir.")
            try:
                net.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                start_epoch, start_step, history = int(state["epoch"]), int(state["step"]), list(state["history"])
            except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
                raise _resume_error(last_path, exc) from None
            if start_step >= steps_per_epoch:
                start_epoch, start_step = start_epoch + 1, 0
            resumed = (start_epoch, start_step)
            if dist_info.is_main:
                info(f"resuming from {last_path}: epoch {start_epoch + 1}, step {start_step}")

        def save_state(epoch: int, step: int) -> None:
            if not dist_info.is_main:
                return
            state = {"model": {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()},
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                     "step": step, "history": history, "fingerprint": fingerprint, "classes": tset.classes}
            with atomic_path(last_path, suffix=".tmp") as tmp:
                torch.save(state, tmp)

        amp_dtype = autocast_dtype(device, cfg.amp)
        augment = BatchAugment(cfg.resolved_augment())
        source_ds = _BatchSource(tset)
        epoch_batches = _EpochBatches()
        # One loader for the whole run: its worker processes stay up from epoch to epoch.
        loader = torch.utils.data.DataLoader(
            source_ds, sampler=epoch_batches, batch_size=None, num_workers=cfg.workers,
            pin_memory=device.type == "cuda", prefetch_factor=4 if cfg.workers else None,
            persistent_workers=cfg.workers > 0)
        gen = torch.Generator(device=device)
        done_steps = start_epoch * steps_per_epoch + start_step
        seen, t_run = 0, time.perf_counter()
        if dist_info.is_main:
            info(f"pretraining {cfg.arch} ({cfg.mode}) on {n} images"
                 + (f", {len(tset.classes)} classes" if tset.classes else "")
                 + f"; {dist_info.world_size} process(es) x {local_batch} = batch {cfg.batch_size}, "
                   f"{steps_per_epoch} steps/epoch, {cfg.epochs} epochs, device {device.type}")
        progress = make_progress(transient=True)
        with progress:
            task = progress.add_task("pretrain", total=total_steps, completed=done_steps, status="")
            for epoch in range(start_epoch, cfg.epochs):
                sampler = torch.utils.data.DistributedSampler(
                    range(n), num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True,
                    seed=cfg.seed, drop_last=True)
                sampler.set_epoch(epoch)
                local = list(sampler)[:steps_per_epoch * local_batch]
                first = start_step if epoch == start_epoch else 0
                epoch_batches.set([local[i:i + local_batch]
                                   for i in range(first * local_batch, len(local) - local_batch + 1, local_batch)])
                model.train()
                t0, epoch_seen = time.perf_counter(), 0
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), device=device)
                steps_here = 0
                for step, (xb_u8, yb) in enumerate(loader, start=first):
                    gen.manual_seed(_step_seed(cfg.seed, epoch, step, dist_info.rank))
                    xb = xb_u8.to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)
                    if cfg.channels_last and device.type == "cuda":
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    yb = yb.to(device, non_blocking=True)
                    if cfg.mode == "supervised":
                        xb = augment(xb, gen)
                        with autocast(device, amp_dtype):
                            logits = model(xb).float()
                        loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
                        correct += (logits.detach().argmax(1) == yb).sum()
                    else:
                        views = torch.cat([augment(xb, gen), augment(xb, gen)])
                        with autocast(device, amp_dtype):
                            z = model(views).float()
                        loss = nt_xent(z[:len(xb)], z[len(xb):], cfg.temperature)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    loss_sum += loss.detach()
                    steps_here += 1
                    epoch_seen += len(xb_u8) * dist_info.world_size
                    done_steps += 1
                    save_due = bool(cfg.checkpoint_every and done_steps % cfg.checkpoint_every == 0
                                    and step + 1 < steps_per_epoch)
                    stop_due = max_steps is not None and done_steps >= max_steps
                    # Reading the loss waits for the GPU: only every 20 steps and before anything is saved.
                    if save_due or stop_due or (step + 1) % 20 == 0 or step + 1 == steps_per_epoch:
                        if not torch.isfinite(loss_sum):
                            raise TrainingError(
                                f"the loss became {loss.item()} in epoch {epoch + 1} (by step {step + 1}); the last "
                                f"good state is kept in {last_path}. Lower the learning rate (--lr) or check the "
                                "images, then run again with --restart.")
                        if dist_info.is_main:
                            progress.update(task, status=f"loss {loss.item():.3f}")
                    progress.update(task, advance=1)
                    if save_due:
                        save_state(epoch, step + 1)
                    if stop_due:
                        save_state(epoch, step + 1)
                        return None
                seconds = time.perf_counter() - t0
                seen += epoch_seen
                stats = torch.stack([loss_sum / max(steps_here, 1), correct / max(steps_here * local_batch, 1)])
                stats = ddp.all_reduce_mean(stats, dist_info).tolist()
                row = {"epoch": epoch + 1, "train_loss": round(stats[0], 6),
                       "train_acc": round(stats[1], 6) if cfg.mode == "supervised" else "",
                       "lr": f"{scheduler.get_last_lr()[0]:.3e}", "seconds": round(seconds, 3),
                       "images_per_second": round(epoch_seen / seconds, 2) if seconds > 0 else ""}
                history.append(row)
                save_state(epoch, steps_per_epoch)
                if dist_info.is_main:
                    write_csv_rows(work_dir / WORK_LOG, history, LOG_FIELDS)
                    progress.update(task, status=f"epoch {epoch + 1}: loss {row['train_loss']:.4f}"
                                    + (f" acc {row['train_acc']:.3f}" if cfg.mode == "supervised" else ""))
                    info(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f}"
                         + (f", accuracy {row['train_acc']:.3f}" if cfg.mode == "supervised" else "")
                         + f", {row['images_per_second']} images/s")

        elapsed = time.perf_counter() - t_run
        if dist_info.is_main:
            from thyro.models.checkpoint import save_backbone

            meta = {"preprocess": cfg.preprocess.model_dump(mode="json"),
                    "pretraining": {"mode": cfg.mode, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                                    "images": n, "skipped": len(tset.failures), "classes": tset.classes,
                                    "world_size": dist_info.world_size,
                                    "final_loss": history[-1]["train_loss"] if history else None}}
            meta["pretraining"]["started_from"] = str(cfg.weights)
            save_backbone(out, net.backbone, arch=cfg.arch, input_spec=spec, metadata=meta, layout=net.layout)
            info(f"backbone written to {out} (use it in a study as weights: {{file: {out}}})")
        ddp.barrier(dist_info)
        return PretrainResult(checkpoint=out, work_dir=work_dir, classes=tset.classes, n_images=n,
                              skipped=len(tset.failures), epochs_run=len(history), history=history,
                              images_per_second=seen / elapsed if elapsed > 0 and seen else float("nan"),
                              resumed_from=resumed)
    finally:
        ddp.teardown(dist_info)

