"""The results of a run (``results.json``): per arm its status, weights and AUROC point estimates; the study's
configuration, versions and labels; every finished job's record.

Merged (:func:`thyro.run.merge.merge_jobs`) each time a job finishes, under the run directory's lock.  The AUROCs here
are point estimates for the console and for tracking; every interval is computed from the predictions
table by :mod:`thyro.metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from thyro.run._files import Labels, RunFile, read_file, write_file
from thyro.run.jobs import JobRecord

RESULTS = "results.json"

class ArmResult(RunFile):
    """One arm: its status, what it was trained from, its jobs and its AUROCs (point estimates).

    ``status`` is ``done`` (every job finished), ``skipped`` (its weights were not found; ``reason`` says
    why), ``failed`` (a job failed) or ``incomplete`` (jobs are still to run).  ``weights_status`` is
    ``verified``, ``unverified`` or ``untrained`` for a pretrained start (None for a random one, or not
    recorded), and ``provenance`` the line that says where its weights came from and how they were verified.
    """

    status: str | None = None
    backbone: str | None = None
    weights: str | None = None
    weights_kind: str | None = None
    weights_status: str | None = None
    provenance: str | None = None
    role: str | None = None
    train_backbone: str | None = None
    folds_done: list[int] = []
    jobs_done: int = 0
    jobs: int = 0
    reason: str | None = None
    oof_auroc: float | None = None
    test_auroc: float | None = None
    external_auroc: dict[str, float | None] = {}

    @property
    def finished(self) -> bool:
        """Whether nothing is left to run for this arm (done, or skipped for want of weights)."""
        return self.status in ("done", "skipped")


class ReportFiles(RunFile):
    """The report a run wrote at its end."""

    html: str
    markdown: str


class Results(RunFile):
    """The run's results (see the module docstring).

    ``elsewhere`` and ``report`` are what one process's run adds when it returns (jobs left to other
    processes, the report it wrote); they are not written to the file.
    """

    study: str = ""
    config: dict[str, Any] = {}
    versions: dict[str, str] | None = None
    git_commit: str | None = None
    labels: Labels | None = None
    external_labels: dict[str, Labels] = {}
    selection: str | None = None
    arms: dict[str, ArmResult] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    jobs: dict[str, JobRecord] = {}
    updated: str = ""
    elsewhere: dict[str, str] = Field(default_factory=dict, exclude=True)
    report: ReportFiles | None = Field(default=None, exclude=True)

    @property
    def complete(self) -> bool:
        """Whether every arm is done or skipped (the report can be written)."""
        return all(a.finished for a in self.arms.values())


def read_results(path: Path, notes: list[str] | None = None) -> Results | None:
    return read_file(Results, path, notes)


def write_results(path: Path, results: Results) -> None:
    write_file(path, results)
