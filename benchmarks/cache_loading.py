"""Batch loading from the image cache vs decoding the image files on every access.

Measured in one run on the same images, the same batches (same indices, same batch size):

* ``cache``: ``ImageCache.get(indices)``, a (B, S, S) uint8 batch from the memory-mapped file;
* ``pillow``: ``PIL.Image.open(path).convert("L").resize((S, S))`` per image, the least a loader
  that decodes per access must do;
* ``pillow+preprocess``: ``Preprocessor.from_file`` per image (what the cache stores: frame removal,
  aspect-preserving resize), i.e. what a per-epoch decoding loader would really have to do.

Also reports preprocessing throughput (images/s, one process) and the cache build time with the
process pool.  Figures are medians over ``--repeats`` passes.

Usage::

    python benchmarks/cache_loading.py                      # DDTI at ../shared/data/ddti, 224 px
    python benchmarks/cache_loading.py --data phantom --size 128
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from thyro.cli.console import set_quiet
from thyro.data.cache import ImageCache, default_workers
from thyro.data.manifest import manifest_from_records, write_manifest
from thyro.data.phantom import generate_cohort
from thyro.data.preprocess import PreprocessConfig, Preprocessor

REPO = Path(__file__).resolve().parents[1]


def ddti_manifest(ddti: Path, out: Path) -> Path:
    images = sorted(ddti.glob("*.jpg"))
    if not images:
        sys.exit(f"no DDTI images under {ddti}; use --data phantom")
    recs = [{"image": str(p), "label": "", "patient_id": p.stem.split("_")[0]} for p in images]
    man = manifest_from_records(recs, Path("/"))
    return write_manifest(man.df, out / "manifest.csv", root=Path("/"))


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["ddti", "phantom"], default="ddti")
    ap.add_argument("--ddti", type=Path, default=REPO.parent / "shared" / "data" / "ddti")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=15, help="batches per pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None, help="cache build processes to compare with 1 (default: usable CPUs less one, at least 2)")
    args = ap.parse_args()
    set_quiet(True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.data == "ddti":
            manifest = ddti_manifest(args.ddti, tmp)
        else:
            manifest = generate_cohort(tmp / "phantom", n_patients=250, size=max(128, args.size), seed=0)
        cfg = PreprocessConfig(size=args.size)
        pre = Preprocessor(cfg)
        from thyro.data.manifest import read_manifest

        man = read_manifest(manifest)
        paths = man.paths()
        n = len(paths)
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPU(s) visible, Python {platform.python_version()}")
        print(f"data: {args.data}, {n} images, preprocess to {args.size}x{args.size}, batch {args.batch}, "
              f"{args.batches} batches per pass, median of {args.repeats} passes")

        # preprocessing throughput, one process
        sample = paths[: min(n, 200)]
        t = timed(lambda: [pre.from_file(p) for p in sample], max(1, args.repeats // 2))
        pre_ips = len(sample) / statistics.median(t)
        print(f"preprocessing (decode + frame removal + resize), 1 process: {pre_ips:8.1f} images/s")

        workers = args.workers or max(2, default_workers())
        for w in sorted({1, workers}):
            t0 = time.perf_counter()
            cache = ImageCache.build(manifest, cfg, cache_dir=tmp / f"cache{w}", workers=w)
            build_s = time.perf_counter() - t0
            print(f"cache build, {w} process(es): {build_s:6.2f} s = {n / build_s:8.1f} images/s, "
                  f"{cache.nbytes / 1e6:.1f} MB" + ("  (pool used only from 200 images)" if w > 1 and n < 200 else ""))

        rng = np.random.default_rng(0)
        batches = [rng.choice(n, size=min(args.batch, n), replace=False) for _ in range(args.batches)]
        n_img = sum(len(b) for b in batches)

        def from_cache():
            for b in batches:
                cache.get(b)

        def from_pillow():
            for b in batches:
                np.stack([np.asarray(Image.open(paths[i]).convert("L").resize((args.size, args.size), Image.BILINEAR))
                          for i in b])

        def from_pillow_pre():
            for b in batches:
                np.stack([pre.from_file(paths[i]) for i in b])

        from_cache()  # page cache warm, as in every epoch after the first
        rows = []
        for name, fn in [("cache (memmap)", from_cache), ("pillow decode+resize", from_pillow),
                         ("pillow decode+preprocess", from_pillow_pre)]:
            t = statistics.median(timed(fn, args.repeats))
            rows.append((name, n_img / t))
        base = rows[0][1]
        print(f"{'loader':28s} {'images/s':>12s} {'cache is x faster':>18s}")
        for name, ips in rows:
            print(f"{name:28s} {ips:12.1f} {base / ips:18.1f}")


if __name__ == "__main__":
    main()
