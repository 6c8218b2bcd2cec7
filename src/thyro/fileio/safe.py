"""CSV cells and Markdown text safe to open (see :mod:`thyro.fileio`)."""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Iterable
from typing import IO, Any

import pandas as pd

from thyro.fileio.atomic import atomic_path, write_text
from thyro.fileio.temporaries import _swept_lock

log = logging.getLogger(__name__)

#: First characters that make a spreadsheet (Excel, LibreOffice, Google Sheets) read a cell as a formula:
#: OWASP's list for CSV injection, with NUL from ASVS 5 (V1.2.10).
FORMULA_STARTS = "=+-@\t\r\0"
_ESCAPE_TEST = re.compile(r"'*[=+\-@\t\r\0]")
_ESCAPED = re.compile(r"'+[=+\-@\t\r\0]")
#: A number written as text: a spreadsheet reads it as that number, never as a formula, so it stays as it is.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_announced: set[str] = set()


def _needs_escape(text: str) -> bool:
    return _ESCAPE_TEST.match(text) is not None and not (text[0] != "'" and _DECIMAL.fullmatch(text))


def escape_cell(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet will not run: text that starts with ``=``, ``+``, ``-``,
    ``@``, tab, CR or NUL gets a leading ``'``; numbers (``-0.5`` as text too) and everything else are
    returned as they are.

    Text that already starts with quotes before such a character gets one more, so that
    :func:`unescape_cell` gives back exactly the original: ``"'=x"`` is written ``"''=x"``.
    """
    if isinstance(value, str) and value and _needs_escape(value):
        return "'" + value
    return value


def unescape_cell(value: Any) -> Any:
    """The original text of a cell :func:`escape_cell` wrote (anything else as it is)."""
    if isinstance(value, str) and value[:1] == "'" and _ESCAPED.match(value):
        return value[1:]
    return value


def escape_frame(df):
    """A copy of a DataFrame with every text cell and column name :func:`escape_cell`-ed, and the
    ``(row, column)`` of each cell changed (rows count from 0; a header cell has row None)."""
    out = df.copy()
    changed: list[tuple[int | None, str]] = [(None, str(c)) for c in out.columns if escape_cell(c) is not c]
    for j, col in enumerate(list(out.columns)):
        series = out.iloc[:, j]
        if series.dtype != object and str(series.dtype) not in ("string", "str"):
            continue
        flags = series.map(lambda v: isinstance(v, str) and bool(v) and _needs_escape(v)).to_numpy(dtype=bool)
        if flags.any():
            values = series.to_numpy(dtype=object).copy()
            values[flags] = ["'" + v for v in values[flags]]
            out.isetitem(j, values)
            changed += [(int(i), str(col)) for i in flags.nonzero()[0]]
    out.columns = [escape_cell(c) if isinstance(c, str) else c for c in out.columns]
    return out, changed


def unescape_frame(df):
    """A DataFrame read from a CSV thyro wrote, with its text cells and column names as they were
    before :func:`escape_frame` (in place; returned for chaining)."""
    df.columns = [unescape_cell(c) for c in df.columns]
    for j in range(df.shape[1]):
        series = df.iloc[:, j]
        if series.dtype != object and str(series.dtype) not in ("string", "str"):
            continue
        flags = series.map(lambda v: isinstance(v, str) and v[:1] == "'" and _ESCAPED.match(v) is not None)
        flags = flags.to_numpy(dtype=bool)
        if flags.any():
            values = series.to_numpy(dtype=object).copy()
            values[flags] = [v[1:] for v in values[flags]]
            df.isetitem(j, values)
    return df


def read_csv(path: str | os.PathLike, *, unescape: bool = True, **kwargs: Any):
    """``pandas.read_csv`` for a CSV thyro wrote: the text of cells that :func:`escape_cell` marked is given
    back as it was.  ``unescape=False`` reads every cell as it stands (a file a person wrote, where a leading
    ``'`` is part of the value).  Other keyword arguments go to pandas."""
    df = pd.read_csv(path, **kwargs)
    return unescape_frame(df) if unescape else df


def escaped_note(path: str | os.PathLike, cells: list[tuple[int | None, str]]) -> str:
    """One line saying which cells of ``path`` were written with a leading ``'`` and why."""
    where = ", ".join(("header" if r is None else f"row {r + 2}") + f" {c}" for r, c in cells[:3])
    more = f" and {len(cells) - 3} more" if len(cells) > 3 else ""
    return (f"{path}: {len(cells)} cell(s) began with =, +, -, @, tab or CR ({where}{more}); written with a "
            "leading ' so that spreadsheets show them as text, not run them as formulas (thyro reads them back "
            "without it)")


def announce_escaped(path: str | os.PathLike, cells: list[tuple[int | None, str]]) -> None:
    """Log :func:`escaped_note` as a warning once per file and process (a file rewritten often says it once)."""
    if not cells:
        return
    key = os.path.abspath(path)
    with _swept_lock:
        if key in _announced:
            return
        _announced.add(key)
    log.warning(escaped_note(path, cells))


class CsvWriter:
    """``csv.writer`` whose cells go through :func:`escape_cell`; ``cells`` lists the ones changed.

    Parameters
    ----------
    fh : text file opened with ``newline=""``
    """

    def __init__(self, fh: IO[str], **kwargs: Any):
        self._writer = csv.writer(fh, **kwargs)
        self._row = -1  # the header is row None, data rows count from 0
        self.cells: list[tuple[int | None, str]] = []
        self._header: list[str] = []

    def writerow(self, row: Iterable[Any]) -> None:
        row = list(row)
        out = [escape_cell(v) for v in row]
        if self._row < 0:
            self._header = [str(v) for v in row]
        for k, (a, b) in enumerate(zip(row, out)):
            if a is not b:
                col = self._header[k] if k < len(self._header) else str(k)
                self.cells.append((None if self._row < 0 else self._row, col))
        self._row += 1
        self._writer.writerow(out)

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def write_csv(path: str | os.PathLike, rows, fields: tuple[str, ...] | list[str] | None = None, *,
              announce: bool = True, **to_csv: Any) -> list[tuple[int | None, str]]:
    """Write a CSV atomically, its text cells safe to open in a spreadsheet (:func:`escape_cell`).

    Parameters
    ----------
    path : path
    rows : DataFrame, or list of dict
        Dict rows are written with the columns ``fields`` (other keys ignored, missing ones empty).
    fields : columns of dict rows; for a DataFrame, the columns to write (default all)
    announce : bool
        Say so in one line (:func:`announce_escaped`) when cells were changed.
    **to_csv
        Passed to ``DataFrame.to_csv`` (``index=False`` by default).  Lines end in CRLF, as RFC 4180 and
        :mod:`csv` write them: with pandas' default ``\n`` a cell holding a bare CR is left unquoted and
        splits its row in two when read back.

    Returns
    -------
    list of (row, column)
        The cells written with a leading ``'`` (rows count from 0; None is the header).
    """
    if isinstance(rows, pd.DataFrame):
        df = rows if fields is None else rows[list(fields)]
        safe, cells = escape_frame(df)
        to_csv.setdefault("index", False)
        to_csv.setdefault("lineterminator", "\r\n")
        with atomic_path(path, suffix=".tmp") as tmp:
            safe.to_csv(tmp, **to_csv)
    else:
        if fields is None:
            raise TypeError("write_csv: dict rows need their fields")
        buf = io.StringIO()
        writer = CsvWriter(buf)
        writer.writerow(list(fields))
        for row in rows:
            writer.writerow(["" if row.get(f) is None else row.get(f) for f in fields])
        cells = writer.cells
        write_text(path, buf.getvalue())
    if announce:
        announce_escaped(path, cells)
    return cells


def write_csv_rows(path: str | os.PathLike, rows: list[dict], fields: tuple[str, ...] | list[str]) -> None:
    """Write dict rows as a CSV with the given columns (others ignored), atomically (:func:`write_csv`)."""
    write_csv(path, rows, fields)


#: ``<`` that opens an HTML tag, comment, declaration or autolink in Markdown (CommonMark's raw HTML):
#: a letter, ``/``, ``!`` or ``?`` follows.  ``p < 0.05`` and ``<= 4`` are left as they read.
_MARKDOWN_HTML = re.compile(r"<(?=[A-Za-z/!?])")


def markdown_text(value: Any) -> Any:
    """Text for a Markdown file that no viewer renders as HTML: every ``<`` that would open a tag,
    comment or autolink becomes ``&lt;`` (shown as ``<``); other values are returned as they are.

    Used as the ``finalize`` of thyro's Markdown templates, so every value put into them passes here.
    """
    if isinstance(value, str) and "<" in value:
        return _MARKDOWN_HTML.sub("&lt;", value)
    return value


