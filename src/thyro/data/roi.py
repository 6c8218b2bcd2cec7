"""Regions of interest (a manifest's ``roi`` cell, ``predict --roi``, the web app's ``roi`` field): one parser
with size and depth limits, and the box an ROI covers.  numpy only, so preprocessing's worker processes
read ROIs without pandas."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from thyro.errors import DataError

#: Largest ``roi`` text accepted (characters): about 15,000 outline points, far more than any outline.
MAX_ROI_CHARS = 256 * 1024
#: Deepest bracket nesting accepted: ``{"polygons": [[[x, y], ...]]}`` is 4 deep.
MAX_ROI_DEPTH = 4
_ROI_HINT = '{"polygons": [[[x, y], ...]]} or {"box": [x0, y0, x1, y1]}'


def _json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` outside JSON strings, in one linear pass.

    Hand-written because :mod:`json` has no depth limit: ``[[[[...`` makes it recurse until
    ``RecursionError``; this scan stops a nested value before the parser sees it.
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_ROI_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def parse_roi(value: Any, where: str = "") -> dict | None:
    """Parse an ROI (a manifest ``roi`` cell, ``predict --roi``, the web app's ``roi`` field) into
    ``{"polygons": [...]}`` or ``{"box": [...]}`` (None when empty).

    The one parser every entry point uses.  Text longer than :data:`MAX_ROI_CHARS` or nested deeper
    than :data:`MAX_ROI_DEPTH` is refused before it is parsed; coordinates must be finite numbers.

    Raises
    ------
    DataError
        Naming ``where`` (the row, option or field) and what is wrong.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dict):
        roi = value
    else:
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", errors="replace")
        if not isinstance(value, str):
            raise DataError(f"{where}: roi must be JSON text, got {type(value).__name__}; expected {_ROI_HINT}")
        if len(value) > MAX_ROI_CHARS:
            raise DataError(f"{where}: roi is {len(value):,} characters long, over the limit of {MAX_ROI_CHARS:,}; "
                            f"expected {_ROI_HINT}")
        if _json_depth(value) > MAX_ROI_DEPTH:
            raise DataError(f"{where}: roi is nested more than {MAX_ROI_DEPTH} levels deep; expected {_ROI_HINT}")
        try:
            roi = json.loads(value, parse_constant=_no_constant)
        except (TypeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise DataError(f"{where}: roi is not valid JSON ({exc}); expected {_ROI_HINT}") from None
    if not isinstance(roi, dict) or not ({"polygons", "box"} & set(roi)):
        shown = value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "..."
        raise DataError(f"{where}: roi must be a JSON object with 'polygons' or 'box', got {shown!r}")
    if "box" in roi:
        box = roi["box"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)
                and box[2] > box[0] and box[3] > box[1]):
            raise DataError(f"{where}: roi box must be [x0, y0, x1, y1] (finite numbers) with x1 > x0 and y1 > y0, "
                            f"got {str(box)[:200]}")
    if "polygons" in roi:
        polys = roi["polygons"]
        if not isinstance(polys, list) or not polys:
            raise DataError(f"{where}: roi polygons must be a non-empty list of [[x, y], ...] lists")
        for k, poly in enumerate(polys):
            if (not isinstance(poly, list) or len(poly) < 3
                    or not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_number(v) for v in p)
                               for p in poly)):
                raise DataError(f"{where}: roi polygon {k} needs at least 3 [x, y] points (finite numbers)")
    return roi


def roi_to_json(roi: dict | None) -> str:
    return "" if roi is None else json.dumps(roi, separators=(",", ":"))


def roi_bbox(roi: dict) -> tuple[float, float, float, float]:
    """Bounding box ``(x0, y0, x1, y1)`` of an ROI (all polygons together)."""
    if "box" in roi:
        x0, y0, x1, y1 = roi["box"]
        return float(x0), float(y0), float(x1), float(y1)
    pts = np.array([p for poly in roi["polygons"] for p in poly], dtype=float)
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


__all__ = ["MAX_ROI_CHARS", "MAX_ROI_DEPTH", "parse_roi", "roi_bbox", "roi_to_json"]
