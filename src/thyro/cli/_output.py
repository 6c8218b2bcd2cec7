"""What the command line shows of the library's work: its log records and its progress.

The library logs with :mod:`logging` (loggers under ``thyro``) and reports progress through
:mod:`thyro.progress`; it never prints.  :func:`setup` connects both to the terminal for one command:

* records of level INFO go to standard output, WARNING and above to standard error, as plain text (no
  markup is read from a message; a path with brackets prints as it is); ``--quiet`` keeps INFO back;
* every task the library reports gets a rich progress bar with its rate (images/s) and the time left; a
  finished task's bar goes away unless it was the last one running, whose final state stays on screen;
* written to a file or a pipe rather than a terminal, lines are never wrapped and no bar is drawn.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from thyro import progress
from thyro.cli.console import console, err_console, set_quiet

LOGGER = "thyro"


class _RateColumn(ProgressColumn):
    """Units per second, named by the task's unit (``12.3 image/s``)."""

    def render(self, task) -> Text:
        rate = task.fields.get("rate")
        if not rate:
            return Text("")
        unit = task.fields.get("unit") or "item"
        return Text(f"{rate:.3g} {unit}/s" if rate < 100 else f"{rate:,.0f} {unit}/s")


class RichReporter:
    """A :data:`thyro.progress.Reporter` that draws each task as a rich progress bar on ``console``."""

    def __init__(self, out=None):
        self.console = out or console
        self._progress: Progress | None = None
        self._bars: dict[int, int] = {}

    def _display(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      _RateColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                      TimeRemainingColumn(), console=self.console, transient=False)
            self._progress.start()
        return self._progress

    def __call__(self, update: progress.Update) -> None:
        if not self.console.is_terminal:
            return  # a file or a pipe gets the log lines only
        display = self._display()
        bar = self._bars.get(update.task)
        fields = {"status": escape(update.status), "rate": update.rate, "unit": update.unit}
        if bar is None:
            bar = display.add_task(escape(update.description), total=update.total, completed=update.completed,
                                   **fields)
            self._bars[update.task] = bar
        else:
            display.update(bar, description=escape(update.description), total=update.total,
                           completed=update.completed, **fields)
        if update.finished:
            del self._bars[update.task]
            if self._bars:
                display.remove_task(bar)
            else:  # the last task: its final state stays on screen
                display.stop()
                self._progress = None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self._bars.clear()


class ConsoleHandler(logging.Handler):
    """Log records to the terminal: INFO on standard output, WARNING and above on standard error."""

    def __init__(self, quiet: bool = False):
        super().__init__(logging.DEBUG)
        self.quiet = quiet

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.WARNING:
                err_console.print(text, markup=False, highlight=False, soft_wrap=True)
            elif not self.quiet:
                console.print(text, markup=False, highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never take the command down
            self.handleError(record)


_chosen = {"quiet": False, "debug": False}


def setup(*, quiet: bool = False, debug: bool = False) -> None:
    """Connect the library's logs and progress to the terminal for this command (idempotent)."""
    _chosen.update(quiet=quiet, debug=debug)
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(ConsoleHandler(quiet=quiet))
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    progress.set_reporter(None if quiet else RichReporter())


def worker_setup(quiet: bool = False, debug: bool = False) -> None:
    """A worker process's output, as its command's (a study's ``--jobs N``): its logs and progress on the
    terminal, the console quiet when the command is."""
    set_quiet(quiet)
    setup(quiet=quiet, debug=debug)


def quiet_here() -> None:
    """This process shows warnings and errors only (a rank of a ``torchrun`` job other than the first, which
    speaks for the job)."""
    worker_setup(True, _chosen["debug"])


def for_workers() -> Callable[[], None]:
    """What a worker process of this command calls first (picklable): :func:`worker_setup` with this
    command's ``--quiet`` and ``--debug``."""
    return functools.partial(worker_setup, _chosen["quiet"], _chosen["debug"])


__all__ = ["ConsoleHandler", "RichReporter", "for_workers", "quiet_here", "setup", "worker_setup"]
