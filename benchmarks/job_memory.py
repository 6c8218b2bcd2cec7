"""Resident memory of a process that trains several Lite0 fine-tune jobs one after the other, with or without
:func:`thyro.device.release_memory` between jobs (what a study does after each job).

    python benchmarks/job_memory.py --release     # what a study does
    python benchmarks/job_memory.py               # without it
    MALLOC_MMAP_THRESHOLD_=1048576 python benchmarks/job_memory.py --jobs 1 --images 244 --val 61 --epochs 4

Prints each job's peak (sampled every 50 ms) and the resident memory after it.  Random images, 224 px,
batch 16, the ImageNet fine-tune recipe of benchmarks/transfer_real.py (by default 2 epochs of 80 images a job,
16 held-out images scored after each epoch).  glibc's ``MALLOC_MMAP_THRESHOLD_`` in the environment shows what
the heap glibc keeps costs, and the time it saves.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", action="store_true", help="release_memory() after each job, as a study does")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--images", type=int, default=80, help="training images a job")
    ap.add_argument("--val", type=int, default=16, help="held-out images scored after each epoch")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    from thyro.config import TrainConfig
    from thyro.device import release_memory
    from thyro.models import build_model
    from thyro.train.fit import ArraySet, fit

    proc, peak = psutil.Process(), [0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    rng = np.random.default_rng(0)
    n = args.images + args.val
    images, labels = rng.integers(0, 256, (n, 224, 224), dtype=np.uint8), np.arange(n) % 2
    cfg = TrainConfig(epochs=args.epochs, batch_size=16, tensorboard=False, lr=1e-4, backbone_lr_mult=0.1, batchnorm="auto",
                      warmup_epochs=1)
    with tempfile.TemporaryDirectory() as tmp:
        for job in range(args.jobs):
            peak[0] = 0
            model, _ = build_model("efficientnet_lite0", "none", seed=job, image_size=224)
            train, val = slice(0, args.images), slice(args.images, n)
            res = fit(model, ArraySet(images[train], labels[train]), ArraySet(images[val], labels[val]), cfg,
                      Path(tmp) / str(job), resume=False, select_best=False, pretrained=True, train_backbone="all",
                      description=f"job {job}")
            del model
            if args.release:
                release_memory()
            time.sleep(0.2)
            print(f"job {job}: peak {peak[0] / 1e9:.2f} GB, after it {proc.memory_info().rss / 1e9:.2f} GB, "
                  f"{res.seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
