"""How the report writes its figures and names its sets (the sentences, tables and console say the same)."""

from __future__ import annotations

import re

from thyro.run import OOF, TEST, Run
from thyro.stats.format import format_p

#: Longest skip or failure reason shown on the arms' one-line summary (the whole text is folded below it).
SHORT_REASON = 90


def fmt_p(p: float | None) -> str:
    """A p-value for a table cell under a "p" header (:func:`thyro.stats.format.format_p`)."""
    return format_p(p, name=None)


def fmt_ci(r: dict | None, digits: int = 3) -> str:
    """``0.812 [0.744, 0.871]``, or ``—`` without an AUROC."""
    if not r or r.get("auroc") is None:
        return "—"
    return f"{r['auroc']:.{digits}f} [{r['lower']:.{digits}f}, {r['upper']:.{digits}f}]"


def why(d: dict | None) -> str:
    """Why a figure is absent, as a table cell says it: ``not estimable: ...`` as it stands, any other
    reason after ``missing:``."""
    reason = one_line((d or {}).get("missing")) or "missing"
    return reason if (d or {}).get("not_estimable") or reason.startswith("not estimable") else f"missing: {reason}"


def one_line(text: str | None) -> str:
    """A multi-line message (a weight file's "Looked in:" list) on one line, nothing cut."""
    return "; ".join(part.strip(" -") for part in str(text or "").splitlines() if part.strip())


def short_reason(text: str | None, limit: int = SHORT_REASON) -> str:
    """The first sentence of a skip or failure reason, at most ``limit`` characters."""
    first = one_line(text)
    first = re.split(r"(?<=[.;])\s", first, maxsplit=1)[0].rstrip(".;")
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def held_out(run: Run) -> bool:
    """Whether rows with ``split = test`` are a held-out test set: a study's, or a file that says so in a
    ``split`` column.  A file without one (``thyro predict``'s output) holds just its images."""
    return run.from_dir or run.predictions.split_given


def set_title(name: str, run: Run | None = None) -> str:
    """How a set is named in sentences: ``the held-out test set``, ``the external set site-b``, or for a
    predictions file that names no split, ``the images in PRED.csv``."""
    if name == TEST:
        if run is not None and not held_out(run):
            return f"the images in {run.predictions_path.name}"
        return "the held-out test set"
    if name == OOF:
        return "the pooled out-of-fold predictions"
    return f"the external set {name}"


def set_heading(s: dict) -> str:
    """A set's section heading (from its analysis: ``kind`` and ``title``)."""
    if s["kind"] == "oof":
        return "Out of fold (cross-validation)"
    if s["kind"] == "test":
        return "Held-out test set" if s["title"] == "the held-out test set" else s["title"][0].upper() + s["title"][1:]
    return f"External validation set: {s['name']}"
