"""What the labels of a predictions table mean, from its own columns: a ``label_definition`` per split (a
manifest's, kept by ``thyro predict``), and what the probabilities are of (``thyro predict``'s
``probability_of``, ``model_label_source`` and ``model_label_definition``)."""

from __future__ import annotations

import pandas as pd

from thyro.data.manifest import LABEL_SOURCES, LabelMeaning
from thyro.errors import StatsError


def _one_value(df: pd.DataFrame, col: str, where: str) -> str | None:
    """The one non-empty value of ``col`` (None when the column is absent or empty); several are an error."""
    if col not in df.columns:
        return None
    cells = {str(v).strip() for v in df[col].dropna() if str(v).strip()}
    if len(cells) > 1:
        raise StatsError(f"{where}: column {col} holds several values ({', '.join(sorted(cells)[:4])}); "
                         "one file holds the predictions of models trained on one kind of label")
    return cells.pop() if cells else None


def label_definitions(df: pd.DataFrame, where: str) -> dict[str, str]:
    """Split -> label definition, from a ``label_definition`` column (a manifest's, kept by ``thyro predict``)."""
    if "label_definition" not in df.columns:
        return {}
    out = {}
    for split, sub in df.groupby("split", sort=False):
        value = _one_value(sub, "label_definition", f"{where} (split {split})")
        if value:
            out[str(split)] = value
    return out


def model_label_meaning(df: pd.DataFrame, where: str) -> LabelMeaning | None:
    """What the probabilities are of: ``thyro predict``'s ``model_label_source``/``model_label_definition``,
    else its ``probability_of`` alone (``malignant``, or a TI-RADS definition such as ``TI-RADS ≥ 4c``)."""
    source = _one_value(df, "model_label_source", where)
    definition = _one_value(df, "model_label_definition", where) or ""
    positive = _one_value(df, "probability_of", where)
    if source is None and positive is None:
        return None
    if source is None:
        source = "unknown" if positive.lower() == "malignant" else "tirads"
        definition = definition or ("" if source == "unknown" else positive)
    if source.lower() not in LABEL_SOURCES:
        raise StatsError(f"{where}: model_label_source {source!r} is not one of {', '.join(LABEL_SOURCES)}")
    return LabelMeaning(source.lower(), definition)
