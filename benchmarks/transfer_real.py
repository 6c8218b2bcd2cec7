"""What a pretrained start buys on real ultrasound: DDTI for development, the biopsy-labelled UD-TN sample as
the external set, every arm on the same folds.

Arms (every one on the same ``splits.json``):

* ``scratch``: ResNet-18 from random weights, thyro's default recipe (40 epochs, last weights);
* ``imagenet-probe``: ImageNet EfficientNet-Lite0 (the ``lite0`` extra), frozen, a linear probe on cached
  features (``train_backbone: cached``);
* ``imagenet-ft``: the same weights fine-tuned with the pretrained recipe (head at ``lr``, backbone at a tenth,
  BatchNorm statistics frozen at this batch size, new head at zero);
* ``imagenet-partial``: the same, the first five of nine stages frozen;
* ``imagenet-trunk``: the same five stages frozen and cached (``train_backbone: cached_trunk``): their activations
  computed once per image and its mirror, the rest fine-tuned on them (augmentation: the mirror alone);
* ``radiology-ft`` (``--simclr``): Lite0's ImageNet weights continued with ``thyro pretrain --mode simclr`` on
  DDTI's images (every image, the unlabelled ones included; labels unused), then fine-tuned like ``imagenet-ft``.

Scratch, the probe and the fine-tune run in one study with ``data.train_fractions: [0.25, 0.5, 1]`` (nested,
grouped, stratified subsets of each training fold: the data-efficiency curve, ``--fractions``); the other arms
in a second study on its ``splits.json``.  Statistics from thyro.stats (pROC-matched): AUROC with 95% CIs (cluster bootstrap
over patients where a patient has several images, else DeLong), paired comparisons of every arm against
scratch and of the fine-tune against the probe.

    python benchmarks/transfer_real.py --out .bench/transfer [--simclr] [--fractions]

Everything resumes (rerun the command).  Prints a Markdown table for BENCHMARKS.md and writes summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
LITE0 = "efficientnet_lite0"
FT = {"epochs": 10, "backbone_lr_mult": 0.1, "batchnorm": "auto", "warmup_epochs": 1}


def thyro(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "thyro", *args], check=True, cwd=REPO)


def prepare(out: Path) -> tuple[Path, Path]:
    ddti, udtn = out / "data" / "ddti" / "manifest.csv", out / "data" / "udtn" / "manifest.csv"
    if not ddti.is_file():
        thyro("data", "import", "ddti", str(SHARED / "ddti"), "--out", str(ddti.parent))
    if not udtn.is_file():
        thyro("data", "import", "folders", str(SHARED / "udtn-sample"), "--out", str(udtn.parent),
              "--label-source", "pathology")
    return ddti, udtn


def simclr_backbone(out: Path, ddti: Path, size: int, epochs: int) -> Path:
    """Lite0's ImageNet weights continued with SimCLR on every DDTI image (labels unused)."""
    backbone = out / "weights" / "lite0-ddti-simclr.safetensors"
    if not backbone.is_file():
        import pandas as pd

        df = pd.read_csv(ddti)
        corpus = out / "weights" / "corpus.csv"
        corpus.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"image": [str((ddti.parent / p).resolve()) for p in df["image"]], "class": "ddti"}).to_csv(
            corpus, index=False)
        thyro("pretrain", str(corpus), "--out", str(backbone), "--arch", LITE0, "--weights", "imagenet",
              "--mode", "simclr", "--epochs", str(epochs), "--batch-size", "32", "--size", str(size),
              "--optimizer", "adamw", "--lr", "0.0003")
    return backbone


def study_config(out: Path, name: str, ddti: Path, udtn: Path, size: int, arms: list[dict],
                 fractions: list[float] | None = None, splits: Path | None = None) -> Path:
    cfg = {"name": name,
           "data": {"manifest": str(ddti), "test_size": 0.12, "folds": 5, "seed": 2024,
                    "external": [{"name": "udtn", "manifest": str(udtn)}]},
           "preprocess": {"size": size},
           "arms": arms,
           "train": {"batch_size": 16, "tta_flip": True, "tensorboard": False}}
    if fractions:
        cfg["data"]["train_fractions"] = fractions
    if splits is not None:
        cfg["data"]["splits"] = str(splits)
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def arms(simclr: Path | None, scratch_epochs: int | None = None) -> list[dict]:
    out = [{"name": "scratch", "backbone": "resnet18", "weights": "none",
            **({"train": {"epochs": scratch_epochs}} if scratch_epochs else {})},
           {"name": "imagenet-probe", "backbone": LITE0, "weights": "imagenet", "train_backbone": "cached"},
           {"name": "imagenet-ft", "backbone": LITE0, "weights": "imagenet", "train": FT},
           {"name": "imagenet-partial", "backbone": LITE0, "weights": "imagenet",
            "train": {**FT, "freeze_stages": 5}},
           {"name": "imagenet-trunk", "backbone": LITE0, "weights": "imagenet", "train_backbone": "cached_trunk",
            "train": {**FT, "freeze_stages": 5}}]
    if simclr is not None:
        out.append({"name": "radiology-ft", "backbone": LITE0, "weights": {"file": str(simclr)}, "train": FT})
    return out


def summarise(runs: list[Path], pairs: list[tuple[str, str]]) -> dict:
    """AUROCs with CIs per arm, set and training fraction, and paired comparisons, from the runs' predictions
    (studies on the same splits)."""
    import pandas as pd

    from thyro.run import RunDir
    from thyro.stats import compare_paired, interval

    frames, jobs, arm_names = [], {}, []
    for run in runs:
        rd = RunDir(run)
        frames.append(rd.read_predictions().df)
        results = rd.read_results()
        if results is not None:
            jobs.update(results.jobs)
            arm_names += list(results.arms)
    preds = pd.concat(frames, ignore_index=True)
    out: dict = {"arms": {}, "pairs": {}}

    def rows(arm, split, fraction=1.0):
        df = preds[(preds["arm"] == arm) & (preds["split"] == split) & (preds["train_fraction"] == fraction)]
        df = df[~df["ensemble"].astype(bool)] if split == "val" else df[df["ensemble"].astype(bool)]
        return df.sort_values("image")

    for arm in arm_names:
        entry = {"seconds": sum(j.seconds for j in jobs.values() if j.arm == arm)}
        for split in ("val", "test", "udtn"):
            for fraction in sorted(set(preds["train_fraction"])):
                df = rows(arm, split, fraction)
                if df.empty or df["label"].nunique() < 2:
                    continue
                r = interval(df["label"].to_numpy(), df["probability"].to_numpy(), df["group"].to_numpy())
                entry.setdefault(split, {})[f"{fraction:g}"] = {"auroc": r.auroc, "lo": r.lower, "hi": r.upper,
                                                                "n": len(df), "method": r.method}
        out["arms"][arm] = entry
    for a, b in pairs:
        for split in ("val", "test", "udtn"):
            da, db = rows(a, split), rows(b, split)
            if da.empty or db.empty:
                continue
            m = da.merge(db, on=["image", "label", "group"], suffixes=("_a", "_b"))
            c = compare_paired(m["label"].to_numpy(), m["probability_a"].to_numpy(), m["probability_b"].to_numpy(),
                               m["group"].to_numpy())
            out["pairs"].setdefault(f"{a} vs {b}", {})[split] = {"diff": c.diff, "lo": c.lower, "hi": c.upper, "p": c.p_value,
                                                                 "method": c.method}
    return out


def markdown(summary: dict, fractions: bool) -> str:
    names = {"val": "out of fold (pooled)", "test": "test (fold mean)", "udtn": "UD-TN sample, biopsy (fold mean)"}
    lines = ["| arm | " + " | ".join(names.values()) + " | training time |", "| --- | ---: | ---: | ---: | ---: |"]
    for arm, e in summary["arms"].items():
        cells = []
        for split in names:
            r = (e.get(split) or {}).get("1")
            cells.append(f"{r['auroc']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]" if r else "-")
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {e['seconds'] / 60:.0f} min |")
    lines += ["", "| comparison (difference [95% CI], p) | " + " | ".join(names.values()) + " |",
              "| --- | ---: | ---: | ---: |"]
    for pair, per in summary["pairs"].items():
        cells = [f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}], p = {c['p']:.3f}" if (c := per.get(s)) else "-"
                 for s in names]
        lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    if fractions:
        lines += ["", "| data efficiency, out of fold | 25 % | 50 % | 100 % |", "| --- | ---: | ---: | ---: |"]
        for arm, e in summary["arms"].items():
            val = e.get("val") or {}
            lines.append(f"| {arm} | " + " | ".join(
                f"{val[f]['auroc']:.3f} [{val[f]['lo']:.3f}, {val[f]['hi']:.3f}]" if f in val else "-"
                for f in ("0.25", "0.5", "1")) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / ".bench" / "transfer")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--simclr", action="store_true", help="add the SimCLR-continued radiology-style arm")
    ap.add_argument("--simclr-epochs", type=int, default=20)
    ap.add_argument("--fractions", action="store_true", help="add the data-efficiency study (25/50/100 %%)")
    ap.add_argument("--only", nargs="*", help="arms to run (default all)")
    ap.add_argument("--scratch-epochs", type=int, help="the scratch arm's epochs (default: thyro's, 40)")
    ap.add_argument("--more-run", default="run-more",
                    help="the run folder (under OUT) of the arms after the first three (default run-more)")
    ap.add_argument("--dry-run", action="store_true", help="print the studies' plans and time estimates only")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("THYRO_CACHE_DIR", str(args.out / "cache"))
    t0 = time.perf_counter()
    ddti, udtn = prepare(args.out)
    simclr = simclr_backbone(args.out, ddti, args.size, args.simclr_epochs) if args.simclr else None
    chosen = [a for a in arms(simclr, args.scratch_epochs) if not args.only or a["name"] in args.only]
    first = [a for a in chosen if a["name"] in ("scratch", "imagenet-probe", "imagenet-ft")]
    rest = [a for a in chosen if a not in first]
    runs = [args.out / "run"]
    dry = ["--dry-run"] if args.dry_run else []
    if first:
        config = study_config(args.out, "transfer", ddti, udtn, args.size, first,
                              fractions=[0.25, 0.5, 1.0] if args.fractions else None)
        thyro("study", str(config), "--run-dir", str(runs[0]), *dry)
    else:  # only later arms: their study makes the same splits (the same data seed)
        runs = []
    if rest:
        runs.append(args.out / args.more_run)
        first_splits = args.out / "run" / "splits.json"
        more = study_config(args.out, "transfer-more", ddti, udtn, args.size, rest,
                            splits=first_splits if first_splits.is_file() and not args.dry_run else None)
        thyro("study", str(more), "--run-dir", str(runs[-1]), *dry)
    if args.dry_run:
        return
    from thyro.run import RunDir

    # the table covers every arm run in OUT (earlier commands' runs included), on the same splits
    runs = [r for r in sorted({args.out / "run", *args.out.glob("run-*"), *runs}) if (r / "results.json").is_file()]
    names = [arm for r in runs for arm in RunDir(r).read_results().arms]
    pairs = [(n, "scratch") for n in names if n != "scratch" and "scratch" in names]
    pairs += [(a, b) for a, b in (("imagenet-ft", "imagenet-probe"), ("imagenet-partial", "imagenet-ft"),
                                  ("imagenet-trunk", "imagenet-partial"),
                                  ("imagenet-trunk", "imagenet-ft"),
                                  ("radiology-ft", "imagenet-ft")) if a in names and b in names]
    summary = summarise(runs, pairs)
    fractions = args.fractions
    summary["wall_seconds"] = time.perf_counter() - t0
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(markdown(summary, fractions))
    print(f"\nwall time of this command: {summary['wall_seconds'] / 60:.0f} min; machine: {os.cpu_count()} CPU(s), "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
