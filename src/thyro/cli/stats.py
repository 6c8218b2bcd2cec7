"""Commands of the stats area: ``thyro report``, ``thyro compare`` and ``thyro power``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from thyro.cli._help import command
from thyro.cli.console import console, info
from thyro.errors import ConfigError

METHOD_HELP = "auto: DeLong, or the cluster bootstrap when a patient has several images; or force delong / bootstrap."


def _pairs(items: list[str] | None) -> list[tuple[str, str]] | None:
    """``--compare A:B`` values as ``[(A, B), ...]`` (None when none was given)."""
    if not items:
        return None
    out = []
    for item in items:
        a, sep, b = item.partition(":")
        if not sep or not a.strip() or not b.strip():
            raise ConfigError(f"--compare {item!r}: write ARM_A:ARM_B (tests ARM_A - ARM_B), "
                              "e.g. --compare domain:scratch")
        out.append((a.strip(), b.strip()))
    return out


def report(
    run_dir: Path = typer.Argument(..., help="Run directory (with predictions.csv) or a predictions CSV alone "
                                             "(a study's, or thyro predict's output on a labelled manifest)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder or .html file (default: the run directory)."),
    compare: list[str] = typer.Option(None, "--compare", help="A comparison of interest ARM_A:ARM_B (repeatable); "
                                      "default: the study's report.comparisons, else every pretrained arm against "
                                      "scratch and every pair of pretrained arms."),
    method: str = typer.Option("auto", help=METHOD_HELP),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
) -> None:
    """Write the study report: one self-contained HTML file and a Markdown summary, led by the answer.

    Example: thyro report runs/jacr2024 --compare radimagenet:imagenet --compare radimagenet:scratch
    """
    from thyro.report import build_report  # lazy: thyro.report loads the heavy libraries; keeps --help light

    html, md = build_report(run_dir, out, method=method, n_boot=n_boot, seed=seed, comparisons=_pairs(compare))
    info(f"report written: {html}")
    info(f"summary written: {md}")


def compare(
    pred_a: Path = typer.Argument(..., help="Predictions CSV of model A (image, label, probability, ...)."),
    pred_b: Path = typer.Argument(..., help="Predictions CSV of model B."),
    arm_a: str = typer.Option(None, "--arm-a", help="Arm to use from file A when it holds several."),
    arm_b: str = typer.Option(None, "--arm-b", help="Arm to use from file B when it holds several."),
    split: str = typer.Option("test", help="Which predictions: test, val (or oof: out-of-fold, pooled over the "
                                           "folds), external (the one external set) or an external set's name. "
                                           "Files without a split column count as test."),
    fold: str = typer.Option("mean", help="Rows of this fold model, or 'mean' = the ensemble (out of fold: every "
                                          "fold pooled). Files without a fold column count as mean."),
    method: str = typer.Option("auto", help=METHOD_HELP),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Paired comparison of two models' AUROC on the images both files score.

    Example: thyro compare runs/s/predictions.csv runs/s/predictions.csv --arm-a domain --arm-b scratch --split oof
    """

    from thyro.report.compare import (
        compare_files,  # lazy: thyro.report.compare loads the heavy libraries; keeps --help light
    )
    from thyro.stats.format import format_p  # lazy: thyro.stats.format loads the heavy libraries; keeps --help light

    r = compare_files(pred_a, pred_b, arm_a=arm_a, arm_b=arm_b, split=split, fold=fold, method=method,
                      n_boot=n_boot, seed=seed)
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    c = r["comparison"]
    t = Table(title=f"{r['n_common']} common cases ({r['n_pos']} {r['positive']}), split={r['split']}, "
                    f"fold={r['fold']}")
    t.add_column("model")
    t.add_column("AUROC [95% CI]", justify="right")
    for key in ("a", "b"):
        d = r[key]
        t.add_row(escape(f"{key.upper()}: {Path(d['file']).name} ({d['arm']})"),
                  "not estimable" if d.get("missing") else f"{d['auroc']:.3f} [{d['lower']:.3f}, {d['upper']:.3f}]")
    t.add_row("A − B", "not estimable" if c.get("missing")
              else f"{c['diff']:+.3f} [{c['lower']:+.3f}, {c['upper']:+.3f}]   {format_p(c['p_value'])}")
    console.print(t)
    if r.get("not_estimable"):
        console.print(r["not_estimable"], markup=False, soft_wrap=True)
    console.print(f"method: {r['method_text']}", soft_wrap=True)
    if r["only_a"] or r["only_b"]:
        console.print(f"[yellow]left out[/]: {r['only_a']} image(s) only in A, {r['only_b']} only in B")


def power(
    aurocs: list[str] = typer.Argument(..., help="Expected AUROC of each arm, as NAME=AUROC (or AUROC alone), at "
                                                 "least two; the earlier of a pair is its reference."),
    prevalence: float = typer.Option(..., "--prevalence", help="Share of patients with label 1 (e.g. 0.35)."),
    correlation: float = typer.Option(0.5, "--correlation", "-r", help="Expected correlation of two arms' scores "
                                      "on the same patient (within each class); 0.3-0.7 is typical of models "
                                      "fine-tuned on the same images."),
    powers: list[float] = typer.Option([0.8, 0.9], "--power", help="Power(s) to plan for (repeatable)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Two-sided significance level over all comparisons."),
    adjust: bool = typer.Option(True, "--adjust/--no-adjust", help="With several comparisons, plan each at "
                                "alpha / comparisons (Bonferroni, the safe bound of the Holm correction the "
                                "report applies); --no-adjust plans each at alpha."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Patients needed to show a difference in AUROC between arms with a paired test (sample size).

    Obuchowski & McClish's binormal method, as R pROC's power.roc.test computes it for two paired ROC curves. Patients are independent cases: count patients, not images.

    Example: thyro power scratch=0.69 imagenet=0.79 radimagenet=0.83 --prevalence 0.35 --correlation 0.5
    """

    from thyro.stats.power import (
        plan_comparisons,  # lazy: thyro.stats.power loads the heavy libraries; keeps --help light
    )

    plan = plan_comparisons(_aurocs(aurocs), prevalence=prevalence, correlation=correlation, powers=powers,
                            alpha=alpha, adjust=adjust)
    if as_json:
        typer.echo(json.dumps(plan, indent=2))
        return
    t = Table(title=f"Patients needed = cases + controls (prevalence {prevalence:g}, correlation {correlation:g}, "
                    f"two-sided alpha {plan['alpha_each']:.4g} per comparison)")
    t.add_column("comparison")
    t.add_column("AUROCs", justify="right", no_wrap=True)
    t.add_column("difference", justify="right")
    for p in plan["powers"]:
        t.add_column(f"{p:.0%} power", justify="right", no_wrap=True)
    for row in plan["comparisons"]:
        cells = [f"{s['n_total']:,} = {s['n_cases']:,} + {s['n_controls']:,}" for s in row["sizes"]]
        t.add_row(f"{row['alt']} vs {row['ref']}", f"{row['auroc_alt']:.3f} vs {row['auroc_ref']:.3f}",
                  f"{row['auroc_alt'] - row['auroc_ref']:+.3f}", *cells)
    console.print(t)
    for line in plan["notes"]:
        console.print(line, markup=False, soft_wrap=True)


def _aurocs(items: list[str]) -> dict[str, float]:
    """``NAME=AUROC`` (or bare AUROC) arguments as ``{name: auroc}`` in the order given."""
    out: dict[str, float] = {}
    for k, item in enumerate(items):
        name, sep, value = item.rpartition("=")
        name = name.strip() if sep else f"arm {chr(ord('A') + k)}" if k < 26 else f"arm {k + 1}"
        if name in out:
            raise ConfigError(f"arm {name!r} is named twice")
        try:
            out[name] = float(value)
        except ValueError:
            raise ConfigError(f"{item!r}: give an expected AUROC as NAME=0.80 or 0.80") from None
    if len(out) < 2:
        raise ConfigError("give the expected AUROCs of at least two arms, e.g. scratch=0.69 domain=0.83")
    return out


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    command(app, "report", examples=["thyro report runs/jacr2024",
                                     "thyro report predictions.csv --out site-b-report.html"])(report)
    command(app, "compare", examples=["thyro compare runs/a/predictions.csv runs/b/predictions.csv --arm-a radimagenet "
                                      "--arm-b imagenet", "thyro compare site-b-new.csv site-b-old.csv --json"])(compare)
    command(app, "power", examples=["thyro power scratch=0.69 radimagenet=0.83 --prevalence 0.35 -r 0.5",
                                    "thyro power 0.79 0.83 --prevalence 0.35 --power 0.9 --json"])(power)
