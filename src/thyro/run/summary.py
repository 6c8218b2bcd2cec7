"""The data summary of a run (``data.json``): what the study's data held when it started.

Written by the study runner once its images are checked and cached; shown in the report's data section
and copied, as written, into a model package (its card reads it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thyro.run._files import Labels, RunFile, read_file, write_file

DATA = "data.json"


class ExternalSummary(RunFile):
    """One external validation set: its manifest, what its labels mean, its size and class balance."""

    manifest: str | None = None
    labels: Labels | None = None
    images: int | None = None
    class_balance: dict[str, dict[str, int]] = {}


class DataSummary(RunFile):
    """Counts by class for images, patients and groups, the splits' sizes, label provenance, the external
    sets and the preprocessing.

    Attributes
    ----------
    class_balance : dict
        ``{unit: {class: count}}`` for the units ``images``, ``patients`` and ``groups``.
    fold_sizes : list of int
        Images in each cross-validation fold.
    train_fractions : dict or None
        ``{fraction: [training images of each fold]}`` when the study has several training fractions.
    external : dict or None
        ``{name: ExternalSummary}`` when the study has external validation sets.
    """

    manifest: str | None = None
    labels: Labels | None = None
    images_total: int | None = None
    images_labelled: int | None = None
    images_unlabelled: int | None = None
    class_balance: dict[str, dict[str, int]] = {}
    groups_merging_patients: int | None = None
    test_images: int | None = None
    fold_sizes: list[int] = []
    preprocess: dict[str, Any] = {}
    train_fractions: dict[str, list[int]] | None = None
    external: dict[str, ExternalSummary] | None = None

    def external_labels(self, name: str):
        """What the labels of external set ``name`` mean, as recorded (None when not recorded)."""
        ext = (self.external or {}).get(name)
        return ext.labels if ext is not None else None


def read_data_summary(path: Path, notes: list[str] | None = None) -> DataSummary | None:
    """A data summary (a run's, or the copy in a model package); None when absent."""
    return read_file(DataSummary, path, notes)


def write_data_summary(path: Path, summary: DataSummary) -> None:
    write_file(path, summary)
