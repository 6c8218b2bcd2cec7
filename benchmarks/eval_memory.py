"""Peak resident memory of scoring at 224 px by batch size: ImageNet EfficientNet-Lite0, 256 random images, flip
test-time augmentation (what each job of a study does for its held-out fold, test and external sets).

    python benchmarks/eval_memory.py 256   # then 32: one process per batch size (the peak is per process)
"""

from __future__ import annotations

import resource
import sys

import numpy as np

from thyro.models import build_model
from thyro.models.inference import predict_proba

if __name__ == "__main__":
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    model, _ = build_model("efficientnet_lite0", "imagenet")
    images = np.random.default_rng(0).integers(0, 256, (256, 224, 224), dtype=np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    predict_proba(model, images, tta_flip=True, batch_size=batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"eval_batch_size {batch}: peak RSS {peak:.0f} MB (before scoring {before:.0f} MB)")
