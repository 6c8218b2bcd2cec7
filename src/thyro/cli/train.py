"""Commands of the training area: ``thyro train``, ``thyro study``, ``thyro demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from thyro.cli._help import command
from thyro.cli._output import for_workers
from thyro.cli.console import console, info
from thyro.data.manifest import LabelMeaning
from thyro.errors import ConfigError
from thyro.progress import duration
from thyro.train import demo

DEVICE_HELP = "auto (CUDA when available), cpu or cuda."


def _overrides(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: use KEY=VALUE, e.g. --set train.epochs=5")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _study(config: Path, run_dir: Path | None, set_: list[str] | None, only: list[str] | None, option: str):
    """The study of ``config`` (with ``--set``), its job selection checked in the words of the command line."""
    from thyro.train.study import Study, parse_only  # lazy: torch, kept off `thyro --help`

    study = Study.from_file(config, run_dir, _overrides(set_), source="--set")
    parse_only(only, study.cfg, option=option)
    return study


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def results_table(results) -> tuple[list[str], list[tuple[str, ...]]]:
    """Column names and rows (arm, status, OOF AUROC, test AUROC, one column per external set, the weights and
    their status) of a study's :class:`thyro.run.Results`."""
    sets = sorted({s for a in results.arms.values() for s in a.external_auroc})
    cols = (["arm", "status", "out-of-fold AUROC", "test AUROC (fold mean)"]
            + [f"{s} AUROC (fold mean)" for s in sets] + ["weights"])
    rows = [(name, a.status, _fmt(a.oof_auroc), _fmt(a.test_auroc), *(_fmt(a.external_auroc.get(s)) for s in sets),
             _weights(a)) for name, a in results.arms.items()]
    return cols, rows


def _weights(arm) -> str:
    """An arm's weights in a few words: ``imagenet (verified)``, ``file (unverified)``, ``none``."""
    kind = arm.weights_kind or "-"
    return f"{kind} ({arm.weights_status})" if arm.weights_status else kind


def _print_results(results) -> None:
    """Print a study's :class:`thyro.run.Results`: the arms' AUROCs, label warnings, skipped arms, the report."""
    trained = results.labels or LabelMeaning()
    table = Table(title=f"study {results.study}"
                  + (f" (label 1 = {trained.positive})" if results.labels is not None else ""))
    cols, rows = results_table(results)
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for name, ext in results.external_labels.items():  # an external set labelled otherwise
        warning = trained.mismatch(ext, f"the external set {name}")
        if warning:
            console.print(f"warning: {warning}", style="yellow", markup=False, soft_wrap=True)
    if results.report is not None:
        for sentence in _answer(Path(results.report.html).with_suffix(".json")):
            console.print(sentence, markup=False, soft_wrap=True)
        console.print(f"report: {results.report.html}")


def _answer(report_json: Path) -> list[str]:
    """The sentences the report leads with (the best arm, its differences with CIs and Holm-adjusted p), or
    none when the report holds no answer."""
    try:
        headline = json.loads(report_json.read_text(encoding="utf-8")).get("headline") or {}
    except (OSError, ValueError):
        return []
    return list(headline.get("text") or [])


def _print_plan(plan: dict, verbose: bool = False) -> None:
    """The plan of a dry run: what runs, on which sets, how long; the resolved configuration after it with
    ``verbose``."""
    console.print(f"[bold]study {plan['study']}[/] (dry run: every check of the real run passed; nothing trained or "
                  f"written) -> {plan['run_dir']}", soft_wrap=True)
    console.print(f"data: {plan['config']['data']['manifest']}", markup=False, soft_wrap=True)
    labels = plan["labels"]
    console.print(f"labels: {labels['description']}", markup=False, soft_wrap=True)
    sp = plan["splits"]
    console.print(f"splits ({sp['source']}): test {sp['test']} images; folds "
                  + ", ".join(f"{k}: {v} held out / {t} training" for k, (v, t)
                              in enumerate(zip(sp["folds"], sp["train_per_fold"]))), markup=False, soft_wrap=True)
    for name, ext in plan["external"].items():
        console.print(f"external set {name}: {ext['images']} images ({ext['labels']['description']})",
                      markup=False, soft_wrap=True)
    table = Table(title="arms")
    for col in ("arm", "backbone", "weights", "input", "training speed here"):
        table.add_column(col)
    for arm, a in plan["arms"].items():
        if a["skipped"]:
            weights = "[yellow]skipped[/] (below)"
        else:
            weights = escape(a["loaded"] or a["weights"])
        speed = f"{a['train_images_per_second']:.1f} img/s" if a.get("train_images_per_second") else "-"
        table.add_row(arm, a["backbone"], weights, escape(a["input"] or "-"), speed)
    console.print(table)
    for arm, a in plan["arms"].items():
        if a["skipped"]:
            console.print(f"[yellow]{arm} skipped[/]:\n  " + escape(a["skipped"]).replace("\n", "\n  "),
                          soft_wrap=True)
    done = sum(j["done"] for j in plan["jobs"])
    console.print(f"jobs ({len(plan['jobs'])}, {done} done): " + ", ".join(
        j["job"] + (" (done)" if j["done"] else "") for j in plan["jobs"]), markup=False, soft_wrap=True)
    if plan.get("seconds_estimate"):
        console.print(f"estimated training time on this machine: about {duration(plan['seconds_estimate'])} "
                      "(measured training speed x epochs x images, evaluation not counted)",
                      markup=False, soft_wrap=True)
    for note in plan.get("notes") or []:
        console.print(f"warning: {note}", style="yellow", markup=False, soft_wrap=True)
    if verbose:
        console.print("resolved configuration:", style="bold")
        console.print(yaml.safe_dump(plan["config"], sort_keys=False).rstrip(), markup=False, highlight=False)
    else:
        console.print("(--verbose adds the resolved configuration)", style="dim")


SET_HELP = ("Override a configuration key: --set train.epochs=5, --set data.manifest=data/mine/manifest.csv "
            "(repeatable). A path typed here is relative to the current directory; paths in the file are "
            "relative to the file's folder.")
CONFIG_HELP = "Study configuration (YAML), e.g. configs/jacr2024.yaml; relative paths inside it start from its folder."


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    _register_demo(app)

    @command(app, "study", examples=[
        "thyro study configs/jacr2024.yaml --set data.manifest=data/mine/manifest.csv",
        "thyro study configs/ddti.yaml --skip-missing --jobs 2",
        "thyro study configs/ddti.yaml --only scratch:0 --only imagenet",
        "thyro study configs/ddti.yaml --dry-run"])
    def study_cmd(
        config: Path = typer.Argument(..., help=CONFIG_HELP),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o", help="Run directory (default runs/NAME)."),
        only: Optional[list[str]] = typer.Option(None, "--only", metavar="ARM:FOLD", help="Run only ARM:FOLD (repeatable; ARM alone = all "
                                                                      "its folds; ARM@FRACTION:FOLD = a data-efficiency "
                                                                      "job). Only these arms' weights are checked."),
        skip_missing: bool = typer.Option(False, "--skip-missing", help="Skip arms whose weights are missing instead of stopping."),
        device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
        set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
        no_report: bool = typer.Option(False, "--no-report", help="Do not write the HTML report at the end."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (labels, split sizes, arms and their "
                                                              "weights, jobs, the expected time); train nothing."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="With --dry-run: the resolved configuration "
                                                                    "too, every key."),
        jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Train this many jobs at once, one process each "
                                                                "(on one GPU, or spread over --devices)."),
        devices: Optional[str] = typer.Option(None, "--devices", help="Comma-separated devices for --jobs, e.g. "
                                                                      "cuda:0,cuda:1 (round robin)."),
    ) -> None:
        """Run (or resume) a whole study: every arm on the same folds, results and report in the run directory.

        Re-running the same command continues unfinished jobs and never retrains finished ones; several
        processes (or cluster array tasks) may run it on one run directory at once: each job is claimed
        and trained once.
        """
        study = _study(config, run_dir, set_, only, "--only")
        if dry_run:
            _print_plan(study.plan(only=only, skip_missing=skip_missing, estimate=True).to_dict(), verbose)
            return
        results = study.run(only=only, skip_missing=skip_missing, device=device, report=not no_report, workers=jobs,
                            devices=[d.strip() for d in devices.split(",") if d.strip()] if devices else None,
                            worker_init=for_workers())
        _print_results(results)

    @command(app, "train", examples=[
        "thyro train configs/ddti.yaml --arm imagenet --fold 2",
        "thyro train configs/ddti.yaml --arm scratch@0.5 --fold 0 --device cuda",
        "thyro train configs/ddti.yaml --arm scratch --fold 0 --restart"])
    def train_cmd(
        config: Path = typer.Argument(..., help=CONFIG_HELP),
        arm: str = typer.Option(..., "--arm", help="Arm name from the configuration; ARM@FRACTION (e.g. scratch@0.5) "
                                                   "trains on that share of the fold, one of data.train_fractions."),
        fold: int = typer.Option(..., "--fold", help="Fold number (0-based)."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o", help="Run directory (default runs/NAME)."),
        resume: bool = typer.Option(True, "--resume/--restart", help="Continue from the job's last.pt (default) or start over."),
        skip_missing: bool = typer.Option(False, "--skip-missing", help="If this arm's weights are missing, record it as "
                                                                        "skipped and exit 0 instead of stopping."),
        device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
        set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    ) -> None:
        """Train one arm on one fold (the unit a cluster scheduler runs), then merge into the run directory.

        Only this arm's weights are checked. The job is claimed first, so two processes never train it twice.
        Without @FRACTION, the fold's jobs at every training fraction of the study run.
        """
        only = [f"{arm}:{fold}"]
        study = _study(config, run_dir, set_, only, "--arm/--fold")
        _print_results(study.run(only=only, skip_missing=skip_missing, device=device, restart=not resume))


def _register_demo(app: typer.Typer) -> None:
    @command(app, "demo", examples=["thyro demo", "thyro demo --quick", "thyro demo --jobs 2 --out /tmp/demo"])
    def demo_cmd(
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the cohort, backbones, run and report "
                                                                     "(default thyro-demo, or thyro-demo-quick)."),
        quick: bool = typer.Option(False, "--quick", help="The same steps at a fraction of the size ("
                                   + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in demo.QUICK.items())
                                   + "): about a minute on a 2-core CPU, to see every step work; its numbers are "
                                     "too noisy to read."),
        patients: Optional[int] = typer.Option(None, help="Synthetic patients in the thyroid phantom cohort (default 120)."),
        external_patients: Optional[int] = typer.Option(None, "--external-patients",
                                                        help="New synthetic patients (2 views each) in the external "
                                                             "set (default 500)."),
        jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Train this many jobs at once (one process each)."),
        size: int = typer.Option(64, help="Image size in pixels (64 keeps the demo within minutes on a laptop CPU)."),
        epochs: Optional[int] = typer.Option(None, help="Training epochs per fold (default from the demo study)."),
        device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    ) -> None:
        """The reference study's design in miniature, offline: scratch vs generic vs domain-pretrained.

        A phantom cohort, two backbones pretrained on synthetic corpora, three arms on the same folds, an
        external set of new patients, the report (thyro-demo/run/report.html). Re-running continues where
        it stopped. The phantom shows the mechanism, not evidence about patients.
        """
        settings = dict(demo.QUICK) if quick else {}
        for key, value in (("patients", patients), ("external_patients", external_patients), ("epochs", epochs)):
            if value is not None:
                settings[key] = value
        folder = out or Path("thyro-demo-quick" if quick else "thyro-demo")
        results = demo.run_demo(folder, size=size, device=device, jobs=jobs, worker_init=for_workers(), **settings)
        info(f"done in {duration(results.seconds)}"
             + (f" (expected {duration(results.expected_seconds)})" if results.expected_seconds else ""))
        _print_results(results)
        console.print(results.summary(), soft_wrap=True)
