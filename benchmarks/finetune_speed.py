"""Fine-tuning an EfficientNet-size model on the CPU: thyro's ``fit`` against a plain timm loop, in one run.

The plain loop is what a user would write: timm's ``efficientnet_lite0`` (one logit), AdamW, the batch already
a float tensor in memory (no loader, no augmentation: the loop's best case), contiguous memory.  thyro's
``fit`` trains the same network with its whole recipe: uint8 batches from memory, augmentation on the
device, channels-last from 96 px, the schedule, checkpoints.  Also timed: a partly frozen fine-tune (the
first stages frozen: no gradients below them), the cached trunk (the same stages frozen, their activations
computed once, only the rest trained) and the cached-feature linear probe (features once per image and its mirror,
then logistic regression), which replace whole epochs.

    python benchmarks/finetune_speed.py --size 224 --images 64 --repeats 3
    python benchmarks/finetune_speed.py --size 224 --images 244 --val 61 --epochs 2 --recipe imagenet-ft \
        --only fit --breakdown

Prints images per second (medians over repeats) and the ratio to the plain loop of the same repeat.
``--images 244 --val 61`` is the shape of a DDTI fold (its training part and its held-out fold, which the fit
scores after every epoch); ``--recipe imagenet-ft`` trains with the ImageNet fine-tune recipe of the transfer
benchmark (backbone at a tenth of the head's rate, BatchNorm statistics frozen, one warm-up epoch).
``--breakdown`` adds where thyro's fit spends its time: the steps' forward, backward and optimiser work, making
the batches (gathering, augmentation), the validation after each epoch, and the checkpoints.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ARCH = "efficientnet_lite0"


def plain_loop(images: np.ndarray, labels: np.ndarray, batch: int, epochs: int, seed: int) -> float:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(ARCH, pretrained=False, num_classes=1)
    x = torch.from_numpy(images).float().div(255).unsqueeze(1).repeat(1, 3, 1, 1)
    x = (x - 0.5) / 0.5
    y = torch.from_numpy(labels.astype(np.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    n = len(x) // batch * batch
    t0 = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            loss = F.binary_cross_entropy_with_logits(model(x[idx]).reshape(-1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return epochs * n / (time.perf_counter() - t0)


#: The ImageNet fine-tune recipe of benchmarks/transfer_real.py (its epochs aside).
RECIPES = {"plain": {"warmup_epochs": 0}, "imagenet-ft": {"backbone_lr_mult": 0.1, "batchnorm": "auto",
                                                         "warmup_epochs": 1}}
VAL: dict = {"recipe": "plain"}
BREAKDOWN: dict[str, float] = {}
WHOLE = "whole fits (their own timing)"


def timed(owner, name: str, key: str) -> None:
    """Add the seconds spent in ``owner.name`` to ``BREAKDOWN[key]``."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            BREAKDOWN[key] = BREAKDOWN.get(key, 0.0) + time.perf_counter() - t0

    setattr(owner, name, wrapper)


def breakdown() -> None:
    """Time the parts of thyro's fit (class attributes wrapped; the wrapped code itself is unchanged)."""
    from thyro.train import engine, fit

    timed(engine.TrainingLoop, "_step", "step (batch, forward, backward, optimiser)")
    timed(fit._Supervised, "inputs", "  of which: making the batch (gather, augmentation)")
    timed(fit._Supervised, "end_epoch", "validation after each epoch")
    timed(engine.TrainingLoop, "_save", "checkpoint (copy of the state; written in the background)")
    timed(engine.CheckpointWriter, "wait", "waiting for checkpoint writes")


def thyro_fit(images, labels, batch, epochs, seed, folder: Path, **train) -> float:
    from thyro.config import TrainConfig
    from thyro.models import build_model
    from thyro.train.fit import ArraySet, fit

    model, _ = build_model(ARCH, "none", seed=seed, image_size=images.shape[-1])
    cfg = TrainConfig(epochs=epochs, batch_size=batch, tensorboard=False, lr=1e-4,
                      **{**RECIPES[VAL["recipe"]], **{k: v for k, v in train.items() if k != "train_backbone"}})
    res = fit(model, ArraySet(images, labels), ArraySet(VAL["images"], VAL["labels"]), cfg, folder, resume=False,
              select_best=False, pretrained=True, train_backbone=train.get("train_backbone", "all"),
              description="bench")
    if BREAKDOWN:
        BREAKDOWN[WHOLE] = BREAKDOWN.get(WHOLE, 0.0) + res.seconds
    n = len(images) // batch * batch
    return epochs * n / res.seconds


def probe(images, labels, seed, folder: Path) -> float:
    from thyro.config import TrainConfig
    from thyro.models import build_model
    from thyro.train.fit import ArraySet
    from thyro.train.probe import fit_probe

    model, _ = build_model(ARCH, "none", seed=seed, image_size=images.shape[-1])
    groups = [f"g{i}" for i in range(len(images))]
    res = fit_probe(model, ArraySet(images, labels), groups, ArraySet(images[:16], labels[:16]),
                    TrainConfig(tensorboard=False), folder)
    return len(images) / res.seconds  # training images per second, each with its mirror


def cached_trunk(images, labels, batch, epochs, seed, folder: Path, freeze: int = 5) -> float:
    """The rest of the network after ``freeze`` frozen stages, trained on their cached activations (the trunk's
    one pass over the images and mirrors is not counted: it is made once per study)."""
    from thyro.config import TrainConfig
    from thyro.models import build_model
    from thyro.train.fit import ArraySet
    from thyro.train.trunk import find_cut
    from thyro.train.trunk_fit import fit_rest

    model, _ = build_model(ARCH, "none", seed=seed, image_size=images.shape[-1])
    cut = find_cut(model, freeze, images.shape[-1])
    trunk = cut.trunk_module(model).eval()
    with torch.no_grad():
        x = torch.from_numpy(images).float().div(255).unsqueeze(1)
        acts = torch.stack([trunk(x), trunk(torch.flip(x, dims=[3]))], dim=1).contiguous().numpy()
    cfg = TrainConfig(epochs=epochs, batch_size=batch, warmup_epochs=0, tensorboard=False, lr=1e-4,
                      freeze_stages=freeze)
    res = fit_rest(model, cut, ArraySet(images, labels), ArraySet(images[:16], labels[:16]), (acts, acts[:16]), cfg,
                   folder, resume=False, select_best=False, pretrained=True, description="bench")
    n = len(images) // batch * batch
    return epochs * n / res.seconds


VARIANTS = {"fit": "thyro fit, whole network", "noaug": "thyro fit, augmentation off",
            "frozen": "thyro fit, first 5 of 9 stages frozen",
            "trunk": "thyro fit, cached trunk (5 of 9 stages cached, the rest trained)",
            "probe": "thyro cached-feature probe (per image, features + fit)"}
RUNS = {"fit": thyro_fit,
        "noaug": lambda *a: thyro_fit(*a, augment={"enabled": False}),
        "frozen": lambda *a: thyro_fit(*a, freeze_stages=5),
        "trunk": lambda *a: cached_trunk(*a),
        "probe": lambda images, labels, batch, epochs, seed, folder: probe(images, labels, seed, folder)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--val", type=int, default=16, help="validation images scored after each epoch (default 16)")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="plain")
    ap.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="which of thyro's variants to time")
    ap.add_argument("--breakdown", action="store_true", help="time the parts of thyro's fit")
    args = ap.parse_args()
    if args.breakdown:
        breakdown()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size), dtype=np.uint8)
    labels = np.arange(args.images) % 2
    VAL.update(recipe=args.recipe, images=rng.integers(0, 256, (args.val, args.size, args.size), dtype=np.uint8),
               labels=np.arange(args.val) % 2)
    print(f"machine: {os.cpu_count()} CPU(s), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}; {ARCH}, {args.size} px, batch {args.batch}, {args.images} images x "
          f"{args.epochs} epochs")
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            base = plain_loop(images, labels, args.batch, args.epochs, r)
            runs = {VARIANTS[k]: run(images, labels, args.batch, args.epochs, r,
                                     Path(tmp) / f"{k}{r}")
                    for k, run in RUNS.items() if not args.only or k in args.only}
            rows.setdefault("plain timm loop (baseline)", []).append(base)
            for k, v in runs.items():
                rows.setdefault(k, []).append(v)
                rows.setdefault(k + " / baseline", []).append(v / base)
    for k, v in rows.items():
        unit = "x" if k.endswith("baseline") and "/" in k else " img/s"
        print(f"{k:60s} {statistics.median(v):8.2f}{unit}   ({', '.join(f'{x:.2f}' for x in v)})")
    if BREAKDOWN:
        whole = BREAKDOWN.pop(WHOLE, 0.0)
        print(f"where thyro's fits spent their time (all fits and repeats together: {whole:.1f} s):")
        for k, v in BREAKDOWN.items():
            print(f"  {k:60s} {v:8.1f} s  {v / whole:6.1%}")
        print(f"  {'the rest (schedule, progress, log, setup)':60s} "
              f"{whole - sum(v for k, v in BREAKDOWN.items() if not k.startswith(' ')):8.1f} s")
    import resource

    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
