"""Commands of the data area: ``thyro data ...``."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.table import Table

from thyro.cli._help import command, group
from thyro.cli.console import console, err_console, is_quiet
from thyro.errors import DataError

data_app = group(
    "Import, validate, inspect and split image data; preview preprocessing, audit marks, make synthetic data.",
    ["thyro data import folders images/ --out data/mine",
     "thyro data validate data/mine/manifest.csv",
     "thyro data preview data/mine/manifest.csv --out sheet.png"])
import_app = group(
    """Bring images and labels in as a manifest (manifest.csv in --out; images are referenced, not copied).

    Duplicate images are found and merged with their patients into leakage groups. Image paths in the
    manifest are relative to the manifest's folder.
    """,
    ["thyro data import folders images/ --out data/mine --patient-pattern '^(P[0-9]+)_'",
     "thyro data import ddti ../shared/data/ddti --out data/ddti",
     "thyro data import csv my_table.csv --out data/mine --label-source pathology"])
data_app.add_typer(import_app, name="import")


@command(import_app, "ddti", examples=["thyro data import ddti ../shared/data/ddti --out data/ddti", "thyro data import ddti ddti/ --out data/ddti-4a --positive-from 4a --force"])
def import_ddti_cmd(
    path: Path = typer.Argument(..., help="DDTI folder with {case}_{k}.jpg images (and {case}.xml files)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for manifest.csv and import_report.json."),
    xml_dir: Path | None = typer.Option(None, "--xml-dir", help="Folder of the {case}.xml files, if not beside the images."),
    positive_from: str = typer.Option("4c", "--positive-from",
                                      help="Lowest TI-RADS category labelled 1 (malignant/suspicious): 4a, 4b, 4c or 5. "
                                           "Default 4c: 4c and 5 are positive."),
    strict: bool = typer.Option(False, "--strict", help="Stop on warnings too (unreadable outlines, images without XML)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing manifest in --out (refused otherwise)."),
    near_threshold: int = typer.Option(4, "--near-threshold",
                                       help="Largest pHash Hamming distance (of 64 bits) counted as a near duplicate; "
                                            "-1 turns near-duplicate detection off (identical images are always found)."),
) -> None:
    """Import the Digital Database of Thyroid Images: labels from <tirads>, outlines as ROI, patient = case.

    DDTI's labels are TI-RADS-derived (suspicious from --positive-from on), not pathology; the manifest says so.
    """
    from thyro.data.importers import (
        import_ddti,  # lazy: thyro.data.importers loads the heavy libraries; keeps --help light
    )

    _refuse_overwrite(out / "manifest.csv", force)
    _show_import(import_ddti(path, out, xml_dir=xml_dir, positive_from=positive_from, strict=strict,
                             near_threshold=near_threshold, force=force))


def _regex(value: str | None) -> str | None:
    """``--patient-pattern``: refused here, naming the option, when it is not a regular expression."""
    if value:
        try:
            re.compile(value)
        except re.error as exc:
            raise typer.BadParameter(f"{value!r} is not a regular expression ({exc}).") from None
    return value


@command(import_app, "folders", examples=["thyro data import folders images/ --out data/mine", "thyro data import folders images/ --out data/mine --patient-pattern '^(?P<patient>[A-Z]+[0-9]+)_'", "thyro data import folders scans/ --out data/site-b --classes 'tumour=1,normal=0' --label-source pathology"])
def import_folders_cmd(
    path: Path = typer.Argument(..., help="Root folder; class folders (benign/, malignant/, ...) at any depth below it."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for manifest.csv and import_report.json."),
    classes: str | None = typer.Option(None, "--classes",
                                       help="Folder names to labels, e.g. 'tumour=1,normal=0' (case-insensitive; "
                                            "benign=0 and malignant=1 are built in; NAME= imports unlabelled)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing manifest in --out (refused otherwise)."),
    near_threshold: int = typer.Option(4, "--near-threshold",
                                       help="Largest pHash Hamming distance (of 64 bits) counted as a near duplicate; "
                                            "-1 turns near-duplicate detection off (identical images are always found)."),
    label_source: str | None = typer.Option(None, "--label-source",
                                            help="How the labels were obtained: pathology, cytology, tirads, synthetic "
                                                 "or unknown (recorded in the manifest; reports and models state it)."),
    label_definition: str | None = typer.Option(None, "--label-definition",
                                                help="What label 1 means when it is not malignancy, e.g. 'TI-RADS >= 4'."),
    patient_pattern: str | None = typer.Option(None, "--patient-pattern", callback=_regex,
                                               help="Regular expression that reads the patient from each file name "
                                                    "(from the path below PATH when it has a '/'): its group named "
                                                    "'patient', else its first group, is the patient id, e.g. "
                                                    "'^(P[0-9]+)_' for P0012_2.png. A file it does not match stops "
                                                    "the import, naming the file. Default: the file name without "
                                                    "extension."),
) -> None:
    """Import one folder per class (benign/, malignant/ or your names), recursively, as a manifest.

    The patient is the file name without its extension unless --patient-pattern reads it from the name.
    """
    from thyro.data.importers import (
        import_folders,  # lazy: thyro.data.importers loads the heavy libraries; keeps --help light
    )

    _refuse_overwrite(out / "manifest.csv", force)
    _show_import(import_folders(path, out, classes=classes, near_threshold=near_threshold, force=force,
                                label_source=label_source, label_definition=label_definition,
                                patient_pattern=patient_pattern))


@command(import_app, "csv", examples=["thyro data import csv my_table.csv --out data/mine", "thyro data import csv site-b.csv --out data/site-b --label-source cytology --force"])
def import_csv_cmd(
    path: Path = typer.Argument(..., help="CSV in the manifest schema (image, label, patient_id, group, roi, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for manifest.csv (image paths are rewritten)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing manifest in --out (refused otherwise)."),
    near_threshold: int = typer.Option(4, "--near-threshold",
                                       help="Largest pHash Hamming distance (of 64 bits) counted as a near duplicate; "
                                            "-1 turns near-duplicate detection off (identical images are always found)."),
    label_source: str | None = typer.Option(None, "--label-source",
                                            help="How the labels were obtained: pathology, cytology, tirads, synthetic "
                                                 "or unknown (recorded in the manifest; reports and models state it)."),
    label_definition: str | None = typer.Option(None, "--label-definition",
                                                help="What label 1 means when it is not malignancy, e.g. 'TI-RADS >= 4'."),
) -> None:
    """Validate a manifest-schema CSV, find duplicates, merge groups and write it to --out."""
    from thyro.data.importers import (
        import_csv,  # lazy: thyro.data.importers loads the heavy libraries; keeps --help light
    )
    from thyro.data.importers.csv import (
        import_target,  # lazy: thyro.data.importers.csv loads the heavy libraries; keeps --help light
    )

    _refuse_overwrite(import_target(path, out), force)
    _show_import(import_csv(path, out, near_threshold=near_threshold, force=force, label_source=label_source,
                            label_definition=label_definition))


def _refuse_overwrite(target: Path, force: bool) -> None:
    """Stop before any work when an import would write over an existing manifest (often edited by hand)."""
    if target.exists() and not force:
        raise DataError(f"{target} already exists (an earlier import, perhaps edited by hand); nothing was written. "
                        f"Use another --out folder, or add --force to replace it.")


def _show_import(result) -> None:
    """Print an import's counts, duplicates, notes and warnings (nothing when quiet)."""
    from thyro.cli._data_view import balance_table  # lazy: pandas, --help stays light
    from thyro.data.inspection import balance_notes, class_balance, label_line, labels_of  # lazy: pandas, --help

    if is_quiet():
        return
    meaning, problem = labels_of(result.manifest)
    console.print(balance_table(class_balance(result.manifest.df), result.title, meaning))
    console.print(label_line(meaning), markup=False, highlight=False, soft_wrap=True)
    if problem:
        console.print(f"note: {problem}", style="yellow", markup=False, soft_wrap=True)
    for line in balance_notes(result.manifest.df):
        console.print(f"note: {line}", style="dim", highlight=False, markup=False, soft_wrap=True)
    console.print(f"duplicates: {result.duplicates.summary()}")
    for names in result.duplicates.merged[:20]:
        console.print(f"  merged into group {names[0]!r}: {', '.join(names)}")
    for images in result.duplicates.label_conflicts:
        console.print(f"  label conflict (duplicates labelled differently): {', '.join(images)}",
                      style="yellow", markup=False, soft_wrap=True)
    for line in result.notes:
        console.print(f"note: {line}", style="dim", highlight=False, markup=False, soft_wrap=True)
    if result.warnings:
        console.print(f"[yellow]{len(result.warnings)} warning(s):[/]")
        for line in result.warnings:
            console.print(f"  - {line}", style="yellow", highlight=False, markup=False, soft_wrap=True)
    console.print(f"manifest written to {result.manifest_path}", markup=False, soft_wrap=True)


@command(data_app, "validate", examples=["thyro data validate data/mine/manifest.csv", "thyro data validate data/mine/manifest.csv --no-decode"])
def validate_cmd(
    manifest: Path = typer.Argument(..., help="Manifest CSV to check."),
    no_decode: bool = typer.Option(False, "--no-decode", help="Only check that files exist and their headers read "
                                                              "(faster; misses truncated images)."),
) -> None:
    """Report every problem of a manifest at once, each with its line and file; exit code 1 if any.

    Checks missing or unreadable files, bad labels, repeated rows, bad ROI JSON and patients split across groups.
    """
    from thyro.data.validate import (
        validate_manifest,  # lazy: thyro.data.validate loads the heavy libraries; keeps --help light
    )

    problems = validate_manifest(manifest, decode=not no_decode, progress=not is_quiet())
    if problems:
        err_console.print(f"{manifest}: {len(problems)} problem(s)", style="bold red", markup=False, soft_wrap=True)
        for p in problems:
            err_console.print(f"  - {p}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"{manifest}: no problems found.", markup=False, soft_wrap=True)


@command(data_app, "inspect", examples=["thyro data inspect data/mine/manifest.csv"])
def inspect_cmd(
    manifest: Path = typer.Argument(..., help="Manifest CSV to summarise."),
) -> None:
    """Print class balance by image, patient and group, duplicate groups, image sizes and modes."""
    from thyro.cli._data_view import render  # lazy: pandas, --help stays light
    from thyro.data.inspection import inspect_manifest  # lazy: pandas and the readers
    from thyro.data.manifest import (
        read_manifest,  # lazy: thyro.data.manifest loads the heavy libraries; keeps --help light
    )

    m = read_manifest(manifest)
    console.print(f"manifest: {manifest.resolve()}", markup=False, soft_wrap=True)
    console.print(render(inspect_manifest(m), title=manifest.name))


@command(data_app, "split", examples=["thyro data split data/mine/manifest.csv --out splits.json", "thyro data split data/mine/manifest.csv --out splits.json --test-size 0.2 --folds 10 --seed 1"])
def split_cmd(
    manifest: Path = typer.Argument(..., help="Manifest CSV (only labelled rows are split)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the splits JSON (e.g. splits.json)."),
    test_size: float = typer.Option(0.12, "--test-size", help="Share of labelled images held out for test (0 = none)."),
    folds: int = typer.Option(5, "--folds", "-k", help="Cross-validation folds on the rest."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed and manifest give the same splits."),
) -> None:
    """Make a held-out test set and k folds, stratified by label and grouped by `group` (no leakage)."""

    from thyro.data.manifest import (
        read_manifest,  # lazy: thyro.data.manifest loads the heavy libraries; keeps --help light
    )
    from thyro.data.splits import make_splits  # lazy: thyro.data.splits loads the heavy libraries; keeps --help light

    m = read_manifest(manifest)
    splits = make_splits(m, test_size=test_size, folds=folds, seed=seed)
    splits.save(out)
    if not is_quiet():
        t = Table(title=f"splits (seed {seed})", header_style="bold")
        for col in ("split", "images", "groups", "malignant (1)", "benign (0)"):
            t.add_column(col, justify="right" if col != "split" else "left")
        rows = [("test", splits.meta["test"])] + [(f"fold {k}", f) for k, f in enumerate(splits.meta["folds"])]
        for name, f in rows:
            t.add_row(name, str(f["images"]), str(f["groups"]), str(f["positives"]), str(f["images"] - f["positives"]))
        console.print(t)
        console.print(f"{splits.meta['n_unlabelled_skipped']} unlabelled image(s) not split; written to {out}",
                      markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    from thyro.cli import data_prep  # lazy: data_prep registers its commands on this module's app

    data_prep.add_commands(data_app)
    app.add_typer(data_app, name="data")
