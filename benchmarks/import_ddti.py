"""DDTI import throughput (images/s), duplicate hashing included.

Three rounds; each round times, one after the other (so that a busy machine slows all of them alike):

* ``import_ddti``: XML parsing, outline checks, decoding and hashing every image (thread pool),
  grouping, writing the manifest;
* a baseline that only decodes every JPEG to RGB with Pillow, in one thread;
* hashing alone (decode, content hash, pHash) in one thread and in the default thread pool.

Medians of the rounds are printed, then the pairwise pHash comparison and the grouping on their own.

    python benchmarks/import_ddti.py [DDTI_DIR]      (default: ../shared/data/ddti)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from thyro.cli.console import set_quiet
from thyro.data.dedup import assign_groups, compute_hashes, default_workers, hamming_matrix
from thyro.data.importers import import_ddti

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 3


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ddti = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data" / "ddti"
    if not ddti.is_dir():
        sys.exit(f"DDTI not found at {ddti}; pass its folder as the first argument.")
    set_quiet(True)
    images = sorted(ddti.glob("*.jpg"))
    n = len(images)
    workers = default_workers()

    def decode_only():
        for p in images:
            with Image.open(p) as im:
                np.asarray(im.convert("RGB"))

    times: dict[str, list[float]] = {"import": [], "decode": [], "hash1": [], "hashN": []}
    with tempfile.TemporaryDirectory() as tmp:
        result = None
        for r in range(ROUNDS):
            out = Path(tmp) / f"out{r}"
            t0 = time.perf_counter()
            result = import_ddti(ddti, out)
            times["import"].append(time.perf_counter() - t0)
            m = result.manifest
            times["decode"].append(_time(decode_only))
            times["hash1"].append(_time(lambda: compute_hashes(m, progress=False, workers=1)))
            times["hashN"].append(_time(lambda: compute_hashes(m, progress=False, workers=workers)))
        stored = m.df[["content_hash", "phash"]]
        t_group = statistics.median(_time(lambda: assign_groups(m, hashes=stored, progress=False)) for _ in range(5))
    hashes = np.array([int(h, 16) for h in m.df["phash"]], dtype=np.uint64)
    t_ham = statistics.median(_time(lambda: hamming_matrix(hashes)) for _ in range(5))
    med = {k: statistics.median(v) for k, v in times.items()}

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"DDTI import: {n} images, {result.counts['patients']} cases; {cpus} CPU(s); median of {ROUNDS} rounds")
    print(f"  import incl. duplicate hashing   : {med['import']:6.2f} s  {n / med['import']:6.1f} images/s")
    print(f"  baseline: Pillow decode, 1 thread: {med['decode']:6.2f} s  {n / med['decode']:6.1f} images/s")
    print(f"  hashing alone, 1 thread          : {med['hash1']:6.2f} s  {n / med['hash1']:6.1f} images/s")
    print(f"  hashing alone, {workers} thread(s)      : {med['hashN']:6.2f} s  {n / med['hashN']:6.1f} images/s"
          f"  ({med['hash1'] / med['hashN']:.2f}x vs 1 thread)")
    print(f"  import time / decode-only time   : {med['import'] / med['decode']:6.2f}")
    print(f"  pairwise pHash Hamming {n}x{n}   : {t_ham * 1000:6.2f} ms")
    print(f"  grouping with stored hashes      : {t_group * 1000:6.2f} ms (union-find, near pairs, report)")
    print(f"  duplicates: {result.duplicates.summary()}")


if __name__ == "__main__":
    main()
