"""``thyro data`` commands for preprocessing, the cache, previews and the synthetic data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import typer

from thyro.cli._help import command
from thyro.cli.console import console, info, is_quiet
from thyro.errors import ConfigError


def _parse_range(text: str) -> tuple[int, int]:

    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return int(lo), int(hi)
        return int(text), int(text)
    except ValueError:
        raise ConfigError(f"--images-per-patient must be N or LO-HI (e.g. 1-3), got {text!r}.") from None


def preview(
    manifest: Path = typer.Argument(..., help="Manifest CSV."),
    out: Path = typer.Option(..., "--out", "-o", help="Contact sheet PNG to write (a folder with --per-image)."),
    n: int | None = typer.Option(None, "--n", min=1, help="Number of images, drawn at random "
                                 "(default 16 on a sheet, all with --per-image)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML with a 'preprocess:' block (or the block alone)."),
    size: int | None = typer.Option(None, "--size", help="Override the output size; the sheet's pictures are as large."),
    roi_crop: bool | None = typer.Option(None, "--roi-crop/--no-roi-crop", help="Override ROI cropping."),
    inpaint_marks: bool | None = typer.Option(None, "--inpaint-marks/--no-inpaint-marks", help="Override mark removal."),
    per_image: bool = typer.Option(False, "--per-image", help="Write one full-resolution PNG per image into OUT "
                                   "(and OUT/preprocess.csv) instead of a sheet."),
    report: Path | None = typer.Option(None, "--report", help="Also write the per-image report of every image "
                                       "(scan area, share of the frame kept, marks) to this CSV."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random choice of images."),
) -> None:
    """Show raw images (scan area yellow, ROI green, marks red) beside what the model sees.

    A contact sheet of a random sample, or with --per-image one full-resolution picture per image.
    """
    from thyro.data.preprocess import (
        load_preprocess_config,  # lazy: thyro.data.preprocess loads the heavy libraries; keeps --help light
    )
    from thyro.data.preview import (  # lazy: thyro.data.preview loads the heavy libraries; keeps --help light
        preprocess_report,
        preview_images,
        preview_sheet,
    )

    cfg = load_preprocess_config(config, size=size, roi_crop=roi_crop, inpaint_marks=inpaint_marks)
    if per_image:
        written = preview_images(manifest, out, cfg, n=n, seed=seed)
        info(f"wrote {len(written)} picture(s) and preprocess.csv to {out}")
    else:
        path = preview_sheet(manifest, out, cfg, n=n or 16, seed=seed)
        info(f"wrote contact sheet {path}")
    if report is not None:
        info(f"wrote the per-image report {preprocess_report(manifest, report, cfg)}")


def phantom(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (images/ and manifest.csv)."),
    patients: int = typer.Option(120, "--patients", min=1, help="Synthetic patients (one nodule each)."),
    images_per_patient: str = typer.Option("1-3", "--images-per-patient", help="Views per patient: N or LO-HI."),
    size: int = typer.Option(128, "--size", min=64, help="Image side in pixels (>= 64)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    frame: bool = typer.Option(True, "--frame/--no-frame", help="Draw a scanner frame around the sector."),
) -> None:
    """Generate a synthetic thyroid-ultrasound cohort with TI-RADS features and known malignancy probabilities."""
    from thyro.data.phantom import (  # lazy: thyro.data.phantom loads the heavy libraries; keeps --help light
        best_auroc,
        generate_cohort,
    )
    from thyro.fileio import read_csv  # lazy: thyro.fileio loads the heavy libraries; keeps --help light

    path = generate_cohort(out, n_patients=patients, images_per_patient=_parse_range(images_per_patient),
                           size=size, seed=seed, framed=frame)
    df = read_csv(path)
    n_mal = int((df["label"] == 1).sum())
    console.print(f"phantom cohort: {path}")
    console.print(f"  images {len(df)}, patients {df['patient_id'].nunique()}, size {size} px")
    console.print(f"  malignant {n_mal} ({n_mal / len(df):.0%}), benign {len(df) - n_mal}")
    counts = df["tirads"].value_counts().sort_index()
    console.print("  TI-RADS levels: " + ", ".join(f"TR{k}: {v}" for k, v in counts.items()))
    if 0 < n_mal < len(df):
        console.print(f"  best achievable AUROC (p_malignant vs labels): {best_auroc(path):.3f}")


def corpus(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (modality/region/class/*.png and corpus.csv)."),
    n_per_class: int = typer.Option(100, "--n-per-class", min=1, help="Images per class."),
    size: int = typer.Option(128, "--size", min=64, help="Image side in pixels (>= 64)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    classes: str | None = typer.Option(None, "--classes", help="Comma-separated subset of classes (modality/region/class)."),
) -> None:
    """Generate a synthetic multi-class radiology corpus (RadImageNet layout) for pretraining."""
    from thyro.data.phantom import (
        generate_corpus,  # lazy: thyro.data.phantom loads the heavy libraries; keeps --help light
    )
    from thyro.fileio import read_csv  # lazy: thyro.fileio loads the heavy libraries; keeps --help light

    chosen = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    path = generate_corpus(out, n_per_class=n_per_class, size=size, seed=seed, classes=chosen)
    df = read_csv(path)
    console.print(f"radiology corpus: {path}")
    console.print(f"  images {len(df)}, classes {df['class'].nunique()}, size {size} px")
    for modality, sub in df.groupby("modality"):
        console.print(f"  {modality}: {', '.join(sorted(sub['class'].unique()))}")


def cache(
    manifest: Path = typer.Argument(..., help="Manifest CSV."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML with a 'preprocess:' block (or the block alone)."),
    size: int | None = typer.Option(None, "--size", help="Override the output size."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Cache folder (default $THYRO_CACHE_DIR/images or ~/.cache/thyro/images)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes (default: usable CPUs less one, at most 8)."),
    hash_content: bool = typer.Option(False, "--hash-content", help="Key on file contents, not size and modification time."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Delete this cache and build it again."),
) -> None:
    """Build (or find) the preprocessed image cache of a manifest and report it."""

    from thyro.data.cache import (  # lazy: thyro.data.cache loads the heavy libraries; keeps --help light
        ImageCache,
        cache_key,
        default_cache_dir,
    )
    from thyro.data.preprocess import (
        load_preprocess_config,  # lazy: thyro.data.preprocess loads the heavy libraries; keeps --help light
    )

    cfg = load_preprocess_config(config, size=size)
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    key = cache_key(manifest, cfg, hash_content=hash_content)
    existed = (folder / key / "meta.json").is_file() and not rebuild
    t0 = time.perf_counter()
    c = ImageCache.build(manifest, cfg, cache_dir=folder, workers=workers, hash_content=hash_content, rebuild=rebuild)
    seconds = time.perf_counter() - t0
    console.print(f"image cache {'reused' if existed else 'built'}: {c.path}")
    console.print(f"  key {c.key}, images {len(c)}, {c.size}x{c.size} uint8, {c.nbytes / 1e6:.1f} MB, {seconds:.1f} s")
    summary = c.meta.get("preprocess_summary")
    if summary:
        methods = ", ".join(f"{v} {k}" for k, v in sorted(summary["scan_methods"].items()))
        console.print(f"  scan area: {methods}; frame kept: median {summary['frame_kept_median']:.0%}, "
                      f"lowest {summary['frame_kept_min']:.0%}; marks removed in {summary['images_with_marks']} "
                      f"image(s); per image: {c.path / 'preprocess.csv'}")
        if summary["n_warnings"]:
            console.print(f"  [yellow]{summary['n_warnings']} image(s) kept whole (scan area not understood): "
                          f"{', '.join(summary['warned'][:5])}{' ...' if summary['n_warnings'] > 5 else ''}[/]")


def audit(
    manifest: Path = typer.Argument(..., help="Manifest CSV (labels and groups)."),
    model: Path | None = typer.Option(None, "--model", help="Model package: also score it with and without marks."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for audit.json and audit_images.csv "
                                    "(a study's run directory puts the audit in its report)."),
    splits: Path | None = typer.Option(None, "--splits", help="Splits JSON: score the model on its --on images."),
    on: Literal["test", "dev", "all"] = typer.Option("test", "--on", help="With --splits: test, dev or all."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Preprocessing (without --model): YAML with a "
                                       "'preprocess:' block."),
    folds: int = typer.Option(5, "--folds", min=2, help="Group folds of the marks-only classifier."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap CIs."),
) -> None:
    """Shortcut audit: do burned-in marks (calipers, text, icons) predict the label?

    Reports how much of each image is marks, whether marks alone predict the label (AUROC with CI, folds grouped
    by patient), and with --model the model's AUROC with marks left in vs removed (paired test).
    """
    from thyro.data.preprocess import (
        load_preprocess_config,  # lazy: thyro.data.preprocess loads the heavy libraries; keeps --help light
    )
    from thyro.use.audit import (
        audit as run_audit,  # lazy: thyro.use.audit loads the heavy libraries; keeps --help light
    )

    cfg = load_preprocess_config(config) if config is not None else None
    res = run_audit(manifest, model, out=out, splits=splits, on=on, cfg=cfg, folds=folds, seed=seed,
                    progress=not is_quiet())
    from thyro.data.inspection import (
        label_line,  # lazy: thyro.data.inspection loads the heavy libraries; keeps --help light
    )
    from thyro.data.manifest import (
        LabelMeaning,  # lazy: thyro.data.manifest loads the heavy libraries; keeps --help light
    )
    from thyro.stats.format import format_p  # lazy: thyro.stats.format loads the heavy libraries; keeps --help light

    marks = res["marks"]["overall"]
    meaning = LabelMeaning.from_dict(res["labels"]) if res.get("labels") else None
    console.print(f"shortcut audit of {res['n_images']} image(s) ({manifest})", markup=False, soft_wrap=True)
    console.print(f"  {label_line(meaning)}", markup=False, soft_wrap=True)
    if marks.get("n"):
        console.print(f"  marks in {marks['images_with_marks']} of {marks['n']} image(s); share of the crop: "
                      f"median {marks['median']:.2%}, 90th percentile {marks['p90']:.2%}, max {marks['max']:.2%}")
        for label, sub in sorted(res["marks"]["by_label"].items()):
            names = (meaning.positive, meaning.negative) if meaning is not None else ("label 1", "label 0")
            name = names[0] if label == "1" else names[1]
            console.print(f"    {name}: marks in {sub['share_with_marks']:.0%}, calipers in "
                          f"{sub['share_with_calipers']:.0%}, median share {sub['median']:.2%}")
    mo = res["marks_only"]
    if mo.get("auroc") is None:
        console.print(f"  marks alone: {mo.get('note')}")
    else:
        console.print(f"  marks alone predict the label with AUROC {mo['auroc']:.3f} [{mo['lower']:.3f}, "
                      f"{mo['upper']:.3f}] ({mo['method']}, {mo['folds']} group folds): {mo['interpretation']}")
    if "model" in res and "comparison" in res["model"]:
        m, c = res["model"], res["model"]["comparison"]
        failed = f" ({m['n_failed']} could not be scored; model_error in audit_images.csv)" if m.get("n_failed") else ""
        console.print(f"  model on {m['n']} image(s){failed}: AUROC {m['auroc_marks']['auroc']:.3f} with marks, "
                      f"{m['auroc_clean']['auroc']:.3f} with marks removed; difference {c['diff']:+.3f} "
                      f"[{c['lower']:+.3f}, {c['upper']:+.3f}], {format_p(c['p_value'])}: {m['interpretation']}")
    if res.get("written"):
        info(f"wrote {res['written']} (and audit_images.csv beside it)")


def add_commands(data_app: typer.Typer) -> None:
    """Add the preprocessing/phantom commands to the ``data`` group."""
    command(data_app, "preview", examples=[
        "thyro data preview data/mine/manifest.csv --out sheet.png",
        "thyro data preview data/mine/manifest.csv --out previews/ --per-image --size 512",
        "thyro data preview data/mine/manifest.csv --out sheet.png --config configs/jacr2024.yaml"])(preview)
    command(data_app, "phantom", examples=["thyro data phantom --out phantom/",
                                           "thyro data phantom --out phantom/ --patients 300 --size 256 --seed 1"])(phantom)
    command(data_app, "corpus", examples=["thyro data corpus --out corpus/ --n-per-class 50"])(corpus)
    command(data_app, "cache", examples=["thyro data cache data/mine/manifest.csv --config configs/jacr2024.yaml",
                                         "thyro data cache data/mine/manifest.csv --size 128 --rebuild"])(cache)
    command(data_app, "audit", examples=[
        "thyro data audit data/mine/manifest.csv --out audit/",
        "thyro data audit data/mine/manifest.csv --model model/ --splits runs/jacr2024/splits.json --out runs/jacr2024"
    ])(audit)
