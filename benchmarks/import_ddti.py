"""DDTI import throughput (images/s), duplicate hashing included.

Prints the median of 3 runs of ``import_ddti`` (XML parsing, outline checks, decoding and hashing
every image, grouping, writing the manifest), and, measured in the same run, a baseline that only
decodes every JPEG with Pillow (one thread), hashing alone with one thread and with the default
thread pool, and the pairwise pHash comparison and grouping on their own.

    python benchmarks/import_ddti.py [DDTI_DIR]      (default: ../shared/data/ddti)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from thyro.console import set_quiet
from thyro.data.dedup import assign_groups, compute_hashes, default_workers, hamming_matrix
from thyro.data.importers import import_ddti

REPO = Path(__file__).resolve().parents[1]


def _median_time(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ddti = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data" / "ddti"
    if not ddti.is_dir():
        sys.exit(f"DDTI not found at {ddti}; pass its folder as the first argument.")
    set_quiet(True)
    images = sorted(ddti.glob("*.jpg"))
    n = len(images)

    with tempfile.TemporaryDirectory() as tmp:
        result = {}

        def run_import():
            result["r"] = import_ddti(ddti, Path(tmp) / "out")

        t_import = _median_time(run_import)
        m = result["r"].manifest
        t_hash_1 = _median_time(lambda: compute_hashes(m, progress=False, workers=1))
        t_hash_n = _median_time(lambda: compute_hashes(m, progress=False))
        stored = m.df[["content_hash", "phash"]]
        t_group = _median_time(lambda: assign_groups(m, hashes=stored, progress=False), runs=5)

    def decode_only():
        for p in images:
            with Image.open(p) as im:
                np.asarray(im.convert("RGB"))

    t_decode = _median_time(decode_only)
    hashes = np.array([int(h, 16) for h in m.df["phash"]], dtype=np.uint64)
    t_ham = _median_time(lambda: hamming_matrix(hashes), runs=5)

    print(f"DDTI import ({n} images, {result['r'].counts['patients']} cases), median of 3 runs")
    print(f"  import incl. duplicate hashing : {t_import:7.2f} s   {n / t_import:7.1f} images/s")
    print(f"  baseline: Pillow decode only   : {t_decode:7.2f} s   {n / t_decode:7.1f} images/s")
    print(f"  import / decode-only time      : {t_import / t_decode:7.2f} x")
    print(f"  hashing only, 1 thread         : {t_hash_1:7.2f} s   {n / t_hash_1:7.1f} images/s")
    print(f"  hashing only, {default_workers()} thread(s)      : {t_hash_n:7.2f} s   {n / t_hash_n:7.1f} images/s"
          f"   ({t_hash_1 / t_hash_n:.2f}x)")
    print(f"  pairwise pHash Hamming ({n}x{n}): {t_ham * 1000:7.2f} ms")
    print(f"  grouping with stored hashes    : {t_group * 1000:7.2f} ms (union-find, near pairs, report)")
    print(f"  duplicates: {result['r'].duplicates.summary()}")


if __name__ == "__main__":
    main()
