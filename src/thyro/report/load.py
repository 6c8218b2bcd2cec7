"""What a report is built from: a run directory (read through :mod:`thyro.run`) or a predictions CSV alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from thyro.data.manifest import LabelMeaning
from thyro.errors import StatsError, ThyroError
from thyro.run import RESERVED_SPLITS, Predictions, RunDir, StudyRecord, read_predictions


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

    def label_meaning(self, split: str | None = None) -> LabelMeaning:
        """What the labels of ``split`` mean (the development data's for None, ``val`` and ``test``): as the
        study recorded it, else from the predictions' ``label_source``/``label_definition`` columns."""
        external = split is not None and split not in RESERVED_SPLITS
        if external:
            recorded = ((self.data or {}).get("external") or {}).get(split) or {}
            if isinstance(recorded.get("labels"), dict):
                return LabelMeaning.from_dict(recorded["labels"])
            return self.predictions.label_meaning(split)
        for source in (self.results, self.data):
            if source and isinstance(source.get("labels"), dict):
                return LabelMeaning.from_dict(source["labels"])
        dev = [s for s in self.predictions.splits if s in RESERVED_SPLITS]
        return self.predictions.label_meaning(dev[0] if len(dev) == 1 else None)

    def model_meaning(self) -> LabelMeaning:
        """What the probabilities are of: the labels the models were trained on (a study's development
        labels; a ``thyro predict`` file's ``probability_of``), else the labels of the file itself."""
        if self.from_dir or self.predictions.model_labels is None:
            return self.label_meaning()
        return self.predictions.model_labels

    def relative(self, path: str | Path) -> str:
        """A path as the report shows it: relative to the run directory (or the predictions file's folder)."""
        import os

        path = Path(path)
        if not path.is_absolute():
            return path.as_posix()
        try:
            return Path(os.path.relpath(path, self.root.resolve())).as_posix()
        except ValueError:  # another drive (Windows)
            return path.as_posix()

    def report_settings(self):
        """The study's ``report:`` block (:class:`thyro.config.ReportConfig`; the defaults without a record)."""
        from thyro.config import ReportConfig

        return self.record.config.report if self.record is not None else ReportConfig()

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
            if source is not None:
                weights = source.kind if source.path is None else f"{source.kind}:{self.relative(source.path)}"
            else:
                weights = meta.get("weights")
            info[name] = {
                "status": meta.get("status") or ("done" if name in present else "not run"),
                "reason": meta.get("reason"),
                "weights": weights,
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
