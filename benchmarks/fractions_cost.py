"""What data-efficiency curves cost: a study with ``data.train_fractions`` against the same study without.

Both studies run on the same phantom cohort, splits and recipe (scratch ResNet-18, ROI crop), one after
the other in this process's machine; the table gives the jobs each trains and its wall time, and the
ratio. Training time grows with the images trained on (0.25 + 0.5 + 1.0 = 1.75 times the images of
``[1.0]``) plus a fixed cost per job (model set-up, validation, scoring).

    python benchmarks/fractions_cost.py
    python benchmarks/fractions_cost.py --patients 120 --size 64 --epochs 8 --fractions 0.25 0.5 1.0
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=120)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()

    from thyro.cli.console import set_quiet
    from thyro.data.phantom import generate_cohort
    from thyro.run import JOBS
    from thyro.train.study import run_study

    set_quiet(True)
    out = (args.out or Path(tempfile.mkdtemp(prefix="thyro-fractions-"))).resolve()
    os.environ.setdefault("THYRO_CACHE_DIR", str(out / "cache"))
    manifest = out / "data" / "manifest.csv"
    if not manifest.is_file():
        generate_cohort(manifest.parent, n_patients=args.patients, size=128, seed=0)
    rows = []
    for name, fractions in (("without", [1.0]), ("with", sorted(set(args.fractions) | {1.0}))):
        cfg = {
            "name": f"fractions-{name}",
            "data": {"manifest": str(manifest), "folds": args.folds, "train_fractions": fractions},
            "preprocess": {"size": args.size, "roi_crop": True, "roi_margin": 0.3},
            "arms": [{"name": "scratch", "weights": "none"}],
            "train": {"epochs": args.epochs, "device": "cpu", "tensorboard": False},
        }
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        run = out / f"run-{name}"
        start = time.perf_counter()
        run_study(path, run_dir=run, report=False)
        seconds = time.perf_counter() - start
        jobs = len(list((run / JOBS).rglob("done.json")))
        rows.append((name, fractions, jobs, seconds))
    base = rows[0][3]
    print(f"\n| {args.patients} phantom patients, {args.size} px, scratch ResNet-18, {args.folds} folds x "
          f"{args.epochs} epochs, {os.cpu_count()} CPU cores | fractions | jobs | minutes | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, fractions, jobs, seconds in rows:
        print(f"| {name} train_fractions | {json.dumps(fractions)} | {jobs} | {seconds / 60:.1f} | "
              f"{seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
