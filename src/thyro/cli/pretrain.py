"""Commands of the pretrain area: ``thyro pretrain``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from thyro.base import read_yaml
from thyro.cli._help import command
from thyro.cli._options import typed_options
from thyro.cli._output import quiet_here
from thyro.cli.console import info
from thyro.machine import check_threads


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""

    @command(app, "pretrain", examples=[
        "thyro pretrain radimagenet/ --out weights/radimagenet-resnet18.safetensors",
        "torchrun --nproc_per_node 8 -m thyro pretrain radimagenet/ --out weights/radimagenet-resnet18.safetensors",
        "thyro pretrain archive.csv --out weights/ssl.safetensors --mode simclr --epochs 100 --size 128"])
    def pretrain_cmd(
        ctx: typer.Context,
        source: Path = typer.Argument(..., help="Folder tree (modality/region/class/*.png or class/*.png) or a CSV "
                                                "with image and class columns."),
        out: Path = typer.Option(..., "--out", "-o", help="Backbone checkpoint to write (.safetensors)."),
        arch: str = typer.Option("resnet18", "--arch", help="Backbone: any timm architecture (resnet18, "
                                                            "efficientnet_lite0, ...)."),
        weights: str = typer.Option("none", "--weights", help="Start from: none (random), imagenet, or "
                                                              "file:PATH (continued pretraining)."),
        mode: str = typer.Option("supervised", "--mode", help="supervised (class labels) or simclr (unlabelled)."),
        epochs: int = typer.Option(30, "--epochs", help="Epochs over the corpus."),
        batch_size: int = typer.Option(256, "--batch-size", help="Global batch: all processes together."),
        size: int = typer.Option(224, "--size", help="Image side after preprocessing (pixels)."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate for the global batch "
                                                              "(default 0.1 for SGD, 1e-3 for AdamW)."),
        optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (momentum 0.9, nesterov) or adamw."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu or cuda."),
        resume: bool = typer.Option(True, "--resume/--restart", help="Continue from the work folder's last.pt "
                                                                     "(default) or start over."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML with pretraining settings (a 'pretrain:' "
                                                                     "block or the settings alone); options typed "
                                                                     "on the command line win over it."),
        work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="last.pt, log.csv, skipped.csv "
                                                                         "(default OUT-NAME.pretrain/ beside OUT)."),
        cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Preprocessed image store (default "
                                                                           "WORK_DIR/cache); shared storage on "
                                                                           "multi-node jobs."),
        workers: int = typer.Option(0, "--workers", help="Loader worker processes per rank (and for the cache build)."),
        checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Also save last.pt every N steps."),
        min_per_class: int = typer.Option(1, "--min-per-class", help="Drop classes with fewer readable images."),
        image_column: str = typer.Option("image", "--image-column", help="CSV source: the image path column."),
        class_column: str = typer.Option("class", "--class-column", help="CSV source: the class column."),
        no_augment: bool = typer.Option(False, "--no-augment", help="Switch augmentation off (supervised mode)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads per process."),
        seed: int = typer.Option(0, "--seed"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimisation steps "
                                                                         "of the whole run, saving last.pt (a time-"
                                                                         "limited job slot; rerun to continue)."),
        prepare_only: bool = typer.Option(False, "--prepare-only", help="Only build the preprocessed image store "
                                                                        "(run once before a multi-process job)."),
    ) -> None:
        """Pretrain a backbone on a radiology corpus (supervised or SimCLR) and write it for studies.

        Run it as it is for one process, or under torchrun for several (DistributedDataParallel). After a
        crash or kill, run the same command again: it resumes from the last checkpoint.
        """
        _pretrain(ctx, source, out, config=config, work_dir=work_dir, cache_dir=cache_dir, resume=resume,
                  image_column=image_column, class_column=class_column, no_augment=no_augment,
                  max_steps=max_steps, prepare_only=prepare_only, threads=threads)


def _pretrain(ctx: typer.Context, source: Path, out: Path, *, config: Optional[Path], work_dir: Optional[Path],
              cache_dir: Optional[Path], resume: bool, image_column: str, class_column: str, no_augment: bool,
              max_steps: Optional[int], prepare_only: bool, threads: Optional[int]) -> None:
    """Settings merged (defaults < the YAML file < the options typed), then the corpus prepared or pretrained on."""
    from thyro.config import PretrainConfig, merge  # lazy: torch, kept off `thyro --help`
    from thyro.train.distributed import env_world  # lazy: torch
    from thyro.train.pretrain import WORK_LAST, default_work_dir, prepare, pretrain  # lazy: torch

    check_threads(threads, "--threads")
    if env_world()[0] != 0:  # under torchrun, the first rank speaks for the job
        quiet_here()
    data: dict = read_yaml(config) if config is not None else {}
    if isinstance(data.get("pretrain"), dict):
        data = data["pretrain"]
    typed = typed_options(ctx, {"arch": "arch", "weights": "weights", "mode": "mode", "epochs": "epochs",
                                "batch_size": "batch_size", "size": "preprocess.size", "lr": "lr",
                                "optimizer": "optimizer", "device": "device", "workers": "workers",
                                "checkpoint_every": "checkpoint_every", "min_per_class": "min_per_class",
                                "seed": "seed", "threads": "threads"})
    if no_augment:
        typed["augment.enabled"] = False
    data = merge(data, typed, source="option")
    cfg = PretrainConfig.parse(data, source=str(config) if config else "pretrain options")
    if prepare_only:
        wd = work_dir or default_work_dir(out)
        tset = prepare(source, cfg, cache_dir=cache_dir or wd / "cache", image_column=image_column,
                       class_column=class_column)
        for note in tset.notes:
            info(note)
        info(f"image store ready: {len(tset.rows)} images in {tset.cache_path}"
             + (f", {len(tset.classes)} classes" if tset.classes else ""))
        return
    result = pretrain(source, out, cfg, work_dir=work_dir, cache_dir=cache_dir, resume=resume,
                      image_column=image_column, class_column=class_column, max_steps=max_steps)
    if result is None:
        info(f"stopped after {max_steps} steps; the state is in {(work_dir or default_work_dir(out)) / WORK_LAST}: "
             "run the same command again to continue.")
