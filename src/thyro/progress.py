"""Progress of long library work, reported through a callback: the library never draws a bar.

Library code wraps a long loop in :func:`track`, or opens a :func:`task` and advances it.  Nothing is shown
unless a caller installs a *reporter*, a callable that receives an :class:`Update` at a task's start, at each
advance and at its end: the command line installs one that draws rich progress bars (with images/s and the
time left), a notebook or a GUI can install its own, and a script that installs none pays nothing.

    import thyro.progress

    def show(update):
        print(update.description, update.completed, "/", update.total)

    with thyro.progress.reporting(show):
        thyro.load("model/").predict(["scans/"])

A reporter is kept in a :class:`contextvars.ContextVar`, so a reporter set in one thread (or asyncio task)
does not draw another's progress; :func:`set_reporter` sets it for the current context from now on (the
command line's choice for a whole command).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Update:
    """One step of a task's progress.

    Attributes
    ----------
    task : int
        The task's id (unique in this process), the same in every update of one task.
    description : str
        What is being done, e.g. ``"predicting"`` or ``"imagenet-ft fold 2: epoch 3/10"``.
    completed, total : float, float or None
        Units done and units in all (None when unknown).
    unit : str
        What a unit is (``"image"``, ``"batch"``, ``"job"``, ...), for a rate such as images/s.
    status : str
        A short note on the latest step (``"loss 0.412"``), or ``""``.
    elapsed : float
        Seconds since the task started.
    finished : bool
        True in the task's last update (sent once, when the task closes).
    """

    task: int
    description: str
    completed: float
    total: float | None
    unit: str = "item"
    status: str = ""
    elapsed: float = 0.0
    finished: bool = False

    @property
    def rate(self) -> float | None:
        """Units per second so far (None before the first second's work is measurable)."""
        return self.completed / self.elapsed if self.elapsed > 0 and self.completed else None

    @property
    def remaining(self) -> float | None:
        """Seconds left at the rate so far (None when the total or the rate is unknown)."""
        rate = self.rate
        if rate is None or self.total is None:
            return None
        return max(0.0, (self.total - self.completed) / rate)


Reporter = Callable[[Update], None]

_reporter: ContextVar[Reporter | None] = ContextVar("thyro_progress_reporter", default=None)
_ids = itertools.count(1)


def current() -> Reporter | None:
    """The reporter installed in this context, or None."""
    return _reporter.get()


def set_reporter(reporter: Reporter | None) -> None:
    """Install ``reporter`` for the current context from now on (None: report nothing)."""
    _reporter.set(reporter)


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Install ``reporter`` for the block (None silences the library's progress inside it)."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


class Task:
    """A task in progress: :meth:`advance` it, then :meth:`close` it (or use it as a context manager).

    Updates go to the reporter that was installed when the task was made; with none, every call is a no-op.
    """

    def __init__(self, description: str, total: float | None = None, *, unit: str = "item"):
        self.id = next(_ids)
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.status = ""
        self._start = time.perf_counter()
        self._reporter = _reporter.get()
        self._closed = False
        self._send()

    def _send(self, finished: bool = False) -> None:
        if self._reporter is not None:
            self._reporter(Update(self.id, self.description, self.completed, self.total, self.unit, self.status,
                                  time.perf_counter() - self._start, finished))

    def advance(self, n: float = 1, *, status: str | None = None) -> None:
        """``n`` more units done (and, optionally, a new status note)."""
        self.completed += n
        if status is not None:
            self.status = status
        self._send()

    def update(self, *, completed: float | None = None, total: float | None = None, status: str | None = None,
               description: str | None = None) -> None:
        """Change what the task shows without counting units."""
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if status is not None:
            self.status = status
        if description is not None:
            self.description = description
        self._send()

    def close(self) -> None:
        """Send the task's last update (once)."""
        if not self._closed:
            self._closed = True
            self._send(finished=True)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def task(description: str, total: float | None = None, *, unit: str = "item") -> Task:
    """Start a task (a context manager: ``with task("predicting", n, unit="image") as t: ... t.advance()``)."""
    return Task(description, total, unit=unit)


def track(items: Iterable[T], description: str, total: float | None = None, *, unit: str = "item") -> Iterator[T]:
    """Iterate over ``items``, one unit of progress per item (``total`` defaults to ``len(items)``)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Task(description, total, unit=unit) as t:
        for item in items:
            yield item
            t.advance()


__all__ = ["Reporter", "Task", "Update", "current", "reporting", "set_reporter", "task", "track"]


def duration(seconds: float) -> str:
    """``seconds`` as a person says it: ``"40 s"``, ``"12 min"``, ``"2.5 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
