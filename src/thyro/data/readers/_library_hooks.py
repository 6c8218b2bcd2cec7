"""The one place thyro changes other libraries' process-wide state, installed once, on the first read.

:func:`install` (called by the readers before they open a file, never at import) does three things:

* Pillow's ``DecompressionBombWarning`` is ignored: thyro's own pixel limit refuses a large image from
  its header with a message naming the file (:func:`thyro.data.readers.base.check_pixels`), so the
  warning would only repeat it, raw, when a user has raised the limit above Pillow's.
* pydicom's warnings are ignored as warnings: pydicom sends each one to its ``pydicom`` logger as well
  (``pydicom.misc.warn_and_log``), and that copy is the one thyro keeps;
* a handler on the ``pydicom`` logger hands each record to the read in progress on the same thread
  (:func:`collect_pydicom_warnings`), which turns them into notes naming the file.

Why not per read: ``warnings.catch_warnings`` swaps the process's filter list, so two threads reading at
once (the web app's) would undo each other's filters; a filter installed once and a logging handler that
keeps a separate list per thread need no swapping.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator

from PIL import Image

_lock = threading.Lock()
_installed = False
_sinks = threading.local()


class _NoteHandler(logging.Handler):
    """Hands pydicom's log records to the read in progress on the same thread (:func:`collect_pydicom_warnings`)."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = getattr(_sinks, "sink", None)
        if sink is not None and record.levelno >= logging.WARNING:
            with contextlib.suppress(Exception):
                sink.append(" ".join(record.getMessage().split()))


def install() -> None:
    """Install thyro's warning filters and its ``pydicom`` log handler (see the module docstring); once per
    process, whichever thread calls first."""
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        log = logging.getLogger("pydicom")
        if not any(isinstance(h, _NoteHandler) for h in log.handlers):
            log.addHandler(_NoteHandler())
        _installed = True


@contextlib.contextmanager
def collect_pydicom_warnings() -> Iterator[list[str]]:
    """Collect, in the list yielded, the text of every warning pydicom logs on this thread during the block
    (one line each, whitespace collapsed).  Blocks nest: an outer block gets its inner blocks' lines too."""
    install()
    raw: list[str] = []
    outer = getattr(_sinks, "sink", None)
    _sinks.sink = raw
    try:
        yield raw
    finally:
        _sinks.sink = outer
        if outer is not None:
            outer.extend(raw)


__all__ = ["collect_pydicom_warnings", "install"]
