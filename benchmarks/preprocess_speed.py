"""Preprocessing speed per image: today's pipeline against the one before scan areas and marks.

Every cache build runs the preprocessing once per image, so its cost per image is the figure that
matters.  Measured in one process, on the same files, in interleaved rounds (so a busy machine
slows every variant alike), decoding included (``Preprocessor.from_file``):

* ``v1`` and ``v1 + coloured marks``: ``src/thyro/data/preprocess.py`` as it was at
  ``--baseline-rev`` (preprocessing version 1: black-border crop; coloured-mark inpainting off by
  default), loaded from git;
* ``now, marks off``: today's scan-area detection and resize, no mark removal;
* ``now (defaults)``: today's defaults (scan area, coloured and white marks found and inpainted).

Reports the median milliseconds per image over ``--repeats`` rounds, images per second, and the
ratio to ``v1``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/preprocess_speed.py            # DDTI at ../shared/data/ddti
    python benchmarks/preprocess_speed.py --data ../shared/data/udtn-sample --repeats 5
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from thyro.data.preprocess import PREPROCESS_VERSION, PreprocessConfig, Preprocessor

REPO = Path(__file__).resolve().parents[1]
#: The last commit with preprocessing version 1 (before scan areas from the layout and white marks).
BASELINE_REV = "c844358"


def load_baseline(rev: str):
    """The preprocessing module as it was at ``rev`` (imported from a temporary copy)."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:src/thyro/data/preprocess.py"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"cannot read the baseline preprocessing at {rev!r} from git ({exc}); pass --baseline-rev")
    path = Path(tempfile.mkdtemp(prefix="thyro-bench-")) / "preprocess_baseline.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("preprocess_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ddti",
                    help="Folder of images (JPEG/PNG), searched recursively.")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--limit", type=int, default=0, help="Use only the first N images (0: all).")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    args = ap.parse_args()

    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.limit:
        files = files[:args.limit]
    if not files:
        sys.exit(f"no images under {args.data}")
    cv2.setNumThreads(1)
    old = load_baseline(args.baseline_rev)
    variants = {
        "v1 (black-border crop)": old.Preprocessor(old.PreprocessConfig(size=args.size)),
        "v1 + coloured marks": old.Preprocessor(old.PreprocessConfig(size=args.size, inpaint_marks=True)),
        "now, marks off": Preprocessor(PreprocessConfig(size=args.size, inpaint_marks=False)),
        "now (defaults: scan area + marks)": Preprocessor(PreprocessConfig(size=args.size)),
    }
    for pre in variants.values():  # warm up (imports, OpenCV's first calls)
        pre.from_file(files[0])
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, pre in variants.items():
            t0 = time.perf_counter()
            for path in files:
                pre.from_file(path)
            times[name].append((time.perf_counter() - t0) / len(files))
    base = statistics.median(times["v1 (black-border crop)"])
    print(f"# preprocessing speed, {len(files)} images from {args.data}, {args.size} px, one process, "
          f"median of {args.repeats} interleaved rounds")
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; baseline {args.baseline_rev}, now version {PREPROCESS_VERSION}")
    print("| variant | ms / image | images/s | ratio to v1 |")
    print("| --- | ---: | ---: | ---: |")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e3:.1f} | {1 / med:.0f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
