"""Commands of the stats area: ``thyro report`` and ``thyro compare``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from thyro.cli._help import command

from thyro.console import console, info

METHOD_HELP = "auto: DeLong, or the cluster bootstrap when a patient has several images; or force delong / bootstrap."


def report(
    run_dir: Path = typer.Argument(..., help="Run directory (with predictions.csv) or a predictions CSV alone."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder or .html file (default: the run directory)."),
    method: str = typer.Option("auto", help=METHOD_HELP),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
) -> None:
    """Write the study report: one self-contained HTML file and a Markdown summary."""
    from thyro.report import build_report

    html, md = build_report(run_dir, out, method=method, n_boot=n_boot, seed=seed)
    info(f"report written: {html}")
    info(f"summary written: {md}")


def compare(
    pred_a: Path = typer.Argument(..., help="Predictions CSV of model A (image, label, probability, ...)."),
    pred_b: Path = typer.Argument(..., help="Predictions CSV of model B."),
    arm_a: str = typer.Option(None, "--arm-a", help="Arm to use from file A when it holds several."),
    arm_b: str = typer.Option(None, "--arm-b", help="Arm to use from file B when it holds several."),
    split: str = typer.Option("test", help="Rows of this split: test, val (out-of-fold) or an external set's name "
                                           "(files without a split column count as test)."),
    fold: str = typer.Option("mean", help="Rows of this fold model, or 'mean' = the ensemble (files without a fold "
                                          "column count as mean)."),
    method: str = typer.Option("auto", help=METHOD_HELP),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Paired comparison of two models' AUROC on the images both files score."""
    from rich.table import Table

    from thyro.report.compare import compare_files
    from thyro.report.analysis import fmt_p

    r = compare_files(pred_a, pred_b, arm_a=arm_a, arm_b=arm_b, split=split, fold=fold, method=method,
                      n_boot=n_boot, seed=seed)
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    c = r["comparison"]
    t = Table(title=f"{r['n_common']} common cases ({r['n_pos']} malignant), split={r['split']}, fold={r['fold']}")
    t.add_column("model")
    t.add_column("AUROC [95% CI]", justify="right")
    for key in ("a", "b"):
        d = r[key]
        t.add_row(f"{key.upper()}: {Path(d['file']).name} ({d['arm']})", f"{d['auroc']:.3f} [{d['lower']:.3f}, {d['upper']:.3f}]")
    t.add_row("A − B", f"{c['diff']:+.3f} [{c['lower']:+.3f}, {c['upper']:+.3f}]   p = {fmt_p(c['p_value'])}")
    console.print(t)
    console.print(f"method: {r['method_text']}", soft_wrap=True)
    if r["only_a"] or r["only_b"]:
        console.print(f"[yellow]left out[/]: {r['only_a']} image(s) only in A, {r['only_b']} only in B")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    command(app, "report", examples=["thyro report runs/jacr2024",
                                     "thyro report predictions.csv --out site-b-report.html"])(report)
    command(app, "compare", examples=["thyro compare runs/a/predictions.csv runs/b/predictions.csv --arm-a radimagenet "
                                      "--arm-b imagenet", "thyro compare site-b-new.csv site-b-old.csv --json"])(compare)
