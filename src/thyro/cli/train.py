"""Commands of the training area: ``thyro train``, ``thyro study``, ``thyro demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.table import Table

from thyro.console import console
from thyro.errors import ConfigError

DEVICE_HELP = "auto (CUDA when available), cpu or cuda."


def _overrides(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: use KEY=VALUE, e.g. --set train.epochs=5")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _print_results(results: dict) -> None:
    from thyro.train.study import results_table

    table = Table(title=f"study {results['study']}")
    for col in ("arm", "status", "out-of-fold AUROC", "test AUROC (fold mean)"):
        table.add_column(col)
    for row in results_table(results):
        table.add_row(*row)
    console.print(table)
    if "report" in results:
        console.print(f"report: {results['report']['html']}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    _register_demo(app)

    @app.command("study")
    def study_cmd(
        config: Path = typer.Argument(..., help="Study configuration (YAML), e.g. configs/ddti.yaml."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o", help="Run directory (default runs/NAME)."),
        only: Optional[list[str]] = typer.Option(None, "--only", help="Run only ARM:FOLD (repeatable; ARM alone = all its folds)."),
        skip_missing: bool = typer.Option(False, "--skip-missing", help="Skip arms whose weights are missing instead of stopping."),
        device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a configuration key, e.g. --set train.epochs=5."),
        no_report: bool = typer.Option(False, "--no-report", help="Do not write the HTML report at the end."),
    ) -> None:
        """Run (or resume) a whole study: every arm on the same folds, predictions and results in the run directory.

        Re-running the same command continues unfinished jobs and never retrains finished ones.
        """
        from thyro.train.study import run_study

        results = run_study(config, run_dir=run_dir, only=only, skip_missing=skip_missing, device=device,
                            overrides=_overrides(set_), report=not no_report)
        _print_results(results)

    @app.command("train")
    def train_cmd(
        config: Path = typer.Argument(..., help="Study configuration (YAML)."),
        arm: str = typer.Option(..., "--arm", help="Arm name from the configuration."),
        fold: int = typer.Option(..., "--fold", help="Fold number (0-based)."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o", help="Run directory (default runs/NAME)."),
        resume: bool = typer.Option(True, "--resume/--restart", help="Continue from the job's last.pt (default) or start over."),
        device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a configuration key."),
    ) -> None:
        """Train one arm on one fold (the unit a cluster scheduler runs), then merge into the run directory."""
        from thyro.train.study import Job, Study

        study = Study.from_file(config, run_dir, _overrides(set_))
        study.check_weights(skip_missing=False)
        job = Job(study.cfg.arm(arm), fold)
        if not 0 <= fold < study.cfg.data.folds:
            raise ConfigError(f"--fold {fold}: the configuration has folds 0..{study.cfg.data.folds - 1}")
        labelled, splits, cache = study.prepare()
        job_dir = study.job_dir(job)
        if not resume:
            for name in ("last.pt", "best.safetensors", "done.json"):
                (job_dir / name).unlink(missing_ok=True)
        if study.is_done(job):
            console.print(f"{job.key} is already done ({job_dir / 'done.json'}); use --restart to train it again.")
        else:
            done = study.run_job(job, labelled, splits, cache, device=device)
            console.print(f"{job.key}: best val AUROC {done['val_auroc']:.3f} at epoch {done['best_epoch']}")
        results = study.merge(labelled)
        _print_results(results)


def _register_demo(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("thyro-demo"), "--out", "-o", help="Folder for the cohort, backbone, run and report."),
        patients: int = typer.Option(120, help="Synthetic patients in the thyroid phantom cohort."),
        size: int = typer.Option(64, help="Image size in pixels (64 keeps the demo within minutes on a laptop CPU)."),
        epochs: Optional[int] = typer.Option(None, help="Training epochs per fold (default from the demo study)."),
        device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    ) -> None:
        """The whole study in miniature, offline: phantom cohort, domain pretraining, scratch vs pretrained, report.

        Re-running continues where it stopped.
        """
        from thyro.train.demo import run_demo

        results = run_demo(out, patients=patients, size=size, epochs=epochs, device=device)
        _print_results(results)
