"""What a report is built from: a run directory (read through :mod:`thyro.run`) or a predictions CSV alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from thyro.data.manifest import LabelMeaning
from thyro.errors import StatsError, ThyroError
from thyro.run import Predictions, RunDir, StudyRecord, read_predictions


@dataclass
class Run:
    """A study's predictions and, for a run directory, everything recorded beside them."""

    root: Path
    predictions: Predictions
    record: StudyRecord | None = None
    results: dict | None = None
    data: dict | None = None
    config_text: str | None = None
    logs: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    from_dir: bool = False

    @property
    def predictions_path(self) -> Path:
        return self.predictions.path

    @property
    def title(self) -> str:
        if self.record is not None:
            return self.record.config.name
        if self.results and self.results.get("study"):
            return str(self.results["study"])
        return self.root.name if self.from_dir else self.predictions_path.stem

    def label_meaning(self) -> LabelMeaning:
        """Labels' provenance: as the study recorded it, else from the predictions' label_source column."""
        for source in (self.results, self.data):
            if source and isinstance(source.get("labels"), dict):
                return LabelMeaning.from_dict(source["labels"])
        sources = [s for s in self.predictions.label_sources() if s != "unknown"]
        return LabelMeaning(sources[0]) if len(sources) == 1 else LabelMeaning()

    def expected_folds(self) -> tuple[int, str]:
        """Number of folds: from the study record, else the largest fold number in the predictions."""
        if self.record is not None:
            return self.record.config.data.folds, "the study configuration (data.folds)"
        folds = self.predictions.df["fold"].dropna()
        return (int(folds.max()) + 1 if len(folds) else 0), "the predictions"

    def arm_table(self) -> tuple[list[str], dict[str, dict]]:
        """Arms in order (the study's, then any others in the predictions) with status, weights and role.

        The role comes from each arm's typed weight source (``none`` is the scratch reference,
        ``imagenet`` the ImageNet one), never from the arm's name.
        """
        arms_json = (self.results or {}).get("arms") or {}
        cfg_arms = list(self.record.config.arms) if self.record is not None else []
        order = [a.name for a in cfg_arms] + [a for a in arms_json if a not in {c.name for c in cfg_arms}]
        order += [a for a in self.predictions.arms if a not in order]
        present = set(self.predictions.arms)
        info: dict[str, dict] = {}
        for name in order:
            meta = arms_json.get(name) or {}
            cfg = next((a for a in cfg_arms if a.name == name), None)
            source = cfg.weight_source(self.record.base_dir) if cfg is not None else None
            info[name] = {
                "status": meta.get("status") or ("done" if name in present else "not run"),
                "reason": meta.get("reason"),
                "weights": source.describe() if source is not None else meta.get("weights"),
                "backbone": cfg.backbone if cfg is not None else meta.get("backbone"),
                "role": source.role if source is not None else None,
            }
        return order, info


def read_run(path: str | Path) -> Run:
    """Read a run directory, or a predictions CSV on its own."""
    path = Path(path)
    if path.is_file():
        preds = read_predictions(path)
        return Run(root=path.parent, predictions=preds, notes=list(preds.notes))
    if not path.is_dir():
        raise StatsError(f"{path}: no such run directory or predictions file")
    run_dir = RunDir(path)
    preds = run_dir.read_predictions()
    run = Run(root=path, predictions=preds, notes=list(preds.notes), from_dir=True)
    try:
        run.record = run_dir.read_record()
    except ThyroError as exc:  # a damaged record must not stop the report; say what is missing
        run.notes.append(f"the study record could not be read ({exc})")
    run.results = run_dir.read_results(run.notes)
    run.data = run_dir.read_data(run.notes)
    run.config_text = run_dir.config_text()
    run.logs = run_dir.logs()
    return run
