"""How statistics are written in every output (console, report, model card, web page)."""

from __future__ import annotations

import math

__all__ = ["format_p"]


def format_p(p: float | None, *, name: str | None = "p") -> str:
    """A p-value as text: ``p = 0.034``, ``p < 0.001``, or ``—`` when there is none.

    The one place p-values are formatted, so ``p = < 0.001`` cannot appear anywhere.  ``name=None``
    gives the bare value for a table column headed "p" (``0.034``, ``< 0.001``); any other ``name``
    (``"Holm p"``) prefixes it.
    """
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "—"
    p = float(p)
    value = "< 0.001" if p < 0.001 else f"{p:.3f}"
    if name is None:
        return value
    return f"{name} {value}" if value.startswith("<") else f"{name} = {value}"
