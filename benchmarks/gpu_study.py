"""The reference protocol at seed scale on one GPU: end-to-end images/s and wall time.

About 800 phantom images at 224 px, 3 arms (scratch and two stand-in "pretrained" arms: seeded random
ResNet-18 files, since speed does not depend on weight values) x 5 folds x 50 epochs, no early stopping
(``train.selection: last``), through the real study runner (cache, splits, training, out-of-fold and
test prediction, merge), with ``--jobs N`` jobs trained at once (one process each, on the one GPU).

    bash benchmarks/gpu_study.sh                      # installs thyro without dependencies, then runs this
    python benchmarks/gpu_study.py --jobs 8 --epochs 50 --images 800 --size 224 --batch-size 64
    python benchmarks/gpu_study.py --device cpu --jobs 2 --images 60 --size 32 --epochs 1 --folds 2   # dry run

Prints one table: the study's wall time, training images processed, training images/s summed over the
jobs (all images trained on divided by the study's whole wall time, data preparation and evaluation
included), the median per-job rate, and the bare training step's rate on the same device for scale.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import yaml


def _chunk(args):
    out, n_patients, size, seed = args
    from thyro.data.phantom import generate_cohort

    return str(generate_cohort(out, n_patients=n_patients, size=size, seed=seed))


def make_cohort(root: Path, images: int, size: int, workers: int) -> Path:
    """Generate the phantom in parallel chunks (one seed each) and join their manifests."""
    from thyro.data.manifest import manifest_from_records, read_manifest, write_manifest

    manifest_path = root / "manifest.csv"
    if manifest_path.exists():
        return manifest_path
    patients = max(1, images // 2)  # 1-3 views per patient: about 2 images each
    per = -(-patients // workers)
    jobs = [(root / f"chunk{k}", per, size, 1000 + k) for k in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        paths = list(pool.map(_chunk, jobs))
    frames = []
    for k, p in enumerate(paths):
        df = read_manifest(p).df
        df["image"] = f"chunk{k}/" + df["image"]
        df["patient_id"] = f"c{k}-" + df["patient_id"]
        df["group"] = f"c{k}-" + df["group"]
        frames.append(df)
    df = pd.concat(frames, ignore_index=True).head(images)
    write_manifest(manifest_from_records(df.to_dict("records"), root).df, manifest_path, root=root)
    return manifest_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/thyro-gpu-study"))
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--phantom-size", type=int, default=128, help="phantom render size (preprocessing resizes)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--checkpoint-interval-s", type=float, default=10.0,
                    help="train.checkpoint_interval_s (0: last.pt every epoch)")
    ap.add_argument("--jobs", type=int, default=8, help="jobs trained at once (thyro study --jobs)")
    ap.add_argument("--compile", action="store_true", help="train.compile: true (torch.compile)")
    ap.add_argument("--report", action="store_true", help="also time the HTML report")
    args = ap.parse_args()

    import torch

    from thyro.models import build_model, save_model
    from thyro.train.study import run_study

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("THYRO_CACHE_DIR", str(out / "cache"))
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"device: {dev}; torch {torch.__version__}; CPUs {os.cpu_count()}")
    t0 = time.perf_counter()
    manifest = make_cohort(out / "phantom", args.images, args.phantom_size, args.workers)
    print(f"phantom: {len(pd.read_csv(manifest))} images in {time.perf_counter() - t0:.1f} s")

    weights = {}
    for name, seed in (("imagenet_standin", 1), ("radimagenet_standin", 2)):
        path = out / f"{name}.safetensors"
        if not path.exists():
            model, _ = build_model("resnet18", "none", seed=seed)
            save_model(path, model)
        weights[name] = str(path)
    cfg = {
        "name": "gpu-bench",
        "data": {"manifest": str(manifest), "test_size": 0.12, "folds": args.folds, "seed": 2024},
        "preprocess": {"size": args.size, "remove_frame": True},
        "arms": [{"name": "scratch", "weights": "none"},
                 {"name": "imagenet", "weights": {"file": weights["imagenet_standin"]}},
                 {"name": "radimagenet", "weights": {"file": weights["radimagenet_standin"]}}],
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "selection": "last",
                  "device": args.device, "tensorboard": False, "compile": args.compile,
                  "checkpoint_interval_s": args.checkpoint_interval_s},
    }
    config = out / "study.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run_dir = out / f"run-bs{args.batch_size}-j{args.jobs}{'-compile' if args.compile else ''}"
    t1 = time.perf_counter()
    results = run_study(config, run_dir=run_dir, report=False, workers=args.jobs)
    study_s = time.perf_counter() - t1
    jobs = list(results.jobs.values())
    trained = sum(j.train_images_per_second * j.seconds for j in jobs)  # images each job's loop trained on
    rates = [j.train_images_per_second for j in jobs]
    bare = bare_step_rate(args.size, 256, args.device)
    print()
    print(f"| {dev}, {args.images} images at {args.size} px, {len(jobs)} jobs x {args.epochs} epochs, "
          f"batch {args.batch_size}, --jobs {args.jobs}{', compile' if args.compile else ''} | figure |")
    print("| --- | ---: |")
    print(f"| whole study (wall) | {study_s:.1f} s |")
    print(f"| training images processed | {trained:,.0f} |")
    print(f"| training images/s summed over jobs (end to end) | {trained / study_s:,.0f} |")
    print(f"| per-job training rate (median) | {statistics.median(rates):,.0f} img/s |")
    print(f"| bare ResNet-18 step, batch 256, same device | {bare:,.0f} img/s |")
    for arm, a in results.arms.items():
        print(f"| {arm}: out-of-fold / test AUROC | {a.oof_auroc:.3f} / {a.test_auroc:.3f} |")
    if args.report:
        from thyro.report import build_report

        t2 = time.perf_counter()
        build_report(run_dir)
        print(f"| report | {time.perf_counter() - t2:.1f} s |")
    print(f"\ntotal wall including phantom: {time.perf_counter() - t0:.1f} s")


def bare_step_rate(size: int, batch: int, device: str, steps: int = 20) -> float:
    """Images/s of a bare ResNet-18 training step (bf16 autocast on CUDA), data already on the device."""
    import torch

    from thyro.models import build_model

    dev = torch.device(device)
    model, _ = build_model("resnet18", "none")
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = batch if dev.type == "cuda" else 8
    x = torch.rand(batch, 1, size, size, device=dev)
    y = (torch.rand(batch, device=dev) > 0.5).float()
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    for i in range(steps + 5):
        if i == 5:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        with ctx:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


if __name__ == "__main__":
    main()
