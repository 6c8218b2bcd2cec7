"""Rows out of scoring: one :class:`PredictionRow` per input (per frame with ``frames="all"``), and the
``mean`` frame policy's merge of a file's frames into one row."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from thyro.data.roi import roi_to_json
from thyro.use.scoring.items import InputItem
from thyro.use.scoring.prepare import Failure, Prepared

#: ``((input index, frames of the input), row)``: what the scoring loop yields before frames are merged.
KeyedRow = tuple[tuple[int, int], "PredictionRow"]


@dataclass
class PredictionRow:
    """One scored input: a row of ``thyro predict``'s CSV (:data:`thyro.use.predict.CSV_COLUMNS`).

    ``probability`` and ``cls`` are None and ``error`` says why when the input failed; ``file_done`` is
    False on the rows of a file's frames before its last (for progress); ``extra`` holds a manifest row's
    own columns.
    """

    input: str
    probability: float | None
    cls: int | None
    prediction: str
    roi: str
    warning: str = ""
    error: str = ""
    file_done: bool = True
    extra: dict = field(default_factory=dict)

    def as_csv(self, model_labels=("", "", ""), extra_columns: list[str] | None = None) -> list:
        """The CSV row: ``model_labels`` is (probability_of, model_label_source, model_label_definition)."""
        return [self.input, "" if self.probability is None else f"{self.probability:.6f}", *model_labels,
                "" if self.cls is None else self.cls, self.prediction, self.roi, self.warning, self.error,
                *(self.extra.get(c, "") for c in extra_columns or [])]


def make_row(item: InputItem, outcome: Prepared | Failure, probability: float | None, frames: int, threshold: float,
             names: tuple[str, str]) -> PredictionRow:
    """The row of one unit: ``outcome`` of its preparation, ``probability`` when it was scored.

    ``names`` are (label 1's name, label 0's name); the frames of a multi-frame file share a ``group``
    (the file) unless the manifest gave one.
    """
    done = item.frame is None or item.frame == frames - 1
    extra = item.extra
    if frames > 1 and item.frame is not None and not extra.get("group"):
        extra = {**extra, "group": item.where}
    roi = roi_to_json(item.roi)
    if isinstance(outcome, Failure):
        return PredictionRow(item.name, None, None, "", roi, "", outcome.error, file_done=done, extra=extra)
    cls = int(probability >= threshold)
    return PredictionRow(item.name, probability, cls, names[0] if cls else names[1], roi, outcome.warning,
                         file_done=done, extra=extra)


def mean_of_frames(rows: Iterator[KeyedRow], threshold: float, names: tuple[str, str]) -> Iterator[KeyedRow]:
    """One row per file: the mean probability of its frames (rows of single-frame files pass through).

    A frame that failed fails the file's row, naming the frame (and how many failed).
    """
    group: list[PredictionRow] = []
    for key, row in rows:
        n = key[1]
        if n <= 1:
            yield key, row
            continue
        group.append(row)
        if len(group) < n:
            continue
        yield key, _merged(group, threshold, names)
        group = []


def _merged(group: list[PredictionRow], threshold: float, names: tuple[str, str]) -> PredictionRow:
    n = len(group)
    first = group[0]
    failed = [(k, r) for k, r in enumerate(group) if r.error]
    if failed:
        k, bad = failed[0]
        more = f" ({len(failed)} of {n} frames failed)" if len(failed) > 1 else ""
        return PredictionRow(first.input, None, None, "", first.roi, "", f"frame {k}: {bad.error}{more}",
                             extra=first.extra)
    p = float(np.mean([r.probability for r in group]))
    cls = int(p >= threshold)
    notes = [f"mean of {n} frames"] + sorted({r.warning for r in group if r.warning})
    return PredictionRow(first.input, p, cls, names[0] if cls else names[1], first.roi, "; ".join(notes),
                         extra=first.extra)


__all__ = ["KeyedRow", "PredictionRow", "make_row", "mean_of_frames"]
