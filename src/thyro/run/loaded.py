"""A run as one typed value: its predictions and everything recorded beside them, read once
(:meth:`thyro.run.RunDir.load`, :func:`thyro.run.load_run`) for the report, the model package, ``thyro
compare`` and tracking alike."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from thyro.data.manifest import LabelMeaning
from thyro.run.predictions import RESERVED_SPLITS, Predictions
from thyro.run.record import StudyRecord
from thyro.run.results import ArmResult, Results
from thyro.run.summary import DataSummary


#: Weight statuses every output names beside the arm's weights (:mod:`thyro.models.weights.verify`).
DOUBTFUL = ("unverified", "untrained")


@dataclass
class Run:
    """A study's predictions and, for a run directory, everything recorded beside them.

    Attributes
    ----------
    root : Path
        The run directory (or, for a predictions CSV alone, its folder).
    predictions : Predictions
    record : StudyRecord or None
        The study's configuration (None for a CSV alone, or when the record could not be read).
    results : Results or None
    data : DataSummary or None
    config_text : str or None
        The study record as written.
    logs : dict
        ``{arm: {"foldK": training log}}`` of the whole-fold jobs.
    notes : list of str
        What could not be read (and was left out) or was assumed.
    from_dir : bool
        Whether this is a run directory (not a predictions CSV alone).
    """

    root: Path
    predictions: Predictions
    record: StudyRecord | None = None
    results: Results | None = None
    data: DataSummary | None = None
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
        if self.results is not None and self.results.study:
            return self.results.study
        return self.root.name if self.from_dir else self.predictions_path.stem

    def arm_result(self, arm: str) -> ArmResult | None:
        """What the results say of ``arm`` (None when they do not name it)."""
        return self.results.arms.get(arm) if self.results is not None else None

    def recorded_labels(self, split: str | None = None) -> LabelMeaning | None:
        """What the labels of ``split`` mean as the study recorded it (the development data's for None,
        ``val`` and ``test``; an external set's own), or None when not recorded."""
        if split is not None and split not in RESERVED_SPLITS:
            return self.data.external_labels(split) if self.data is not None else None
        for source in (self.results, self.data):
            if source is not None and source.labels is not None:
                return source.labels
        return None

    def label_meaning(self, split: str | None = None) -> LabelMeaning:
        """What the labels of ``split`` mean (the development data's for None, ``val`` and ``test``): as the
        study recorded it, else from the predictions' ``label_source``/``label_definition`` columns."""
        recorded = self.recorded_labels(split)
        if recorded is not None:
            return recorded
        if split is not None and split not in RESERVED_SPLITS:
            return self.predictions.label_meaning(split)
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
        path = Path(path)
        if not path.is_absolute():
            return path.as_posix()
        try:
            return Path(os.path.relpath(path, self.root.resolve())).as_posix()
        except ValueError:  # another drive (Windows)
            return path.as_posix()

    def report_settings(self):
        """The study's ``report:`` block (:class:`thyro.config.ReportConfig`; the defaults without a record)."""
        from thyro.config import ReportConfig  # lazy: thyro.config imports torch and timm

        return self.record.config.report if self.record is not None else ReportConfig()

    def expected_folds(self) -> tuple[int, str]:
        """Number of folds: from the study record, else the largest fold number in the predictions."""
        if self.record is not None:
            return self.record.config.data.folds, "the study configuration (data.folds)"
        folds = self.predictions.df["fold"].dropna()
        return (int(folds.max()) + 1 if len(folds) else 0), "the predictions"

    def arm_table(self) -> tuple[list[str], dict[str, dict]]:
        """Arms in order (the study's, then any others in the predictions) with status, weights (``(unverified)``
        or ``(untrained)`` after them when so), the weights' status and provenance line, and role.

        The role comes from each arm's typed weight source (``none`` is the scratch reference,
        ``imagenet`` the ImageNet one), never from the arm's name.
        """
        recorded = self.results.arms if self.results is not None else {}
        cfg_arms = list(self.record.config.arms) if self.record is not None else []
        order = [a.name for a in cfg_arms] + [a for a in recorded if a not in {c.name for c in cfg_arms}]
        order += [a for a in self.predictions.arms if a not in order]
        present = set(self.predictions.arms)
        info: dict[str, dict] = {}
        for name in order:
            meta = recorded.get(name) or ArmResult()
            cfg = next((a for a in cfg_arms if a.name == name), None)
            source = cfg.weight_source(self.record.base_dir) if cfg is not None else None
            if source is not None:
                weights = source.kind if source.path is None else f"{source.kind}:{self.relative(source.path)}"
            else:
                weights = meta.weights
            if weights is not None and meta.weights_status in DOUBTFUL:
                weights = f"{weights} ({meta.weights_status})"
            info[name] = {
                "status": meta.status or ("done" if name in present else "not run"),
                "reason": meta.reason,
                "weights": weights,
                "weights_status": meta.weights_status,
                "provenance": meta.provenance,
                "backbone": cfg.backbone if cfg is not None else meta.backbone,
                "role": source.role if source is not None else None,
            }
        return order, info

    def tuned(self) -> list[dict]:
        """What ``train.tune`` chose per job: ``[{"job": name, "chosen": settings}]`` (empty when not tuned)."""
        jobs = self.results.jobs if self.results is not None else {}
        chosen = [(name, (job.extra.get("tuned") or {}).get("chosen")) for name, job in jobs.items()]
        return [{"job": name, "chosen": c} for name, c in chosen if c is not None]

    def train_sizes(self) -> dict[str, list[int]]:
        """``{fraction: [training images of each fold]}`` as recorded (empty when not recorded)."""
        return dict((self.data.train_fractions if self.data is not None else None) or {})
