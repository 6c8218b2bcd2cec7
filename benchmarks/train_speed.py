"""Loader and training throughput of thyro's loop against a plain reference loop, in one run.

thyro's loop slices uint8 images from the preprocessed cache and augments whole batches on the training
device.  The reference is what many projects do: an ImageFolder-style dataset that opens every JPEG with
Pillow and applies torchvision transforms per image, every epoch, through a DataLoader.  Both train the
same ResNet-18 (timm, one logit) with the same batch size and threads.

    .venv/bin/python benchmarks/train_speed.py --sizes 128 224 --steps 8

Prints medians over repeats and the ratio thyro / reference.
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
from PIL import Image


def make_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """Ultrasound-like JPEGs at DDTI's size (560x360), so decoding costs what it costs on real data."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = (rng.rayleigh(60, size=(360, 560)).clip(0, 255)).astype(np.uint8)
        p = folder / f"{i:04d}.jpg"
        Image.fromarray(arr).convert("RGB").save(p, quality=90)
        paths.append(p)
    return paths


class JpegDataset(torch.utils.data.Dataset):
    """The reference: decode with Pillow and transform per image on every access."""

    def __init__(self, paths, labels, size):
        import torchvision.transforms as T

        self.paths, self.labels = paths, labels
        self.tf = T.Compose([
            T.Grayscale(1), T.Resize((size, size)), T.RandomAffine(10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
            T.RandomHorizontalFlip(), T.ColorJitter(0.1, 0.15), T.ToTensor()])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            x = self.tf(im.convert("RGB"))
        return x, torch.tensor(float(self.labels[i]))


def loader_throughput(images: np.ndarray, batch: int, repeats: int) -> float:
    """uint8 batches from the cache array to float tensors in [0, 1], (B, 1, S, S): images/s (median)."""
    from thyro.train.fit import _to_batch

    tensor = torch.from_numpy(images)
    n, rates = len(images), []
    for r in range(repeats):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(r))
        t0 = time.perf_counter()
        for s in range(0, n - batch + 1, batch):
            _to_batch(tensor, order[s:s + batch], torch.device("cpu"), False)
        rates.append((n // batch) * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def reference_loader_throughput(paths, labels, size, batch, repeats, workers) -> float:
    ds = JpegDataset(paths, labels, size)
    rates = []
    for _ in range(repeats):
        dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
        t0 = time.perf_counter()
        k = sum(len(x) for x, _ in dl)
        rates.append(k / (time.perf_counter() - t0))
    return statistics.median(rates)


def train_steps_thyro(model, images, labels, batch, steps) -> float:
    from thyro.config import AugmentConfig
    from thyro.device import use_channels_last
    from thyro.train.augment import BatchAugment
    from thyro.train.fit import _to_batch

    cpu = torch.device("cpu")
    channels_last = use_channels_last(cpu, images.shape[-1])  # as thyro's fit decides
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    aug = BatchAugment(AugmentConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tensor, y = torch.from_numpy(images), torch.from_numpy(labels.astype(np.float32))
    gen = torch.Generator().manual_seed(0)
    model.train()
    t0 = time.perf_counter()
    for s in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        xb = aug(_to_batch(tensor, idx, cpu, channels_last), gen)
        loss = F.binary_cross_entropy_with_logits(model(xb).reshape(-1), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def train_steps_reference(model, paths, labels, size, batch, steps, workers) -> float:
    ds = JpegDataset(paths, labels, size)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    t0, done = time.perf_counter(), 0
    while done < steps:
        for xb, yb in dl:
            loss = F.binary_cross_entropy_with_logits(model(xb).reshape(-1), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="DataLoader workers of the reference loop")
    args = ap.parse_args()

    from thyro.data.cache import ImageCache
    from thyro.data.manifest import manifest_from_records
    from thyro.data.preprocess import PreprocessConfig
    from thyro.models import build_model

    print(f"machine: {os.cpu_count()} CPU(s), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, reference DataLoader workers {args.workers}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_jpegs(tmp / "jpg", args.images, 0)
        labels = np.arange(args.images) % 2
        manifest = manifest_from_records([{"image": f"jpg/{p.name}", "label": int(lab), "patient_id": p.stem}
                                          for p, lab in zip(paths, labels)], tmp)
        for size in args.sizes:
            os.environ["THYRO_CACHE_DIR"] = str(tmp / "cache")
            cache = ImageCache.build(manifest, PreprocessConfig(size=size, remove_frame=False))
            images = np.array(cache.images)  # a writable copy in memory
            ld = loader_throughput(images, args.batch, args.repeats)
            ref_ld = reference_loader_throughput(paths, labels, size, args.batch, args.repeats, args.workers)
            print(f"[{size} px] loader: cache {ld:,.0f} img/s vs JPEG+Pillow per access {ref_ld:,.0f} img/s "
                  f"-> {ld / ref_ld:.1f}x")
            ours, ref = [], []
            for r in range(args.repeats):
                model, _ = build_model("resnet18", "none", seed=r)
                ours.append(train_steps_thyro(model, images, labels, args.batch, args.steps))
                model, _ = build_model("resnet18", "none", seed=r)
                ref.append(train_steps_reference(model, paths, labels, size, args.batch, args.steps, args.workers))
            o, f = statistics.median(ours), statistics.median(ref)
            print(f"[{size} px] training ResNet-18: thyro {o:.1f} img/s vs reference {f:.1f} img/s -> {o / f:.2f}x "
                  f"(medians of {args.repeats} x {args.steps} steps)")


if __name__ == "__main__":
    main()
