"""Small file helpers used everywhere: atomic writes, what interrupted writes leave, safe CSV and
Markdown text, and content hashes.

Every write goes through :func:`atomic_path` (a folder through :func:`atomic_dir`), so a failed write
(a full disk above all) is turned into one :class:`~thyro.errors.WriteError` that names the file and
says that nothing was lost, whichever writer failed: Python's ``OSError`` (``ENOSPC``), torch's
``RuntimeError`` from its zip writer (``[enforce fail at inline_container.cc:...]``,
``basic_ios::clear``), safetensors' ``SafetensorError`` (``os error 28``).

Temporaries
-----------
A write goes to a temporary beside its target, named ``.NAME.thyro-tmp-HOST-PID-XXXXXXXX[SUFFIX]``
(:func:`temp_prefix`): the host and process that write it are in the name.  A process killed mid-write
(``kill -9``, a power cut, an out-of-memory kill) cannot remove its temporary, so the first write of a
later process into the same folder does (:func:`sweep_orphans`): a temporary whose process is gone from
this host, or one written on another host and untouched for :data:`FOREIGN_STALE_S`; never one of a
live process.  It says so in one line.  Stale locks and job claims of dead processes on this host are
released the same way (:func:`release_stale_claims`).

Cells and text safe to open
---------------------------
Every CSV thyro writes goes through :func:`write_csv` or :class:`CsvWriter`: a text cell that starts
with ``=``, ``+``, ``-``, ``@``, tab, carriage return or NUL, which a spreadsheet would run as a formula
(OWASP's "CSV injection"), is written with a leading ``'``, the spreadsheet's own mark for text
(:func:`escape_cell`).  Numbers stay numbers (``-0.5`` is not touched).  thyro's readers remove the
mark again (:func:`read_csv`, :func:`unescape_cell`), so a round trip gives back the original text,
one that itself began with quotes included.  Markdown thyro writes has its HTML neutralised
(:func:`markdown_text`).

The helpers live in four modules: :mod:`~thyro.fileio.atomic` (atomic writes, write errors, hashes),
:mod:`~thyro.fileio.temporaries` (temporaries and the sweep), :mod:`~thyro.fileio.locks` (locks and claims)
and :mod:`~thyro.fileio.safe` (safe CSV and Markdown); everything public is importable from here.
"""

from __future__ import annotations

from thyro.fileio.atomic import (atomic_dir, atomic_open, atomic_path, sha256_file, sha256_json, write_failure,
                                 write_json, write_text)
from thyro.fileio.temporaries import (FOREIGN_STALE_S, Sweep, TEMP_TAG, Temporary, find_temporaries, host_tag,
                                      parse_temporary, pid_alive, sweep_once, sweep_orphans, temp_prefix)
from thyro.fileio.locks import (DEFAULT_LOCK_LIFETIME, claim_file, claim_holder, file_lock, release_stale_claims)
from thyro.fileio.safe import (CsvWriter, FORMULA_STARTS, announce_escaped, escape_cell, escape_frame, escaped_note,
                               markdown_text, read_csv, unescape_cell, unescape_frame, write_csv, write_csv_rows)

__all__ = [
    "CsvWriter", "DEFAULT_LOCK_LIFETIME", "FOREIGN_STALE_S", "FORMULA_STARTS", "Sweep", "TEMP_TAG", "Temporary",
    "announce_escaped", "atomic_dir", "atomic_open", "atomic_path", "claim_file", "claim_holder", "escape_cell",
    "escape_frame", "escaped_note", "file_lock", "find_temporaries", "host_tag", "markdown_text", "parse_temporary",
    "pid_alive", "read_csv", "release_stale_claims", "sha256_file", "sha256_json", "sweep_once", "sweep_orphans",
    "temp_prefix", "unescape_cell", "unescape_frame", "write_csv", "write_csv_rows", "write_failure", "write_json",
    "write_text",
]
