"""The splits of a run (``splits.json``, written by :mod:`thyro.data.splits`) and its nested training subsets
(``fractions.json``, when ``data.train_fractions`` asks for data-efficiency curves)."""

from __future__ import annotations

from pathlib import Path

from thyro.fileio import write_json
from thyro.run._files import RunFile, read_file
from thyro.run.jobs import fraction_text

SPLITS = "splits.json"
FRACTIONS = "fractions.json"


class Fractions(RunFile):
    """The training subsets: ``folds[fold][fraction]`` lists the image ids, drawn with ``seed``."""

    seed: int | None = None
    folds: dict[str, dict[str, list[str]]] = {}

    def subsets(self) -> dict[tuple[int, float], list[str]]:
        return {(int(k), float(f)): list(ids) for k, per in self.folds.items() for f, ids in per.items()}


def read_splits(path: Path, manifest=None):
    """The run's :class:`thyro.data.splits.Splits` (checked against ``manifest`` when given)."""
    from thyro.data.splits import Splits  # lazy: scipy, needed only when splits are read

    return Splits.load(path, manifest)


def write_splits(path: Path, splits) -> None:
    splits.save(path)


def read_fractions(path: Path) -> dict[tuple[int, float], list[str]] | None:
    """The saved training subsets: ``{(fold, fraction): image ids}`` (None before they are made)."""
    saved = read_file(Fractions, path)
    return saved.subsets() if saved is not None else None


def write_fractions(path: Path, subsets: dict[tuple[int, float], list[str]], seed: int) -> None:
    folds: dict[str, dict[str, list[str]]] = {}
    for (k, f), ids in sorted(subsets.items()):
        folds.setdefault(str(k), {})[fraction_text(f)] = list(ids)
    write_json(path, Fractions(seed=seed, folds=folds).to_dict())
